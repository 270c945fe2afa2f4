"""Notifications' knobs: the SMTP server, the warehouse address and webhook delivery."""

from libs.kit.settings import ServiceSettings


class NotificationsSettings(ServiceSettings):
    service_name: str = "notifications"
    # The kit's default is 10 ms; emails and webhooks are off a checkout's critical path:
    # waiting up to 150 ms for more records lets a batch of events share one transaction
    # (issue 10).
    consumer_linger_ms: float = 150.0
    http_port: int = 8106

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    smtp_timeout_s: float = 10.0
    smtp_from: str = "Backroom <orders@backroom.local>"
    warehouse_email: str = "warehouse@backroom.local"
    # Who answers payment disputes (chargebacks) at the provider: PaymentDisputed is mailed here.
    operator_email: str = "operations@backroom.local"
    # Queued emails: claimed `email_batch_size` at a time with a lease of `email_lease_s` (a
    # crash between send and record resends after it, same Message-ID); a 4xx answer or a lost
    # connection is retried `smtp_attempts` times, then a refusal is final (status failed) and
    # an unreachable server gets the mail back in the queue for `smtp_unavailable_pause_s`.
    email_batch_size: int = 20
    email_lease_s: float = 60.0
    email_poll_interval_s: float = 1.0
    smtp_attempts: int = 4
    smtp_retry_initial_s: float = 0.2
    smtp_retry_max_s: float = 2.0
    smtp_unavailable_pause_s: float = 5.0

    # Each phase (connect, write, read) of a POST, and the whole delivery (resolving included).
    webhook_timeout_s: float = 5.0
    webhook_total_timeout_s: float = 10.0
    # At most this much of a receiver's answer is read.
    webhook_max_response_bytes: int = 64 * 1024
    # A failed delivery is retried with backoff (base, 2·base, ... capped at max) until this long
    # after its first attempt; a 4xx other than 408/429 fails it at once.
    webhook_retry_horizon_s: float = 24 * 3600.0
    webhook_backoff_base_s: float = 1.0
    webhook_backoff_max_s: float = 3600.0
    # Networks webhooks may reach although they are not public (CIDRs, comma separated), e.g.
    # `127.0.0.0/8,::1/128` for receivers on this machine. Empty: public addresses only.
    webhook_allowed_networks: str = ""
    webhook_worker_interval_s: float = 1.0
    webhook_batch_size: int = 50
    # A claimed delivery is due again after this if its outcome was never recorded (a crash).
    webhook_lease_s: float = 60.0
    # How often the consumer re-reads which event types webhook subscriptions list (events of
    # other types are skipped); subscriptions made through this process count at once.
    webhook_interest_refresh_s: float = 1.0

    # --- channel webhooks (issue 13) ---
    # A new sales channel's listing topic is consumed at most this long after catalog created it
    # (the pattern consumer sees it on a metadata refresh; its records are then read from the
    # start, so none is missed). One metadata request per consumer this often.
    kafka_metadata_max_age_s: float = 10.0

"""Notifications' knobs: the SMTP server, the warehouse address and webhook delivery."""

from libs.kit.settings import ServiceSettings


class NotificationsSettings(ServiceSettings):
    service_name: str = "notifications"
    http_port: int = 8106

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    smtp_timeout_s: float = 10.0
    smtp_from: str = "Backroom <orders@backroom.local>"
    warehouse_email: str = "warehouse@backroom.local"

    webhook_timeout_s: float = 5.0
    webhook_max_attempts: int = 8
    webhook_backoff_base_s: float = 1.0
    webhook_backoff_max_s: float = 300.0
    webhook_worker_interval_s: float = 1.0
    webhook_batch_size: int = 50
    # How often the consumer re-reads which event types webhook subscriptions list (events of
    # other types are skipped); subscriptions made through this process count at once.
    webhook_interest_refresh_s: float = 1.0

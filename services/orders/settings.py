"""Orders' knobs: where pricing answers, how long a reservation holds, how often to sweep."""

from typing import Literal

from libs.kit.settings import ServiceSettings


class OrdersSettings(ServiceSettings):
    service_name: str = "orders"
    http_port: int = 8104

    pricing_url: str = "http://127.0.0.1:8103"
    pricing_timeout_s: float = 5.0
    reservation_ttl_s: int = 900
    deadline_sweep_interval_s: float = 1.0
    # Overdue orders rejected per sweep pass at most, so one pass never runs unbounded.
    deadline_sweep_batch: int = 500

    # --- returns (issue 12) ---
    # Days after delivery (the order's `delivered` history entry) a return may be requested.
    return_window_days: int = 30
    # Whether a return gives back the order's shipping charge: never, or with the return that
    # brings back the last unit of the order.
    return_refund_shipping: Literal["never", "when_all_returned"] = "never"

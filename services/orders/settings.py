"""Orders' knobs: where pricing and catalog answer, how long a reservation holds, how often to
sweep, when a cart counts as abandoned."""

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

    # --- carts (issue 12) ---
    # Where catalog's public product read answers (cart lines are checked and priced there).
    catalog_url: str = "http://127.0.0.1:8101"
    catalog_timeout_s: float = 5.0
    # An open cart with lines, unchanged this long, is reported once with CartAbandoned.
    cart_abandon_after_s: int = 3600
    cart_sweep_interval_s: float = 30.0
    # Carts marked abandoned per sweep transaction at most.
    cart_sweep_batch: int = 200

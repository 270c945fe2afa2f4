"""Inventory's knobs, and the clock its deadlines run on."""

from datetime import UTC, datetime

from libs.kit.settings import ServiceSettings


class InventorySettings(ServiceSettings):
    service_name: str = "inventory"
    http_port: int = 8102
    # How long after the order's own reservation deadline our safety net releases the stock.
    reservation_grace_s: float = 60.0
    expiry_sweep_interval_s: float = 5.0
    expiry_sweep_batch: int = 100

    def now(self) -> datetime:
        """The one clock of reservation expiry; tests override it instead of sleeping."""
        return datetime.now(UTC)

"""Inventory's knobs, and the clock its deadlines run on."""

from datetime import UTC, datetime
from typing import Literal

from libs.kit.settings import ServiceSettings
from services.inventory.domain import AllocationPolicy, Strategy


class InventorySettings(ServiceSettings):
    service_name: str = "inventory"
    http_port: int = 8102
    # How long after the order's own reservation deadline our safety net releases the stock.
    reservation_grace_s: float = 60.0
    expiry_sweep_interval_s: float = 5.0
    expiry_sweep_batch: int = 100
    # Issue 13: where reservations take stock from (see README "Locations").
    allocation_strategy: Literal["priority", "region"] = "priority"
    allocation_split: bool = True
    default_location: str = "main"

    def now(self) -> datetime:
        """The one clock of reservation expiry; tests override it instead of sleeping."""
        return datetime.now(UTC)

    # --- locations (issue 13) ---
    def allocation_policy(self) -> AllocationPolicy:
        return AllocationPolicy(
            Strategy(self.allocation_strategy), self.allocation_split, self.default_location
        )

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

    # --- reconciliation (issue 14) ---
    # Skus whose stock changed within this window are reconciled (at most `reconcile_scan_skus`
    # of them, the most recent first), and a reservation held this long past its expiry is a
    # finding (the expiry sweep runs every `expiry_sweep_interval_s`).
    reconcile_stock_window_s: float = 7 * 86400.0
    reconcile_scan_skus: int = 5000
    reconcile_expiry_grace_s: float = 60.0

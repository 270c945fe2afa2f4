"""Inventory's state gauges (issue 14), read on a timer by the runtime's metrics poller."""

from prometheus_client import Gauge

RESERVATIONS_EXPIRED = Gauge(
    "backroom_reservations_expired",
    "Reservations still held past their expiry (the expiry sweep releases them)",
)

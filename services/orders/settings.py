"""Orders' knobs: where pricing and catalog answer, how long a reservation holds, how often to
sweep, when a cart counts as abandoned, which carrier sells the labels of its shipments, returns,
and who issues the invoices and how they are numbered."""

from typing import Any, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from libs.kit.settings import ServiceSettings
from services.orders.domain import Invoicing


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
    # --- shipments (issue 12) ---
    carrier: Literal["sandbox", "easypost"] = "sandbox"
    # What the sandbox carrier signs its tracking webhooks with (random per process if unset).
    sandbox_carrier_webhook_secret: SecretStr | None = None
    # The sandbox's tracking page; `{tracking_number}` is filled in (empty: none).
    sandbox_tracking_url: str = "https://track.sandbox.backroom.local/{tracking_number}"
    # Carrier webhooks signed longer ago (or later) than this are refused.
    carrier_webhook_tolerance_s: int = Field(default=300, gt=0)
    easypost_api_key: SecretStr | None = None
    easypost_webhook_secret: SecretStr | None = None
    easypost_api_base: str | None = None  # the SDK's default (https://api.easypost.com/v2)
    easypost_timeout_s: int = Field(default=30, gt=0)
    # Buy this service's rate (e.g. "Priority") instead of the lowest; limit to these carriers.
    easypost_service: str | None = None
    easypost_carriers: list[str] = []
    # Where parcels leave from (EasyPost Address fields).
    ship_from_name: str = "Backroom Warehouse"
    ship_from_street1: str = "417 Montgomery Street"
    ship_from_city: str = "San Francisco"
    ship_from_state: str = "CA"
    ship_from_zip: str = "94104"
    ship_from_country: str = "US"
    ship_from_phone: str = "4153334444"
    # An order whose products carry no weight (0 g): each unit weighs this much in the parcel.
    item_weight_g: int = Field(default=500, gt=0)
    label_attempts: int = Field(default=4, ge=1)
    label_backoff_initial_s: float = 0.5
    label_backoff_max_s: float = 5.0
    # A claimed shipment is the label worker's for this long (then any worker may retry it).
    label_lease_s: float = Field(default=60.0, gt=0)
    label_batch: int = Field(default=10, ge=1)
    label_poll_interval_s: float = Field(default=5.0, gt=0)

    @field_validator("easypost_api_key", "easypost_webhook_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """An empty variable means not configured."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _easypost_configured(self) -> Self:
        """EasyPost without its key or webhook secret refuses to start (no usable default)."""
        if self.carrier == "easypost":
            for name in ("easypost_api_key", "easypost_webhook_secret"):
                if getattr(self, name) is None:
                    raise ValueError(
                        f"BACKROOM_{name.upper()} is required with BACKROOM_CARRIER=easypost"
                    )
        return self

    def ship_from(self) -> dict[str, str]:
        return {
            "name": self.ship_from_name,
            "street1": self.ship_from_street1,
            "city": self.ship_from_city,
            "state": self.ship_from_state,
            "zip": self.ship_from_zip,
            "country": self.ship_from_country,
            "phone": self.ship_from_phone,
        }

    # --- returns (issue 12) ---
    # Days after delivery (the order's `delivered` history entry) a return may be requested.
    return_window_days: int = 30
    # Whether a return gives back the order's shipping charge: never, or with the return that
    # brings back the last unit of the order.
    return_refund_shipping: Literal["never", "when_all_returned"] = "never"
    # --- invoices and credit notes (issue 12) ---
    # The seller printed on every invoice and credit note. The defaults are placeholders (no
    # secret among them): set them per deployment (BACKROOM_SELLER_NAME, ...; the address as a
    # JSON list, BACKROOM_SELLER_ADDRESS_LINES='["1 Main St", "Springfield"]').
    seller_name: str = "Backroom Demo Store"
    seller_address_lines: list[str] = ["1 Example Street", "75001 Paris", "France"]
    seller_vat_id: str | None = "FR00000000000"
    seller_email: str | None = "billing@backroom.example"
    # Numbering: one gap-free sequence per store, kind and year; the prefixes make the numbers
    # (INV-2026-000001, CN-2026-000001). Give each store its own prefixes.
    invoice_store: str = "main"
    invoice_prefix: str = "INV"
    credit_note_prefix: str = "CN"
    # --- timeline (issue 14) ---
    # Where GET /orders/{id}/timeline reads the other services' records of an order (their own
    # admin routes), how long each may take, and the bearer it sends them: a service token with
    # the admin role from the identity provider; unset in development, orders mints a short-lived
    # dev admin token (subject `service:orders`).
    inventory_url: str = "http://127.0.0.1:8102"
    payments_url: str = "http://127.0.0.1:8105"
    notifications_url: str = "http://127.0.0.1:8106"
    timeline_timeout_s: float = Field(default=3.0, gt=0)
    service_token: SecretStr | None = None

    def invoicing(self) -> Invoicing:
        return Invoicing(
            store=self.invoice_store,
            invoice_prefix=self.invoice_prefix,
            credit_note_prefix=self.credit_note_prefix,
            seller_name=self.seller_name,
            seller_address_lines=tuple(self.seller_address_lines),
            seller_vat_id=self.seller_vat_id,
            seller_email=self.seller_email,
        )

    # --- reconciliation (issue 14) ---
    # A pending order this long past its reservation deadline is a finding (the deadline sweep,
    # every `deadline_sweep_interval_s`, should have rejected it).
    reconcile_order_grace_s: float = 60.0

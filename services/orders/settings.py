"""Orders' knobs: where pricing answers, how long a reservation holds, how often to sweep, who
issues the invoices and how they are numbered."""

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

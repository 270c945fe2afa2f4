"""Catalog's knobs."""

from libs.kit.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    service_name: str = "catalog"
    # The kit's default is 10 ms; the storefront's projections are eventually consistent:
    # waiting up to 150 ms for more records lets a batch of stock and price changes share one
    # transaction (issue 10).
    consumer_linger_ms: float = 150.0
    http_port: int = 8101

    # --- listing sync (issue 13) ---
    # A changed (channel, sku) is published once it has been dirty this long: the first change
    # of a burst starts the clock, so a burst becomes one ListingChanged within about this delay.
    listing_sync_delay_s: float = 1.0
    listing_sync_poll_s: float = 0.25
    listing_sync_batch_size: int = 200
    # Rows per page (and per short transaction) of a channel export.
    export_page_size: int = 500

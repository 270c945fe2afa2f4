"""Pricing's knobs."""

from pydantic import Field

from libs.kit.settings import ServiceSettings


class PricingSettings(ServiceSettings):
    service_name: str = "pricing"
    http_port: int = 8103
    # How long a quote's prices hold (orders refuses an expired quote).
    quote_ttl_s: int = Field(default=900, gt=0)

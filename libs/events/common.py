"""Value types shared by several producers' events: money and order lines."""

from pydantic import BaseModel, ConfigDict, Field


class WireModel(BaseModel):
    """Base of every event payload: unknown fields are kept so additive changes never break readers."""

    model_config = ConfigDict(extra="allow", frozen=True)


class Money(WireModel):
    """An amount in integer minor units (cents) with an ISO 4217 currency code."""

    amount: int
    currency: str = Field(min_length=3, max_length=3)


class Line(WireModel):
    """A quantity of one sku."""

    sku: str
    quantity: int = Field(gt=0)


class PricedLine(Line):
    """An order line with the prices the customer was quoted (all per line, in minor units)."""

    unit_price: Money
    discount: Money
    tax: Money
    total: Money

"""Cursor pagination per the contract: `?limit=` (default 50, max 200), `?cursor=`, `next_cursor`."""

import base64
import json
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from libs.kit.problems import invalid

Limit = Annotated[int, Query(ge=1, le=200, description="page size (max 200)")]
Cursor = Annotated[str | None, Query(max_length=500, description="opaque cursor from next_cursor")]
DEFAULT_LIMIT = 50


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(position: dict[str, Any]) -> str:
    """An opaque cursor holding the sort key of the last item served."""
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid("cursor", "malformed cursor", status=400) from exc
    if not isinstance(position, dict):
        raise invalid("cursor", "malformed cursor", status=400)
    return position

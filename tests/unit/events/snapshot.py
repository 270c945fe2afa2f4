"""The JSON schema of every event's data model and of the envelope, as a snapshot.

Regenerate after an additive change: `.venv/bin/python -m tests.unit.events.snapshot`."""

import json
from pathlib import Path
from typing import Any

from libs.events.envelope import CloudEvent
from libs.events.registry import EVENT_TYPES

SNAPSHOT = Path(__file__).with_name("schemas.snapshot.json")


def current_schemas() -> dict[str, Any]:
    schemas = {name: model.model_json_schema() for name, (_, model) in sorted(EVENT_TYPES.items())}
    schemas["__envelope__"] = CloudEvent.model_json_schema()
    schemas["__topics__"] = {name: topic for name, (topic, _) in sorted(EVENT_TYPES.items())}
    return schemas


def write() -> None:
    SNAPSHOT.write_text(json.dumps(current_schemas(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    write()
    print(f"wrote {SNAPSHOT}")

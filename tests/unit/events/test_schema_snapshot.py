"""Contract test: a breaking change to an event fails CI; an additive one only needs a new snapshot.

Breaking = an event type or topic disappears, a field disappears or changes its schema, or a
field becomes required. Such a change must be a new type name (e.g. OrderPlacedV2), published
side by side."""

import json
from typing import Any

from tests.unit.events.snapshot import SNAPSHOT, current_schemas


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref:
        return _resolve(root["$defs"][ref.split("/")[-1]], root)
    return schema


def breaking_changes(
    old: dict[str, Any],
    new: dict[str, Any],
    path: str,
    old_root: dict[str, Any],
    new_root: dict[str, Any],
) -> list[str]:
    old, new = _resolve(old, old_root), _resolve(new, new_root)
    problems: list[str] = []
    if old.get("type") != new.get("type"):
        problems.append(f"{path}: type {old.get('type')} -> {new.get('type')}")
    for field, old_field in old.get("properties", {}).items():
        new_field = new.get("properties", {}).get(field)
        if new_field is None:
            problems.append(f"{path}.{field}: removed")
        else:
            problems += breaking_changes(
                old_field, new_field, f"{path}.{field}", old_root, new_root
            )
    newly_required = set(new.get("required", [])) - set(old.get("required", []))
    if newly_required:
        problems.append(f"{path}: newly required {sorted(newly_required)}")
    for key in ("anyOf", "enum", "const", "items"):
        if key in old and key in new and key == "items":
            problems += breaking_changes(old[key], new[key], f"{path}[]", old_root, new_root)
        elif (
            key in old
            and key != "items"
            and json.dumps(old[key], sort_keys=True) != json.dumps(new.get(key), sort_keys=True)
        ):
            if key == "enum" and set(old[key]) <= set(new.get(key, [])):
                continue  # more enum values is additive
            if key == "anyOf" and all(o in new.get(key, []) for o in old[key]):
                continue
            problems.append(f"{path}: {key} changed")
    return problems


def test_no_event_changed_incompatibly() -> None:
    snapshot = json.loads(SNAPSHOT.read_text())
    current = current_schemas()
    problems: list[str] = []
    for name, old_topic in snapshot["__topics__"].items():
        if current["__topics__"].get(name) != old_topic:
            problems.append(f"{name}: topic {old_topic} -> {current['__topics__'].get(name)}")
    for name, old_schema in snapshot.items():
        if name == "__topics__":
            continue
        if name not in current:
            problems.append(f"{name}: event type removed")
            continue
        problems += breaking_changes(old_schema, current[name], name, old_schema, current[name])
    assert not problems, "breaking event changes (publish a new type instead):\n" + "\n".join(
        problems
    )


def test_snapshot_is_up_to_date() -> None:
    """Additive changes are fine, but record them: python -m tests.unit.events.snapshot."""
    assert json.loads(SNAPSHOT.read_text()) == json.loads(json.dumps(current_schemas())), (
        "event schemas changed compatibly; refresh the snapshot with "
        "`.venv/bin/python -m tests.unit.events.snapshot` and commit it"
    )

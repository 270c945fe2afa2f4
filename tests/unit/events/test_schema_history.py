"""The compatibility gate against history (issue 14): every event schema of this checkout is
compared with the one of the previous commit of main, read from git, so a breaking change fails
even when the same commit regenerates the snapshot. Skips cleanly with no git or no history."""

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.unit.events.snapshot import SNAPSHOT, current_schemas
from tests.unit.events.test_schema_snapshot import breaking_changes

ROOT = Path(__file__).resolve().parents[3]
SNAPSHOT_PATH = SNAPSHOT.relative_to(ROOT).as_posix()


def _git(*args: str) -> str | None:
    if shutil.which("git") is None:
        return None
    result = subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


def base_commit() -> str | None:
    """The previous commit of main: on main (or a detached CI checkout of it) HEAD's parent; on a
    branch, where it left main (its merge base). None without history."""
    head = _git("rev-parse", "--verify", "-q", "HEAD")
    if head is None:
        return None
    main = _git("rev-parse", "--verify", "-q", "main") or _git(
        "rev-parse", "--verify", "-q", "origin/main"
    )
    if main is not None and main != head:
        base = _git("merge-base", head, main)
        if base is not None and base != head:
            return base
    return _git("rev-parse", "--verify", "-q", "HEAD~1")


def incompatibilities(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What makes `new` (schemas as snapshot.current_schemas gives them) break `old`."""
    problems: list[str] = []
    for name, old_topic in old.get("__topics__", {}).items():
        if new["__topics__"].get(name) != old_topic:
            problems.append(f"{name}: topic {old_topic} -> {new['__topics__'].get(name)}")
    for name, old_schema in old.items():
        if name == "__topics__":
            continue
        if name not in new:
            problems.append(f"{name}: event type removed")
            continue
        problems += breaking_changes(old_schema, new[name], name, old_schema, new[name])
    return problems


def test_no_event_schema_breaks_the_previous_commit_of_main() -> None:
    base = base_commit()
    if base is None:
        pytest.skip("no previous commit in this checkout's git history")
    text = _git("show", f"{base}:{SNAPSHOT_PATH}")
    if text is None:
        pytest.skip(f"{base[:12]} has no {SNAPSHOT_PATH}")
    problems = incompatibilities(json.loads(text), current_schemas())
    assert not problems, (
        f"breaking event changes against {base[:12]} (publish a new type instead):\n"
        + "\n".join(problems)
    )


def test_the_gate_catches_a_removed_field_a_type_change_and_a_new_required_field() -> None:
    old = current_schemas()
    new = copy.deepcopy(old)
    placed = new["OrderPlaced"]
    removed = next(iter(placed["properties"]))
    del placed["properties"][removed]
    new["StockLow"]["properties"]["sku"] = {"type": "integer"}
    new["PriceChanged"]["properties"]["surprise"] = {"type": "string"}
    new["PriceChanged"]["required"] = [*new["PriceChanged"].get("required", []), "surprise"]
    del new["NotificationSent"]
    problems = "\n".join(incompatibilities(old, new))
    assert f"OrderPlaced.{removed}: removed" in problems
    assert "StockLow.sku: type string -> integer" in problems
    assert "PriceChanged: newly required ['surprise']" in problems
    assert "NotificationSent: event type removed" in problems


def test_an_additive_change_passes_the_gate() -> None:
    old = current_schemas()
    new = copy.deepcopy(old)
    new["OrderPlaced"]["properties"]["gift_note"] = {"type": "string", "default": ""}
    assert incompatibilities(old, new) == []

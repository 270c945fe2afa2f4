"""Partitions per topic: few on the development machine, the operator's explicit count elsewhere
(deploy/k8s/config.yaml; tests/unit/deploy/test_manifests.py checks the cluster's value)."""

from pathlib import Path
from typing import Any

import pytest

from libs.kit import cli
from libs.kit.settings import DEV_TOPIC_PARTITIONS, TOPIC_PARTITIONS, ServiceSettings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No BACKROOM_TOPIC_* of the test process; development secrets under tmp_path."""
    monkeypatch.delenv("BACKROOM_TOPIC_PARTITIONS", raising=False)
    monkeypatch.setenv("BACKROOM_DEV_JWT_SECRET_FILE", str(tmp_path / "dev-jwt-secret"))
    return monkeypatch


def test_development_uses_few_partitions_and_elsewhere_the_default(
    clean_env: pytest.MonkeyPatch,
) -> None:
    assert DEV_TOPIC_PARTITIONS == 3 and TOPIC_PARTITIONS == 6
    assert ServiceSettings(env="dev").topic_partitions == DEV_TOPIC_PARTITIONS
    assert ServiceSettings(env="production").topic_partitions == TOPIC_PARTITIONS
    clean_env.setenv("BACKROOM_ENV", "dev")
    assert ServiceSettings().topic_partitions == DEV_TOPIC_PARTITIONS


@pytest.mark.parametrize("env", ["dev", "production"])
def test_an_explicit_partition_count_wins_in_every_environment(
    env: str, clean_env: pytest.MonkeyPatch
) -> None:
    """Set, it is never replaced: not even by the development rule when it equals the default."""
    assert ServiceSettings(env=env, topic_partitions=TOPIC_PARTITIONS).topic_partitions == 6
    clean_env.setenv("BACKROOM_TOPIC_PARTITIONS", "12")
    assert ServiceSettings(env=env).topic_partitions == 12


def test_backroom_topics_creates_the_settings_partition_count(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """`backroom topics` (make run, the bench, compose's migrate) with no --partitions."""
    created: list[dict[str, Any]] = []

    async def record(kafka: object, **options: Any) -> None:
        created.append(options)

    clean_env.setattr(cli, "ensure_topics", record)
    clean_env.setenv("BACKROOM_ENV", "dev")
    clean_env.setenv("BACKROOM_KAFKA_PASSWORD", "admin-test-password-0123456789")
    assert cli.main(["topics", "--no-acls"]) == 0
    clean_env.setenv("BACKROOM_TOPIC_PARTITIONS", "12")
    assert cli.main(["topics", "--no-acls"]) == 0
    assert cli.main(["topics", "--no-acls", "--partitions", "2"]) == 0
    assert [options["partitions"] for options in created] == [DEV_TOPIC_PARTITIONS, 12, 2]

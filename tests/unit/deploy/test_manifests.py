"""The container descriptions (Dockerfile, docker-compose.yml, deploy/k8s) agree with the code.

They name services, settings, ports, commands and routes that live in Python; nothing else keeps
them in step. These tests fail when a service or a setting is renamed or dropped and the
descriptions are not, when a port or a route drifts, or when a probe or a Service goes missing.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import inspect
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from libs.kit.auth import REPOSITORY_SECRETS
from libs.kit.cli import SERVICES, build_parser
from libs.kit.kafka import KafkaConnection
from libs.kit.kafka_acl import (
    PRINCIPALS,
    SUBSCRIPTIONS,
    Acl,
    Operation,
    Pattern,
    Permission,
    Resource,
    acls,
)
from libs.kit.settings import DEV_TOPIC_PARTITIONS, KAFKA_ADMIN, ServiceSettings
from tests.support import strimzi

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_DIR = ROOT / "deploy" / "k8s"
COMPOSE_NGINX = ROOT / "deploy" / "compose" / "nginx.conf"
K8S_NGINX = K8S_DIR / "gateway" / "nginx.conf"
KAFKA_USERS = K8S_DIR / "kafka-users.yaml"
KAFKA_START = ROOT / "deploy" / "compose" / "kafka-start.sh"
LOCAL_KAFKA_TEMPLATE = ROOT / "deploy" / "local" / "kafka" / "server.properties.tmpl"
LOCAL_NGINX_TEMPLATE = ROOT / "deploy" / "local" / "nginx" / "nginx.conf.tmpl"

COMPOSE_INFRA = {"kafka", "postgres", "smtp", "migrate", "gateway", "apidocs", "prometheus"}
K8S_GATEWAY = "gateway"
SCALED_OUT = {"inventory": 2, "payments": 2}  # replicas; every other service runs one
ENV_PREFIX = "BACKROOM_"
# What `backroom migrate` reads for a job migrating every service, each as its own role.
MIGRATE_ROLE_PASSWORDS = {f"BACKROOM_PG_PASSWORD_{svc.upper()}" for svc in SERVICES}


# --- what the code says ------------------------------------------------------------------------


def env_names(settings_cls: type[ServiceSettings]) -> set[str]:
    """The environment variables a settings class reads (env_prefix + field name, upper case)."""
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    return {(prefix + name).upper() for name in settings_cls.model_fields}


KIT_ENV = env_names(ServiceSettings)


@cache
def settings_class(service: str) -> type[ServiceSettings] | None:
    """The ServiceSettings subclass defined in services/<service>/settings.py (None if it does
    not import yet: other people may be writing it right now)."""
    try:
        module = importlib.import_module(f"services.{service}.settings")
    except Exception:
        return None
    classes = [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, ServiceSettings) and cls.__module__ == module.__name__
    ]
    assert len(classes) == 1, f"services/{service}/settings.py should define one settings class"
    return classes[0]


def service_env(service: str) -> set[str]:
    """Every BACKROOM_* variable `serve <service>` reads; skips the test if that is unknown yet."""
    cls = settings_class(service)
    if cls is None:
        pytest.skip(f"services.{service}.settings does not import yet (kit fields checked apart)")
    return env_names(cls)


def default_port(service: str) -> int:
    cls = settings_class(service)
    if cls is None:
        pytest.skip(f"services.{service}.settings does not import yet")
    return int(cls.model_fields["http_port"].default)


def unknown_env(names: set[str], allowed: set[str]) -> list[str]:
    """The BACKROOM_* names that no settings field backs (other names are not ours to judge)."""
    return sorted(n for n in names if n.startswith(ENV_PREFIX) and n not in allowed)


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """`backroom <argv>` as the CLI would parse it; fails the test when the CLI refuses it."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`backroom {shlex.join(argv)}` is not a valid backroom command")


def backroom_chain(script: str) -> list[list[str]]:
    """The `backroom ...` commands of an `sh -c` script made of `cmd && cmd`."""
    commands = [shlex.split(part) for part in script.split("&&")]
    for argv in commands:
        assert argv and argv[0] == "backroom", f"not a backroom command: {argv} in {script!r}"
        parse_cli(argv[1:])
    return commands


# --- docker-compose.yml ------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


def compose_service(name: str) -> dict[str, Any]:
    service: dict[str, Any] = compose()["services"][name]
    return service


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def interpolate(value: Any) -> str:
    """A compose value with ${VAR:-default} replaced by its default (what a bare `up` uses);
    ${VAR:?message} (the operator must set it) by nothing."""
    return _INTERPOLATION.sub(lambda m: m.group(3) or "" if m.group(2) == "-" else "", str(value))


def required_variable(value: Any) -> str | None:
    """VAR when a compose value is exactly ${VAR:?message} (compose refuses to start without it)."""
    found = re.fullmatch(r"\$\{(\w+):\?[^}]+\}", str(value))
    return found.group(1) if found else None


def compose_env(name: str) -> dict[str, str]:
    env = compose_service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): interpolate(v) for k, v in env.items()}


def container_ports(name: str) -> set[int]:
    """Container-side ports a compose service publishes ("ip:host:container", "host:container")."""
    ports = set()
    for entry in compose_service(name).get("ports") or []:
        target = entry.get("target") if isinstance(entry, dict) else str(entry).split(":")[-1]
        ports.add(int(str(target).split("/")[0]))
    return ports


def host_port(url_or_address: str) -> tuple[str, int]:
    parts = urlsplit(url_or_address if "//" in url_or_address else f"//{url_or_address}")
    assert parts.hostname and parts.port, f"no host:port in {url_or_address!r}"
    return parts.hostname, parts.port


def compose_http_port(service: str) -> int:
    return int(compose_env(service).get("BACKROOM_HTTP_PORT") or default_port(service))


def backroom_image() -> str:
    return str(compose()["x-backroom-image"]["image"])


# --- deploy/k8s ----------------------------------------------------------------------------------


@cache
def kustomization() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    return doc


@cache
def k8s_objects() -> tuple[dict[str, Any], ...]:
    objects = []
    for resource in kustomization()["resources"]:
        for doc in yaml.safe_load_all((K8S_DIR / resource).read_text()):
            if doc:
                assert {"apiVersion", "kind", "metadata"} <= doc.keys(), f"{resource}: {doc}"
                objects.append(doc)
    return tuple(objects)


def k8s_all(kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for obj in k8s_objects():
        if obj["kind"] == kind:
            name = obj["metadata"]["name"]
            assert name not in found, f"two {kind} objects named {name}"
            found[name] = obj
    return found


def k8s_one(kind: str, name: str) -> dict[str, Any]:
    objects = k8s_all(kind)
    assert name in objects, f"no {kind} {name!r} in deploy/k8s (have {sorted(objects)})"
    return objects[name]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(deployment)["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: one container expected"
    container: dict[str, Any] = containers[0]
    return container


def explicit_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e.get("value", "")) for e in container.get("env") or []}


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A container port by number or by name."""
    for p in container.get("ports") or []:
        if port in (p["containerPort"], p.get("name")):
            return int(p["containerPort"])
    pytest.fail(f"container {container['name']} has no port {port!r}")


def k8s_http_port(service: str) -> int:
    env = explicit_env(main_container(k8s_one("Deployment", service)))
    return int(env.get("BACKROOM_HTTP_PORT") or default_port(service))


def service_port(service: dict[str, Any], port: int | str) -> dict[str, Any]:
    for p in service["spec"]["ports"]:
        if port in (p["port"], p.get("name")):
            found: dict[str, Any] = p
            return found
    pytest.fail(f"Service {service['metadata']['name']} has no port {port!r}")


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def env_sources(container: dict[str, Any]) -> dict[str, str]:
    """Every BACKROOM_* variable a container gets: ConfigMap and Secret keys, then its env."""
    names: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            names |= k8s_one("ConfigMap", source["configMapRef"]["name"])["data"]
        if "secretRef" in source:
            name = source["secretRef"]["name"]
            if name.startswith(PG_SECRET_PREFIX):
                names |= dict.fromkeys(pg_secret_keys(name), "")
                continue
            if name.startswith(KAFKA_SECRET_PREFIX):
                names |= dict.fromkeys(kafka_secret_keys(name), "")
                continue
            assert name == OPERATOR_SECRET
            names |= dict.fromkeys(operator_secret_keys(), "")
    return names | explicit_env(container)


PG_SECRET_PREFIX = "backroom-pg-"


def pg_secret_keys(name: str) -> set[str]:
    """The keys of a service's database Secret, from its documented creation command."""
    text = (K8S_DIR / "kustomization.yaml").read_text()
    (command,) = [
        line for line in text.splitlines() if f"create secret generic {PG_SECRET_PREFIX}" in line
    ]
    assert name.removeprefix(PG_SECRET_PREFIX) in SERVICES
    return set(re.findall(r"--from-literal=(\w+)=", command))


KAFKA_SECRET_PREFIX = "backroom-kafka-"
KAFKA_CA_SECRET = "backroom-kafka-ca"


@cache
def kafka_secret_command() -> str:
    """The documented command creating every principal's Kafka Secret (kustomization.yaml)."""
    text = (K8S_DIR / "kustomization.yaml").read_text()
    (command,) = [
        line.lstrip("# ").strip()
        for line in text.splitlines()
        if f"create secret generic {KAFKA_SECRET_PREFIX}$" in line
    ]
    return command


def kafka_secret_keys(name: str) -> set[str]:
    """The keys of a principal's Kafka Secret, from its documented creation command."""
    assert name.removeprefix(KAFKA_SECRET_PREFIX) in PRINCIPALS, f"no principal for {name}"
    return set(re.findall(r"--from-literal=(\w+)=", kafka_secret_command()))


OPERATOR_SECRET = "backroom-secrets"


@cache
def operator_secret_commands() -> list[str]:
    """The documented `kubectl create secret` commands for the Secret the operator creates (in
    kustomization.yaml's comment; the manifests apply no Secret)."""
    text = (K8S_DIR / "kustomization.yaml").read_text()
    commands = [
        line.lstrip("# ").strip()
        for line in text.splitlines()
        if line.startswith("#") and f"create secret generic {OPERATOR_SECRET}" in line
    ]
    assert commands, "kustomization.yaml documents how to create the Secret"
    return commands


def operator_secret_keys() -> set[str]:
    keys: set[str] = set()
    for command in operator_secret_commands():
        keys |= set(re.findall(r"--from-literal=(\w+)=", command))
    return keys


# --- nginx configs -------------------------------------------------------------------------------


def nginx_routes(path: Path) -> tuple[dict[str, str], dict[str, list[str]], list[str]]:
    """(location -> proxy_pass target, upstream -> servers, listen directives) of a config."""
    text = re.sub(r"(?m)(^|\s)#.*$", "", path.read_text())
    upstreams = {
        m.group(1): re.findall(r"(?m)^\s*server\s+([^\s;]+)", m.group(2))
        for m in re.finditer(r"upstream\s+(\w+)\s*\{(.*?)\}", text, re.S)
    }
    locations = {}
    # Prefix locations only: the exact ones (`location = /orders`) refine a prefix's limits.
    for m in re.finditer(r"location\s+(\w*/\S*)\s*\{(.*?)\}", text, re.S):
        target = re.search(r"proxy_pass\s+([^;]+);", m.group(2))
        if target:
            locations[m.group(1)] = target.group(1).strip()
    listens = re.findall(r"(?m)^\s*listen\s+([^\s;]+)", text)
    return locations, upstreams, listens


def nginx_limits(text: str) -> dict[str, Any]:
    """What a gateway config limits: zones (key, rate), which limit_req / body size apply where
    (the server block and each location), the maps the keys come from, and the CORS headers."""
    text = re.sub(r"(?m)(^|\s)#.*$", "", text)
    zones = {
        m.group(2): (m.group(1), m.group(3))
        for m in re.finditer(r"limit_req_zone\s+(\S+)\s+zone=(\w+):\S+\s+rate=(\S+);", text)
    }
    server = re.search(r"server\s*\{(.*)\}", text, re.S)
    assert server, "no server block"
    body = server.group(1)
    scopes: dict[str, list[str]] = {}
    for m in re.finditer(r"location\s+(=\s+)?(\S+)\s*\{(.*?)\}", body, re.S):
        scopes[(m.group(1) or "") + m.group(2)] = re.findall(
            r"(?m)^\s*((?:limit_req|client_max_body_size|add_header)\s[^;]*);", m.group(3)
        )
    outside = re.sub(r"location\s+[^{]*\{.*?\}", "", body, flags=re.S)
    scopes["server"] = re.findall(
        r"(?m)^\s*((?:limit_req|client_max_body_size|add_header|limit_req_status)\s[^;]*);",
        outside,
    )
    maps = {
        m.group(2): re.sub(r"\s+", " ", m.group(3)).strip()
        for m in re.finditer(r"map\s+(\S+)\s+(\$\w+)\s*\{(.*?)\n\s*\}", text, re.S)
        if m.group(2) != "$backroom_cors_origin"  # the allowed origins are per deployment
    }
    return {"zones": zones, "scopes": scopes, "maps": maps}


def local_gateway_defaults() -> dict[str, str]:
    """The GATEWAY_* defaults of deploy/local/nginx.sh (`NAME=${NAME:-default}`)."""
    script = (ROOT / "deploy" / "local" / "nginx.sh").read_text()
    return dict(re.findall(r"(?m)^(GATEWAY_\w+)=\$\{\1:-([^}]*)\}", script))


def rendered_local_template() -> str:
    """The local template with nginx.sh's default limits (what `make run` serves)."""
    text = LOCAL_NGINX_TEMPLATE.read_text()
    for name, value in local_gateway_defaults().items():
        text = text.replace("{{" + name + "}}", value)
    return text


# Each service's own prefix, and the resources another service owns (issue 12: orders' carts).
GATEWAY_PREFIXES = {f"/{s}": s for s in SERVICES} | {"/carts": "orders"}

GATEWAY_CONFIGS = {
    "compose": (COMPOSE_NGINX, compose_http_port),
    "k8s": (K8S_NGINX, lambda svc: service_port(k8s_one("Service", svc), "http")["port"]),
}


# =================================================================================================
# Dockerfile and .dockerignore
# =================================================================================================


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith("#")
    ]


def test_dockerfile_builds_the_locked_venv_with_uv_and_runs_backroom_unprivileged() -> None:
    instructions = dockerfile_instructions()
    args = dict(
        value.split("=", 1) for kind, value in instructions if kind == "ARG" and "=" in value
    )
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[str(m.group(1))], value.split()[0])
        for kind, value in instructions
        if kind == "FROM"
    ]
    assert len(bases) >= 2, "multi-stage: a build stage and a runtime stage"
    assert set(bases) == {"python:3.11-slim"}, bases

    runs = " ".join(value for kind, value in instructions if kind == "RUN")
    uv_version = re.search(r"^UV_VERSION\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert uv_version, "Makefile pins UV_VERSION"
    assert f"pip install --no-cache-dir uv=={uv_version.group(1)}" in runs
    assert "uv sync --frozen --no-dev" in runs
    assert "UV_PROJECT_ENVIRONMENT=/app/.venv" in " ".join(v for k, v in instructions if k == "ENV")

    runtime = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    users = [value for kind, value in runtime if kind == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime user is not root"

    entrypoint = [yaml.safe_load(v) for k, v in runtime if k == "ENTRYPOINT"]
    assert entrypoint == [["/app/.venv/bin/backroom"]]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'(?m)^backroom\s*=\s*"libs\.kit\.cli:main"', pyproject)
    cmd = [yaml.safe_load(v) for k, v in runtime if k == "CMD"]
    assert cmd == [["serve", "catalog"]]
    parse_cli(cmd[0])


def test_dockerfile_env_names_are_kit_settings() -> None:
    env_text = " ".join(v for k, v in dockerfile_instructions() if k == "ENV")
    names = set(re.findall(r"\b(BACKROOM_\w+)=", env_text))
    assert not unknown_env(names, KIT_ENV)


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and line[0] != "#"]


def test_dockerignore_drops_local_state_but_not_what_the_image_copies() -> None:
    patterns = dockerignore_patterns()
    for needed in (".venv", ".run", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache"):
        assert needed in patterns, f".dockerignore should exclude {needed}"

    sources = []
    for kind, value in dockerfile_instructions():
        if kind == "COPY" and "--from=" not in value:
            parts = [p for p in value.split() if not p.startswith("--")]
            sources += parts[:-1]
    assert {"pyproject.toml", "uv.lock", "libs", "services"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
        for pattern in patterns:
            if not pattern.startswith("!") and "*" not in pattern:
                excluded = source == pattern or source.startswith(pattern + "/")
                assert not excluded, f".dockerignore pattern {pattern!r} drops {source}"


# =================================================================================================
# docker-compose.yml
# =================================================================================================


def test_compose_runs_the_six_services_and_the_infrastructure() -> None:
    assert set(compose()["services"]) == set(SERVICES) | COMPOSE_INFRA


@pytest.mark.parametrize("service", SERVICES)
def test_compose_service_serves_itself_from_the_backroom_image(service: str) -> None:
    spec = compose_service(service)
    assert spec["image"] == backroom_image()
    assert "entrypoint" not in spec, "the image's entrypoint is `backroom`"
    assert spec["command"] == ["serve", service]
    assert parse_cli(spec["command"]).service == service


def test_compose_shared_env_and_migrate_use_only_kit_settings() -> None:
    shared = set(compose()["x-backroom-env"])
    assert not unknown_env(shared, KIT_ENV)
    assert not unknown_env(set(compose_env("migrate")), KIT_ENV | MIGRATE_ROLE_PASSWORDS)


@pytest.mark.parametrize("service", SERVICES)
def test_compose_env_names_are_settings_fields(service: str) -> None:
    names = set(compose_env(service))
    assert not unknown_env(names, service_env(service))


def test_env_check_catches_a_renamed_setting() -> None:
    """The checks above are not vacuous: a name no field backs is reported, others are not."""
    real = sorted(KIT_ENV)[0]
    assert unknown_env({real, f"{real}_RENAMED", "PATH"}, KIT_ENV) == [f"{real}_RENAMED"]


@pytest.mark.parametrize("service", SERVICES)
def test_compose_ports_and_healthcheck_match_the_settings(service: str) -> None:
    env = compose_env(service)
    port = compose_http_port(service)
    assert env.get("BACKROOM_HTTP_HOST") == "0.0.0.0", "listen beyond the container's loopback"
    assert container_ports(service) == {port}
    check = " ".join(map(str, compose_service(service)["healthcheck"]["test"]))
    assert "/health/ready" in check and "BACKROOM_HTTP_PORT" in check
    assert "BACKROOM_HTTP_PORT" in env, "the healthcheck reads the port from the environment"


@pytest.mark.parametrize("service", SERVICES)
def test_compose_service_reaches_kafka_and_postgres_after_migrations(service: str) -> None:
    env = compose_env(service)
    kafka_host, kafka_port = host_port(env["BACKROOM_KAFKA_BOOTSTRAP"])
    advertised = compose_env(kafka_host)["KAFKA_ADVERTISED_LISTENERS"]
    assert f"//{kafka_host}:{kafka_port}" in advertised
    assert env["BACKROOM_PG_HOST"] == "postgres"
    assert int(env["BACKROOM_PG_PORT"]) == 5432
    # Its own role (named after it: no BACKROOM_PG_USER), with the password postgres-init.sh
    # gave that role, never the superuser's.
    assert "BACKROOM_PG_USER" not in env
    raw_env = compose_service(service)["environment"]
    password = required_variable(raw_env["BACKROOM_PG_PASSWORD"])
    assert password == f"BACKROOM_PG_PASSWORD_{service.upper()}"
    assert required_variable(compose_service("postgres")["environment"][password]) == password
    raw = compose()["x-backroom-env"]
    assert (
        compose_service(service)["environment"]["BACKROOM_JWT_SECRET"]
        == (raw["BACKROOM_JWT_SECRET"])
    ), "every service verifies tokens with the same secret"

    depends = compose_service(service)["depends_on"]
    assert depends["kafka"]["condition"] == "service_healthy"
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_compose_wires_orders_to_pricing_and_notifications_to_the_smtp_sink() -> None:
    host, port = host_port(compose_env("orders")["BACKROOM_PRICING_URL"])
    assert (host, port) == ("pricing", compose_http_port("pricing"))
    assert "BACKROOM_PRICING_URL" in service_env("orders")

    env = compose_env("notifications")
    assert {"BACKROOM_SMTP_HOST", "BACKROOM_SMTP_PORT"} <= service_env("notifications")
    assert env["BACKROOM_SMTP_HOST"] == "smtp"
    sink = compose_service("smtp")
    argv = [*sink["entrypoint"], *sink["command"]]
    assert "deploy/local/smtp_sink.py" in argv and (ROOT / "deploy/local/smtp_sink.py").is_file()
    assert argv[argv.index("--port") + 1] == env["BACKROOM_SMTP_PORT"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"


COMPOSE_STRIPE = ROOT / "deploy" / "compose" / "stripe.yml"
STRIPE_SECRETS = ("BACKROOM_STRIPE_API_KEY", "BACKROOM_STRIPE_WEBHOOK_SECRET")


def test_compose_runs_payments_on_the_sandbox_and_stripe_only_with_its_override() -> None:
    """docker-compose.yml starts without any Stripe setting (the sandbox, the default); the
    override deploy/compose/stripe.yml switches to Stripe and requires both secrets."""
    base = compose_env("payments")
    assert not [name for name in base if "STRIPE" in name or "PAYMENT_PROVIDER" in name]
    override = yaml.safe_load(COMPOSE_STRIPE.read_text())
    assert set(override["services"]) == {"payments"}
    env = override["services"]["payments"]["environment"]
    assert env["BACKROOM_PAYMENT_PROVIDER"] == "stripe"
    for name in STRIPE_SECRETS:
        assert required_variable(env[name]) == name, f"{name} must be the operator's, no default"
    assert not unknown_env(set(env), service_env("payments"))
    assert "deploy/compose/stripe.yml" in (ROOT / "deploy" / "compose" / "README.md").read_text()


def test_k8s_payments_reads_stripe_from_an_optional_secret_and_defaults_to_the_sandbox() -> None:
    container = main_container(k8s_one("Deployment", "payments"))
    env = {e["name"]: e for e in container["env"]}
    assert env["BACKROOM_PAYMENT_PROVIDER"]["value"] == "sandbox"
    for name in STRIPE_SECRETS:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "backroom-stripe", "key": name, "optional": True}
    readme = (K8S_DIR / "README.md").read_text()
    (create,) = [line for line in readme.splitlines() if "secret generic backroom-stripe" in line]
    assert set(re.findall(r"--from-literal=(\w+)=", create)) == set(STRIPE_SECRETS)


def test_compose_migrate_creates_topics_then_migrates_every_database() -> None:
    spec = compose_service("migrate")
    assert spec["image"] == backroom_image()
    assert spec["entrypoint"] == ["sh", "-c"]
    (script,) = spec["command"]
    commands = [argv[1] for argv in backroom_chain(script)]
    assert commands == ["topics", "migrate"]
    assert spec["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert spec["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_postgres_creates_one_role_owned_database_per_service() -> None:
    spec = compose_service("postgres")
    assert spec["image"].startswith("postgres:15")
    init = [v for v in spec["volumes"] if "/docker-entrypoint-initdb.d/" in v]
    assert len(init) == 1
    script = (ROOT / init[0].split(":")[0]).read_text()
    loop = re.search(r"(?m)^for svc in ([\w ]+); do", script)
    assert loop and loop.group(1).split() == list(SERVICES)
    for statement in (
        "CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L",
        "CREATE DATABASE %I OWNER %I",
        "REVOKE ALL ON DATABASE %I FROM PUBLIC",
    ):
        assert statement in script
    assert "${!var:?" in script, "a role's password is required, never defaulted"
    env = compose_service("postgres")["environment"]
    assert required_variable(env["POSTGRES_PASSWORD"]) == "POSTGRES_PASSWORD"
    for name in MIGRATE_ROLE_PASSWORDS:
        assert required_variable(env[name]) == name
    assert "pg_isready" in " ".join(spec["healthcheck"]["test"])


def test_compose_migrate_has_every_role_password_and_no_superuser() -> None:
    env = compose_service("migrate")["environment"]
    assert {"BACKROOM_PG_USER", "BACKROOM_PG_PASSWORD"}.isdisjoint(env)
    for name in MIGRATE_ROLE_PASSWORDS:
        assert required_variable(env[name]) == name


def test_compose_kafka_is_a_single_kraft_node_of_the_local_version() -> None:
    spec = compose_service("kafka")
    env = compose_env("kafka")
    local = re.search(
        r"(?m)^KAFKA_VERSION=(\d+\.\d+)\.", (ROOT / "deploy/local/kafka/lib.sh").read_text()
    )
    assert local, "deploy/local/kafka/lib.sh pins KAFKA_VERSION"
    assert spec["image"].startswith(f"apache/kafka:{local.group(1)}.")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    node_id = env["KAFKA_NODE_ID"]
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1 and voters[0].startswith(f"{node_id}@kafka:")
    voter_port = voters[0].rsplit(":", 1)[1]
    assert f"{controller}://:{voter_port}" in env["KAFKA_LISTENERS"]
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    for listener in env["KAFKA_LISTENERS"].split(","):
        assert listener.split(":")[0] in protocols, f"{listener} has no security protocol"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", f"{key} must be 1 on a single node"
    assert "healthcheck" in spec


def test_compose_gateway_is_nginx_with_the_compose_config_on_8000() -> None:
    spec = compose_service("gateway")
    assert spec["image"].startswith("nginx:1.27")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in spec["volumes"]}
    assert (ROOT / mounts["/etc/nginx/nginx.conf"]).resolve() == COMPOSE_NGINX
    assert container_ports("gateway") == {8000}
    _, _, listens = nginx_routes(COMPOSE_NGINX)
    assert [listen.rsplit(":", 1)[-1] for listen in listens] == ["8000"]
    for service in SERVICES:
        assert spec["depends_on"][service]["condition"] == "service_healthy"


# =================================================================================================
# Gateway configs (compose and k8s): exactly the six prefixes, prefix kept, right host and port
# =================================================================================================


@pytest.mark.parametrize("where", sorted(GATEWAY_CONFIGS))
def test_gateway_routes_exactly_the_six_prefixes_to_their_service(where: str) -> None:
    path, port_of = GATEWAY_CONFIGS[where]
    locations, upstreams, _ = nginx_routes(path)
    assert set(locations) == set(GATEWAY_PREFIXES)
    for prefix, service in GATEWAY_PREFIXES.items():
        target = re.fullmatch(r"http://(\w+)", locations[prefix])
        assert target, f"proxy_pass for {prefix} must have no URI part (the prefix is kept)"
        servers = upstreams[target.group(1)]
        assert servers == [f"{service}:{port_of(service)}"], f"{where}: upstream of {prefix}"


def test_gateway_configs_keep_the_local_gateways_routes() -> None:
    local, _, _ = nginx_routes(LOCAL_NGINX_TEMPLATE)
    for path, _ in GATEWAY_CONFIGS.values():
        routes, _, _ = nginx_routes(path)
        assert set(routes) == set(local), path


@pytest.mark.parametrize("where", sorted(GATEWAY_CONFIGS))
def test_gateway_configs_carry_the_local_gateways_limits(where: str) -> None:
    """Issue 9, item 7: the same rate-limit zones (keys and rates at nginx.sh's defaults), the
    same limit_req / body size / CORS headers per route, the same key maps (credential hash,
    checkout POSTs, preflight), in compose and k8s as under `make run`."""
    local = nginx_limits(rendered_local_template())
    deployed = nginx_limits(GATEWAY_CONFIGS[where][0].read_text())
    assert deployed["zones"] == local["zones"]
    assert deployed["scopes"] == local["scopes"]
    assert deployed["maps"] == local["maps"]


def test_local_gateway_limits_are_tight_on_checkout_and_never_trust_by_default() -> None:
    limits = nginx_limits(rendered_local_template())
    defaults = local_gateway_defaults()
    zones, scopes = limits["zones"], limits["scopes"]
    for route, prefix in (("= /orders", "orders"), ("= /pricing/quotes", "quotes")):
        applied = set(re.findall(r"zone=(\w+)", " ".join(scopes[route])))
        assert applied == {f"{prefix}_client", f"{prefix}_address", "api_client", "api_address"}
        assert f"client_max_body_size {defaults['GATEWAY_CHECKOUT_BODY_KB']}k" in scopes[route]
        assert zones[f"{prefix}_client"] == ("$backroom_checkout_credential", "2r/s")
        assert zones[f"{prefix}_address"] == ("$backroom_checkout_address", "30r/s")
    assert zones["api_client"][0] == "$backroom_credential"
    assert zones["api_address"][0] == "$binary_remote_addr"
    # Checkout is tighter than the rest, per credential and per address.
    assert int(defaults["GATEWAY_CHECKOUT_CLIENT_RATE"]) < int(defaults["GATEWAY_CLIENT_RATE"])
    assert int(defaults["GATEWAY_CHECKOUT_ADDRESS_RATE"]) < int(defaults["GATEWAY_ADDRESS_RATE"])
    # Thirty customers of one office buying at once fit the per-address burst.
    assert int(defaults["GATEWAY_CHECKOUT_ADDRESS_BURST"]) >= 30
    assert defaults["GATEWAY_TRUSTED_PROXIES"] == "" and defaults["GATEWAY_CORS_ORIGINS"] == ""
    # The token is never logged: no log format names the Authorization header.
    for fmt in re.findall(r"log_format\s+\w+\s+([^;]*);", LOCAL_NGINX_TEMPLATE.read_text()):
        assert "authorization" not in fmt.lower() and "backroom_credential" not in fmt
    for path in (LOCAL_NGINX_TEMPLATE, COMPOSE_NGINX, K8S_NGINX):
        text = re.sub(r"(?m)(^|\s)#.*$", "", path.read_text())
        assert "set_real_ip_from" not in text.replace("{{REAL_IP}}", ""), path
        assert "Access-Control-Allow-Origin *" not in text and "Allow-Credentials" not in text


@pytest.mark.skipif(shutil.which("nginx") is None, reason="no nginx binary here")
@pytest.mark.parametrize("where", sorted(GATEWAY_CONFIGS))
def test_gateway_config_passes_nginx_t(where: str, tmp_path: Path) -> None:
    """nginx -t on the config, with the service names pointed at 127.0.0.1 (they resolve only in
    compose or the cluster), files moved under tmp_path, and `resolve` dropped for an nginx
    older than 1.27.3."""
    text = GATEWAY_CONFIGS[where][0].read_text()
    text = re.sub(r"(?m)^\s*(pid|\w+_temp_path)\s.*$", "", text)
    text = re.sub(r"(server\s+)\w+(:\d+)(\s+resolve)?;", r"\g<1>127.0.0.1\2;", text)
    text = text.replace("/dev/stderr", str(tmp_path / "error.log"))
    text = text.replace("/dev/stdout", str(tmp_path / "access.log"))
    text = f"pid {tmp_path}/nginx.pid;\n" + text.replace(
        "http {",
        "http {\n"
        + "".join(f"    {k}_temp_path {tmp_path}/{k};\n" for k in ("client_body", "proxy"))
        + "".join(f"    {k}_temp_path {tmp_path}/{k};\n" for k in ("fastcgi", "uwsgi", "scgi")),
        1,
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    result = subprocess.run(
        ["nginx", "-t", "-p", f"{tmp_path}/", "-c", str(conf), "-e", str(tmp_path / "e.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


# =================================================================================================
# deploy/k8s
# =================================================================================================


def test_kustomization_lists_every_manifest_and_generates_the_gateway_config() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    # The Strimzi KafkaUsers belong in the Kafka cluster's namespace: applied apart.
    assert KAFKA_USERS.name in on_disk and KAFKA_USERS.name not in listed
    assert listed == on_disk - {KAFKA_USERS.name}
    assert kustomization()["namespace"] == "backroom"
    generated = {g["name"]: g for g in kustomization()["configMapGenerator"]}
    files = dict(f.split("=", 1) for f in generated["gateway-nginx"]["files"])
    assert (K8S_DIR / files["nginx.conf"]).resolve() == K8S_NGINX


def test_k8s_objects_live_in_the_backroom_namespace() -> None:
    assert "backroom" in k8s_all("Namespace")
    for obj in k8s_objects():
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "backroom", obj["metadata"]["name"]


def test_k8s_deploys_the_six_services_and_the_gateway() -> None:
    assert set(k8s_all("Deployment")) == set(SERVICES) | {K8S_GATEWAY, "prometheus"}


def test_k8s_shared_config_and_secret_are_kit_settings() -> None:
    config = k8s_one("ConfigMap", "backroom-config")["data"]
    secret = operator_secret_keys()
    assert not unknown_env(set(config) | secret, KIT_ENV)
    assert all(name.startswith(ENV_PREFIX) for name in set(config) | secret)
    assert config["BACKROOM_TOPIC_REPLICATION"] == "3"
    for key in ("BACKROOM_KAFKA_BOOTSTRAP", "BACKROOM_PG_HOST"):
        host = host_port(config[key])[0] if ":" in config[key] else config[key]
        assert host not in ("127.0.0.1", "localhost"), f"{key} must name the provided service"
    assert "BACKROOM_PG_PASSWORD" not in secret, "each service has its own password Secret"
    assert pg_secret_keys(f"{PG_SECRET_PREFIX}orders") == {"BACKROOM_PG_PASSWORD"}
    assert not {"BACKROOM_JWT_SECRET", "BACKROOM_PG_PASSWORD", "BACKROOM_PG_USER"} & set(config)


# =================================================================================================
# No secret value is committed (issue 9, finding 1): compose and k8s make the operator provide it
# =================================================================================================

SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|PRIVATE|_KEY\b")


def deploy_texts() -> dict[str, str]:
    paths = [COMPOSE_FILE, ROOT / "Dockerfile", ROOT / "libs" / "kit" / "settings.py"]
    paths += [p for p in (ROOT / "deploy").rglob("*") if p.is_file() and p.suffix != ".jar"]
    return {str(p.relative_to(ROOT)): p.read_text(errors="replace") for p in paths}


def test_no_secret_once_written_in_the_repository_is_left_in_settings_or_deploy_files() -> None:
    for path, text in deploy_texts().items():
        for secret in REPOSITORY_SECRETS:
            assert secret not in text, f"{path} still carries a committed secret"


def test_compose_requires_the_operator_to_provide_the_jwt_secret() -> None:
    shared = compose()["x-backroom-env"]
    assert required_variable(shared["BACKROOM_JWT_SECRET"]) == "BACKROOM_JWT_SECRET"
    assert shared["BACKROOM_ENV"] == "dev", "HS256 is accepted only in development mode"
    for service in [*SERVICES, "migrate"]:
        env = compose_service(service).get("environment") or {}
        for name, value in env.items():
            if "JWT_SECRET" in name:
                assert required_variable(value) == name, f"{service}: {name} has a default"
    assert "openssl rand" in (ROOT / "deploy" / "compose" / "README.md").read_text()


def test_k8s_applies_no_secret_and_documents_how_to_create_it() -> None:
    assert not k8s_all("Secret"), "the kustomization must not apply a (placeholder) Secret"
    for path in K8S_DIR.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert not (doc and doc.get("kind") == "Secret"), f"{path} holds a Secret"
    for obj in k8s_objects():
        for container in (
            [
                *pod_spec(obj).get("initContainers", []),
                *pod_spec(obj).get("containers", []),
            ]
            if obj["kind"] in ("Deployment", "Job")
            else []
        ):
            for name, value in explicit_env(container).items():
                assert not (SECRET_NAME.search(name) and value), f"{name} has a committed value"
    config = k8s_one("ConfigMap", "backroom-config")["data"]
    assert not [name for name in config if SECRET_NAME.search(name)]
    trial = [c for c in operator_secret_commands() if "BACKROOM_JWT_SECRET" in c]
    assert trial and all('"$(openssl rand -hex 32)"' in c for c in trial)
    readme = (K8S_DIR / "README.md").read_text()
    assert f"create secret generic {OPERATOR_SECRET}" in readme and "openssl rand" in readme


def test_k8s_services_need_an_identity_provider_configured() -> None:
    """Outside development mode the services refuse to start without JWKS URL, issuer and
    audience: the ConfigMap names them, empty, for the operator to fill in."""
    config = k8s_one("ConfigMap", "backroom-config")["data"]
    for name in ("BACKROOM_JWKS_URL", "BACKROOM_JWT_ISSUER", "BACKROOM_JWT_AUDIENCE"):
        assert name in KIT_ENV and config.get(name) == "", name
    assert config.get("BACKROOM_ENV", "production") != "dev"


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_env_names_are_settings_fields(service: str) -> None:
    deployment = k8s_one("Deployment", service)
    for container in pod_spec(deployment).get("initContainers", []):
        assert not unknown_env(set(env_sources(container)), KIT_ENV)
    names = set(env_sources(main_container(deployment)))
    assert not unknown_env(names, service_env(service))


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_deployment_runs_the_service_safely_with_probes(service: str) -> None:
    deployment = k8s_one("Deployment", service)
    assert deployment["spec"]["replicas"] == SCALED_OUT.get(service, 1)
    container = main_container(deployment)
    assert container["image"].split(":")[0] == "backroom", "the image kustomization.yaml sets"
    assert "command" not in container, "the image's entrypoint is `backroom`"
    assert container["args"] == ["serve", service]
    assert parse_cli(container["args"]).service == service

    env = explicit_env(container)
    port = k8s_http_port(service)
    assert env.get("BACKROOM_HTTP_HOST") == "0.0.0.0"
    assert "BACKROOM_HTTP_PORT" in env
    for probe, path in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live")):
        check = container[probe]["httpGet"]
        assert check["path"] == path, f"{service} {probe}"
        assert container_port(container, check["port"]) == port

    resources = container["resources"]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[bound]), f"{service} resources.{bound}"
    pod_security = pod_spec(deployment)["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security.get("runAsUser", 10001) != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_service_selects_its_deployment_on_the_settings_port(service: str) -> None:
    deployment = k8s_one("Deployment", service)
    svc = k8s_one("Service", service)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    selector = svc["spec"]["selector"]
    chosen = [
        name
        for name, other in k8s_all("Deployment").items()
        if selects(selector, other["spec"]["template"]["metadata"]["labels"])
    ]
    assert chosen == [service], f"Service {service} selects {chosen}"
    http = service_port(svc, "http")
    assert container_port(main_container(deployment), http["targetPort"]) == k8s_http_port(service)


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_init_container_migrates_its_own_schema(service: str) -> None:
    """Only its schema: the topics and ACLs need Kafka's admin (the migrate Job), and the
    service creates those it writes itself when it starts."""
    (init,) = pod_spec(k8s_one("Deployment", service))["initContainers"]
    assert "command" not in init, "the image's entrypoint is `backroom`"
    assert init["args"] == ["migrate", service]
    assert parse_cli(init["args"]).services == [service]


def test_k8s_orders_and_notifications_reach_their_dependencies() -> None:
    orders = explicit_env(main_container(k8s_one("Deployment", "orders")))
    host, port = host_port(orders["BACKROOM_PRICING_URL"])
    assert host == "pricing"
    assert port == service_port(k8s_one("Service", "pricing"), port)["port"]
    notifications = explicit_env(main_container(k8s_one("Deployment", "notifications")))
    assert notifications["BACKROOM_SMTP_HOST"] not in ("127.0.0.1", "localhost")


def test_k8s_migration_job_creates_topics_then_migrates_every_database() -> None:
    (job,) = k8s_all("Job").values()
    (container,) = pod_spec(job)["containers"]
    assert container["command"] == ["sh", "-c"]
    assert [argv[1:] for argv in backroom_chain(container["args"][0])] == [["topics"], ["migrate"]]
    assert not unknown_env(set(env_sources(container)), KIT_ENV | MIGRATE_ROLE_PASSWORDS)
    assert pod_spec(job)["securityContext"]["runAsNonRoot"] is True
    # Each service migrated as its own role: every role's password, from its own Secret.
    passwords = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e
    }
    assert set(passwords) == MIGRATE_ROLE_PASSWORDS
    for name, ref in passwords.items():
        service = name.removeprefix("BACKROOM_PG_PASSWORD_").lower()
        assert ref == {"name": f"{PG_SECRET_PREFIX}{service}", "key": "BACKROOM_PG_PASSWORD"}


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_service_connects_as_its_own_role_with_only_its_password(service: str) -> None:
    deployment = k8s_one("Deployment", service)
    (init,) = pod_spec(deployment)["initContainers"]
    main = main_container(deployment)
    own = [OPERATOR_SECRET, f"{PG_SECRET_PREFIX}{service}"]
    for container, secrets in ((init, own), (main, [*own, f"{KAFKA_SECRET_PREFIX}{service}"])):
        refs = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
        assert refs == secrets, container["name"]
        env = env_sources(container)
        assert "BACKROOM_PG_USER" not in env, "the role defaults to the service's name"
        assert "BACKROOM_PG_PASSWORD" in env
        assert not MIGRATE_ROLE_PASSWORDS & set(env), "no other service's password"
    assert ServiceSettings(service_name=service, pg_password="x").pg_user == service


def test_k8s_documents_creating_the_roles_without_superuser() -> None:
    sql = (K8S_DIR / "postgres-roles.sql").read_text()
    assert "NOSUPERUSER NOCREATEDB NOCREATEROLE" in sql
    assert "CREATE DATABASE %I OWNER %I" in sql and "REVOKE ALL ON DATABASE" in sql
    readme = (K8S_DIR / "README.md").read_text()
    assert "## Database roles" in readme and "postgres-roles.sql" in readme


def test_k8s_gateway_serves_its_generated_config_on_the_nginx_listen_port() -> None:
    deployment = k8s_one("Deployment", K8S_GATEWAY)
    container = main_container(deployment)
    assert container["image"].startswith("nginx:1.27")
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    config_volume = next(v for v in volumes.values() if "configMap" in v)
    assert config_volume["configMap"]["name"] == "gateway-nginx"
    mount = next(m for m in container["volumeMounts"] if m["name"] == config_volume["name"])
    assert container["command"][:3] == ["nginx", "-c", f"{mount['mountPath']}/nginx.conf"]
    _, _, listens = nginx_routes(K8S_NGINX)
    assert [int(listen.rsplit(":", 1)[-1]) for listen in listens] == [
        container_port(container, "http")
    ]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    assert pod_spec(deployment)["securityContext"]["runAsNonRoot"] is True
    svc = k8s_one("Service", K8S_GATEWAY)
    assert selects(svc["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])


def test_k8s_ingress_routes_the_six_prefixes_to_the_gateway() -> None:
    (ingress,) = k8s_all("Ingress").values()
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert sorted(p["path"] for p in paths) == sorted(GATEWAY_PREFIXES)
    gateway = k8s_one("Service", K8S_GATEWAY)
    for path in paths:
        assert path["pathType"] == "Prefix"
        backend = path["backend"]["service"]
        assert backend["name"] == K8S_GATEWAY
        service_port(gateway, backend["port"].get("name") or backend["port"].get("number"))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl here")
def test_k8s_kustomization_builds() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    config_maps = [d["metadata"]["name"] for d in built if d["kind"] == "ConfigMap"]
    generated = [name for name in config_maps if name.startswith("gateway-nginx-")]
    assert len(generated) == 1, config_maps
    (gateway,) = (
        d for d in built if d["kind"] == "Deployment" and d["metadata"]["name"] == "gateway"
    )
    mounted = [v["configMap"]["name"] for v in pod_spec(gateway)["volumes"] if "configMap" in v]
    assert mounted == generated, "the gateway mounts the generated (hash-named) ConfigMap"
    assert {d["metadata"].get("namespace", "backroom") for d in built} == {"backroom"}


# =================================================================================================
# Kafka principals and ACLs (ADR 0007): every client authenticates as its own principal, the
# brokers deny what no ACL allows, and no password is committed
# =================================================================================================

KAFKA_PASSWORD_VAR = "BACKROOM_KAFKA_PASSWORD_{}"
# The security settings the compose broker shares with the local brokers' template.
BROKER_SECURITY = (
    "sasl.enabled.mechanisms",
    "sasl.mechanism.inter.broker.protocol",
    "sasl.mechanism.controller.protocol",
    "listener.name.controller.sasl.enabled.mechanisms",
    "authorizer.class.name",
    "super.users",
    "allow.everyone.if.no.acl.found",
    "auto.create.topics.enable",
)


def kafka_password_var(principal: str) -> str:
    """The operator's variable holding a principal's password (compose)."""
    return KAFKA_PASSWORD_VAR.format(principal.upper())


def dummy_password(principal: str) -> str:
    return f"{principal}-test-password-0123456789"


def backroom_settings(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **fields: Any
) -> ServiceSettings:
    """The settings a process with exactly this BACKROOM_* environment gets (secret values the
    operator provides are filled with a dummy). Nothing of the test process leaks in."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith(ENV_PREFIX):
            filled = value or ("x" * 40 if SECRET_NAME.search(name) else value)
            monkeypatch.setenv(name, filled)
    return ServiceSettings(**fields)


def properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#")
    return {key.strip(): value.strip() for key, value in pairs}


def script_array(path: Path, name: str) -> list[str]:
    found = re.search(rf"(?m)^{name}=\(([^)]*)\)", path.read_text())
    assert found, f"{path} defines no {name}=(...)"
    return found.group(1).split()


def compose_kafka_environment(**overrides: str) -> dict[str, str]:
    """The kafka container's environment as compose gives it, with every principal's password
    (which the operator provides) set to a dummy."""
    env = compose_env("kafka")
    for principal in PRINCIPALS:
        env[kafka_password_var(principal)] = dummy_password(principal)
    return {"PATH": os.environ["PATH"], **env, **overrides}


def run_kafka_start(
    env: dict[str, str], *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(KAFKA_START), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def render_compose_kafka(tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(server.properties, admin.properties) as kafka-start.sh renders them in the container."""
    env = compose_kafka_environment(KF_CONFIG_DIR=str(tmp_path))
    result = run_kafka_start(env, "--render-only")
    assert result.returncode == 0, result.stderr
    server = (tmp_path / "server.properties").read_text()
    admin = (tmp_path / "admin.properties").read_text()
    for path in (tmp_path / "server.properties", tmp_path / "admin.properties"):
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} holds the admin password"
    return properties(server), properties(admin)


def kafka_start_default(name: str) -> str:
    """A path default of kafka-start.sh (`NAME=${NAME:-default}`), with $KF_HOME expanded."""
    text = KAFKA_START.read_text()
    defaults: dict[str, str] = dict(re.findall(r"(?m)^(KF_\w+)=\$\{\1:-([^}]*)\}", text))
    return defaults[name].replace("$KF_HOME", defaults["KF_HOME"])


# --- compose ---------------------------------------------------------------------------------


def test_compose_kafka_formats_a_credential_for_every_principal() -> None:
    """The storage is formatted with one SCRAM credential per principal of the model, each
    password the operator's BACKROOM_KAFKA_PASSWORD_<PRINCIPAL> (required: no default)."""
    spec = compose_service("kafka")
    raw = spec["environment"]
    passwords = {name for name in raw if name.startswith(KAFKA_PASSWORD_VAR.format(""))}
    assert passwords == {kafka_password_var(p) for p in PRINCIPALS}
    for name in passwords:
        assert required_variable(raw[name]) == name, f"{name} must have no default"
    assert script_array(KAFKA_START, "PRINCIPALS") == list(PRINCIPALS)
    local_lib = ROOT / "deploy" / "local" / "kafka" / "lib.sh"
    assert script_array(local_lib, "KAFKA_PRINCIPALS") == list(PRINCIPALS)
    script = KAFKA_START.read_text()
    assert "--add-scram" in script and "--ignore-formatted" in script
    # The container runs the script compose mounts, from this repository.
    mounts = {
        target: source
        for source, target, *_ in (str(v).split(":") for v in spec["volumes"])
        if source.startswith("./")
    }
    assert spec["entrypoint"][0] == "bash"
    assert (ROOT / mounts[spec["entrypoint"][1]]).resolve() == KAFKA_START
    home = kafka_start_default("KF_HOME")
    assert home == "/opt/kafka", "the apache/kafka image's installation"


def test_compose_kafka_listeners_all_authenticate_and_deny_by_default(tmp_path: Path) -> None:
    server, admin = render_compose_kafka(tmp_path)
    protocols = dict(p.split(":") for p in server["listener.security.protocol.map"].split(","))
    listeners = [entry.split("://")[0] for entry in server["listeners"].split(",")]
    assert set(listeners) == set(protocols)
    for listener in listeners:
        assert protocols[listener].startswith("SASL_"), f"{listener} does not authenticate"
    (controller,) = server["controller.listener.names"].split(",")
    admin_password = dummy_password(KAFKA_ADMIN)
    for listener in listeners:
        name = listener.lower()
        if listener == controller:
            jaas = server[f"listener.name.{name}.plain.sasl.jaas.config"]
            assert f'user_{KAFKA_ADMIN}="{admin_password}"' in jaas, "admin is the one PLAIN user"
        else:
            jaas = server[f"listener.name.{name}.scram-sha-256.sasl.jaas.config"]
        assert f'username="{KAFKA_ADMIN}" password="{admin_password}"' in jaas
    assert server["inter.broker.listener.name"] != controller
    assert server["authorizer.class.name"].endswith(".StandardAuthorizer")
    assert server["super.users"] == f"User:{KAFKA_ADMIN}"
    assert server["allow.everyone.if.no.acl.found"] == "false"
    assert server["auto.create.topics.enable"] == "false"
    # Like the local brokers, setting for setting, JAAS strings included.
    local = properties(LOCAL_KAFKA_TEMPLATE.read_text().replace("@ADMIN_PASSWORD@", admin_password))
    for key in BROKER_SECURITY:
        assert server[key] == local[key], key
    for key in (k for k in local if k.endswith(".sasl.jaas.config")):
        assert server[key] == local[key], key
    # The healthcheck logs in with the admin settings the script writes.
    assert admin["security.protocol"] == "SASL_PLAINTEXT"
    assert admin["sasl.mechanism"] == server["sasl.mechanism.inter.broker.protocol"]
    assert f'username="{KAFKA_ADMIN}" password="{admin_password}"' in admin["sasl.jaas.config"]
    check = " ".join(compose_service("kafka")["healthcheck"]["test"])
    assert f"--command-config {kafka_start_default('KF_CONFIG_DIR')}/admin.properties" in check
    advertised = [e.split("://")[0] for e in server["advertised.listeners"].split(",")]
    assert "HOST" in advertised and protocols["HOST"].startswith("SASL_")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BACKROOM_KAFKA_PASSWORD_SUBSCRIBER", ""),
        ("BACKROOM_KAFKA_PASSWORD_ADMIN", 'abc"def0123456789xyz'),
        ("BACKROOM_KAFKA_PASSWORD_ORDERS", "short"),
        ("BACKROOM_KAFKA_PASSWORD_PAYMENTS", "0123456789abcdef,name=admin"),
    ],
)
def test_compose_kafka_start_refuses_a_missing_or_unsafe_password(
    variable: str, value: str, tmp_path: Path
) -> None:
    env = compose_kafka_environment(KF_CONFIG_DIR=str(tmp_path))
    env[variable] = value
    result = run_kafka_start(env, "--render-only")
    assert result.returncode != 0 and variable in result.stderr
    assert not (tmp_path / "server.properties").exists()


def cached_kafka_lib() -> Path | None:
    """The broker jars deploy/local/kafka.sh fetched (None when this machine has none)."""
    version = re.search(
        r"(?m)^KAFKA_VERSION=([\d.]+)", (ROOT / "deploy/local/kafka/lib.sh").read_text()
    )
    assert version
    cache = Path(os.environ.get("BACKROOM_CACHE", Path.home() / ".cache" / "backroom"))
    lib = cache / f"kafka-{version.group(1)}" / "lib"
    return lib if (lib / f"kafka_2.13-{version.group(1)}.jar").is_file() else None


@pytest.mark.skipif(
    shutil.which("java") is None or cached_kafka_lib() is None,
    reason="no java or no cached Kafka jars (deploy/local/kafka.sh fetch)",
)
def test_compose_kafka_start_formats_the_storage_once_with_every_principal(
    tmp_path: Path,
) -> None:
    """kafka-start.sh against the real StorageTool (the local jars standing in for the image's
    /opt/kafka): the rendered config formats, every principal is in the bootstrap metadata,
    a restart keeps the storage, other passwords are refused."""
    home, data = tmp_path / "kafka", tmp_path / "data"
    (home / "bin").mkdir(parents=True)
    log4j = ROOT / "deploy" / "local" / "kafka" / "log4j2.properties"
    storage = home / "bin" / "kafka-storage.sh"
    storage.write_text(
        "#!/usr/bin/env bash\n"
        f'exec java -Xmx256m -Dlog4j2.configurationFile={log4j} -cp "{cached_kafka_lib()}/*"'
        ' kafka.tools.StorageTool "$@"\n'
    )
    start = home / "bin" / "kafka-server-start.sh"
    start.write_text('#!/usr/bin/env bash\necho "broker started with $1"\n')
    for script in (storage, start):
        script.chmod(0o755)
    env = compose_kafka_environment(
        KF_HOME=str(home), KF_CONFIG_DIR=str(tmp_path / "config"), KAFKA_LOG_DIRS=str(data)
    )

    first = run_kafka_start(env, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "formatted" in first.stdout and "broker started with" in first.stdout
    assert "storedKey" not in first.stdout + first.stderr, "SCRAM keys are not logged"
    meta = properties((data / "meta.properties").read_text())
    assert meta["cluster.id"] == compose_env("kafka")["CLUSTER_ID"]
    metadata = (data / "bootstrap.checkpoint").read_bytes()
    for principal in PRINCIPALS:
        assert principal.encode() in metadata, f"no SCRAM credential for {principal}"

    again = run_kafka_start(env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "formatted" not in again.stdout and "broker started with" in again.stdout

    changed = run_kafka_start({**env, kafka_password_var("orders"): "another-password-0123456789"})
    assert changed.returncode != 0 and "docker compose down -v" in changed.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_compose_service_logs_in_to_kafka_as_itself(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = compose_service(service)["environment"]
    env = compose_env(service)
    assert env["BACKROOM_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert "BACKROOM_KAFKA_USERNAME" not in env, "the principal defaults to the service's name"
    # Its own password, the one the broker formatted its principal with: no other service's.
    variable = required_variable(raw["BACKROOM_KAFKA_PASSWORD"])
    assert variable == kafka_password_var(service)
    assert required_variable(compose_service("kafka")["environment"][variable]) == variable
    assert not [name for name in raw if name.startswith(KAFKA_PASSWORD_VAR.format(""))]

    env["BACKROOM_KAFKA_PASSWORD"] = dummy_password(service)
    kafka = KafkaConnection.from_settings(backroom_settings(monkeypatch, env, service_name=service))
    broker = compose_env("kafka")
    assert (kafka.username, kafka.password) == (service, dummy_password(service))
    assert kafka.uses_sasl and not kafka.uses_tls
    assert kafka.sasl_mechanism in broker["KAFKA_SASL_ENABLED_MECHANISMS"].split(",")


def test_compose_migrate_creates_topics_and_acls_as_the_kafka_admin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = compose_service("migrate")["environment"]
    env = compose_env("migrate")
    assert env["BACKROOM_KAFKA_USERNAME"] == KAFKA_ADMIN
    variable = required_variable(raw["BACKROOM_KAFKA_PASSWORD"])
    assert variable == kafka_password_var(KAFKA_ADMIN)
    topics = backroom_chain(compose_service("migrate")["command"][0])[0]
    assert parse_cli(topics[1:]).no_acls is False, "compose's broker gets its ACLs from migrate"

    env["BACKROOM_KAFKA_PASSWORD"] = dummy_password(KAFKA_ADMIN)
    kafka = KafkaConnection.from_settings(backroom_settings(monkeypatch, env))
    assert (kafka.username, kafka.security_protocol) == (KAFKA_ADMIN, "SASL_PLAINTEXT")
    assert compose_env("kafka")["KAFKA_SUPER_USERS"] == f"User:{kafka.username}"


def test_compose_commits_no_secret_value() -> None:
    """Every password or secret in compose is the operator's ${VAR:?...}: no literal, no
    default. And no KAFKA_* broker setting carries one (kafka-start.sh adds the JAAS)."""
    for name, spec in compose()["services"].items():
        for variable, value in (spec.get("environment") or {}).items():
            if SECRET_NAME.search(variable):
                assert required_variable(value), f"{name}: {variable} has a committed value"
    for variable, value in compose_env("kafka").items():
        if variable.startswith("KAFKA_"):
            assert "password" not in value.lower() and "jaas" not in variable.lower(), variable


def test_no_password_literal_in_deploy_files() -> None:
    """A password in a deploy file is always a placeholder: a shell or compose variable, a
    template's @NAME@, a printf %s; YAML keys naming a password hold a variable or nothing."""
    assignment = re.compile(r"(?i)\b(?:password|user_\w+)=\\?\"?([^\"\s,;\]\\]*)")
    yaml_key = re.compile(r"(?im)^\s*-?\s*\w*password\w*:[ \t]*(\S.*)?$")
    for path, text in {**deploy_texts(), "README.md": (ROOT / "README.md").read_text()}.items():
        for value in assignment.findall(text):
            assert value[:1] in ("$", "@", "%", ""), f"{path}: password literal {value!r}"
        if path.endswith((".yml", ".yaml")):
            for value in yaml_key.findall(text):
                assert not value or value.startswith("${"), f"{path}: password value {value!r}"


# --- deploy/k8s --------------------------------------------------------------------------------


def kafka_workloads() -> dict[str, dict[str, Any]]:
    """The containers that talk to Kafka: each service's main container and the migrate Job."""
    containers = {svc: main_container(k8s_one("Deployment", svc)) for svc in SERVICES}
    (job,) = k8s_all("Job").values()
    (containers["migrate"],) = pod_spec(job)["containers"]
    return containers


def workload_of(name: str) -> dict[str, Any]:
    return next(iter(k8s_all("Job").values())) if name == "migrate" else k8s_one("Deployment", name)


def kafka_secrets(container: dict[str, Any]) -> list[str]:
    refs = [s["secretRef"]["name"] for s in container.get("envFrom") or [] if "secretRef" in s]
    refs += [
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in container.get("env") or []
        if "secretKeyRef" in e.get("valueFrom", {})
    ]
    return [name for name in refs if name.startswith(KAFKA_SECRET_PREFIX)]


def test_k8s_config_speaks_sasl_ssl_with_strimzis_mechanism() -> None:
    config = k8s_one("ConfigMap", "backroom-config")["data"]
    assert config["BACKROOM_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    users = kafka_users()
    kinds = {user["spec"]["authentication"]["type"] for user in users.values()}
    assert kinds == {"scram-sha-512"} and config["BACKROOM_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert not {"BACKROOM_KAFKA_USERNAME", "BACKROOM_KAFKA_PASSWORD"} & set(config)
    assert Path(config["BACKROOM_KAFKA_SSL_CAFILE"]).is_absolute()
    # The example bootstrap address is the Strimzi cluster the KafkaUsers name.
    host = host_port(config["BACKROOM_KAFKA_BOOTSTRAP"])[0]
    clusters = {user["metadata"]["labels"]["strimzi.io/cluster"] for user in users.values()}
    assert clusters == {host.split(".")[0].removesuffix("-kafka-bootstrap")}


@pytest.mark.parametrize("workload", [*SERVICES, "migrate"])
def test_k8s_kafka_clients_mount_the_brokers_ca(workload: str) -> None:
    container = kafka_workloads()[workload]
    cafile = Path(k8s_one("ConfigMap", "backroom-config")["data"]["BACKROOM_KAFKA_SSL_CAFILE"])
    volumes = {v["name"]: v for v in pod_spec(workload_of(workload))["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(cafile.parent)]
    assert mount.get("readOnly") is True
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"] == KAFKA_CA_SECRET
    kustomization_text = (K8S_DIR / "kustomization.yaml").read_text()
    assert f"--from-file={cafile.name}=" in kustomization_text, "documents the CA Secret's key"


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_service_logs_in_to_kafka_as_itself(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = k8s_one("Deployment", service)
    (init,) = pod_spec(deployment)["initContainers"]
    assert not kafka_secrets(init), "the init container only migrates: no Kafka password"
    container = main_container(deployment)
    assert kafka_secrets(container) == [f"{KAFKA_SECRET_PREFIX}{service}"], "its own, no other"
    env = env_sources(container)
    assert "BACKROOM_KAFKA_PASSWORD" in env and "BACKROOM_KAFKA_USERNAME" not in env
    kafka = KafkaConnection.from_settings(backroom_settings(monkeypatch, env, service_name=service))
    assert kafka.username == service
    assert (kafka.security_protocol, kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")


def test_k8s_migration_job_creates_topics_and_acls_as_the_kafka_admin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = kafka_workloads()["migrate"]
    assert kafka_secrets(container) == [f"{KAFKA_SECRET_PREFIX}{KAFKA_ADMIN}"]
    assert explicit_env(container)["BACKROOM_KAFKA_USERNAME"] == KAFKA_ADMIN
    topics = backroom_chain(container["args"][0])[0]
    assert topics[1] == "topics"
    kafka = KafkaConnection.from_settings(backroom_settings(monkeypatch, env_sources(container)))
    assert (kafka.username, kafka.security_protocol) == (KAFKA_ADMIN, "SASL_SSL")


def test_k8s_documents_creating_every_principals_kafka_secret() -> None:
    command = kafka_secret_command()
    loop = re.search(r"for p in ([\w ]+); do", command)
    assert loop and loop.group(1).split() == list(PRINCIPALS)
    assert kafka_secret_keys(f"{KAFKA_SECRET_PREFIX}orders") == {"BACKROOM_KAFKA_PASSWORD"}
    assert '"$(openssl rand -hex 24)"' in command
    # One password per principal, written to both namespaces (the KafkaUser reads Kafka's copy).
    assert re.search(r"for ns in backroom \w+; do", command)
    readme = (K8S_DIR / "README.md").read_text()
    assert command in readme, "the README gives the same command"
    assert f"create secret generic {KAFKA_CA_SECRET}" in readme


# --- deploy/k8s/kafka-users.yaml (Strimzi) ---------------------------------------------------

STRIMZI_RESOURCES = {"topic": Resource.TOPIC, "group": Resource.GROUP, "cluster": Resource.CLUSTER}
STRIMZI_PATTERNS = {"literal": Pattern.LITERAL, "prefix": Pattern.PREFIXED}
STRIMZI_PERMISSIONS = {"allow": Permission.ALLOW, "deny": Permission.DENY}
STRIMZI_OPERATIONS = {
    "Read": Operation.READ,
    "Write": Operation.WRITE,
    "Create": Operation.CREATE,
    "Describe": Operation.DESCRIBE,
    "IdempotentWrite": Operation.IDEMPOTENT_WRITE,
}


def kafka_users() -> dict[str, dict[str, Any]]:
    users: dict[str, dict[str, Any]] = {}
    for doc in yaml.safe_load_all(KAFKA_USERS.read_text()):
        assert doc["apiVersion"] == "kafka.strimzi.io/v1beta2" and doc["kind"] == "KafkaUser"
        name = doc["metadata"]["name"]
        assert name not in users, f"two KafkaUsers named {name}"
        users[name] = doc
    return users


def strimzi_acls(users: dict[str, dict[str, Any]]) -> list[Acl]:
    """Every ACL the KafkaUsers ask Strimzi's User Operator for, in the model's terms."""
    found: list[Acl] = []
    for name, user in users.items():
        authorization = user["spec"].get("authorization")
        if authorization is None:
            continue
        assert authorization["type"] == "simple"
        for rule in authorization["acls"]:
            resource = rule["resource"]
            kind = STRIMZI_RESOURCES[resource["type"]]
            if kind is Resource.CLUSTER:
                assert "name" not in resource, "the cluster resource has no name"
            target = strimzi.CLUSTER_RESOURCE if kind is Resource.CLUSTER else resource["name"]
            pattern = STRIMZI_PATTERNS[resource.get("patternType", "literal")]
            permission = STRIMZI_PERMISSIONS[rule.get("type", "allow")]
            assert rule.get("host", "*") == "*", "the model allows from any host"
            assert "operation" not in rule, "deprecated: operations"
            for operation in rule["operations"]:
                found.append(
                    Acl(name, kind, target, STRIMZI_OPERATIONS[operation], permission, pattern)
                )
    return found


def test_kafka_users_grant_exactly_the_acl_model() -> None:
    """Principal, resource type, name, pattern type, operation and allow/deny: the KafkaUsers
    and `backroom topics` (libs/kit/kafka_acl.py acls()) grant the same, each once."""
    granted = strimzi_acls(kafka_users())
    assert sorted(granted) == acls()
    assert {acl.permission for acl in granted} == set(Permission), "allows and denies"


def test_kafka_users_acl_comparison_catches_a_drift() -> None:
    """Not vacuous: one operation fewer, a deny turned allow, or an extra rule is a difference."""
    users = kafka_users()
    payments_rules = users["payments"]["spec"]["authorization"]["acls"]
    payments_rules[0]["operations"].pop()
    assert sorted(strimzi_acls(users)) != acls()
    users = kafka_users()
    subscriber_rules = users["subscriber"]["spec"]["authorization"]["acls"]
    next(r for r in subscriber_rules if r["type"] == "deny")["type"] = "allow"
    assert sorted(strimzi_acls(users)) != acls()
    users = kafka_users()
    users["orders"]["spec"]["authorization"]["acls"].append(
        {"resource": {"type": "topic", "name": "backroom.payments"}, "operations": ["Write"]}
    )
    assert sorted(strimzi_acls(users)) != acls()


def test_kafka_users_authenticate_every_principal_with_its_operators_secret() -> None:
    users = kafka_users()
    assert sorted(users) == sorted(PRINCIPALS)
    for name, user in users.items():
        assert "namespace" not in user["metadata"], "applied with -n <Kafka's namespace>"
        authentication = user["spec"]["authentication"]
        assert authentication["type"] == "scram-sha-512"
        assert set(authentication["password"]) == {"valueFrom"}, "never a committed password"
        assert authentication["password"]["valueFrom"]["secretKeyRef"] == {
            "name": f"{KAFKA_SECRET_PREFIX}{name}",
            "key": "BACKROOM_KAFKA_PASSWORD",
        }
        assert kafka_secret_keys(f"{KAFKA_SECRET_PREFIX}{name}") == {"BACKROOM_KAFKA_PASSWORD"}
    # admin: no ACLs, the super user (as on the compose and local brokers).
    assert "authorization" not in users[KAFKA_ADMIN]["spec"]
    readme = (K8S_DIR / "README.md").read_text()
    assert f"kubectl apply -n kafka -f {KAFKA_USERS.name}" in readme
    assert "backroom topics --no-acls" in readme and "superUsers" in readme


def test_kafka_users_file_is_what_the_generator_writes() -> None:
    """Regenerate after changing libs/kit/kafka_acl.py:
    .venv/bin/python -m tests.support.strimzi > deploy/k8s/kafka-users.yaml"""
    assert KAFKA_USERS.read_text() == strimzi.render()


# =================================================================================================
# Scale-out (issue 10): partitions per topic, and KEDA autoscaling on consumer lag
# =================================================================================================

AUTOSCALING = K8S_DIR / "autoscaling.yaml"
KEDA_API = "keda.sh/v1alpha1"
# Services that answer HTTP on a customer's path (POST /orders, pricing's quotes): their load
# shows as CPU before it shows as lag, so their ScaledObjects also scale on CPU.
HTTP_FACING = {"orders", "pricing"}
# KEDA's names for config.yaml's BACKROOM_KAFKA_SASL_MECHANISM.
KEDA_SASL = {"SCRAM-SHA-512": "scram_sha512", "SCRAM-SHA-256": "scram_sha256", "PLAIN": "plaintext"}
K8S_PARTITIONS = 12


def k8s_config() -> dict[str, str]:
    data: dict[str, str] = k8s_one("ConfigMap", "backroom-config")["data"]
    return data


def configured_partitions() -> int:
    return int(k8s_config()["BACKROOM_TOPIC_PARTITIONS"])


def kafka_triggers(scaled_object: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in scaled_object["spec"]["triggers"] if t["type"] == "kafka"]


def trigger_authentication(service: str) -> dict[str, Any]:
    """The one TriggerAuthentication every kafka trigger of a service's ScaledObject names."""
    refs = [
        t.get("authenticationRef") or {} for t in kafka_triggers(k8s_one("ScaledObject", service))
    ]
    assert refs and all(
        ref.get("kind", "TriggerAuthentication") == "TriggerAuthentication" for ref in refs
    )
    (name,) = {ref["name"] for ref in refs}
    return k8s_one("TriggerAuthentication", name)


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def ca_secret_of(deployment: dict[str, Any]) -> tuple[str, str]:
    """(Secret, key) the pods read BACKROOM_KAFKA_SSL_CAFILE from: the Secret volume mounted at
    its directory, the file name as the key."""
    cafile = Path(k8s_config()["BACKROOM_KAFKA_SSL_CAFILE"])
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    (mount,) = [
        m
        for m in main_container(deployment)["volumeMounts"]
        if m["mountPath"] == str(cafile.parent)
    ]
    return volumes[mount["name"]]["secret"]["secretName"], cafile.name


def test_k8s_topic_partitions_are_explicit_for_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cluster's count is set, not the default, so a trial cluster with BACKROOM_ENV=dev
    (backroom-secrets) gets it too, and every writer of topics agrees on it."""
    assert k8s_config()["BACKROOM_TOPIC_PARTITIONS"] == str(K8S_PARTITIONS)
    for name, container in kafka_workloads().items():
        env = env_sources(container)
        for mode in ("production", "dev"):
            settings = backroom_settings(monkeypatch, {**env, "BACKROOM_ENV": mode})
            assert settings.topic_partitions == K8S_PARTITIONS, (name, mode)


def test_compose_topic_partitions_match_its_single_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = compose()["x-backroom-env"]
    assert shared["BACKROOM_TOPIC_PARTITIONS"] == str(DEV_TOPIC_PARTITIONS)
    assert compose_env("kafka")["KAFKA_NUM_PARTITIONS"] == str(DEV_TOPIC_PARTITIONS)
    for name in [*SERVICES, "migrate"]:
        settings = backroom_settings(monkeypatch, compose_env(name))
        assert settings.topic_partitions == DEV_TOPIC_PARTITIONS, name


def test_keda_objects_are_one_scaled_object_and_authentication_per_service() -> None:
    """autoscaling.yaml holds KEDA's kinds (CRDs not in this repository: checked by shape here)
    and the ConfigMap of the scalers' usernames, all in the kustomization and its namespace."""
    assert AUTOSCALING.name in kustomization()["resources"]
    kinds = {"ScaledObject": KEDA_API, "TriggerAuthentication": KEDA_API, "ConfigMap": "v1"}
    for doc in yaml.safe_load_all(AUTOSCALING.read_text()):
        assert doc["apiVersion"] == kinds[doc["kind"]], doc["metadata"]["name"]
        assert doc["metadata"]["namespace"] == "backroom"
    assert sorted(k8s_all("ScaledObject")) == sorted(SERVICES)
    used = {trigger_authentication(service)["metadata"]["name"] for service in SERVICES}
    assert used == set(k8s_all("TriggerAuthentication")), "one per service, each used"
    assert "## Sizing and autoscaling" in (K8S_DIR / "README.md").read_text()
    assert "Sizing and autoscaling" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("service", SERVICES)
def test_keda_scales_the_services_deployment_within_its_partitions(service: str) -> None:
    """At rest as many replicas as the Deployment says (a `kubectl apply` resetting them changes
    nothing then); at most one per partition: more would sit idle in the consumer group."""
    spec = k8s_one("ScaledObject", service)["spec"]
    target = spec["scaleTargetRef"]
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    assert target.get("kind", "Deployment") == "Deployment"
    deployment = k8s_one("Deployment", target["name"])
    assert target["name"] == service
    assert spec["minReplicaCount"] == deployment["spec"]["replicas"] == SCALED_OUT.get(service, 1)
    assert spec["minReplicaCount"] < spec["maxReplicaCount"] <= configured_partitions()


@pytest.mark.parametrize("service", SERVICES)
def test_keda_watches_the_lag_of_every_topic_the_service_reads(service: str) -> None:
    """One kafka trigger per subscribed topic (libs/kit/kafka_acl.py SUBSCRIPTIONS, which
    tests/unit/kit/test_kafka_acl.py checks against the handlers), in the service's consumer
    group, on the brokers and with the security config.yaml gives the pods."""
    triggers = kafka_triggers(k8s_one("ScaledObject", service))
    read = [t["metadata"]["topic"] for t in triggers]
    assert sorted(read) == sorted(SUBSCRIPTIONS[service]) and len(set(read)) == len(read)
    config = k8s_config()
    env = env_sources(main_container(k8s_one("Deployment", service)))
    assert Acl(service, Resource.GROUP, service, Operation.READ) in acls(), "the group it reads"
    for trigger in triggers:
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == service
        assert "bootstrapServers" not in meta, "config.yaml's, read from the pods' environment"
        assert env[meta["bootstrapServersFromEnv"]] == config["BACKROOM_KAFKA_BOOTSTRAP"]
        assert meta["offsetResetPolicy"] == "earliest", "as the consumers: libs/kit/runtime.py"
        assert meta["sasl"] == KEDA_SASL[config["BACKROOM_KAFKA_SASL_MECHANISM"]]
        assert config["BACKROOM_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and meta["tls"] == "enable"
        assert meta.get("allowIdleConsumers", "false") == "false"
    thresholds = {t["metadata"]["lagThreshold"] for t in triggers}
    assert len(thresholds) == 1, "one per service: the lag one replica clears in ~2 s"
    assert all(isinstance(value, str) and int(value) > 0 for value in thresholds)


@pytest.mark.parametrize("service", SERVICES)
def test_keda_logs_in_as_the_service_with_the_secrets_its_pods_read(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Username, password and CA: the principal the pods log in as, the password key of its own
    Secret, and the CA Secret and key the pods mount. sasl and tls are in the triggers' metadata
    (KEDA refuses them in both places)."""
    spec = trigger_authentication(service)["spec"]
    assert set(spec) <= {"secretTargetRef", "configMapTargetRef"}
    refs = {
        ref["parameter"]: (source, ref["name"], ref["key"])
        for source in ("secretTargetRef", "configMapTargetRef")
        for ref in spec.get(source) or []
    }
    assert sorted(refs) == ["ca", "password", "username"]
    deployment = k8s_one("Deployment", service)
    container = main_container(deployment)

    source, secret, key = refs["password"]
    assert source == "secretTargetRef" and kafka_secrets(container) == [secret]
    assert key in kafka_secret_keys(secret) and key == "BACKROOM_KAFKA_PASSWORD"
    assert refs["ca"] == ("secretTargetRef", *ca_secret_of(deployment))

    source, config_map, key = refs["username"]
    assert source == "configMapTargetRef"
    username = k8s_one("ConfigMap", config_map)["data"][key]
    settings = backroom_settings(monkeypatch, env_sources(container), service_name=service)
    assert username == KafkaConnection.from_settings(settings).username == service


@pytest.mark.parametrize("service", SERVICES)
def test_keda_scales_http_facing_services_on_cpu_too(service: str) -> None:
    """A CPU trigger for orders and pricing only, on a target the container can reach: the
    Utilization is a share of its CPU request, and the container never uses more than its limit."""
    cpu = [t for t in k8s_one("ScaledObject", service)["spec"]["triggers"] if t["type"] == "cpu"]
    if service not in HTTP_FACING:
        assert not cpu
        return
    (trigger,) = cpu
    assert trigger["metricType"] == "Utilization"
    resources = main_container(k8s_one("Deployment", service))["resources"]
    request, limit = (cpu_cores(resources[bound]["cpu"]) for bound in ("requests", "limits"))
    target = int(trigger["metadata"]["value"]) / 100 * request
    assert 0 < target < limit, f"{service}: a target of {target} cores"


Index = dict[tuple[str, str], dict[str, Any]]
Change = Callable[[Index], None]


def put(kind: str, name: str, path: str, value: Any) -> Change:
    """Set one field of one manifest object (a dotted path; list items by index)."""

    def change(objects: Index) -> None:
        *parents, last = path.split(".")
        node: Any = objects[kind, name]
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(last) if isinstance(node, list) else last] = value

    return change


def unwatch_first_topic(objects: Index) -> None:
    objects["ScaledObject", "orders"]["spec"]["triggers"].pop(0)


def watch_a_topic_it_does_not_read(objects: Index) -> None:
    spec = objects["ScaledObject", "orders"]["spec"]
    extra = copy.deepcopy(spec["triggers"][0])
    extra["metadata"]["topic"] = "backroom.orders"
    spec["triggers"].append(extra)


def sasl_in_both_places(objects: Index) -> None:
    refs = objects["TriggerAuthentication", "orders-kafka"]["spec"]["secretTargetRef"]
    refs.append({"parameter": "sasl", "name": "backroom-kafka-orders", "key": "sasl"})


def check_scaling(_: pytest.MonkeyPatch) -> None:
    test_keda_scales_the_services_deployment_within_its_partitions("orders")


def check_lag(_: pytest.MonkeyPatch) -> None:
    test_keda_watches_the_lag_of_every_topic_the_service_reads("orders")


def check_login(monkeypatch: pytest.MonkeyPatch) -> None:
    test_keda_logs_in_as_the_service_with_the_secrets_its_pods_read("orders", monkeypatch)


def check_cpu(_: pytest.MonkeyPatch) -> None:
    test_keda_scales_http_facing_services_on_cpu_too("orders")


ORDERS_TRIGGER = "spec.triggers.{}.metadata.{}"  # orders: inventory, payments, catalog, cpu
ORDERS_AUTH = ("TriggerAuthentication", "orders-kafka")
KEDA_DRIFTS: dict[str, tuple[Change, Callable[[pytest.MonkeyPatch], None]]] = {
    "a subscribed topic unwatched": (unwatch_first_topic, check_lag),
    "a topic it does not read": (watch_a_topic_it_does_not_read, check_lag),
    "another consumer group": (
        put("ScaledObject", "orders", ORDERS_TRIGGER.format(0, "consumerGroup"), "inventory"),
        check_lag,
    ),
    "a literal bootstrap address": (
        put("ScaledObject", "orders", ORDERS_TRIGGER.format(1, "bootstrapServers"), "kafka:9093"),
        check_lag,
    ),
    "no TLS": (
        put("ScaledObject", "orders", ORDERS_TRIGGER.format(0, "tls"), "disable"),
        check_lag,
    ),
    "the other SCRAM": (
        put("ScaledObject", "orders", ORDERS_TRIGGER.format(0, "sasl"), "scram_sha256"),
        check_lag,
    ),
    "two lag thresholds": (
        put("ScaledObject", "orders", ORDERS_TRIGGER.format(1, "lagThreshold"), "1"),
        check_lag,
    ),
    "more replicas than partitions": (
        put("ScaledObject", "orders", "spec.maxReplicaCount", K8S_PARTITIONS + 1),
        check_scaling,
    ),
    "fewer partitions than replicas": (
        put("ConfigMap", "backroom-config", "data.BACKROOM_TOPIC_PARTITIONS", "6"),
        check_scaling,
    ),
    "below the Deployment's replicas": (
        put("ScaledObject", "orders", "spec.minReplicaCount", 0),
        check_scaling,
    ),
    "no such Deployment": (
        put("ScaledObject", "orders", "spec.scaleTargetRef.name", "order"),
        check_scaling,
    ),
    "another principal's password": (
        put(*ORDERS_AUTH, "spec.secretTargetRef.0.name", "backroom-kafka-admin"),
        check_login,
    ),
    "a key the Secret lacks": (
        put(*ORDERS_AUTH, "spec.secretTargetRef.0.key", "password"),
        check_login,
    ),
    "a CA key the pods do not read": (
        put(*ORDERS_AUTH, "spec.secretTargetRef.1.key", "tls.crt"),
        check_login,
    ),
    "another username": (
        put("ConfigMap", "backroom-kafka-principals", "data.orders", KAFKA_ADMIN),
        check_login,
    ),
    "sasl in both places": (sasl_in_both_places, check_login),
    "a CPU target beyond the limit": (
        put("ScaledObject", "orders", ORDERS_TRIGGER.format(3, "value"), "1000"),
        check_cpu,
    ),
}


@pytest.mark.parametrize("drift", KEDA_DRIFTS)
def test_keda_checks_catch_a_drift(drift: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not vacuous: each check above passes on the manifests and fails on them changed in one
    place."""
    change, check = KEDA_DRIFTS[drift]
    check(monkeypatch)
    objects = copy.deepcopy(k8s_objects())
    change({(o["kind"], o["metadata"]["name"]): o for o in objects})
    monkeypatch.setattr(sys.modules[__name__], "k8s_objects", lambda: objects)
    with pytest.raises(AssertionError):
        check(monkeypatch)

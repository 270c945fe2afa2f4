"""Settings every service shares; each service subclasses it with its own knobs and defaults."""

import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The checkout this code runs from: development state lives in its `.run/` (git-ignored).
CHECKOUT = Path(__file__).resolve().parents[2]
DEV_ENV = "dev"
# The cluster's superuser: an operator's tool (bench invariants, test scratch databases), never
# a service. In the local development cluster it is trusted on loopback (deploy/local/postgres.sh).
SUPERUSER = "postgres"
# The six services (as libs/kit/cli.py SERVICES): each has a role of its own, and outside
# development it refuses to start without that role's password.
SERVICE_ROLES = ("catalog", "inventory", "pricing", "orders", "payments", "notifications")
ROLE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}")


def _load_dev_secret(path: Path, make: Callable[[], str], min_len: int) -> str:
    """A development secret of this checkout, created on first use: random, mode 0600, and
    published with a hard link, which never replaces an existing file, so processes that start
    together all read the one secret that won."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(make() + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.link(draft, path)
        except FileExistsError:
            pass  # another process published its secret first: use that one
        finally:
            draft.unlink(missing_ok=True)
    secret = path.read_text().strip()
    if len(secret) < min_len:
        raise ValueError(f"{path} holds no usable secret: delete it to generate a new one")
    return secret


def load_dev_jwt_secret(path: Path) -> str:
    """The development HS256 secret of this checkout (see `_load_dev_secret`)."""
    return _load_dev_secret(path, lambda: secrets.token_urlsafe(48), 32)


def load_dev_pg_password(directory: Path, role: str) -> str:
    """The development password of one database role, `<directory>/<role>`, created on first use
    exactly as deploy/local/postgres.sh creates it (hex: safe in URLs and SQL literals); that
    script sets the role's password to it on every `up`."""
    if not ROLE_NAME.fullmatch(role):
        raise ValueError(f"not a role name: {role!r}")
    return _load_dev_secret(directory / role, lambda: secrets.token_hex(24), 32)


def load_dev_kafka_password(directory: Path, principal: str) -> str:
    """The development SCRAM password of one Kafka principal, `<directory>/<principal>`, created
    on first use exactly as deploy/local/kafka/lib.sh creates it; the local brokers are formatted
    with these credentials (and formatted afresh when the files change)."""
    if not ROLE_NAME.fullmatch(principal):
        raise ValueError(f"not a principal name: {principal!r}")
    return _load_dev_secret(directory / principal, lambda: secrets.token_hex(24), 32)


class DatabaseConfigError(ValueError):
    """No usable database credentials outside development: the service refuses to start."""


class KafkaConfigError(ValueError):
    """No usable Kafka credentials outside development: the service refuses to start."""


# The Kafka principal of operators' tools (topics, ACLs, dead-letter replay, the bench and
# tests' probes): the brokers' super user. Services never use it (libs/kit/kafka_acl.py).
KAFKA_ADMIN = "admin"
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")
# Partitions per topic when BACKROOM_TOPIC_PARTITIONS is unset: TOPIC_PARTITIONS, or
# DEV_TOPIC_PARTITIONS with BACKROOM_ENV=dev (ServiceSettings.topic_partitions says why).
TOPIC_PARTITIONS = 6
DEV_TOPIC_PARTITIONS = 3


class ServiceSettings(BaseSettings):
    """Read from `BACKROOM_*` environment variables (each service runs in its own process)."""

    model_config = SettingsConfigDict(env_prefix="BACKROOM_", extra="ignore")

    service_name: str = "service"
    http_host: str = "127.0.0.1"
    http_port: int = 8100

    kafka_bootstrap: str = "127.0.0.1:9092"
    # Each service authenticates as its own Kafka principal (named after it unless
    # BACKROOM_KAFKA_USERNAME says otherwise), which the brokers' ACLs let write only the topics it
    # owns and read only those it subscribes to; settings naming no service (an operator's tool)
    # use the admin principal. The protocol defaults to SASL_SSL, or SASL_PLAINTEXT in
    # development (the local brokers listen on loopback only); PLAINTEXT or SSL (mutual TLS) only
    # when set. The password is BACKROOM_KAFKA_PASSWORD; in development, when unset, the
    # principal's generated one (.run/dev-kafka-passwords/<principal>, or
    # BACKROOM_DEV_KAFKA_PASSWORD_DIR); elsewhere a SASL protocol without one refuses to start.
    kafka_security_protocol: str = ""
    kafka_sasl_mechanism: str = "SCRAM-SHA-256"
    kafka_username: str = ""
    kafka_password: str = ""
    dev_kafka_password_dir: Path | None = None
    # TLS towards the brokers (SSL, SASL_SSL): the CA bundle that signed their certificates (the
    # system's when unset), and a client certificate and key for mutual TLS.
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    # Partitions of each topic that `backroom topics` and the services' ensure_topics create; a
    # topic that exists keeps its count (Kafka never removes partitions: `deploy/local/kafka.sh
    # reset` recreates the local ones). In a cluster they cap the replicas of each consumer
    # group, so deploy/k8s/config.yaml sets it. Unset in development (make run, make test, the
    # bench, compose) it is DEV_TOPIC_PARTITIONS: on one small machine every consumer fetch
    # decodes each assigned partition in Python (aiokafka has no incremental fetch sessions),
    # so more partitions only cost CPU.
    topic_partitions: int = TOPIC_PARTITIONS
    topic_replication: int = 1

    pg_host: str = "127.0.0.1"
    pg_port: int = 55432
    # Each service connects as its own role (named after it unless BACKROOM_PG_USER says
    # otherwise), which owns its database and nothing else; settings naming no service (an
    # operator's tool) connect as the superuser. The password is BACKROOM_PG_PASSWORD; in
    # development, when unset, the role's generated one (.run/dev-pg-passwords/<role>, or
    # BACKROOM_DEV_PG_PASSWORD_DIR); elsewhere a missing password refuses to start.
    pg_user: str = ""
    pg_password: str = ""
    dev_pg_password_dir: Path | None = None
    database_name: str | None = None
    database_url: str | None = None
    db_pool_size: int = 10

    # BACKROOM_ENV=dev: local development. Only then are HS256 tokens accepted, signed with
    # BACKROOM_JWT_SECRET or, when that is unset, with this checkout's generated secret
    # (.run/dev-jwt-secret, or BACKROOM_DEV_JWT_SECRET_FILE). Anywhere else services verify
    # RS256/ES256 tokens of an identity provider (its JWKS URL, issuer and audience) and refuse
    # to start without them (libs/kit/auth.py).
    env: str = "production"
    jwt_secret: str | None = None
    dev_jwt_secret_file: Path | None = None
    jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    # Keys fetched from the JWKS URL are used this long, then fetched again; a token naming a
    # key id not among them fetches at once (key rotation), at most once per refresh interval.
    jwks_cache_s: float = 300.0
    jwks_refresh_min_interval_s: float = 10.0
    jwks_timeout_s: int = 5
    # Clock skew allowed on `exp` (and `nbf`/`iat`) between the identity provider and us.
    jwt_leeway_s: int = 10

    consumer_max_attempts: int = 5
    consumer_backoff_initial_s: float = 0.2
    consumer_backoff_max_s: float = 5.0
    # Records already fetched are applied together, in one transaction, up to this many (1: one
    # transaction per record).
    consumer_batch_max: int = 100
    # A consumer holding a record it will apply waits this long once for more before its
    # transaction (records only skipped never wait): records a few milliseconds apart then share
    # one transaction, at the cost of this much latency per hop (issue 10; 0: no wait).
    consumer_linger_ms: float = 10.0
    # Consumed offsets are committed together, at most this much after their database commit
    # (0: after every batch; dead-lettered records always at once). A crash or rebalance re-reads
    # at most this much, which the inbox turns into duplicates without effect.
    consumer_commit_interval_s: float = 0.25
    # A consume handler still in one batch after this long is reported as stuck (error log with
    # every task's stack; /health/live answers 503). Long database outages count too: the inbox
    # retries them inside the batch, and a restart is harmless then.
    consumer_stuck_after_s: float = 180.0
    # Consumers refresh the brokers' metadata (and so see topics created since) this often;
    # aiokafka's default. Notifications, which subscribes to each channel's listing topic by
    # pattern, sets it lower (issue 13).
    kafka_metadata_max_age_s: float = 300.0
    # How long the broker may hold a consumer's fetch while there is nothing to read (fetch
    # min bytes is 1, so a record answers it at once). Longer saves idle CPU, but aiokafka keeps
    # one fetch per broker and leaves out of it the partitions whose records are being handled,
    # so a record arriving on one of those waits for this open fetch: a hop of a quiet saga, or
    # the recovery after a restart, gets up to this much slower (ADR 0016: 5 s was rejected).
    kafka_fetch_max_wait_ms: int = Field(default=500, ge=0, le=30_000)
    relay_poll_interval_s: float = 1.0
    relay_batch_size: int = 500
    # Issue 14: how often the metrics poller reads consumer lag, outbox depth and the service's
    # own state gauges (one query or broker request each, never per event); 0 turns it off.
    metrics_interval_s: float = 15.0
    # Issue 14 part 6: how often the reconciliation checks run (0: only when asked, through
    # POST /<service>/reconciliation/runs), the first run this long after start, how old an
    # unpublished outbox row may get before it is a finding, and at most how many findings each
    # check reports (the queries stay bounded on a big database).
    reconcile_interval_s: float = 300.0
    reconcile_first_run_s: float = 10.0
    reconcile_outbox_age_s: float = 300.0
    reconcile_limit: int = 100

    # --- retention (issue 14) --- (libs/kit/retention.py says why each default)
    # How often the pruning job runs (0: never); each pass deletes at most
    # retention_batch_size x retention_max_batches rows per table, a batch per transaction.
    retention_interval_s: float = 3600.0
    retention_batch_size: int = 1000
    retention_max_batches: int = 100
    retention_inbox_s: float = 14 * 86400.0
    retention_dead_letters_s: float = 30 * 86400.0
    retention_idempotency_keys_s: float = 7 * 86400.0
    retention_quotes_s: float = 86400.0  # counted from the quote's expires_at
    retention_deliveries_s: float = 30 * 86400.0
    # orders' timeline journal (order_events): an order's saga is long over by then; its own
    # record (status, lines, payments, shipments) stays.
    retention_order_events_s: float = 180 * 86400.0

    log_level: str = "INFO"
    log_json: bool = True

    # Issue 14, tracing (libs/kit/tracing.py): off (the default: no SDK, no instrumentation, no
    # trace context in events), otlp (OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT, etc.) or file
    # (JSON lines appended to trace_file; `{service}` in it is replaced by the service's name).
    # Root spans are sampled at trace_sample_ratio; a span with a parent follows its parent.
    tracing: str = "off"
    trace_file: Path | None = None
    trace_sample_ratio: float = 1.0

    @field_validator(
        "jwt_secret",
        "jwks_url",
        "jwt_issuer",
        "jwt_audience",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        "trace_file",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """An empty variable (a compose `${VAR:-}` or a ConfigMap's "") means not configured."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _dev_secret(self) -> Self:
        if self.is_dev and self.jwt_secret is None:
            self.jwt_secret = load_dev_jwt_secret(self.dev_jwt_secret_path())
        return self

    @model_validator(mode="after")
    def _tracing(self) -> Self:
        _check_tracing(self)  # issue 14
        return self

    @model_validator(mode="after")
    def _dev_topic_partitions(self) -> Self:
        if self.is_dev and "topic_partitions" not in self.model_fields_set:
            self.topic_partitions = DEV_TOPIC_PARTITIONS
        return self

    @model_validator(mode="after")
    def _database_role(self) -> Self:
        if not self.pg_user:
            named = self.service_name != ServiceSettings.model_fields["service_name"].default
            self.pg_user = self.service_name if named else SUPERUSER
        if self.service_name in SERVICE_ROLES and not self.is_dev and not self.database_url:
            self.database_password()  # refuses to start without one
        return self

    @model_validator(mode="after")
    def _kafka_principal(self) -> Self:
        if not self.kafka_security_protocol:
            self.kafka_security_protocol = "SASL_PLAINTEXT" if self.is_dev else "SASL_SSL"
        self.kafka_security_protocol = self.kafka_security_protocol.upper()
        if self.kafka_security_protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise KafkaConfigError(
                f"BACKROOM_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}"
            )
        self.kafka_sasl_mechanism = self.kafka_sasl_mechanism.upper()
        if self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
            raise KafkaConfigError(
                f"BACKROOM_KAFKA_SASL_MECHANISM must be one of {', '.join(KAFKA_SASL_MECHANISMS)}"
            )
        if not self.kafka_username:
            named = self.service_name in SERVICE_ROLES
            self.kafka_username = self.service_name if named else KAFKA_ADMIN
        # No password outside development refuses to start when the runtime connects
        # (KafkaConnection.from_settings), not here: a migration job needs no broker.
        return self

    @property
    def kafka_uses_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    def dev_kafka_password_path(self) -> Path:
        return self.dev_kafka_password_dir or CHECKOUT / ".run" / "dev-kafka-passwords"

    def kafka_sasl_password(self) -> str:
        """BACKROOM_KAFKA_PASSWORD; in development, when unset, the principal's generated one.
        Elsewhere a missing password raises KafkaConfigError."""
        if self.kafka_password:
            return self.kafka_password
        if not self.is_dev:
            raise KafkaConfigError(
                f"no password for Kafka principal {self.kafka_username!r}: set"
                " BACKROOM_KAFKA_PASSWORD (or BACKROOM_KAFKA_SECURITY_PROTOCOL=SSL for mutual TLS)"
            )
        return load_dev_kafka_password(self.dev_kafka_password_path(), self.kafka_username)

    @property
    def is_dev(self) -> bool:
        return self.env == DEV_ENV

    def dev_jwt_secret_path(self) -> Path:
        return self.dev_jwt_secret_file or CHECKOUT / ".run" / "dev-jwt-secret"

    def dev_pg_password_path(self) -> Path:
        return self.dev_pg_password_dir or CHECKOUT / ".run" / "dev-pg-passwords"

    def database_password(self, required: bool = True) -> str:
        """BACKROOM_PG_PASSWORD; in development, when unset, the role's generated password (none
        for the superuser, trusted on loopback by the local cluster). Elsewhere a missing
        password raises DatabaseConfigError (a service's settings refuse to start), unless not
        `required` (then libpq's own sources apply: PGPASSWORD, ~/.pgpass, certificates)."""
        if self.pg_password:
            return self.pg_password
        if not self.is_dev:
            if not required:
                return ""
            raise DatabaseConfigError(
                f"no password for database role {self.pg_user!r}: set BACKROOM_PG_PASSWORD"
                " (or BACKROOM_DATABASE_URL)"
            )
        if self.pg_user == SUPERUSER:
            return ""
        return load_dev_pg_password(self.dev_pg_password_path(), self.pg_user)

    def sqlalchemy_url(self) -> str:
        """The async SQLAlchemy URL of this service's own database, as its own role."""
        if self.database_url:
            return self.database_url
        password = self.database_password(required=False)
        auth = quote(self.pg_user, safe="") + (f":{quote(password, safe='')}" if password else "")
        name = self.database_name or self.service_name
        return f"postgresql+asyncpg://{auth}@{self.pg_host}:{self.pg_port}/{name}"

    def asyncpg_dsn(self) -> str:
        """The same database as a plain libpq DSN (for LISTEN connections)."""
        return self.sqlalchemy_url().replace("postgresql+asyncpg://", "postgresql://", 1)


# --- tracing (issue 14) ---


def _check_tracing(settings: ServiceSettings) -> None:
    settings.tracing = settings.tracing.strip().lower() or "off"
    if settings.tracing not in ("off", "otlp", "file"):
        raise ValueError("BACKROOM_TRACING must be one of off, otlp, file")
    if settings.tracing == "file" and settings.trace_file is None:
        raise ValueError("BACKROOM_TRACING=file needs BACKROOM_TRACE_FILE")
    if not 0.0 <= settings.trace_sample_ratio <= 1.0:
        raise ValueError("BACKROOM_TRACE_SAMPLE_RATIO must be between 0 and 1")

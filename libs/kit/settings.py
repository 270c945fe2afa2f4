"""Settings every service shares; each service subclasses it with its own knobs and defaults."""

from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Read from `BACKROOM_*` environment variables (each service runs in its own process)."""

    model_config = SettingsConfigDict(env_prefix="BACKROOM_", extra="ignore")

    service_name: str = "service"
    http_host: str = "127.0.0.1"
    http_port: int = 8100

    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_partitions: int = 6
    topic_replication: int = 1

    pg_host: str = "127.0.0.1"
    pg_port: int = 55432
    pg_user: str = "postgres"
    pg_password: str = ""
    database_name: str | None = None
    database_url: str | None = None
    db_pool_size: int = 10

    jwt_secret: str = "backroom-dev-secret-change-me-please-32b"
    jwt_algorithm: str = "HS256"

    consumer_max_attempts: int = 5
    consumer_backoff_initial_s: float = 0.2
    consumer_backoff_max_s: float = 5.0
    # Records already fetched are applied together, in one transaction, up to this many (1: one
    # transaction per record).
    consumer_batch_max: int = 100
    # Offsets of records that needed no database work are committed at most this much later
    # (0: at once, like the others).
    consumer_commit_interval_s: float = 0.5
    # A consume handler still in one batch after this long is reported as stuck (error log with
    # every task's stack; /health/live answers 503). Long database outages count too: the inbox
    # retries them inside the batch, and a restart is harmless then.
    consumer_stuck_after_s: float = 180.0
    relay_poll_interval_s: float = 1.0
    relay_batch_size: int = 500

    log_level: str = "INFO"
    log_json: bool = True

    def sqlalchemy_url(self) -> str:
        """The async SQLAlchemy URL of this service's own database."""
        if self.database_url:
            return self.database_url
        auth = self.pg_user + (f":{self.pg_password}" if self.pg_password else "")
        name = self.database_name or self.service_name
        return f"postgresql+asyncpg://{auth}@{self.pg_host}:{self.pg_port}/{name}"

    def asyncpg_dsn(self) -> str:
        """The same database as a plain libpq DSN (for LISTEN connections)."""
        return self.sqlalchemy_url().replace("postgresql+asyncpg://", "postgresql://", 1)

"""Configuration, read lazily from the environment (prefix ``SYNCFLOW_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path(".syncflow")


class Settings(BaseSettings):
    """syncflow's settings. Every field can be set as ``SYNCFLOW_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="SYNCFLOW_", extra="ignore")

    home: Path = Field(
        default=DEFAULT_HOME,
        description="Directory for the embedded default's files (SQLite store, demo state).",
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the sync store, e.g. postgresql+psycopg://user@host/db. "
            "Default: a SQLite file syncflow.db under SYNCFLOW_HOME."
        ),
    )
    retention_days: int = Field(
        default=30, ge=1, description="Finished sessions older than this are deleted by cleanup."
    )
    lock_lease_seconds: int = Field(
        default=60,
        ge=5,
        description="Lease of the per-(instance, category) single-flight lock; renewed while a sync runs.",
    )
    store_retry_seconds: float = Field(
        default=60,
        ge=0,
        description=(
            "How long a sync waits for a store that went away (PostgreSQL restart, lost connection, "
            "locked SQLite file), retrying with backoff, before it fails with one line."
        ),
    )

    metadata_max_age: float = Field(
        default=3600.0,
        ge=0,
        description=(
            "Seconds a completed metadata sync stays fresh: a messages session refreshes the "
            "metadata of an instance only when its last one is older (0: always refresh)."
        ),
    )

    child_start_seconds: float = Field(
        default=180.0,
        gt=0,
        description=(
            "Scale-out: how long an instance run taken by a worker (Pending or Running) may go "
            "without opening its record before the session gives it up as lost (its worker died "
            "while starting it): the run is marked Crashed, the record failed, the slot freed."
        ),
    )

    batches_per_task: int = Field(
        default=1000,
        ge=1,
        le=10_000,
        description=(
            "Pages one Prefect task run fetches and stores (each page its own transaction); "
            "fewer means more Prefect bookkeeping per message."
        ),
    )

    telegram_client_factory: str | None = Field(
        default=None,
        description=(
            "Tests only: `module:callable` building the Telethon-like client of a Telegram account "
            "(e.g. syncflow.testing.telegram_fake:env_client_factory). Unset: Telethon's TelegramClient."
        ),
    )

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        path = (self.home / "syncflow.db").resolve()
        return f"sqlite:///{path}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (tests, CLI options that change the environment)."""
    get_settings.cache_clear()

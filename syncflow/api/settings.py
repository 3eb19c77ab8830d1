"""Settings of the console (``syncflow serve``), read lazily from ``SYNCFLOW_API_*``."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from syncflow.names import MANUAL_BATCH


class ApiSettings(BaseSettings):
    """The HTTP API's settings. Every field can be set as ``SYNCFLOW_API_<FIELD>``.

    Write endpoints need a bearer token: configure its hash (``SYNCFLOW_API_TOKEN_HASH``,
    from ``syncflow api hash-token``) or the token itself as a secret (``SYNCFLOW_API_TOKEN``).
    With neither, every write endpoint answers 403.
    """

    model_config = SettingsConfigDict(env_prefix="SYNCFLOW_API_", extra="ignore")

    token_hash: str | None = Field(
        default=None,
        description=(
            "Hash of the API token: 'sha256$<salt-hex>$<digest-hex>' (syncflow api hash-token) or the plain "
            "hex SHA-256 of the token. Preferred over SYNCFLOW_API_TOKEN: the process never holds the token."
        ),
    )
    token: SecretStr | None = Field(
        default=None, description="The API token itself (a secret; used when no token_hash is set)."
    )
    read_auth: bool = Field(
        default=False,
        description="Whether read endpoints (lists, details, statistics, the page's data) need the token.",
    )
    manual_batch_deployment: str = Field(
        default=MANUAL_BATCH, description="The deployment a manual batch (and a retry) runs as."
    )
    prefect_timeout: float = Field(
        default=30.0, gt=0, le=600, description="Seconds a call to the Prefect API may take before the API answers 502."
    )
    title: str = Field(default="syncflow sessions", description="Title of the web page.")
    prefect_ui_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("prefect_ui_url", "PREFECT_UI_URL"),
        description="The Prefect UI (Prefect's own PREFECT_UI_URL, e.g. http://prefect:4200): when set, the "
        "page links flow-run ids to {PREFECT_UI_URL}/runs/flow-run/{id}.",
    )

    @field_validator("prefect_ui_url")
    @classmethod
    def _ui_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"PREFECT_UI_URL must be an http(s) URL, not {value!r}")
        return value

"""Prefect block holding an http-seq instance's connection and retry policy."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from syncflow.sources.base import ReadPolicy
from syncflow.sources.http_seq import SeqHttpClient


class SeqHttpInstance(Block):
    """Connection of one http-seq instance: where it is, its token, batches and retries."""

    _block_type_name = "syncflow http-seq instance"
    _block_type_slug = "syncflow-http-seq"
    _description = "A chat/IM server speaking the seq protocol (POST /api/v1/messages/sync)."

    base_url: str = Field(description="Base URL, e.g. http://im-1.internal:8080")
    token: SecretStr = Field(description="Bearer token sent as Authorization: Bearer <token>.")
    timeout: float = Field(default=30.0, gt=0, description="Request timeout in seconds.")
    batch_size: int = Field(default=500, ge=1, le=10_000, description="Messages asked for per request.")
    max_retries: int = Field(default=3, ge=0, le=20)
    base_delay: float = Field(default=1.0, ge=0)
    backoff_multiplier: float = Field(default=2.0, ge=1)
    max_delay: float = Field(default=60.0, ge=0)
    jitter: float = Field(default=0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _check_url(self) -> SeqHttpInstance:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, not {self.base_url!r}")
        self.base_url = self.base_url.rstrip("/")
        return self

    def read_policy(self) -> ReadPolicy:
        return ReadPolicy.of(self)

    def open_source(self, instance: str) -> SeqHttpClient:
        return SeqHttpClient(self.base_url, self.token, timeout=self.timeout, instance=instance)

    def describe(self) -> str:
        return f"http-seq {self.base_url}"

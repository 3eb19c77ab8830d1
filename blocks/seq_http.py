"""Prefect block holding an http-seq instance's connection and retry policy."""

from __future__ import annotations

import random

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator


class RetryPolicy(Block):
    """Per-service retry policy (the shape of the sync-queue-retry seed's config)."""

    _block_type_slug = "syncflow-retry-policy"

    max_retries: int = Field(default=3, ge=0, le=20, description="Retries after the first attempt.")
    base_delay: float = Field(default=1.0, ge=0, description="Seconds before the first retry.")
    backoff_multiplier: float = Field(default=2.0, ge=1, description="Each retry waits this much longer.")
    max_delay: float = Field(default=60.0, ge=0, description="No wait is longer than this (Retry-After included).")
    jitter: float = Field(default=0.5, ge=0, le=1, description="Random spread, as a fraction of the delay.")

    def delays(self) -> list[float]:
        """The wait before each retry, without jitter (Prefect adds it)."""
        return [min(self.base_delay * self.backoff_multiplier**i, self.max_delay) for i in range(self.max_retries)]

    def jittered(self, delay: float) -> float:
        return max(0.0, delay * (1 + random.uniform(-self.jitter, self.jitter)))


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

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_retries=self.max_retries,
            base_delay=self.base_delay,
            backoff_multiplier=self.backoff_multiplier,
            max_delay=self.max_delay,
            jitter=self.jitter,
        )

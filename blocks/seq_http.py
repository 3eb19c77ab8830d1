"""Prefect block holding an http-seq instance's connection and retry policy."""

from __future__ import annotations

import dataclasses

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from syncflow.errors import ConfigError
from syncflow.sources.base import ReadPolicy
from syncflow.sources.http_seq import SeqHttpClient
from syncflow.validation import check_url


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
    binding: str | None = Field(
        default=None,
        description="Set by syncflow: the key of the instance this block was made for. A sync refuses "
        "a block whose key is not its instance's (keep it when editing the block).",
    )
    adaptive_batch: bool = Field(
        default=False,
        description="Grow or shrink the page size between min_batch_size and max_batch_size to hold "
        "target_page_seconds per page (fetch + store); the size reached is remembered per instance.",
    )
    min_batch_size: int = Field(default=100, ge=1, le=10_000, description="Adaptive: the smallest page.")
    max_batch_size: int = Field(default=5_000, ge=1, le=10_000, description="Adaptive: the largest page.")
    target_page_seconds: float = Field(default=0.5, gt=0, le=60, description="Adaptive: the page time to hold.")

    @model_validator(mode="after")
    def _check_url(self) -> SeqHttpInstance:
        try:
            self.base_url = check_url(self.base_url, field="base_url")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if self.min_batch_size > self.max_batch_size:
            raise ValueError(f"min_batch_size {self.min_batch_size} is above max_batch_size {self.max_batch_size}")
        return self

    def read_policy(self) -> ReadPolicy:
        policy = ReadPolicy.of(self)
        if self.adaptive_batch:
            return policy
        return dataclasses.replace(policy, min_batch_size=None, max_batch_size=None, target_page_seconds=None)

    def open_source(self, instance: str) -> SeqHttpClient:
        return SeqHttpClient(self.base_url, self.token, timeout=self.timeout, instance=instance)

    def describe(self) -> str:
        return f"http-seq {self.base_url}"

"""Prefect block holding one Telegram account: app credentials, session, limits and retries.

One block per *account*; each chat of the account is a ``telegram`` instance whose
``block_name`` is this block and whose ``config`` names the chat (``syncflow telegram
discover``). ``api_hash`` and ``session`` are secrets (Prefect encrypts them; tasks get the
block's name). The session string is written by ``syncflow telegram login ACCOUNT`` and is
never printed.

Register the type with ``python -m blocks.register`` (or ``prefect block register -m blocks.telegram``).
"""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from syncflow.engine.account_lease import AccountGate, account_gate
from syncflow.errors import ConfigError
from syncflow.settings import get_settings
from syncflow.sources.base import ReadPolicy
from syncflow.sources.telegram import TelegramAccount, close_connection, login_hint
from syncflow.sources.telegram_chat import TelegramChatSource, client_factory_from_settings, parse_chat_id


class TelegramAccountBlock(Block):
    """A Telegram account syncflow reads chats of: api_id/api_hash, the session, limits, retries."""

    _block_type_name = "syncflow telegram account"
    _block_type_slug = "syncflow-telegram"
    _description = (
        "A Telegram user account (Telethon): app credentials from my.telegram.org and the session string "
        "written by `syncflow telegram login`. Each chat of the account is one syncflow instance."
    )

    api_id: int = Field(gt=0, description="The app's api_id (my.telegram.org, API development tools).")
    api_hash: SecretStr = Field(description="The app's api_hash (my.telegram.org).")
    session: SecretStr = Field(
        default=SecretStr(""),
        description="Telethon StringSession of the logged-in account (written by `syncflow telegram login`).",
    )
    flood_wait_max: float = Field(
        default=300.0,
        ge=0,
        description="A FloodWait up to this many seconds is waited out; a longer one fails the chat as transient.",
    )
    max_processes: int = Field(
        default=1,
        ge=1,
        le=10,
        description="Processes that may use the session at once (keep 1: Telegram revokes a session used twice).",
    )
    account_wait: float = Field(
        default=600.0, ge=0, description="Seconds a process waits for the account while another one uses it."
    )
    idle_release: float = Field(
        default=10.0, gt=0, description="Seconds without a call after which a process disconnects and lets others in."
    )
    batch_size: int = Field(default=100, ge=1, le=3000, description="Messages asked for per page (100 per request).")
    max_retries: int = Field(default=3, ge=0, le=20, description="Retries after the first attempt (transient errors).")
    base_delay: float = Field(default=1.0, ge=0, description="Seconds before the first retry.")
    backoff_multiplier: float = Field(default=2.0, ge=1, description="Each retry waits this much longer.")
    max_delay: float = Field(
        default=300.0, ge=0, description="No wait is longer than this (a flood wait's too: keep >= flood_wait_max)."
    )
    jitter: float = Field(default=0.5, ge=0, le=1, description="Random spread, as a fraction of the delay.")

    def account_key(self, config: dict[str, Any] | None = None) -> str:
        """The account's key: the block's name (``config["account"]`` when the instance says it)."""
        key = (config or {}).get("account") or getattr(self, "_block_document_name", None)
        if not key:
            raise ConfigError("a telegram account block must be saved (or loaded) by name before it is used")
        return str(key)

    def telegram_account(self, key: str) -> TelegramAccount:
        """The credentials for the Telegram client (ConfigError when never logged in)."""
        session = self.session.get_secret_value()
        if not session:
            raise ConfigError(f"telegram account {key!r} has no session yet: {login_hint(key)}")
        return TelegramAccount(
            api_id=self.api_id,
            api_hash=self.api_hash.get_secret_value(),
            session=session,
            flood_wait_max=self.flood_wait_max,
        )

    def gate(self, key: str) -> AccountGate:
        """This process's gate of the account (the cross-process limit); disconnects when it lets go."""
        gate = account_gate(
            f"telegram:{key}",
            label=f"telegram account {key!r}",
            limit=self.max_processes,
            lease_seconds=get_settings().lock_lease_seconds,
            wait_max=self.account_wait,
            idle_seconds=self.idle_release,
        )
        gate.on_release("telegram-connection", lambda: close_connection(key))
        return gate

    def open_source(self, instance: str, config: dict[str, Any] | None = None) -> TelegramChatSource:
        """The source of one chat (``config["chat_id"]``) of this account."""
        chat_id = parse_chat_id(config, instance=instance)
        key = self.account_key(config)
        return TelegramChatSource(
            key,
            self.telegram_account(key),
            chat_id,
            instance=instance,
            client_factory=client_factory_from_settings(),
            gate=self.gate(key),
        )

    def read_policy(self) -> ReadPolicy:
        return ReadPolicy.of(self)

    def describe(self) -> str:
        name = getattr(self, "_block_document_name", None)
        return f"telegram account {name!r} (api_id {self.api_id})" if name else f"telegram api_id {self.api_id}"

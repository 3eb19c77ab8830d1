"""``syncflow telegram``: log an account in (its block) and register its chats (one instance each).

Like ``syncflow.cli.sync``, these reach Prefect (the account's block) only lazily inside the
commands, in Prefect's ephemeral mode unless ``PREFECT_API_URL`` names a server.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.text import Text

from syncflow.cli import _output as out
from syncflow.errors import ConfigError

telegram_app = typer.Typer(
    help=(
        "Telegram accounts: log in (the session goes into the account's block) and discover the "
        "account's chats (one `telegram` instance per chat)."
    ),
    no_args_is_help=True,
)

_ACCOUNT = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
AccountArg = Annotated[
    str,
    typer.Argument(
        metavar="ACCOUNT",
        help="The account's name: lowercase letters, digits and dashes (also the name of its Prefect block).",
        show_default=False,
    ),
]


def _account(name: str) -> str:
    name = name.strip()
    if not _ACCOUNT.fullmatch(name):
        raise ConfigError(
            f"account name {name!r}: use lowercase letters, digits and dashes (it names the Prefect block)"
        )
    return name


def _env(var: str, what: str) -> str:
    value = os.environ.get(var, "").strip()
    if not value:
        raise ConfigError(f"environment variable {var} ({what}) is not set or empty")
    return value


def _load_block(account: str) -> Any:
    from syncflow.cli.sync import _quiet_prefect

    _quiet_prefect()
    from blocks.telegram import TelegramAccountBlock

    try:
        return TelegramAccountBlock.load(account)
    except ValueError:
        return None


@telegram_app.command("login")
def login_cmd(
    ctx: typer.Context,
    account: AccountArg,
    api_id_env: Annotated[
        str | None,
        typer.Option(
            "--api-id-env",
            metavar="VAR",
            help="Environment variable holding the app's api_id (my.telegram.org). "
            "Optional when the account logged in before (its block keeps it).",
            show_default=False,
        ),
    ] = None,
    api_hash_env: Annotated[
        str | None,
        typer.Option(
            "--api-hash-env",
            metavar="VAR",
            help="Environment variable holding the app's api_hash (never the value itself). "
            "Optional when the account logged in before.",
            show_default=False,
        ),
    ] = None,
    phone: Annotated[
        str | None,
        typer.Option(
            "--phone",
            metavar="PHONE",
            help="The account's phone number, e.g. +4915112345678 (asked when missing).",
            show_default=False,
        ),
    ] = None,
    flood_wait_max: Annotated[
        float | None,
        typer.Option(
            "--flood-wait-max", min=0, help="Seconds of FloodWait waited out (default 300).", show_default=False
        ),
    ] = None,
    _json: out.JsonFlag = False,
) -> None:
    """Sign an account in (phone, the code Telegram sends, the two-step password if set) and save
    its session in the account's block.

    The session string is stored encrypted in Prefect and never printed. Run it again when a sync
    says the session was revoked or expired.
    """
    from syncflow.sources.telegram import login
    from syncflow.sources.telegram_chat import client_factory_from_settings

    account = _account(account)
    existing = _load_block(account)
    if api_id_env is None and existing is None:
        raise ConfigError("a new account needs --api-id-env VAR and --api-hash-env VAR (from my.telegram.org)")
    if (api_id_env is None) != (api_hash_env is None):
        raise ConfigError("give both --api-id-env and --api-hash-env, or neither (to keep the block's)")
    if api_id_env is not None and api_hash_env is not None:
        raw_id = _env(api_id_env, "--api-id-env")
        if not raw_id.isdigit() or int(raw_id) <= 0:
            raise ConfigError(f"environment variable {api_id_env} (--api-id-env) must hold a positive number")
        api_id, api_hash = int(raw_id), _env(api_hash_env, "--api-hash-env")
    else:
        api_id, api_hash = existing.api_id, existing.api_hash.get_secret_value()
    if not phone:
        phone = typer.prompt("Phone number (international format, e.g. +4915112345678)", err=True).strip()

    def code() -> str:
        return str(typer.prompt("The code Telegram sent (in the Telegram app, or by SMS)", err=True))

    def password() -> str:
        return str(typer.prompt("Two-step verification password", hide_input=True, err=True))

    session = login(
        api_id,
        api_hash,
        phone,
        code,
        password,
        account=account,
        client_factory=client_factory_from_settings(),
    )
    from blocks.telegram import TelegramAccountBlock

    fields: dict[str, Any] = existing.model_dump(exclude={"api_id", "api_hash", "session"}) if existing else {}
    fields = {k: v for k, v in fields.items() if k in TelegramAccountBlock.model_fields}
    if flood_wait_max is not None:
        fields["flood_wait_max"] = flood_wait_max
    block = TelegramAccountBlock(api_id=api_id, api_hash=api_hash, session=session, **fields)
    block.save(account, overwrite=True)
    payload = {
        "account": account,
        "block": account,
        "block_type": "syncflow-telegram",
        "api_id": api_id,
        "replaced": existing is not None,
    }
    out.render(
        ctx,
        payload,
        lambda p: (
            f"logged in: account {p['account']!r} saved in block {p['block']!r} ({p['block_type']}); "
            "the session is stored encrypted in Prefect and was not printed. "
            f"Next: syncflow telegram discover {p['account']}"
        ),
    )


@telegram_app.command("discover")
def discover_cmd(
    ctx: typer.Context,
    account: AccountArg,
    tags: Annotated[
        list[str] | None,
        typer.Option("--tag", metavar="TAG", help="Tag the new instances; repeat for several.", show_default=False),
    ] = None,
    types: Annotated[
        list[str] | None,
        typer.Option(
            "--type",
            metavar="TYPES",
            help="Only these chat types, comma separated: user, bot, group "
            "(basic groups and supergroups), supergroup, channel. Default: all.",
            show_default=False,
        ),
    ] = None,
    archived: Annotated[bool, typer.Option("--archived", help="Also register archived chats.")] = False,
    priority: Annotated[int, typer.Option("--priority", help="Priority of the new instances.")] = 0,
    _json: out.JsonFlag = False,
) -> None:
    """List the account's chats and register one `telegram` instance per chat not registered yet.

    Instance names come from the chat (`ACCOUNT-<title>-<id code>`) and never change once
    registered. Re-running adds new chats and reports registered ones the account left or that
    were deleted (they are kept: `syncflow instances disable|remove NAME`).
    """
    from syncflow.sources.telegram import close_connection
    from syncflow.sources.telegram_chat import client_factory_from_settings, list_chats, parse_types
    from syncflow.store.chats import register_chats

    account = _account(account)
    wanted = parse_types(types)
    with out.store():  # fail fast on a store that is not ready, before connecting to Telegram
        pass
    block = _load_block(account)
    if block is None:
        raise ConfigError(
            f"no telegram account {account!r}: run `syncflow telegram login {account} "
            "--api-id-env VAR --api-hash-env VAR` first"
        )
    gate = block.gate(account)
    try:
        chats = list_chats(
            account, block.telegram_account(account), client_factory=client_factory_from_settings(), gate=gate
        )
    finally:
        close_connection(account)
        gate.close()  # disconnect and give the account back at once
    with out.store() as session:
        found = register_chats(
            session, account=account, chats=chats, types=wanted, archived=archived, tags=tags or (), priority=priority
        )
        payload = found.as_dict()

    def human(p: dict[str, Any]) -> list[RenderableType]:
        parts: list[RenderableType] = [
            Text(
                f"account {p['account']!r}: {p['listed']} chat(s) listed, {len(p['added'])} added, "
                f"{len(p['known'])} already registered, {p['filtered_out']} not selected"
            )
        ]
        if p["added"]:
            parts.append(
                out.table(
                    "added",
                    ["INSTANCE", "CHAT ID", "TYPE", "TITLE"],
                    [[c["name"], c["chat_id"], c["type"], c["title"]] for c in p["added"]],
                )
            )
        if p["left"]:
            parts.append(
                out.table(
                    "registered but gone (kept; `syncflow instances disable NAME` to stop syncing them)",
                    ["INSTANCE", "CHAT ID", "TITLE", "WHY"],
                    [[c["name"], c["chat_id"], c["title"], c["why"]] for c in p["left"]],
                )
            )
        return parts

    out.render(ctx, payload, human)

"""``syncflow serve`` (the console: API + web page, uvicorn) and ``syncflow api hash-token``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from syncflow.cli import _output as out

api_app = typer.Typer(help="The console's HTTP API: token helpers.", no_args_is_help=True)


def serve_cmd(
    host: Annotated[str, typer.Option("--host", help="Address to bind (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8080,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
) -> None:
    """Serve the console: the sessions API (/sync_sessions/api), the queue admin
    (/api/admin/sync-queue), the web page (/sync_sessions/) and /healthz, with uvicorn.

    The store is SYNCFLOW_DATABASE_URL, Prefect is PREFECT_API_URL. Write endpoints need a
    bearer token: set SYNCFLOW_API_TOKEN_HASH (from `syncflow api hash-token`) or
    SYNCFLOW_API_TOKEN; SYNCFLOW_API_READ_AUTH=true protects reads too. OpenAPI: /docs.
    """
    import uvicorn

    from syncflow.api import ApiSettings, create_app

    app = create_app(ApiSettings())
    out.checked_engine()  # fail fast on an unreachable or unmigrated store
    uvicorn.run(app, host=host, port=port, log_level=log_level, proxy_headers=False, server_header=False)


@api_app.command("hash-token")
def hash_token_cmd(
    generate: Annotated[
        bool, typer.Option("--generate", help="Make a new random token and print it (once) with its hash.")
    ] = False,
) -> None:
    """Print the SYNCFLOW_API_TOKEN_HASH of a token read from stdin (or a prompt), or of a new
    random token (--generate). Only the hash goes into the server's environment."""
    from syncflow.api.auth import hash_token, new_token

    if generate:
        token = new_token()
        typer.echo(f"token (give it to operators; it is not stored anywhere): {token}", err=True)
    elif sys.stdin.isatty():
        token = typer.prompt("API token", hide_input=True, confirmation_prompt=True)
    else:
        token = sys.stdin.readline().strip()
    typer.echo(hash_token(token))

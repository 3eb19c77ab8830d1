"""The console as the browser test serves it: ``create_app()`` exactly as ``syncflow serve``
builds it (settings from the environment), run by uvicorn on 127.0.0.1.

Test-only stand-in: when this syncflow has no ``POST /sync_sessions/api/instances/{name}/check``
yet (the route of ``syncflow instances check``), one is added here that answers its contract
``{instance, ok, checks: [{check, ok, detail}]}`` with canned results, so the page's check
button can be driven; it is left out of the OpenAPI schema, which is how the test tells which
one it talked to. Product code never has it.

    python -m tests.support.console_app PORT
"""

from __future__ import annotations

import re
import sys
from typing import Any

from fastapi import FastAPI

from syncflow.api import ApiSettings, create_app

CHECK_PATH = re.compile(r"/sync_sessions/api/instances/\{[^}/]+\}/check")

# The stand-in's answers: an instance named like "*-bad" fails its credentials check.
STUB_CHECKS = [
    ("block", True, "connection block present on this Prefect server"),
    ("connection", True, "reached 127.0.0.1:5432 in 3 ms"),
    ("credentials", True, "logged in as syncflow"),
    ("privileges: account", True, "can read pg_roles and the grants"),
]


def has_check_route(app: FastAPI) -> bool:
    return any(
        CHECK_PATH.fullmatch(getattr(r, "path", "")) and "POST" in (getattr(r, "methods", None) or ())
        for r in app.routes
    )


def build() -> FastAPI:
    app = create_app(ApiSettings())
    if has_check_route(app):
        return app

    @app.post("/sync_sessions/api/instances/{name}/check", include_in_schema=False)
    def check_stand_in(name: str) -> dict[str, Any]:
        checks = [{"check": c, "ok": ok, "detail": d} for c, ok, d in STUB_CHECKS]
        if name.endswith("-bad"):
            checks[2] = {
                "check": "credentials",
                "ok": False,
                "detail": 'password authentication failed for user "syncflow" (update it: '
                f"syncflow instances update {name} --password-env VAR)",
            }
        return {"instance": name, "ok": all(c["ok"] for c in checks), "checks": checks}

    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(build(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")

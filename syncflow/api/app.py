"""The console application: ``create_app(settings)`` (served by ``syncflow serve``)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine, text
from starlette.exceptions import HTTPException as StarletteHTTPException

from syncflow.api import _prefect as pf
from syncflow.api import schemas as m
from syncflow.api.auth import TokenCheck
from syncflow.api.deps import Console
from syncflow.api.settings import ApiSettings
from syncflow.errors import (
    AlreadyExistsError,
    ConfigError,
    IllegalTransitionError,
    NotFoundError,
    SyncflowError,
    clean_message,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
HEALTH_STORE_WAIT = (
    2.0  # s /healthz waits for a store that refuses connections (SYNCFLOW_STORE_RETRY_SECONDS elsewhere)
)
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("syncflow")
    except Exception:
        return "unknown"


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _install_errors(app: FastAPI) -> None:
    mapping: list[tuple[type[Exception], int]] = [
        (NotFoundError, 404),
        (ConfigError, 422),
        (IllegalTransitionError, 409),
        (AlreadyExistsError, 409),
        (pf.DeploymentMissing, 503),
        (pf.PrefectUnavailable, 502),
    ]
    for exc_type, status in mapping:

        def handler(request: Request, exc: Exception, status: int = status) -> JSONResponse:
            return _error(status, str(exc))

        app.add_exception_handler(exc_type, handler)

    def other(request: Request, exc: Exception) -> JSONResponse:
        return _error(422, str(exc))

    app.add_exception_handler(SyncflowError, other)

    def overflow(request: Request, exc: Exception) -> JSONResponse:
        return _error(422, f"a value is out of range: {exc}")

    app.add_exception_handler(OverflowError, overflow)

    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Like FastAPI's own, minus the echo of the input (it may hold a token or be huge).
        errors = [
            {"loc": list(e.get("loc", ())), "msg": clean_message(str(e.get("msg", ""))), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    app.add_exception_handler(RequestValidationError, validation)  # type: ignore[arg-type]

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's "error parsing the body": bad input like any other
            return _error(422, f"the request body is not valid JSON ({exc.detail})")
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]


def _install_docs(app: FastAPI) -> None:
    """Swagger UI at ``/docs`` with its assets served from the installed ``swagger-ui-bundle``
    package (FastAPI's default loads them from a CDN)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Any:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/sync_sessions/static/favicon.svg",
        )


def create_app(settings: ApiSettings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """The console: the sessions API, the queue admin API, the web page and ``/healthz``.

    ``settings`` default to the environment (``SYNCFLOW_API_*``); the store is the configured
    one (``SYNCFLOW_DATABASE_URL``) unless ``engine`` is given; Prefect is the API of
    ``PREFECT_API_URL``.
    """
    from syncflow.api import gaps_api, instances_api, queue_api, sessions_api

    settings = settings or ApiSettings()
    token = settings.token.get_secret_value() if settings.token else None
    console = Console(settings=settings, tokens=TokenCheck.from_settings(settings.token_hash, token), engine=engine)
    if not console.tokens.configured:
        log.warning(
            "no API token configured (SYNCFLOW_API_TOKEN_HASH / SYNCFLOW_API_TOKEN): write endpoints answer 403"
        )

    app = FastAPI(
        docs_url=None,  # served below from the swagger-ui-bundle package: no CDN, works offline
        redoc_url=None,
        title="syncflow console",
        version=_version(),
        description=(
            "Sync sessions and their instance records, manual batches, cancel and retry, and the queue admin "
            "per category. Write endpoints need `Authorization: Bearer <token>`; read endpoints too when "
            "SYNCFLOW_API_READ_AUTH is true. Bad input answers 422, unknown sessions 404, state conflicts 409, "
            "Prefect failures 502."
        ),
    )
    app.state.console = console
    _install_errors(app)
    app.include_router(sessions_api.router)
    app.include_router(queue_api.router)
    app.include_router(gaps_api.router)
    app.include_router(instances_api.router)
    app.mount("/sync_sessions/static", StaticFiles(directory=HERE / "static"), name="static")
    _install_docs(app)
    templates = Jinja2Templates(directory=str(HERE / "templates"))

    @app.get("/healthz", response_model=m.HealthOut, tags=["health"], responses={503: {"model": m.HealthOut}})
    async def healthz() -> Any:
        """Liveness and readiness: the store answers a query, the Prefect API its health check.
        503 when the store is down; ``degraded`` (200) when only Prefect is."""

        def store() -> str:
            from syncflow.store.outage import patience

            try:  # a probe answers within seconds: a store restart's blip may pass, an outage not
                with patience(HEALTH_STORE_WAIT), console.get_engine().connect() as conn:
                    conn.execute(text("SELECT 1"))
                return "ok"
            except Exception as exc:
                return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"

        store_state, prefect_err = await asyncio.gather(
            asyncio.to_thread(store), pf.ping(min(settings.prefect_timeout, 5.0))
        )
        body = m.HealthOut(
            status="ok" if store_state == "ok" and prefect_err is None else "degraded",
            store=store_state,
            prefect=prefect_err or "ok",
            version=app.version,
        )
        return JSONResponse(body.model_dump(), status_code=200 if store_state == "ok" else 503)

    @app.get("/sync_sessions", include_in_schema=False)
    def page_redirect() -> RedirectResponse:
        return RedirectResponse("/sync_sessions/", status_code=307)

    @app.get("/", include_in_schema=False)
    def root_redirect() -> RedirectResponse:
        return RedirectResponse("/sync_sessions/", status_code=307)

    @app.get("/sync_sessions/", response_class=HTMLResponse, tags=["page"])
    def page(request: Request) -> HTMLResponse:
        """The management page: sessions with live status, statistics, details, cancel and
        retry buttons, the manual-batch form and a chart of sessions over time. Its data comes
        from the API; write actions send the token the operator typed (kept in sessionStorage)."""
        config = {
            "readAuth": settings.read_auth,
            "writeEnabled": console.tokens.configured,
            "api": "/sync_sessions/api",
            "queueApi": "/api/admin/sync-queue",
            "categories": list(m.CategoryName.__args__),  # type: ignore[attr-defined]
            "prefectUi": settings.prefect_ui_url,  # flow-run links: {prefectUi}/runs/flow-run/{id}
        }
        response = templates.TemplateResponse(
            request,
            "sessions.html",
            {"title": settings.title, "config_json": json.dumps(config).replace("<", "\\u003c"), "config": config},
        )
        response.headers["Content-Security-Policy"] = PAGE_CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    return app

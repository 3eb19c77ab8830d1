"""Fixtures of the console tests: the app on the test store (SQLite and PostgreSQL), an HTTP
client, a bearer token, and Prefect deployments on the test harness."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from syncflow.api import ApiSettings, create_app
from syncflow.api.auth import hash_token
from syncflow.store import instances as inst_svc
from syncflow.store import sessions as book
from syncflow.store.db import session_scope
from syncflow.store.models import SyncInstanceRecord, SyncSession

TOKEN = "console-test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings() -> ApiSettings:
    return ApiSettings(token_hash=hash_token(TOKEN), prefect_timeout=30)


@pytest.fixture
async def client(store_env: str, engine: Engine, settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The console app on the test store, over ASGI (no socket)."""
    app = create_app(settings, engine=engine)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test", timeout=60) as c:
        yield c


class Store:
    """Writes sessions and records straight into the store, with chosen times."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def instance(self, name: str, kind: str = "http-seq", **kw: Any) -> None:
        with session_scope(self.engine) as s:
            inst_svc.add_instance(s, name=name, kind=kind, block_name=kw.pop("block_name", None), **kw)

    def session(
        self,
        instances: list[str],
        *,
        category: str = "messages",
        sync_type: str = "manual_batch",
        outcome: dict[str, str] | None = None,
        started: dt.datetime | None = None,
        seconds: float = 10.0,
        items: int = 0,
        flow_run_id: str | None = None,
        created_by: str | None = None,
    ) -> str:
        """A session over ``instances``; ``outcome`` maps instance -> final record status
        (completed/failed/skipped/running/pending; missing: pending)."""
        outcome = outcome or {}
        with session_scope(self.engine) as s:
            row = book.open_session(
                s,
                sync_category=category,
                sync_type=sync_type,
                instances=instances,
                flow_run_id=flow_run_id,
                created_by=created_by,
            )
            sid = row.session_id
            for rec in book.records_in_order(s, session_id=sid):
                want = outcome.get(rec.instance_name or "", "pending")
                if want == "pending":
                    continue
                book.start_instance_sync(s, record_id=rec.id)
                if want == "running":
                    book.add_record_progress(
                        s,
                        record_id=rec.id,
                        counts=book.ItemCounts(synced=items),
                        details={"batches": 2, "cursor": items, "remaining": items},
                    )
                elif want == "completed":
                    book.complete_instance_sync(
                        s, record_id=rec.id, counts=book.ItemCounts(synced=items, created=items)
                    )
                elif want == "failed":
                    book.fail_instance_sync(s, record_id=rec.id, error_message=f"{rec.instance_name}: boom")
                elif want == "skipped":
                    book.skip_instance_sync(s, record_id=rec.id, reason="already syncing")
        if started is not None:
            self.move(sid, started, seconds)
        return sid

    def move(self, sid: str, started: dt.datetime, seconds: float) -> None:
        """Set the session's (and its records') times: started at ``started``, finished records
        ``seconds`` later."""
        with session_scope(self.engine) as s:
            row = s.get(
                SyncSession,
                s.scalar(
                    SyncSession.__table__.select()
                    .with_only_columns(SyncSession.id)
                    .where(SyncSession.session_id == sid)
                ),
            )
            assert row is not None
            row.started_at = started
            row.created_at = started
            if row.completed_at is not None:
                row.completed_at = started + dt.timedelta(seconds=seconds)
            for rec in s.query(SyncInstanceRecord).filter(SyncInstanceRecord.session_id == sid):
                rec.created_at = started
                if rec.started_at is not None:
                    rec.started_at = started
                if rec.completed_at is not None:
                    rec.completed_at = started + dt.timedelta(seconds=seconds)


@pytest.fixture
def store(engine: Engine) -> Store:
    return Store(engine)


# ----------------------------------------------------------------- Prefect (test harness)


@pytest.fixture(scope="session")
def harness_api_url(prefect_harness: None) -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the Prefect test harness has no API URL"
    return url


@pytest.fixture
def prefect_env(harness_api_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """PREFECT_API_URL in the environment too (threads without the harness' settings context)."""
    monkeypatch.setenv("PREFECT_API_URL", harness_api_url)
    yield harness_api_url


class Deployments:
    def __init__(self, manual: str, scheduled: str, scheduled_id: str) -> None:
        self.manual = manual
        self.scheduled = scheduled
        self.scheduled_id = scheduled_id


@pytest.fixture(scope="session")
async def deployments(prefect_harness: None) -> Deployments:
    """On the harness: ``sync-session/console-manual`` (no work pool: its runs stay Scheduled,
    i.e. queued) and ``sync-session/console-scheduled-config`` (tag category:config, a cron)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.utilities.callables import parameter_schema

    from flows.session_sync import sync_session

    schema = parameter_schema(sync_session.fn).model_dump_for_openapi()
    async with get_client() as client:
        flow_id = await client.create_flow_from_name("sync-session")
        await client.create_deployment(
            flow_id,
            "console-manual",
            parameter_openapi_schema=schema,
            tags=["syncflow", "manual"],
            parameters={"sync_type": "manual_batch"},
            enforce_parameter_schema=True,
        )
        old = {
            **schema,
            "properties": {k: v for k, v in schema["properties"].items() if k not in ("scale_out", "refresh_metadata")},
        }
        await client.create_deployment(
            flow_id,
            "console-old",
            parameter_openapi_schema=old,
            tags=["syncflow", "manual"],
            parameters={"sync_type": "manual_batch"},
        )
        sched_id = await client.create_deployment(
            flow_id,
            "console-scheduled-config",
            parameter_openapi_schema=schema,
            tags=["syncflow", "scheduled", "category:config"],
            parameters={"sync_type": "scheduled", "category": "config"},
            schedules=[DeploymentScheduleCreate(schedule=CronSchedule(cron="0 3 * * *", timezone="UTC"), active=True)],
        )
    return Deployments("sync-session/console-manual", "sync-session/console-scheduled-config", str(sched_id))


@pytest.fixture
def prefect_settings(settings: ApiSettings, deployments: Deployments) -> ApiSettings:
    return settings.model_copy(update={"manual_batch_deployment": deployments.manual})


@pytest.fixture
async def pclient(
    store_env: str, engine: Engine, prefect_env: str, prefect_settings: ApiSettings
) -> AsyncIterator[httpx.AsyncClient]:
    """The console on the test store and the Prefect harness (manual batches: console-manual)."""
    app = create_app(prefect_settings, engine=engine)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test", timeout=120) as c:
        yield c


def new_id() -> str:
    return str(uuid.uuid4())

"""Store reads shaped for the API: statistics (pandas). Sessions and records are answered in
the one shape of :mod:`syncflow.schemas`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from syncflow.api import schemas as m
from syncflow.errors import ConfigError
from syncflow.store.models import (
    Category,
    SessionStatus,
    SyncInstanceRecord,
    SyncSession,
    SyncType,
    utcnow,
)

MAX_BUCKETS = 2000


# --------------------------------------------------------------------------- statistics


def _quantiles(values: Any) -> m.DurationStats:
    if len(values) == 0:
        return m.DurationStats()
    q = values.quantile([0.5, 0.9, 0.95, 0.99])

    def r(v: Any) -> float:
        return round(float(v), 3)

    return m.DurationStats(
        count=len(values),
        avg=r(values.mean()),
        p50=r(q.loc[0.5]),
        p90=r(q.loc[0.9]),
        p95=r(q.loc[0.95]),
        p99=r(q.loc[0.99]),
        max=r(values.max()),
    )


def statistics(
    s: Session,
    *,
    since: dt.datetime | None,
    until: dt.datetime | None,
    sync_type: str | None,
    sync_category: str | None,
    bucket: str,
) -> m.StatisticsOut:
    """Counts by type x category x status, success rate, duration percentiles, throughput and a
    timeline of sessions started per ``bucket``, for sessions created in [since, until)."""
    import pandas as pd

    until = until or utcnow()
    since = since or until - dt.timedelta(days=7)
    if since >= until:
        raise ConfigError(f"since ({since.isoformat()}) must be before until ({until.isoformat()})")
    step = dt.timedelta(hours=1) if bucket == "hour" else dt.timedelta(days=1)
    if (until - since) / step > MAX_BUCKETS:
        raise ConfigError(
            f"{(until - since) / step:.0f} {bucket} buckets is too many (at most {MAX_BUCKETS}): "
            "use bucket=day or a shorter window"
        )
    conds = [SyncSession.created_at >= since, SyncSession.created_at < until]
    if sync_type is not None:
        conds.append(SyncSession.sync_type == SyncType.parse(sync_type, what="sync type").value)
    if sync_category is not None:
        conds.append(SyncSession.sync_category == Category.parse(sync_category, what="category").value)

    sessions = pd.DataFrame(
        s.execute(
            select(
                SyncSession.sync_type,
                SyncSession.sync_category,
                SyncSession.status,
                SyncSession.started_at,
                SyncSession.completed_at,
                SyncSession.created_at,
            ).where(*conds)
        ).all(),
        columns=["sync_type", "sync_category", "status", "started_at", "completed_at", "created_at"],
    )
    records = pd.DataFrame(
        s.execute(
            select(
                SyncInstanceRecord.sync_category,
                SyncInstanceRecord.status,
                SyncInstanceRecord.items_synced,
                SyncInstanceRecord.started_at,
                SyncInstanceRecord.completed_at,
            )
            .join(SyncSession, SyncSession.session_id == SyncInstanceRecord.session_id)
            .where(*conds)
        ).all(),
        columns=["sync_category", "status", "items_synced", "started_at", "completed_at"],
    )

    breakdown: list[m.BreakdownItem] = []
    by_status: dict[str, int] = {}
    if not sessions.empty:
        grouped = sessions.groupby(["sync_type", "sync_category", "status"]).size()
        for (st, cat, status), n in grouped.items():
            breakdown.append(m.BreakdownItem(sync_type=st, sync_category=cat, status=status, count=int(n)))
        by_status = {str(k): int(v) for k, v in sessions["status"].value_counts().items()}
    finished = by_status.get(SessionStatus.COMPLETED, 0) + by_status.get(SessionStatus.FAILED, 0)
    success_rate = round(by_status.get(SessionStatus.COMPLETED, 0) / finished, 4) if finished else None

    durations = pd.Series(dtype="float64")
    if not sessions.empty:
        done = sessions.dropna(subset=["completed_at"])
        if not done.empty:
            durations = (
                pd.to_datetime(done["completed_at"], utc=True) - pd.to_datetime(done["started_at"], utc=True)
            ).dt.total_seconds()

    instances: dict[str, int] = {}
    items = 0
    seconds = 0.0
    by_cat: dict[str, float | None] = {}
    if not records.empty:
        instances = {str(k): int(v) for k, v in records["status"].value_counts().items()}
        fin = records.dropna(subset=["started_at", "completed_at"]).copy()
        if not fin.empty:
            fin["secs"] = (
                pd.to_datetime(fin["completed_at"], utc=True) - pd.to_datetime(fin["started_at"], utc=True)
            ).dt.total_seconds()
            items = int(fin["items_synced"].sum())
            seconds = float(fin["secs"].sum())
            for cat, g in fin.groupby("sync_category"):
                secs = float(g["secs"].sum())
                by_cat[str(cat)] = round(float(g["items_synced"].sum()) / secs, 1) if secs > 0 else None
    throughput = m.Throughput(
        items_synced=items,
        record_seconds=round(seconds, 3),
        items_per_second=round(items / seconds, 1) if seconds > 0 else None,
        by_category=by_cat,
    )

    freq = "h" if bucket == "hour" else "D"
    start = pd.Timestamp(since).tz_convert("UTC").floor(freq)
    index = pd.date_range(start, pd.Timestamp(until).tz_convert("UTC"), freq=freq, inclusive="left")
    if len(index) == 0 or index[0] > start:
        index = pd.DatetimeIndex([start]).append(index).unique()
    timeline_df = pd.DataFrame(0, index=index, columns=[s_.value for s_ in SessionStatus])
    if not sessions.empty:
        created = pd.to_datetime(sessions["created_at"], utc=True).dt.floor(freq)
        counts = sessions.assign(bucket=created).groupby(["bucket", "status"]).size().unstack(fill_value=0)
        timeline_df = timeline_df.add(
            counts.reindex(index=index, columns=timeline_df.columns, fill_value=0), fill_value=0
        )
    timeline = [
        m.TimelinePoint(
            start=ts.to_pydatetime(),
            completed=int(row[SessionStatus.COMPLETED.value]),
            failed=int(row[SessionStatus.FAILED.value]),
            cancelled=int(row[SessionStatus.CANCELLED.value]),
            running=int(row[SessionStatus.RUNNING.value]),
        )
        for ts, row in timeline_df.iterrows()
    ]

    return m.StatisticsOut(
        since=since,
        until=until,
        bucket=bucket,
        total_sessions=len(sessions),
        by_status=by_status,
        breakdown=breakdown,
        success_rate=success_rate,
        duration_seconds=_quantiles(durations),
        instances=instances,
        throughput=throughput,
        timeline=timeline,
    )

"""Capacity growth from the capacity samples, with pandas: the computing behind ``syncflow report capacity``.

:func:`load_samples` reads the samples (``capacity_samples``) of some instances since a time into a
DataFrame; :func:`growth` turns them into one row per (instance, database): first and last size
in the window, delta in bytes and percent, bytes per day, number of samples; :func:`write_csv`
and :func:`write_png` export them (the chart with matplotlib's Agg backend: no display needed).

pandas and matplotlib are imported inside the functions (importing this module stays cheap).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy.orm import Session

from syncflow.store import instances as instance_svc
from syncflow.store.snapshots import capacity_history

if TYPE_CHECKING:
    import pandas as pd

SAMPLE_COLUMNS: Final = ["instance", "database", "collected_at", "bytes", "session_id"]
GROWTH_COLUMNS: Final = [
    "instance",
    "database",
    "first_at",
    "last_at",
    "first_bytes",
    "last_bytes",
    "delta_bytes",
    "growth_pct",
    "bytes_per_day",
    "samples",
    "span_seconds",
    "basis",
]
# A per-day rate from samples spanning less than this is an extrapolation: its row says so.
SHORT_SPAN_SECONDS: Final = 86400.0
MAX_SERIES: Final = 20  # lines drawn on the chart: the largest databases
_UNITS: Final = (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024), ("B", 1))


def load_samples(
    session: Session,
    *,
    instances: Sequence[str] = (),
    databases: Sequence[str] = (),
    since: dt.datetime | None = None,
) -> pd.DataFrame:
    """The capacity samples of the instances named (default: all) since ``since``, oldest first.

    Columns: ``instance``, ``database``, ``collected_at`` (UTC), ``bytes``, ``session_id``.
    An unknown instance name raises :class:`~syncflow.errors.NotFoundError`.
    """
    import pandas as pd

    chosen = (
        [instance_svc.get_instance(session, name=n) for n in dict.fromkeys(instances)]
        if instances
        else instance_svc.list_instances(session)
    )
    wanted = set(databases)
    rows = [
        (inst.name, smp.database, smp.collected_at, int(smp.bytes), smp.session_id)
        for inst in chosen
        for smp in capacity_history(session, instance_id=inst.id, since=since)
        if not wanted or smp.database in wanted
    ]
    df = pd.DataFrame(rows, columns=SAMPLE_COLUMNS)
    df["collected_at"] = pd.to_datetime(df["collected_at"], utc=True)
    df["bytes"] = df["bytes"].astype("int64")
    return df.sort_values(["instance", "database", "collected_at"], kind="stable").reset_index(drop=True)


def growth(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per (instance, database): first/last size in the window, delta, % growth, bytes/day, samples.

    ``growth_pct`` is NaN when the first size is 0; ``bytes_per_day`` when all samples share
    one instant (a single sample).
    """
    import pandas as pd

    if samples.empty:
        return pd.DataFrame(columns=GROWTH_COLUMNS)
    ordered = samples.sort_values(["instance", "database", "collected_at"], kind="stable")
    out = (
        ordered.groupby(["instance", "database"], sort=True)
        .agg(
            first_at=("collected_at", "first"),
            last_at=("collected_at", "last"),
            first_bytes=("bytes", "first"),
            last_bytes=("bytes", "last"),
            samples=("bytes", "size"),
        )
        .reset_index()
    )
    out["delta_bytes"] = out["last_bytes"] - out["first_bytes"]
    first = out["first_bytes"].astype("float64")
    out["growth_pct"] = (out["delta_bytes"] / first.where(first > 0) * 100).round(2)
    span = (out["last_at"] - out["first_at"]).dt.total_seconds()
    days = span / 86400
    out["bytes_per_day"] = (out["delta_bytes"] / days.where(days > 0)).round(1)
    out["span_seconds"] = span.round(1)
    out["basis"] = [
        f"extrapolated from {n} samples over {span_text(sec)}" if 0 < sec < SHORT_SPAN_SECONDS else None
        for n, sec in zip(out["samples"], span, strict=True)
    ]
    return out[GROWTH_COLUMNS]


def span_text(seconds: float) -> str:
    """``45 s``, ``2 min``, ``5.5 h``: how long a series of samples spans."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _number(value: Any) -> Any:
    """A JSON/CSV-friendly scalar: NaN -> None, numpy ints/floats -> Python's, times -> aware datetimes."""
    if value is None:
        return None
    if hasattr(value, "to_pydatetime"):
        return value.to_pydatetime()
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def growth_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{col: _number(row[col]) for col in GROWTH_COLUMNS} for _, row in table.iterrows()]


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """Write a frame as CSV (times ISO-8601 UTC, empty cells for missing numbers)."""
    out = table.copy()
    for col in out.columns:
        if str(out[col].dtype).startswith("datetime64"):
            out[col] = out[col].map(lambda t: t.isoformat())
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False)


def _unit(max_bytes: float) -> tuple[str, int]:
    for name, size in _UNITS:
        if max_bytes >= size:
            return name, size
    return "B", 1


def write_png(samples: pd.DataFrame, path: Path, *, title: str) -> int:
    """Draw the size of each (instance, database) over time; returns how many lines were drawn.

    At most :data:`MAX_SERIES` lines: the databases largest at their last sample.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    last = samples.groupby(["instance", "database"])["bytes"].last().sort_values(ascending=False)
    keep = list(last.index[:MAX_SERIES])
    unit, scale = _unit(float(samples["bytes"].max()))
    fig = Figure(figsize=(11, 6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for inst, db in sorted(keep):
        part = samples[(samples["instance"] == inst) & (samples["database"] == db)]
        times = part["collected_at"].dt.tz_convert("UTC").dt.tz_localize(None)
        ax.plot(times, part["bytes"] / scale, marker="o", markersize=3, linewidth=1.5, label=f"{inst} / {db}")
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_xlabel("collected at (UTC)")
    ax.set_ylabel(f"size ({unit})")
    more = f" (largest {len(keep)} of {len(last)})" if len(last) > len(keep) else ""
    ax.set_title(title + more)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return len(keep)


__all__ = [
    "GROWTH_COLUMNS",
    "MAX_SERIES",
    "SAMPLE_COLUMNS",
    "growth",
    "growth_records",
    "load_samples",
    "write_csv",
    "write_png",
]

"""``syncflow report capacity``: growth of every database over a window, from the capacity samples.

The samples are what ``capacity`` syncs appended (one row per instance, database and session,
``capacity_samples``); :mod:`syncflow.reports.capacity` turns them (pandas) into one line per
(instance, database): first and last size in the window, the change in bytes and percent,
bytes per day and the number of samples. Output: a table (or ``--json``), ``--csv FILE`` (that table, raw numbers),
``--samples-csv FILE`` (every sample) and ``--png FILE`` (a line chart of the size of each
database over time, drawn by matplotlib's Agg backend: no display needed).

pandas and matplotlib are imported inside the command (``syncflow --help`` stays fast).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.console import RenderableType
from rich.text import Text

# Defined before importing syncflow.cli: that module registers this app at its end, which must
# also work when this module is the one imported first.
report_app = typer.Typer(help="Reports over what the syncs stored.", no_args_is_help=True)

from syncflow.cli import _output as out  # noqa: E402
from syncflow.reports.capacity import growth, growth_records, load_samples, write_csv, write_png  # noqa: E402
from syncflow.store.models import utcnow  # noqa: E402
from syncflow.store.snapshots import human_bytes  # noqa: E402

DEFAULT_SINCE: Final = "30d"


# ---------------------------------------------------------------------- command

_SINCE_HELP = (
    "Start of the window: an age (`12h`, `30d`, `2w`, a bare number of days) or an ISO date/time "
    f"(`2026-11-01`; UTC unless it has an offset). Default: {DEFAULT_SINCE}."
)


def _signed(n: Any) -> str:
    if n is None:
        return "-"
    return ("+" if n > 0 else "") + human_bytes(n)


@report_app.command("capacity")
def report_capacity(
    ctx: typer.Context,
    instance: Annotated[
        list[str] | None,
        typer.Option("--instance", metavar="NAME", help="Only this instance; repeat for several.", show_default=False),
    ] = None,
    database: Annotated[
        list[str] | None,
        typer.Option("--database", metavar="DB", help="Only this database; repeat for several.", show_default=False),
    ] = None,
    since: Annotated[
        dt.datetime | None,
        typer.Option("--since", metavar="AGE|DATE", parser=out.parse_since, help=_SINCE_HELP, show_default=False),
    ] = None,
    csv: Annotated[
        Path | None,
        typer.Option("--csv", metavar="FILE", help="Also write the growth table as CSV.", show_default=False),
    ] = None,
    samples_csv: Annotated[
        Path | None,
        typer.Option("--samples-csv", metavar="FILE", help="Also write every sample as CSV.", show_default=False),
    ] = None,
    png: Annotated[
        Path | None,
        typer.Option("--png", metavar="FILE", help="Also draw the sizes over time as a PNG chart.", show_default=False),
    ] = None,
    _json: out.JsonFlag = False,
) -> None:
    """Growth of each database over a window (default the last 30 days), from the capacity samples.

    One row per (instance, database): first and last size, delta, % growth, bytes per day, samples.
    Instances and databases without samples in the window are not listed.
    """
    start = since if since is not None else out.parse_since(DEFAULT_SINCE)
    with out.store() as session:
        samples = load_samples(session, instances=instance or [], databases=database or [], since=start)
    table = growth(samples)
    rows = growth_records(table)
    files: dict[str, str | None] = {"csv": None, "samples_csv": None, "png": None}
    if csv is not None:
        write_csv(table, csv)
        files["csv"] = str(csv)
    if samples_csv is not None:
        write_csv(samples, samples_csv)
        files["samples_csv"] = str(samples_csv)
    if png is not None:
        if samples.empty:
            out.warn(f"no capacity samples since {out.fmt_time(start)} UTC: {png} not written")
        else:
            write_png(samples, png, title=f"Database size since {out.fmt_time(start)} UTC")
            files["png"] = str(png)
    payload = {"since": start, "until": utcnow(), "samples": len(samples), "rows": rows, "files": files}

    def human(p: dict[str, Any]) -> list[RenderableType]:
        scope = f"since {out.fmt_time(p['since'])} UTC"
        if not p["rows"]:
            parts: list[RenderableType] = [Text(f"no capacity samples {scope}")]
        else:
            parts = [
                out.table(
                    f"capacity growth {scope}: {len(p['rows'])} database(s), {p['samples']} sample(s)",
                    [
                        "INSTANCE",
                        "DATABASE",
                        "FIRST (UTC)",
                        "LAST (UTC)",
                        "FIRST",
                        "LAST",
                        "DELTA",
                        "GROWTH",
                        "PER DAY",
                        "SAMPLES",
                    ],
                    [
                        [
                            r["instance"],
                            r["database"],
                            out.fmt_time(r["first_at"]),
                            out.fmt_time(r["last_at"]),
                            human_bytes(r["first_bytes"]),
                            human_bytes(r["last_bytes"]),
                            _signed(r["delta_bytes"]),
                            "-" if r["growth_pct"] is None else f"{r['growth_pct']:+.2f}%",
                            "-"
                            if r["bytes_per_day"] is None
                            else _signed(r["bytes_per_day"]) + "/day" + (f" ({r['basis']})" if r.get("basis") else ""),
                            r["samples"],
                        ]
                        for r in p["rows"]
                    ],
                )
            ]
        wrote = [f"wrote {what.replace('_', ' ')}: {path}" for what, path in p["files"].items() if path]
        if wrote:
            parts.append(Text("\n".join(wrote)))
        return parts

    out.render(ctx, payload, human)


__all__ = ["report_app"]

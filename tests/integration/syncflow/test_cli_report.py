"""``syncflow report capacity`` over capacity samples inserted into a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from syncflow import cli
from syncflow.reports.capacity import GROWTH_COLUMNS, SAMPLE_COLUMNS
from syncflow.settings import reset_settings
from syncflow.store import instances as inst_svc
from syncflow.store.db import dispose_engines, session_scope
from syncflow.store.models import CapacitySample, utcnow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MiB = 1024 * 1024


@pytest.fixture
def names() -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    return {"pg": f"rep-{run}-pg", "my": f"rep-{run}-my", "idle": f"rep-{run}-idle"}


@pytest.fixture
def now() -> dt.datetime:
    return utcnow().replace(microsecond=0)


@pytest.fixture
def samples(engine: Engine, names: dict[str, str], now: dt.datetime) -> dict[str, Any]:
    """Two instances with samples inside and outside the 30-day window, and one without any."""
    day = dt.timedelta(days=1)
    series = {
        ("pg", "app"): [(now - 10 * day, 100 * MiB), (now - 5 * day, 150 * MiB), (now - 1 * day, 300 * MiB)],
        ("pg", "logs"): [(now - 40 * day, 1 * MiB), (now - 3 * day, 50 * MiB)],  # the first is out of the window
        ("pg", "shrink"): [(now - 6 * day, 64 * MiB), (now - 2 * day, 48 * MiB)],
        ("my", "shop"): [(now - 20 * day, 0), (now - 1 * day, 4096)],  # from empty: no % growth
        ("my", "once"): [(now - 4 * day, 12345)],  # a single sample: no rate
    }
    with session_scope(engine) as s:
        ids = {key: inst_svc.add_instance(s, name=name, kind="postgres").id for key, name in names.items()}
        for (inst, db), points in series.items():
            for i, (at, size) in enumerate(points):
                s.add(
                    CapacitySample(
                        instance_id=ids[inst], session_id=f"s-{inst}-{db}-{i}", database=db, bytes=size, collected_at=at
                    )
                )
    return {"series": series}


class Cli:
    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Result:
        return self.runner.invoke(cli.app, ["--database-url", self.url, *args])

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)


@pytest.fixture
def run(store_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    monkeypatch.setenv("SYNCFLOW_DATABASE_URL", store_url)  # --database-url writes it: restored after
    monkeypatch.setenv("COLUMNS", "250")  # a wide table: no folded cells
    yield Cli(store_url)
    reset_settings()
    dispose_engines()


def _rows(payload: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["instance"], r["database"]): r for r in payload["rows"]}


def test_growth_per_database_over_the_default_window(
    run: Cli, samples: dict[str, Any], names: dict[str, str], now: dt.datetime
) -> None:
    payload = run.json("report", "capacity")
    rows = _rows(payload)
    assert sorted(rows) == sorted(
        [
            (names["pg"], "app"),
            (names["pg"], "logs"),
            (names["pg"], "shrink"),
            (names["my"], "shop"),
            (names["my"], "once"),
        ]
    )
    assert payload["samples"] == 9  # the 40-day-old one is outside the 30-day window
    app = rows[(names["pg"], "app")]
    assert {k: app[k] for k in GROWTH_COLUMNS if k not in ("first_at", "last_at")} == {
        "instance": names["pg"],
        "database": "app",
        "first_bytes": 100 * MiB,
        "last_bytes": 300 * MiB,
        "delta_bytes": 200 * MiB,
        "growth_pct": 200.0,
        "bytes_per_day": round(200 * MiB / 9, 1),
        "samples": 3,
        "span_seconds": 9 * 86400.0,
        "basis": None,  # nine days of samples: not an extrapolation from a short span
    }
    assert dt.datetime.fromisoformat(app["first_at"]) == now - dt.timedelta(days=10)
    assert dt.datetime.fromisoformat(app["last_at"]) == now - dt.timedelta(days=1)
    logs = rows[(names["pg"], "logs")]
    assert (logs["first_bytes"], logs["last_bytes"], logs["samples"], logs["growth_pct"]) == (
        50 * MiB,
        50 * MiB,
        1,
        0.0,
    )
    assert logs["bytes_per_day"] is None
    shrink = rows[(names["pg"], "shrink")]
    assert (shrink["delta_bytes"], shrink["growth_pct"], shrink["bytes_per_day"]) == (-16 * MiB, -25.0, -4 * MiB)
    shop = rows[(names["my"], "shop")]
    assert (shop["first_bytes"], shop["last_bytes"], shop["delta_bytes"], shop["growth_pct"]) == (0, 4096, 4096, None)
    assert shop["samples"] == 2
    once = rows[(names["my"], "once")]
    assert (once["delta_bytes"], once["samples"], once["bytes_per_day"]) == (0, 1, None)


def test_filters_by_instance_database_and_window(run: Cli, samples: dict[str, Any], names: dict[str, str]) -> None:
    rows = _rows(run.json("report", "capacity", "--instance", names["pg"], "--since", "7d"))
    assert sorted(rows) == [(names["pg"], "app"), (names["pg"], "logs"), (names["pg"], "shrink")]
    app = rows[(names["pg"], "app")]
    assert (app["first_bytes"], app["last_bytes"], app["growth_pct"], app["samples"]) == (
        150 * MiB,
        300 * MiB,
        100.0,
        2,
    )
    rows = _rows(run.json("report", "capacity", "--since", "60d", "--database", "logs"))
    assert list(rows) == [(names["pg"], "logs")]
    assert (rows[(names["pg"], "logs")]["first_bytes"], rows[(names["pg"], "logs")]["samples"]) == (1 * MiB, 2)
    assert run.json("report", "capacity", "--instance", names["idle"])["rows"] == []


def test_table_output(run: Cli, samples: dict[str, Any], names: dict[str, str]) -> None:
    out = run.ok("report", "capacity", "--instance", names["pg"]).stdout
    assert "capacity growth since" in out and "3 database(s), 6 sample(s)" in out
    app_line = next(line for line in out.splitlines() if " app " in line)
    for cell in (names["pg"], "100.0 MiB", "300.0 MiB", "+200.0 MiB", "+200.00%", "+22.2 MiB/day", " 3 "):
        assert cell in app_line, (cell, app_line)
    shrink_line = next(line for line in out.splitlines() if " shrink " in line)
    assert "-16.0 MiB" in shrink_line and "-25.00%" in shrink_line
    assert "no capacity samples since" in run.ok("report", "capacity", "--instance", names["idle"]).stdout


def test_csv_and_png_exports(run: Cli, samples: dict[str, Any], names: dict[str, str], tmp_path: Path) -> None:
    table_csv, samples_csv, png = tmp_path / "out" / "growth.csv", tmp_path / "samples.csv", tmp_path / "cap.png"
    payload = run.json(
        "report", "capacity", "--csv", str(table_csv), "--samples-csv", str(samples_csv), "--png", str(png)
    )
    assert payload["files"] == {"csv": str(table_csv), "samples_csv": str(samples_csv), "png": str(png)}

    with table_csv.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == GROWTH_COLUMNS
        rows = {(r["instance"], r["database"]): r for r in reader}
    assert len(rows) == 5
    app = rows[(names["pg"], "app")]
    assert (app["first_bytes"], app["last_bytes"], app["delta_bytes"], app["samples"]) == (
        str(100 * MiB),
        str(300 * MiB),
        str(200 * MiB),
        "3",
    )
    assert float(app["growth_pct"]) == 200.0
    assert dt.datetime.fromisoformat(app["first_at"]).tzinfo is not None
    assert rows[(names["my"], "shop")]["growth_pct"] == ""  # no % growth from 0 bytes

    with samples_csv.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == SAMPLE_COLUMNS
        sample_rows = list(reader)
    assert len(sample_rows) == 9
    assert [int(r["bytes"]) for r in sample_rows if r["database"] == "app"] == [100 * MiB, 150 * MiB, 300 * MiB]

    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1100, 600)

    human = run.ok("report", "capacity", "--png", str(tmp_path / "again.png")).stdout
    assert f"wrote png: {tmp_path / 'again.png'}" in human


def test_errors_and_empty_window(run: Cli, samples: dict[str, Any], names: dict[str, str], tmp_path: Path) -> None:
    result = run("report", "capacity", "--instance", "no-such-instance")
    assert result.exit_code == 1 and "unknown instance 'no-such-instance'" in result.stderr
    result = run("report", "capacity", "--since", "yesterday-ish")
    assert result.exit_code == 2
    png = tmp_path / "empty.png"
    result = run("report", "capacity", "--instance", names["idle"], "--png", str(png))
    assert result.exit_code == 0 and "not written" in result.stderr
    assert not png.exists()


def test_growth_from_a_short_span_says_how_little_it_is_based_on(
    run: Cli, engine: Engine, names: dict[str, str], now: dt.datetime
) -> None:
    with session_scope(engine) as s:
        iid = inst_svc.add_instance(s, name=names["pg"], kind="postgres").id
        for i, (ago, size) in enumerate([(dt.timedelta(minutes=2), 10 * MiB), (dt.timedelta(0), 11 * MiB)]):
            s.add(
                CapacitySample(
                    instance_id=iid, session_id=f"short-{i}", database="young", bytes=size, collected_at=now - ago
                )
            )
    (row,) = run.json("report", "capacity", "--instance", names["pg"])["rows"]
    assert row["span_seconds"] == 120.0 and row["bytes_per_day"] == round(1 * MiB * 720, 1)
    assert row["basis"] == "extrapolated from 2 samples over 2 min"
    text = run.ok("report", "capacity", "--instance", names["pg"]).stdout
    assert "/day (extrapolated from 2 samples over 2 min)" in text

"""The README's first command, `syncflow demo` (what `make demo` runs), on the embedded default:
the demo's own SQLite store under SYNCFLOW_HOME/demo (never the operator's store) and Prefect's
ephemeral mode, in a fresh process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from syncflow.store import instances as inst_svc
from syncflow.store.db import make_engine, session_scope
from syncflow.store.migrations import upgrade
from syncflow.store.models import Instance, SyncSession

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_real_sessions_on_the_embedded_default(tmp_path: Path) -> None:
    # an operator's store, with an instance of its own: the demo must not touch it
    operator_url = f"sqlite:///{tmp_path / 'operator.db'}"
    engine = make_engine(operator_url)
    upgrade(engine)
    with session_scope(engine) as s:
        inst_svc.add_instance(s, name="prod-im", kind="http-seq", block_name="syncflow-prod-im")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SYNCFLOW_"))}
    env.update(
        SYNCFLOW_HOME=str(tmp_path / "home"),
        SYNCFLOW_DATABASE_URL=operator_url,
        PREFECT_HOME=str(tmp_path / "prefect"),
        COLUMNS="200",
    )
    done = subprocess.run(
        [str(Path(sys.executable).parent / "syncflow"), "demo", "--messages", "400", "--new", "25"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    demo_url = f"sqlite:///{tmp_path / 'home' / 'demo' / 'syncflow.db'}"
    assert f"store: {demo_url} (the demo's own" in out
    with session_scope(engine) as s:  # the operator's store: its one instance, no demo instance, no session
        assert [i.name for i in s.scalars(select(Instance))] == ["prod-im"]
        assert s.scalar(select(func.count()).select_from(SyncSession)) == 0
    engine.dispose()
    demo = make_engine(demo_url)
    with session_scope(demo) as s:  # the demo's: its three instances, four sessions
        assert sorted(i.name for i in s.scalars(select(Instance))) == ["demo-im-1", "demo-im-2", "demo-im-3"]
        assert s.scalar(select(func.count()).select_from(SyncSession)) == 4
    demo.dispose()
    assert f"syncflow --database-url {demo_url} sessions list" in out
    # two messages sessions, each after its metadata session, all instances completed
    assert len(re.findall(r"\(messages\): completed — 3/3 succeeded, 0 failed", out)) == 2
    assert len(re.findall(r"metadata: 3 instance syncs, at most \d at once", out)) == 2
    peaks = [int(n) for n in re.findall(r"messages: 3 instance syncs, at most (\d) at once \(Prefect limit", out)]
    assert len(peaks) == 2 and all(1 <= p <= 3 for p in peaks)
    # the second session is incremental: each server was asked from its previous top seq only
    asked = re.findall(r"(demo-im-\d) was asked for lastSeq=\[(\d+)\]: only the new messages were fetched", out)
    assert asked == [("demo-im-1", "400"), ("demo-im-2", "240"), ("demo-im-3", "160")]

"""The README's first command, `syncflow demo` (what `make demo` runs), on the embedded default:
a SQLite store under SYNCFLOW_HOME and Prefect's ephemeral mode, in a fresh process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_real_sessions_on_the_embedded_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SYNCFLOW_"))}
    env.update(SYNCFLOW_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect"), COLUMNS="200")
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
    assert f"store: sqlite:///{tmp_path / 'home' / 'syncflow.db'}" in out
    # two messages sessions, each after its metadata session, all instances completed
    assert len(re.findall(r"\(messages\): completed — 3/3 succeeded, 0 failed", out)) == 2
    assert len(re.findall(r"metadata: 3 instance syncs, at most \d at once", out)) == 2
    peaks = [int(n) for n in re.findall(r"messages: 3 instance syncs, at most (\d) at once \(Prefect limit", out)]
    assert len(peaks) == 2 and all(1 <= p <= 3 for p in peaks)
    # the second session is incremental: each server was asked from its previous top seq only
    asked = re.findall(r"(demo-im-\d) was asked for lastSeq=\[(\d+)\]: only the new messages were fetched", out)
    assert asked == [("demo-im-1", "400"), ("demo-im-2", "240"), ("demo-im-3", "160")]

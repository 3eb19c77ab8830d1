"""A syncflow process exits without Python's final garbage collections, and still runs every
exit handler and flushes its output (``syncflow.process``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# Registered before syncflow is imported, this handler runs after syncflow's (atexit is last
# in, first out) and counts the objects the final collections would still walk (the unfrozen).
_PROBE = (
    "import atexit, gc, sys\n"
    "atexit.register(lambda: sys.stderr.write(f'exit handler ran, {len(gc.get_objects())} objects unfrozen\\n'))\n"
    "sys.stdout = open(sys.stdout.fileno(), 'w', buffering=1 << 16, closefd=False)  # block-buffered\n"
)


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYNCFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    return subprocess.run(
        [sys.executable, "-c", _PROBE + code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )


def _unfrozen(stderr: str) -> int:
    match = re.search(r"exit handler ran, (\d+) objects unfrozen", stderr)
    assert match, stderr
    return int(match.group(1))


REPO = Path(__file__).resolve().parents[3]
ENTRYPOINTS = sorted({d["entrypoint"] for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]})


@pytest.mark.parametrize(
    "entry",
    [
        # the console script and `python -m syncflow`
        "sys.argv = ['syncflow', '--help']\nfrom syncflow.cli import main\nmain()\n",
        # a worker's flow-run process loads each deployment's flow by its path, as Prefect does
        *(
            "from prefect.flows import load_flow_from_entrypoint\n"
            f"flow = load_flow_from_entrypoint({str(REPO / entrypoint)!r})\n"
            "print('syncflow flow', flow.name)\n"
            for entrypoint in ENTRYPOINTS
        ),
    ],
    ids=["cli", *ENTRYPOINTS],
)
def test_a_process_exits_frozen_after_every_exit_handler_with_its_output_flushed(entry: str, tmp_path: Path) -> None:
    done = _run(entry, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "syncflow" in done.stdout  # written to a block buffer, flushed at exit
    assert _unfrozen(done.stderr) < 100


def test_a_process_without_syncflow_is_not_frozen(tmp_path: Path) -> None:
    # the probe itself can tell: nothing else freezes a process that loaded the same libraries
    done = _run("import sqlalchemy.orm, typer, rich.table\nprint('syncflow not imported')\n", tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("syncflow ")
    assert _unfrozen(done.stderr) > 10_000

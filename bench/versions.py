"""Two Prefect versions in one sitting: ``python -m bench`` under each interpreter, alternated.

    bash bench/venv388.sh                                     # .venv388: Prefect 3.8.8 + SQLAlchemy 2.0
    python -m bench.versions --python .venv388/bin/python --python .venv/bin/python --rounds 3 -- \\
        --sizes 100000 --variants raw,syncflow

Each round runs ``<python> -m bench <args> --out DIR/<label>-<round>.json`` for every interpreter in
turn (A, B, A, B, ...: the machine's load drifts, alternating spreads it over both), each with its
own Prefect server of its own version. Then it prints, per table row, the median of each version
and B/A. Exit status: the worst of the runs'.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any


def _version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import prefect, sqlalchemy; print(prefect.__version__, sqlalchemy.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    prefect, sqlalchemy = out.stdout.split()
    return f"prefect {prefect} / sqlalchemy {sqlalchemy}"


_SECONDS = re.compile(r"^([\d,]+\.\d+) s")


def _cells(table: str) -> dict[tuple[str, str], float]:
    """(row, column) -> seconds, from the one table's markdown."""
    lines = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("|---")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    out: dict[tuple[str, str], float] = {}
    for ln in lines[1:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        for col, cell in zip(header[1:], cells[1:], strict=False):
            m = _SECONDS.match(cell)
            if m:
                out[cells[0], col] = float(m.group(1).replace(",", ""))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--report":  # python -m bench.versions --report DIR: the tables of a finished sitting
        return report(Path(argv[1]))
    own, _, bench_args = (
        (argv[: argv.index("--")], "--", argv[argv.index("--") + 1 :]) if "--" in argv else (argv, "", [])
    )
    parser = argparse.ArgumentParser(prog="python -m bench.versions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", required=True, help="an interpreter (repeat: 2 or more)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/versions"))
    args = parser.parse_args(own)
    args.out.mkdir(parents=True, exist_ok=True)
    labels = {py: _version(py) for py in args.python}
    status = 0
    files: dict[str, list[Path]] = {py: [] for py in args.python}
    for r in range(args.rounds):
        for i, py in enumerate(args.python):
            out = args.out / f"v{i}-{r}.json"
            print(f"== round {r + 1}/{args.rounds}: {labels[py]} ({py})", file=sys.stderr, flush=True)
            rc = subprocess.run([py, "-m", "bench", *bench_args, "--out", str(out)], check=False).returncode
            status = max(status, rc)
            if out.exists():
                files[py].append(out)
    values: dict[str, dict[tuple[str, str], list[float]]] = {}
    loads: dict[str, list[float]] = {}
    for py, paths in files.items():
        acc: dict[tuple[str, str], list[float]] = {}
        for p in paths:
            doc = json.loads(p.read_text())
            for key, v in _cells(doc["table"]).items():
                acc.setdefault(key, []).append(v)
            loads.setdefault(py, []).extend(_loads(doc))
        values[py] = acc
    a, *others = args.python
    keys = list(values[a])
    head = (
        "| work | column | "
        + " | ".join(labels[py] for py in args.python)
        + " | "
        + " | ".join(f"{labels[py].split(' / ')[0]} / {labels[a].split(' / ')[0]}" for py in others)
    )
    lines = [head + " |", "|---|---|" + "---:|" * (len(args.python) + len(others))]
    for key in keys:
        med = {py: statistics.median(values[py][key]) if values[py].get(key) else None for py in args.python}
        ratios = [f"{med[py] / med[a]:.2f}" if med[py] and med[a] else "-" for py in others]
        cells = [f"{med[py]:.2f} s" if med[py] is not None else "-" for py in args.python]
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    print(
        f"\nMedians over {args.rounds} alternated rounds; load 1-min per version: "
        + "; ".join(f"{labels[py]}: {min(loads[py]):.1f}-{max(loads[py]):.1f}" for py in args.python if loads.get(py))
    )
    print("\n".join(lines))
    print("\nWithin-run ratios, CPU seconds and API counts (what load moves little):\n")
    print(_robust_table(files, labels))
    return status


def robust(doc: dict) -> dict[str, Any]:
    """Measures of one run that the machine's load moves little: ratios within the run, CPU
    seconds, Prefect API calls and events (deterministic)."""
    from bench.apicount import categories

    out: dict[str, Any] = {}
    eng = doc.get("engine")
    if eng:
        ms = eng["measurements"]

        def one(variant: str, phase: str) -> dict[str, Any] | None:
            return next((m for m in ms if m["variant"] == variant and m["phase"] == phase), None)

        raw, sf, noop, inc = (
            one("raw", "full"),
            one("syncflow", "full"),
            one("syncflow", "noop"),
            one("syncflow", "incremental"),
        )
        fl = eng["floor_single"][0] if eng.get("floor_single") else None
        if raw and sf and raw["child"].get("sync_s") and sf["child"].get("sync_s"):
            out["sync window: syncflow / raw"] = sf["child"]["sync_s"] / raw["child"]["sync_s"]
        if fl:
            out["single floor: CPU s (process)"] = fl["child"]["cpu_s"]
            out["single floor: REST calls"] = sum(fl["child"]["prefect_api_calls"].values())
            for label, m in (("nothing new", noop), ("+1,000", inc)):
                if m:
                    out[f"{label}: syncflow / single floor (process)"] = m["process_wall_s"] / fl["process_wall_s"]
        if noop:
            out["nothing new: syncflow CPU s (process)"] = noop["child"]["cpu_user_s"] + noop["child"]["cpu_sys_s"]
            out["nothing new: Prefect server CPU s"] = noop["cpu"].get("prefect-server")
            out["nothing new: REST calls / events"] = (
                sum(noop["child"]["prefect_api_calls"].values()),
                sum(noop["child"]["events"].values()),
            )
    sess = doc.get("sessions")
    if sess:
        n = sess["config"]["instances"]
        for limit in sess["config"]["limits"]:
            runs = {r["variant"]: r for r in sess["runs"] if r["limit"] == limit and not r.get("profiled")}
            if "floor" in runs and "syncflow" in runs:
                out[f"session L{limit}: syncflow / floor (process)"] = (
                    runs["syncflow"]["process_wall_s"] / runs["floor"]["process_wall_s"]
                )
            for name, r in runs.items():
                c = r["child"]
                cpu = c.get("cpu_s") or (c.get("cpu_user_s", 0) + c.get("cpu_sys_s", 0))
                out[f"session L{limit} {name}: CPU s, process + Prefect server"] = cpu + r["cpu"].get(
                    "prefect-server", 0
                )
                cat = categories(c)
                out[f"session L{limit} {name}: REST calls / events per instance"] = (
                    cat["REST calls"] / n,
                    cat["events"] / n,
                )
    return out


def _robust_table(files: dict[str, list[Path]], labels: dict[str, str]) -> str:
    per: dict[str, dict[str, list[Any]]] = {}
    for py, paths in files.items():
        acc: dict[str, list[Any]] = {}
        for p in paths:
            for k, v in robust(json.loads(p.read_text())).items():
                if v is not None:
                    acc.setdefault(k, []).append(v)
        per[py] = acc
    first = next(iter(per.values()), {})
    lines = [
        "| measure (median, all rounds) | " + " | ".join(labels[py] for py in per) + " |",
        "|---|" + "---:|" * len(per),
    ]
    for key in first:
        cells = []
        for py in per:
            xs = per[py].get(key, [])
            if not xs:
                cells.append("-")
            elif isinstance(xs[0], tuple):
                cells.append(f"{statistics.median(a for a, _ in xs):.1f} / {statistics.median(b for _, b in xs):.1f}")
            else:
                cells.append(f"{statistics.median(xs):.2f} ({', '.join(f'{x:.2f}' for x in xs)})")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(where: Path) -> int:
    """Re-print the robust table from a finished sitting's JSON files (``v<i>-<round>.json``)."""
    files: dict[str, list[Path]] = {}
    labels: dict[str, str] = {}
    for p in sorted(where.glob("v*-*.json")):
        key = p.name.split("-")[0]
        files.setdefault(key, []).append(p)
        env = json.loads(p.read_text())["environment"]
        labels[key] = f"prefect {env['prefect']} / sqlalchemy {env['sqlalchemy']}"
    print(_robust_table(files, labels))
    return 0


def _loads(doc: dict) -> list[float]:
    out = [m["load_before"] for m in doc.get("engine", {}).get("measurements", [])]
    out += [r["load_before"] for r in doc.get("sessions", {}).get("runs", [])]
    return out


if __name__ == "__main__":
    sys.exit(main())

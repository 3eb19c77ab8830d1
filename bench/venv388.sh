#!/usr/bin/env bash
# A second virtualenv with the previous pins — Prefect 3.8.8, SQLAlchemy 2.0 — to compare them
# with the project's own (Prefect 3.9.1, SQLAlchemy 2.1; issue 11, item 7) in one sitting,
# without touching pyproject.toml: the project's other dependencies are installed from it with
# those two replaced, then the project itself with --no-deps. (Until round 4 this was
# bench/venv39.sh, the other way round.)
#
#   bash bench/venv388.sh            # -> .venv388
#   .venv388/bin/python -m bench --no-floor-single --no-cli-start --sizes 1000 ...   (any bench command)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV388:-.venv388}
PY=${PYTHON:-python3}
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
deps=$("$VENV/bin/python" - <<'PYEOF'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
skip = ("prefect", "sqlalchemy", "fastapi")
print("\n".join(d for d in deps if not d.lower().startswith(skip)))
PYEOF
)
mapfile -t deps <<<"$deps"
"$VENV/bin/pip" install -q "prefect==3.8.8" "sqlalchemy>=2.0,<2.1" "fastapi>=0.139,<0.151" "${deps[@]}" py-spy
"$VENV/bin/pip" install -q --no-deps -e .
"$VENV/bin/python" -c "import prefect, sqlalchemy, fastapi; print('prefect', prefect.__version__, 'sqlalchemy', sqlalchemy.__version__, 'fastapi', fastapi.__version__)"

#!/usr/bin/env bash
# A second virtualenv with Prefect 3.9.1 (+ SQLAlchemy 2.1, FastAPI < 0.151) for the 3.8.8 vs
# 3.9.1 measurement (issue 11, item 7), without touching the project's pins (prefect<3.9,
# sqlalchemy<2.1): the project's other dependencies are installed from pyproject.toml with
# those two replaced, then the project itself with --no-deps.
#
#   bash bench/venv39.sh            # -> .venv39
#   .venv39/bin/python -m bench --no-floor-single --no-cli-start --sizes 1000 ...   (any bench command)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV39:-.venv39}
PY=${PYTHON:-python3}
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
deps=$("$VENV/bin/python" - <<'EOF'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
skip = ("prefect", "sqlalchemy", "fastapi")
print("\n".join(d for d in deps if not d.lower().startswith(skip)))
EOF
)
mapfile -t deps <<<"$deps"
"$VENV/bin/pip" install -q "prefect==3.9.1" "sqlalchemy>=2.1" "fastapi>=0.139,<0.151" "${deps[@]}" py-spy
"$VENV/bin/pip" install -q --no-deps -e .
"$VENV/bin/python" -c "import prefect, sqlalchemy, fastapi; print('prefect', prefect.__version__, 'sqlalchemy', sqlalchemy.__version__, 'fastapi', fastapi.__version__)"

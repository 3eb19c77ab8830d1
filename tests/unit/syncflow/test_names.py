"""The names syncflow shares with Prefect agree with prefect.yaml (no services needed)."""

from __future__ import annotations

from pathlib import Path

import yaml

from syncflow import names
from syncflow.store.models import Category

PREFECT_YAML = Path(__file__).resolve().parents[3] / "prefect.yaml"


def _deployments() -> dict[str, dict]:
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    flows = {
        "flows/session_sync.py:sync_session": "sync-session",
        "flows/cleanup.py:cleanup": "cleanup",
        "flows/sweep.py:sweep": "sweep",
        "flows/instance_sync.py:sync_instance": "sync-instance",
        "flows/db_instance_sync.py:sync_db_instance": "sync-db-instance",
    }
    return {f"{flows[d['entrypoint']]}/{d['name']}": d for d in spec["deployments"]}


def test_every_named_deployment_is_in_prefect_yaml_on_the_named_pool() -> None:
    deps = _deployments()
    wanted = [names.MANUAL_BATCH, names.INSTANCE_DEPLOYMENT, names.DB_INSTANCE_DEPLOYMENT]
    for name in [*wanted, *names.SCHEDULED_DEPLOYMENTS]:
        assert name in deps, name
        assert deps[name]["work_pool"]["name"] == names.WORK_POOL
    assert all(deps[n].get("schedules") for n in names.SCHEDULED_DEPLOYMENTS)
    assert names.MANUAL_BATCH.split("/")[0] == names.SESSION_FLOW


def test_scheduled_session_deployments_carry_their_category_tag() -> None:
    for name, d in _deployments().items():
        category = (d.get("parameters") or {}).get("category")
        if name.startswith(f"{names.SESSION_FLOW}/") and category:
            assert names.category_tag(category) in d["tags"], name


def test_limit_names_and_defaults() -> None:
    assert names.limit_name("messages") == "tag:sync:messages"
    assert names.limit_category(names.limit_name("account")) == "account"
    assert set(names.DEFAULT_LIMITS) == set(Category.values())
    assert (names.default_limit("metadata"), names.default_limit("messages")) == (5, 3)
    assert names.category_tag("messages") == "category:messages"
    assert names.category_tag("messages") != names.limit_name("messages").removeprefix("tag:")


def test_keys_prefect_stores() -> None:
    assert names.session_key("abc") == "syncflow-session:abc"
    sid = "3F2B0000-0000-0000-0000-000000000000"
    assert names.summary_artifact_key(sid) == f"session-{sid.lower()}-summary"
    assert names.records_artifact_key(sid).endswith("-records")
    assert names.progress_artifact_key(sid).endswith("-progress")

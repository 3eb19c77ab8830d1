"""The names syncflow shares with Prefect, as plain data (no Prefect import here).

Limits, tags, the work pool, deployment names, artifact keys and the console's idempotency
key are a public interface: operators type them (``prefect gcl update tag:sync:messages``,
``prefect deployment run 'sync-session/manual-batch'``) and ``prefect.yaml`` spells them too.
Every place that needs one builds it here.
"""

from __future__ import annotations

# ----------------------------------------------------------------- concurrency limits

LIMIT_PREFIX = "tag:sync:"

# The seed's defaults: metadata 5, messages 3; database categories 5 (what `syncflow setup`
# creates, and what a session creates when its category's limit is missing).
DEFAULT_LIMITS: dict[str, int] = {
    "metadata": 5,
    "messages": 3,
    "account": 5,
    "capacity": 5,
    "config": 5,
    "other": 3,
}
FALLBACK_LIMIT = 3  # a category missing from DEFAULT_LIMITS


def limit_name(category: str) -> str:
    """The global concurrency limit that caps ``category``: ``tag:sync:<category>`` (what
    ``prefect concurrency-limit create sync:<category> N`` creates)."""
    return f"{LIMIT_PREFIX}{category}"


def limit_category(name: str) -> str:
    """The category a limit name caps (the inverse of :func:`limit_name`)."""
    return name.removeprefix(LIMIT_PREFIX)


def default_limit(category: str) -> int:
    """The slots a missing limit of ``category`` is created with."""
    return DEFAULT_LIMITS.get(category, FALLBACK_LIMIT)


# ------------------------------------------------------------------------------ tags


def category_tag(category: str) -> str:
    """The tag every session run (and scheduled deployment) of ``category`` carries; the queue
    admin finds runs and deployments by it.

    Not ``sync:<category>``: that name is the concurrency limit's tag, and a tag limit would
    also take slots for the task runs of the parent."""
    return f"category:{category}"


# ------------------------------------------------------------------ pool, deployments

WORK_POOL = "syncflow"

SESSION_FLOW = "sync-session"
MANUAL_BATCH = f"{SESSION_FLOW}/manual-batch"
SCHEDULED_DEPLOYMENTS: tuple[str, ...] = (
    f"{SESSION_FLOW}/scheduled-account",
    f"{SESSION_FLOW}/scheduled-messages",
    "cleanup/daily",
    "sweep/every-5-minutes",  # marks killed runs Crashed, closes their records (flows/sweep.py)
)
# Scale-out: the deployments that run one instance sync of a session on any worker.
INSTANCE_DEPLOYMENT = "sync-instance/instance"
DB_INSTANCE_DEPLOYMENT = "sync-db-instance/db-instance"


# -------------------------------------------------------------- keys Prefect stores


def session_key(session_id: str) -> str:
    """The idempotency key of the run the console starts for ``session_id`` (lets the console
    find a run that has not opened its session yet)."""
    return f"syncflow-session:{session_id}"


def artifact_key(session_id: str) -> str:
    """The stem of a session's artifact keys (Prefect keys are lowercase)."""
    return f"session-{session_id.lower()}"


def summary_artifact_key(session_id: str) -> str:
    return f"{artifact_key(session_id)}-summary"


def records_artifact_key(session_id: str) -> str:
    return f"{artifact_key(session_id)}-records"


def progress_artifact_key(session_id: str) -> str:
    return f"{artifact_key(session_id)}-progress"


# ------------------------------------------------------------------------ alerts

# The event an instance sync's failure emits (resource ``syncflow.instance.<name>``, label
# ``syncflow.consecutive-failures``): the "failing N runs in a row" automation matches it.
INSTANCE_FAILED_EVENT = "syncflow.instance.failed"
INSTANCE_RESOURCE_PREFIX = "syncflow.instance."
STREAK_LABEL = "syncflow.consecutive-failures"

# The automations `syncflow setup --alerts BLOCK` creates (found again by these names).
ALERT_SESSION_FAILED = "syncflow: session failed"
ALERT_INSTANCE_FAILING = "syncflow: instance failing in a row"
ALERT_SESSION_NOT_STARTED = "syncflow: session did not start"
ALERTS: tuple[str, ...] = (ALERT_SESSION_FAILED, ALERT_INSTANCE_FAILING, ALERT_SESSION_NOT_STARTED)


__all__ = [
    "ALERTS",
    "ALERT_INSTANCE_FAILING",
    "ALERT_SESSION_FAILED",
    "ALERT_SESSION_NOT_STARTED",
    "DB_INSTANCE_DEPLOYMENT",
    "DEFAULT_LIMITS",
    "FALLBACK_LIMIT",
    "INSTANCE_DEPLOYMENT",
    "INSTANCE_FAILED_EVENT",
    "INSTANCE_RESOURCE_PREFIX",
    "LIMIT_PREFIX",
    "MANUAL_BATCH",
    "SCHEDULED_DEPLOYMENTS",
    "SESSION_FLOW",
    "STREAK_LABEL",
    "WORK_POOL",
    "artifact_key",
    "category_tag",
    "default_limit",
    "limit_category",
    "limit_name",
    "progress_artifact_key",
    "records_artifact_key",
    "session_key",
    "summary_artifact_key",
]

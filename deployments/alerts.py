"""The alerts ``syncflow setup --alerts BLOCK`` creates: three Prefect automations that send a
notification through a notification block (a custom webhook, Slack, e-mail...).

- **session failed**: a run of the ``sync-session`` flow enters Failed or Crashed (reactive).
- **instance failing N runs in a row**: the ``syncflow.instance.failed`` event an instance
  sync's failure emits (:mod:`tasks.alerts`) with ``syncflow.consecutive-failures`` = N:
  once per streak, at its N-th failure (a success in between starts counting again).
- **session did not start**: a ``sync-session`` run went Late (its start time passed with no
  worker taking it) and did not reach Running within the given time (proactive).

Idempotent: automations are found by name and updated when the options changed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from syncflow import names
from tasks import prefect_api as pf

SESSION_FLOW_RELATED = {"prefect.resource.role": "flow", "prefect.resource.name": names.SESSION_FLOW}


def alert_specs(*, failures_in_a_row: int = 3, not_started_within: dt.timedelta) -> list[pf.AlertSpec]:
    """The three automations, with the streak length and the start delay chosen."""
    minutes = not_started_within.total_seconds() / 60
    delay = f"{minutes:g} min" if minutes >= 1 else f"{not_started_within.total_seconds():g} s"
    return [
        pf.AlertSpec(
            name=names.ALERT_SESSION_FAILED,
            description="A syncflow session (a run of the sync-session flow) failed or crashed.",
            trigger={
                "expect": {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
                "match": {"prefect.resource.id": "prefect.flow-run.*"},
                "match_related": SESSION_FLOW_RELATED,
                "posture": "Reactive",
                "threshold": 1,
                "within": dt.timedelta(0),
            },
            subject="syncflow: session failed ({{ flow_run.name }})",
            body=(
                "syncflow session {{ flow_run.parameters.session_id }} "
                "({{ flow_run.parameters.category }}) ended {{ flow_run.state.name }}: "
                "{{ flow_run.state.message }}\nflow run {{ flow_run.name }} ({{ flow_run.id }})"
            ),
        ),
        pf.AlertSpec(
            name=names.ALERT_INSTANCE_FAILING,
            description=f"An instance's sync failed {failures_in_a_row} times in a row (one alert per streak).",
            trigger={
                "expect": {names.INSTANCE_FAILED_EVENT},
                "match": {
                    "prefect.resource.id": f"{names.INSTANCE_RESOURCE_PREFIX}*",
                    names.STREAK_LABEL: str(failures_in_a_row),
                },
                "posture": "Reactive",
                "threshold": 1,
                "within": dt.timedelta(0),
            },
            subject=f"syncflow: an instance failed {failures_in_a_row} syncs in a row",
            body=(
                "syncflow instance {{ event.resource['prefect.resource.name'] }} "
                "({{ event.payload.category }}) failed {{ event.payload.consecutive_failures }} syncs in a row; "
                "last error: {{ event.payload.error }} (session {{ event.payload.session_id }})"
            ),
        ),
        pf.AlertSpec(
            name=names.ALERT_SESSION_NOT_STARTED,
            description=f"A syncflow session run went Late and did not start within {delay}.",
            trigger={
                "after": {"prefect.flow-run.Late"},
                "expect": {"prefect.flow-run.Running"},
                "for_each": {"prefect.resource.id"},
                "match": {"prefect.resource.id": "prefect.flow-run.*"},
                "match_related": SESSION_FLOW_RELATED,
                "posture": "Proactive",
                "threshold": 1,
                "within": not_started_within,
            },
            subject="syncflow: a session did not start ({{ flow_run.name }})",
            body=(
                "syncflow session run {{ flow_run.name }} ({{ flow_run.id }}) was due at "
                "{{ flow_run.expected_start_time }} and has not started within "
                f"{delay} after going Late: is a worker running? (prefect worker start --pool {names.WORK_POOL})"
            ),
        ),
    ]


@dataclass(frozen=True)
class AlertsReport:
    block: str
    automations: dict[str, str]

    def as_dict(self) -> dict[str, object]:
        return {"block": self.block, "automations": self.automations}


async def ensure_alerts(
    block: str, *, failures_in_a_row: int = 3, not_started_within: dt.timedelta, timeout: float = 30.0
) -> AlertsReport:
    """Create or update the three automations, notifying through block ``block``."""
    block_id = await pf.notification_block_id(block, timeout=timeout)
    specs = alert_specs(failures_in_a_row=failures_in_a_row, not_started_within=not_started_within)
    return AlertsReport(block, await pf.ensure_automations(specs, block_id=block_id, timeout=timeout))


__all__ = ["AlertsReport", "alert_specs", "ensure_alerts"]

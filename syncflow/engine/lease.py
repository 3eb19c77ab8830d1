"""Keeping the single-flight lease of a running sync alive.

The lease (``sync_config_items.lock_owner`` / ``lock_expires_at``) is taken when a sync begins
and renewed by every batch commit; between commits (a long backoff, a slow snapshot read) a
:class:`LeaseKeeper` thread renews it. The keepers of this process are kept in a registry keyed
by the run, so the steps of a sync (begin, chunks, finish: separate Prefect task runs) share one
without the flow holding any lease object: :func:`keep` at begin, :func:`lost` at each chunk,
:func:`release` at finish. A killed process takes its keepers with it and the lease runs out.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.engine import Engine

from syncflow.store.db import get_engine, session_scope
from syncflow.store.sync_state import LeaseLostError, renew_lock

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews a lease from a background thread while a sync works (e.g. through long retries).

    ``lost`` is set if a renewal finds the lease taken over; the sync should then stop.
    """

    def __init__(self, engine: Engine, *, instance_id: int, category: str, owner: str, lease_seconds: float) -> None:
        self._engine = engine
        self._args = {"instance_id": instance_id, "category": category, "owner": owner, "lease_seconds": lease_seconds}
        self._interval = max(lease_seconds / 3, 0.5)
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{owner}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with session_scope(self._engine) as s:
                    renew_lock(s, **self._args)  # type: ignore[arg-type]
            except LeaseLostError:
                log.warning("lease lost: %s", self._args)
                self.lost.set()
                return
            except Exception:  # store hiccup: try again at the next tick
                log.warning("could not renew lease %s", self._args, exc_info=True)


_keepers: dict[tuple[int, str, str], LeaseKeeper] = {}
_keepers_lock = threading.Lock()


def keep(*, instance_id: int, category: str, owner: str, lease_seconds: float, engine: Engine | None = None) -> None:
    """Start renewing the lease of (instance, category) held by ``owner`` in this process."""
    key = (instance_id, category, owner)
    with _keepers_lock:
        if key in _keepers:
            return
        keeper = LeaseKeeper(
            engine or get_engine(), instance_id=instance_id, category=category, owner=owner, lease_seconds=lease_seconds
        )
        _keepers[key] = keeper
    keeper.__enter__()


def lost(*, instance_id: int, category: str, owner: str) -> bool:
    """Whether a renewal found the lease taken over by another sync (the sync must stop)."""
    with _keepers_lock:
        keeper = _keepers.get((instance_id, category, owner))
    return keeper is not None and keeper.lost.is_set()


def release(*, instance_id: int, category: str, owner: str) -> None:
    """Stop renewing (the lease itself is given back by the finish transaction)."""
    with _keepers_lock:
        keeper = _keepers.pop((instance_id, category, owner), None)
    if keeper is not None:
        keeper.__exit__(None, None, None)


__all__ = ["LeaseKeeper", "LeaseLostError", "keep", "lost", "release"]

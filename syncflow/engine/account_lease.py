"""The per-account limit across processes: at most ``limit`` processes use an account at once.

Telegram revokes a session used from two places at once (``AuthKeyDuplicated``), and the
chats of one account are synced by whichever processes run their instance syncs (the session
parent, workers of a pool, a CLI run beside a scheduled one). Within a process the chats of
an account already share one client (``TelegramConnection.shared``); across processes this
module keeps them apart.

An :class:`AccountGate` is one process's view of one account's lease (``account_leases``, a
row per slot, see :mod:`syncflow.store.account_leases`):

* every call that talks to the account runs inside :meth:`AccountGate.hold`; the first one
  takes a slot for the whole process (the *owner* is the process: host, pid and a random
  token), waiting — polling the store — while other processes hold every slot, up to
  ``wait_max`` seconds, then fails as transient naming the holder;
* while held, a keeper thread renews the lease every few seconds;
* when no call has been in flight for ``idle_seconds``, the keeper runs the release
  callbacks (the source disconnects its client) and only then gives the slot back, so two
  processes are never connected at once; a later call takes a slot again;
* a killed process's lease runs out by itself after ``lease_seconds``; at a normal exit the
  gates are released (atexit). A renewal that finds the slot taken over (this process was
  frozen past its lease) disconnects at once.

No Prefect here; the store is reached through ``session_scope`` with the configured engine.
"""

from __future__ import annotations

import atexit
import enum
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Engine

from syncflow.errors import TransientSyncError
from syncflow.store import account_leases as store
from syncflow.store.db import get_engine, session_scope

log = logging.getLogger(__name__)

_owner: tuple[int, str] | None = None
_owner_lock = threading.Lock()


def process_owner() -> str:
    """This process's owner id for account leases (``host:pid:token``; a new one after fork)."""
    global _owner
    with _owner_lock:
        pid = os.getpid()
        if _owner is None or _owner[0] != pid:
            host = socket.gethostname()[:64]
            _owner = (pid, f"{host}:{pid}:{uuid.uuid4().hex[:8]}")
        return _owner[1]


class _State(enum.Enum):
    FREE = "free"
    ACQUIRING = "acquiring"
    HELD = "held"
    RELEASING = "releasing"


class AccountGate:
    """One process's hold on one account's cross-process lease (see the module docstring).

    ``label`` names the account in errors (``telegram account 'main'``). ``engine`` is the
    store (default: the configured one, looked up at each use). ``owner`` defaults to
    :func:`process_owner`; tests give two gates different owners to play two processes.
    """

    def __init__(
        self,
        account: str,
        *,
        label: str | None = None,
        limit: int = 1,
        lease_seconds: float = 60.0,
        wait_max: float = 600.0,
        idle_seconds: float = 10.0,
        poll: float = 0.5,
        engine: Engine | None = None,
        owner: str | None = None,
    ) -> None:
        self.account = account
        self.label = label or f"account {account!r}"
        self.limit = limit
        self.lease_seconds = lease_seconds
        self.wait_max = wait_max
        self.idle_seconds = idle_seconds
        self.poll = poll
        self._engine = engine
        self._owner = owner
        self._cond = threading.Condition()
        self._state = _State.FREE
        self._slot: int | None = None
        self._users = 0
        self._last_used = time.monotonic()
        self._callbacks: dict[str, Callable[[], object]] = {}
        self._keeper: threading.Thread | None = None
        self._stop = threading.Event()
        self.acquisitions = 0  # how many times this gate took a slot (tests, logs)

    @property
    def owner(self) -> str:
        return self._owner or process_owner()

    @property
    def held(self) -> bool:
        with self._cond:
            return self._state == _State.HELD

    def engine(self) -> Engine:
        return self._engine or get_engine()

    def on_release(self, name: str, callback: Callable[[], object]) -> None:
        """Run ``callback`` (e.g. disconnect a client) before the slot is given back; one per ``name``."""
        with self._cond:
            self._callbacks[name] = callback

    # ------------------------------------------------------------------ use

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Run the body with this process holding a slot of the account (taken when needed)."""
        with self._cond:
            self._users += 1
        try:
            self._ensure_held()
        except BaseException:
            self._leave()
            raise
        try:
            yield
        finally:
            self._leave()

    def _leave(self) -> None:
        with self._cond:
            self._users -= 1
            self._last_used = time.monotonic()
            self._cond.notify_all()

    def _ensure_held(self) -> None:
        deadline = time.monotonic() + self.wait_max
        with self._cond:
            while self._state != _State.FREE:
                if self._state == _State.HELD:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._busy(None)
                self._cond.wait(min(remaining, 1.0))
            self._state = _State.ACQUIRING
        try:
            slot = self._acquire_until(deadline)
        except BaseException:
            with self._cond:
                self._state = _State.FREE
                self._cond.notify_all()
            raise
        with self._cond:
            self._slot = slot
            self._state = _State.HELD
            self._last_used = time.monotonic()
            self.acquisitions += 1
            self._stop.clear()
            self._keeper = threading.Thread(target=self._keep, name=f"account-lease-{self.account}", daemon=True)
            self._keeper.start()
            self._cond.notify_all()
        log.info("%s: took slot %s as %s", self.label, slot, self.owner)

    def _acquire_until(self, deadline: float) -> int:
        waited = False
        while True:
            with session_scope(self.engine()) as s:
                slot = store.try_acquire(
                    s, account=self.account, owner=self.owner, limit=self.limit, lease_seconds=self.lease_seconds
                )
                holders = [] if slot is not None else store.holders(s, account=self.account)
            if slot is not None:
                return slot
            if not waited:
                log.info("%s: in use by %s; waiting up to %gs", self.label, _names(holders), self.wait_max)
                waited = True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._busy(holders)
            time.sleep(min(remaining, self.poll * random.uniform(0.8, 1.2)))

    def _busy(self, holders: list[store.Holder] | None) -> TransientSyncError:
        who = f" by {_names(holders)}" if holders else " by another process"
        return TransientSyncError(
            f"{self.label} is in use{who}; waited {self.wait_max:g}s for it "
            f"(at most {self.limit} process{'es' if self.limit != 1 else ''} may use it at once)"
        )

    # ----------------------------------------------------------- keep, release

    def _keep(self) -> None:
        interval = max(min(self.lease_seconds / 3, self.idle_seconds / 2), 0.05)
        while not self._stop.wait(interval):
            with self._cond:
                if self._state != _State.HELD:
                    return
                idle = self._users == 0 and time.monotonic() - self._last_used >= self.idle_seconds
                if idle:
                    self._state = _State.RELEASING
                slot = self._slot
            if idle:
                self._release(slot, why="idle")
                return
            assert slot is not None  # HELD: the slot is ours
            try:
                with session_scope(self.engine()) as s:
                    ok = store.renew(
                        s, account=self.account, owner=self.owner, slot=slot, lease_seconds=self.lease_seconds
                    )
            except Exception:  # a store hiccup: try again at the next tick
                log.warning("%s: could not renew the lease", self.label, exc_info=True)
                continue
            if not ok:
                log.warning("%s: the lease was taken over by another process; disconnecting", self.label)
                with self._cond:
                    self._state = _State.RELEASING
                self._release(None, why="lost")
                return

    def _release(self, slot: int | None, *, why: str) -> None:
        """Callbacks first (disconnect), then the slot (when still ours), then FREE."""
        with self._cond:
            callbacks = list(self._callbacks.values())
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.warning("%s: a release callback failed", self.label, exc_info=True)
        if slot is not None:
            try:
                with session_scope(self.engine()) as s:
                    store.release(s, account=self.account, owner=self.owner, slot=slot)
            except Exception:  # it runs out by itself
                log.warning("%s: could not give the lease back", self.label, exc_info=True)
        with self._cond:
            self._slot = None
            self._state = _State.FREE
            self._cond.notify_all()
        log.info("%s: released (%s)", self.label, why)

    def close(self) -> None:
        """Release now (at exit, between tests), whatever is in flight."""
        self._stop.set()
        with self._cond:
            if self._state != _State.HELD:
                return
            self._state = _State.RELEASING
            slot = self._slot
        self._release(slot, why="closed")


def _names(holders: list[store.Holder] | None) -> str:
    return ", ".join(h.owner for h in holders or ()) or "another process"


_gates: dict[tuple[str, str], AccountGate] = {}
_gates_lock = threading.Lock()
_atexit = False


def account_gate(
    account: str,
    *,
    label: str | None = None,
    limit: int = 1,
    lease_seconds: float = 60.0,
    wait_max: float = 600.0,
    idle_seconds: float = 10.0,
) -> AccountGate:
    """The process-wide gate of ``account`` on the configured store (created on first use; its
    timings follow the latest call, so a changed block applies to the next acquisition)."""
    global _atexit
    url = get_engine().url.render_as_string(hide_password=True)
    with _gates_lock:
        gate = _gates.get((url, account))
        if gate is None:
            gate = _gates[(url, account)] = AccountGate(
                account,
                label=label,
                limit=limit,
                lease_seconds=lease_seconds,
                wait_max=wait_max,
                idle_seconds=idle_seconds,
            )
            if not _atexit:
                atexit.register(close_all_gates)
                _atexit = True
        else:
            gate.limit, gate.lease_seconds, gate.wait_max, gate.idle_seconds = (
                limit,
                lease_seconds,
                wait_max,
                idle_seconds,
            )
        return gate


def close_all_gates() -> None:
    """Release every gate of this process (atexit; between tests)."""
    with _gates_lock:
        gates = list(_gates.values())
        _gates.clear()
    for gate in gates:
        gate.close()


__all__ = ["AccountGate", "account_gate", "close_all_gates", "process_owner"]

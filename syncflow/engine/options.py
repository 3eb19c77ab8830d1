"""Per-instance, per-run sync options (flow parameters, record options, state options)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from syncflow.errors import ConfigError
from syncflow.validation import check_seq


@dataclass(frozen=True)
class SyncOptions:
    """Per-instance, per-run options (JSON: flow parameters, record options, state options).

    ``full`` resets the cursor first; ``from_seq``/``to_seq`` backfill a seq range without
    moving the main cursor; ``batch_size`` overrides the block's. ``skip_media`` (Telegram,
    default true): media bytes are not downloaded (their metadata is stored either way).
    ``gap_window_hours`` / ``gap_checks`` / ``gap_max_reads`` tune the gap ledger's repair
    (``syncflow.engine.gaps``; default 24 h, 3 reads, 20 reads per run).
    The seed's names are accepted too: ``incremental`` (= not full), ``fromMessageId``/
    ``toMessageId`` (Telegram's message ids are its seq), ``skipMedia``, ``fromSeq``...
    """

    full: bool = False
    from_seq: int | None = None
    to_seq: int | None = None
    batch_size: int | None = None
    skip_media: bool = True
    gap_window_hours: float | None = None
    gap_checks: int | None = None
    gap_max_reads: int | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any] | None, *, instance: str = "?") -> SyncOptions:
        raw = dict(raw or {})
        aliases = {
            "fromSeq": "from_seq",
            "toSeq": "to_seq",
            "batchSize": "batch_size",
            "fromMessageId": "from_seq",
            "toMessageId": "to_seq",
            "skipMedia": "skip_media",
            "gapWindowHours": "gap_window_hours",
            "gapChecks": "gap_checks",
            "gapMaxReads": "gap_max_reads",
        }
        for alias, name in aliases.items():
            if alias in raw:
                value = raw.pop(alias)
                if name in raw and raw[name] != value:
                    raise ConfigError(f"instance {instance}: {alias} and {name} disagree")
                raw[name] = value
        if "incremental" in raw:
            raw["full"] = not bool(raw.pop("incremental"))
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"instance {instance}: unknown sync option(s): {', '.join(unknown)}")
        opts = cls(**raw)
        for name in ("from_seq", "to_seq"):  # non-negative, within the signed 64-bit range
            check_seq(getattr(opts, name), field=f"instance {instance}: {name}")
        if opts.from_seq is not None and opts.to_seq is not None and opts.from_seq > opts.to_seq:
            raise ConfigError(f"instance {instance}: from_seq {opts.from_seq} is above to_seq {opts.to_seq}")
        if opts.to_seq is not None and opts.from_seq is None:
            raise ConfigError(f"instance {instance}: to_seq needs from_seq")
        if opts.batch_size is not None and not (isinstance(opts.batch_size, int) and 1 <= opts.batch_size <= 10_000):
            raise ConfigError(f"instance {instance}: batch_size must be 1..10000, not {opts.batch_size!r}")
        if not isinstance(opts.skip_media, bool):
            raise ConfigError(f"instance {instance}: skip_media must be true or false, not {opts.skip_media!r}")
        w = opts.gap_window_hours
        if w is not None and (isinstance(w, bool) or not isinstance(w, int | float) or w < 0):
            raise ConfigError(f"instance {instance}: gap_window_hours must be a number >= 0, not {w!r}")
        for name in ("gap_checks", "gap_max_reads"):
            v = getattr(opts, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"instance {instance}: {name} must be an integer >= 1, not {v!r}")
        if opts.full and opts.from_seq is not None:
            raise ConfigError(f"instance {instance}: full re-sync and a seq range exclude each other")
        return opts

    @property
    def is_range(self) -> bool:
        return self.from_seq is not None


__all__ = ["SyncOptions"]

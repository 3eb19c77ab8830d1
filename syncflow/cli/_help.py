"""Help output fixes for the Typer in use.

Typer 0.29's rich help prints a type for every option, flags included: ``--json <bool>``,
``--help <bool>``, read as "--json takes a value". A flag takes none: its type column stays
empty. Imported once by :mod:`syncflow.cli.app`.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperOption

_display_type_rich = TyperOption.display_type_rich


def _flag_without_type(self: TyperOption, ctx: Any) -> str | None:
    if getattr(self, "is_flag", False) or getattr(self, "count", False):
        return None
    return _display_type_rich(self, ctx)


if not getattr(TyperOption, "_syncflow_flags", False):
    TyperOption.display_type_rich = _flag_without_type  # type: ignore[method-assign]
    TyperOption._syncflow_flags = True  # type: ignore[attr-defined]

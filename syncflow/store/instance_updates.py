"""Changing a registered instance in place (``syncflow instances update``): takes a Session and
flushes, never commits. Its history (records, sync state, synced data) stays."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from syncflow.errors import ConfigError
from syncflow.sources.base import source_kind
from syncflow.store.instances import _clean_tags, check_block_free, live_instance
from syncflow.store.models import Category, Instance


def update_instance(
    session: Session,
    *,
    name: str,
    block_name: str | None = None,
    priority: int | None = None,
    tags: Iterable[str] | None = None,
    categories: Iterable[str] | None = None,
    enabled: bool | None = None,
    description: str | None = None,
    own_block: bool = True,
) -> tuple[Instance, list[str]]:
    """Set what is given (None: unchanged) and return the instance with the names of the
    fields that changed. A retired instance is refused. ``own_block=False``: ``block_name`` is
    a block the operator named (``--block``), free of any other live instance, and carries no
    instance key (the instance's ``block_binding`` is dropped)."""
    instance = live_instance(session, name=name)
    changed: list[str] = []
    if block_name is not None and block_name != instance.block_name:
        if not own_block:
            check_block_free(session, block_name, kind=instance.kind)
        instance.block_name = block_name
        changed.append("block_name")
    if not own_block and instance.block_binding is not None:
        instance.block_binding = None
    if priority is not None and priority != instance.priority:
        instance.priority = priority
        changed.append("priority")
    if tags is not None:
        clean = _clean_tags(tags)
        if clean != list(instance.tags):
            instance.tags = clean
            changed.append("tags")
    if categories is not None:
        cats = list(dict.fromkeys(Category.parse(c, what="category").value for c in categories))
        if not cats:
            raise ConfigError(f"instance {name!r} must support at least one category")
        spec = source_kind(instance.kind)
        for cat in cats:
            spec.check(cat, instance=name)
        if cats != list(instance.categories):
            instance.categories = cats
            changed.append("categories")
    if enabled is not None and enabled != instance.enabled:
        instance.enabled = enabled
        changed.append("enabled")
    if description is not None and description != (instance.description or ""):
        instance.description = description or None
        changed.append("description")
    session.flush()
    return instance, changed


__all__ = ["update_instance"]

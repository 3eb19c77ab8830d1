"""The instance registry: functions that take a Session and flush, never commit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from syncflow.errors import AlreadyExistsError, ConfigError, NotFoundError
from syncflow.sources.base import source_kind
from syncflow.store.models import Category, Instance, InstanceKind


def _clean_tags(tags: Iterable[str]) -> list[str]:
    out: list[str] = []
    for tag in tags:
        tag = tag.strip()
        if not tag:
            raise ConfigError("a tag must not be empty")
        if tag not in out:
            out.append(tag)
    return out


def add_instance(
    session: Session,
    *,
    name: str,
    kind: str,
    block_name: str | None = None,
    priority: int = 0,
    tags: Iterable[str] = (),
    categories: Iterable[str] | None = None,
    enabled: bool = True,
    description: str | None = None,
) -> Instance:
    """Register a source instance. Its connection (and any secret) lives in block ``block_name``."""
    name = name.strip()
    if not name:
        raise ConfigError("an instance needs a non-empty name")
    parsed_kind = InstanceKind.parse(kind, what="instance kind")
    spec = source_kind(parsed_kind.value)
    if categories is None:
        cats = list(spec.default_categories)
    else:
        cats = [Category.parse(c, what="category").value for c in categories]
        if not cats:
            raise ConfigError(f"instance {name!r} must support at least one category")
    for cat in cats:  # a kind without a source is refused here ("not available yet")
        spec.check(cat, instance=name)
    if session.scalar(select(Instance.id).where(Instance.name == name)) is not None:
        raise AlreadyExistsError(f"an instance named {name!r} exists already")
    instance = Instance(
        name=name,
        kind=parsed_kind.value,
        block_name=block_name,
        priority=priority,
        tags=_clean_tags(tags),
        categories=list(dict.fromkeys(cats)),
        enabled=enabled,
        description=description,
    )
    session.add(instance)
    session.flush()
    return instance


def get_instance(session: Session, *, name: str) -> Instance:
    instance = session.scalar(select(Instance).where(Instance.name == name))
    if instance is None:
        raise NotFoundError(f"unknown instance {name!r}")
    return instance


def list_instances(
    session: Session,
    *,
    kind: str | None = None,
    tag: str | None = None,
    category: str | None = None,
    enabled: bool | None = None,
) -> list[Instance]:
    stmt = select(Instance).order_by(Instance.name)
    if kind is not None:
        stmt = stmt.where(Instance.kind == InstanceKind.parse(kind, what="instance kind").value)
    if enabled is not None:
        stmt = stmt.where(Instance.enabled.is_(enabled))
    rows = list(session.scalars(stmt))
    if tag is not None:
        rows = [i for i in rows if tag in i.tags]
    if category is not None:
        cat = Category.parse(category, what="category").value
        rows = [i for i in rows if i.supports(cat)]
    return rows


def remove_instance(session: Session, *, name: str) -> None:
    """Delete an instance with its records, sync state and synced data (FK cascade)."""
    instance = get_instance(session, name=name)
    session.delete(instance)
    session.flush()


def set_enabled(session: Session, *, name: str, enabled: bool) -> Instance:
    instance = get_instance(session, name=name)
    instance.enabled = enabled
    session.flush()
    return instance


def select_instances(
    session: Session,
    *,
    category: str,
    names: Sequence[str] = (),
    tags: Sequence[str] = (),
) -> list[Instance]:
    """The instances a session of ``category`` runs over.

    By ``names`` (each must exist and support the category; disabled ones are refused),
    else by ``tags`` (enabled instances with any of the tags), else every enabled instance
    that supports the category. Ordered by priority (highest first), then name.
    """
    cat = Category.parse(category, what="category").value
    if names:
        chosen: list[Instance] = []
        unknown = [n for n in dict.fromkeys(names)]
        found = {i.name: i for i in session.scalars(select(Instance).where(Instance.name.in_(unknown)))}
        missing = [n for n in unknown if n not in found]
        if missing:
            raise NotFoundError("unknown instance(s): " + ", ".join(repr(n) for n in missing))
        for n in unknown:
            inst = found[n]
            if not inst.supports(cat):
                raise ConfigError(
                    f"instance {n!r} ({inst.kind}) does not support category {cat!r} "
                    f"(it supports: {', '.join(inst.categories)})"
                )
            if not inst.enabled:
                raise ConfigError(f"instance {n!r} is disabled (enable it with: syncflow instances enable {n})")
            chosen.append(inst)
    else:
        chosen = list_instances(session, category=cat, enabled=True)
        if tags:
            wanted = set(tags)
            chosen = [i for i in chosen if wanted.intersection(i.tags)]
    return sorted(chosen, key=lambda i: (-i.priority, i.name))

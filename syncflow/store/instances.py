"""The instance registry: functions that take a Session and flush, never commit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from syncflow.errors import AlreadyExistsError, ConfigError, NotFoundError
from syncflow.sources.base import source_kind
from syncflow.store.models import Category, Instance, InstanceKind

NAME_MAX = 255  # instances.name (and sync_instance_records.instance_name) is VARCHAR(255)


def _clean_tags(tags: Iterable[str]) -> list[str]:
    out: list[str] = []
    for tag in tags:
        tag = tag.strip()
        if not tag:
            raise ConfigError("a tag must not be empty")
        if tag not in out:
            out.append(tag)
    return out


def check_name(name: str) -> str:
    """The instance name, stripped; ConfigError when empty or longer than the column."""
    name = name.strip()
    if not name:
        raise ConfigError("an instance needs a non-empty name")
    if len(name) > NAME_MAX:
        raise ConfigError(f"instance name: {len(name)} characters is too long (at most {NAME_MAX})")
    return name


def check_categories(kind: str, categories: Iterable[str] | None, *, name: str) -> list[str]:
    """The categories an instance of ``kind`` registers with (default: the kind's usual ones);
    ConfigError naming a category the kind's source cannot sync."""
    spec = source_kind(InstanceKind.parse(kind, what="instance kind").value)
    if categories is None:
        cats = list(spec.default_categories)
    else:
        cats = [Category.parse(c, what="category").value for c in categories]
        if not cats:
            raise ConfigError(f"instance {name!r} must support at least one category")
    for cat in cats:  # a kind without a source is refused here ("not available yet")
        spec.check(cat, instance=name)
    return list(dict.fromkeys(cats))


def check_name_free(session: Session, name: str) -> None:
    """AlreadyExistsError when ``name`` is taken, by a live or a retired instance (the history
    of a retired one names it, so its name is not given to another)."""
    taken = session.execute(select(Instance.id, Instance.retired_at).where(Instance.name == name)).first()
    if taken is None:
        return
    if taken[1] is not None:
        raise AlreadyExistsError(
            f"an instance named {name!r} existed and was retired on {taken[1]:%Y-%m-%d %H:%M} UTC "
            "(its past sessions keep the name): choose another name"
        )
    raise AlreadyExistsError(f"an instance named {name!r} exists already")


def check_block_free(session: Session, block_name: str, *, kind: str) -> None:
    """AlreadyExistsError when a live instance already syncs from block ``block_name``: two
    instances never share a connection (their rows would mix). Telegram chats share their
    account's block by design."""
    if kind == InstanceKind.TELEGRAM:
        return
    other = session.scalar(
        select(Instance.name).where(Instance.block_name == block_name, Instance.retired_at.is_(None)).limit(1)
    )
    if other is not None:
        raise AlreadyExistsError(
            f"--block: block {block_name!r} is already the connection of instance {other!r} "
            "(two instances never share a connection)"
        )


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
    block_binding: str | None = None,
) -> Instance:
    """Register a source instance. Its connection (and any secret) lives in block ``block_name``;
    ``block_binding`` is the key that block carries when syncflow made it for this instance."""
    name = check_name(name)
    parsed_kind = InstanceKind.parse(kind, what="instance kind")
    cats = check_categories(parsed_kind.value, categories, name=name)
    check_name_free(session, name)
    if block_name is not None:
        check_block_free(session, block_name, kind=parsed_kind.value)
    instance = Instance(
        name=name,
        kind=parsed_kind.value,
        block_name=block_name,
        priority=priority,
        tags=_clean_tags(tags),
        categories=cats,
        enabled=enabled,
        description=description,
        block_binding=block_binding,
    )
    session.add(instance)
    session.flush()
    return instance


def get_instance(session: Session, *, name: str) -> Instance:
    """The instance named ``name``, live or retired."""
    instance = session.scalar(select(Instance).where(Instance.name == name))
    if instance is None:
        raise NotFoundError(f"unknown instance {name!r}")
    return instance


def retired_note(instance: Instance) -> str:
    when = f"{instance.retired_at:%Y-%m-%d %H:%M} UTC" if instance.retired_at else "?"
    return f"instance {instance.name!r} is retired (since {when}): it is never synced again"


def live_instance(session: Session, *, name: str) -> Instance:
    """The instance named ``name``; ConfigError when it is retired."""
    instance = get_instance(session, name=name)
    if instance.retired:
        raise ConfigError(retired_note(instance))
    return instance


def list_instances(
    session: Session,
    *,
    kind: str | None = None,
    tag: str | None = None,
    category: str | None = None,
    enabled: bool | None = None,
    retired: bool | None = False,
) -> list[Instance]:
    """Instances by name; ``retired``: False (default) live ones, True retired ones, None both."""
    stmt = select(Instance).order_by(Instance.name)
    if retired is not None:
        stmt = stmt.where(Instance.retired_at.is_not(None) if retired else Instance.retired_at.is_(None))
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


def set_enabled(session: Session, *, name: str, enabled: bool) -> Instance:
    instance = live_instance(session, name=name)
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
            if inst.retired:
                raise ConfigError(retired_note(inst))
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

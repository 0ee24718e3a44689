"""Who is acting, from where: set once per request (or CLI command), read by `record()`.

The context variable holds a mutable holder so that authentication, which FastAPI may run
in a worker thread with a copied context, can fill in the actor for the rest of the request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class AuditContext:
    actor_id: int | None = None
    actor_name: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    token_id: int | None = None
    request_id: str | None = None
    via: str = "system"  # api | git | web | cli | worker | system


@dataclass
class _Holder:
    ctx: AuditContext


_current: ContextVar[_Holder | None] = ContextVar("bastion_audit_context", default=None)


def current_context() -> AuditContext:
    holder = _current.get()
    return holder.ctx if holder is not None else AuditContext()


@contextmanager
def bind_context(ctx: AuditContext | None = None, **changes: object) -> Iterator[AuditContext]:
    new = replace(ctx or current_context(), **changes)  # type: ignore[arg-type]
    token = _current.set(_Holder(new))
    try:
        yield new
    finally:
        _current.reset(token)


def set_actor(actor_id: int | None, actor_name: str | None, token_id: int | None) -> None:
    """Fill in the authenticated actor for the rest of the current request or command."""
    holder = _current.get()
    if holder is None:
        holder = _Holder(AuditContext())
        _current.set(holder)
    holder.ctx = replace(holder.ctx, actor_id=actor_id, actor_name=actor_name, token_id=token_id)

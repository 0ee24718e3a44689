"""Audit trail: one `record()` for every security-relevant act, stored as a hash chain.

Callers pass the action, the target and what is specific to the act; actor, IP, user agent,
token and request id come from the current request context.
"""

from bastion.audit.context import AuditContext, bind_context, current_context
from bastion.audit.service import record

__all__ = ["AuditContext", "bind_context", "current_context", "record"]

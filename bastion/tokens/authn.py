"""Access tokens as credentials: the token authenticator `bastion.api.auth` calls (installed by the app)."""

from __future__ import annotations

from fastapi import Request

from bastion.api.auth import hub_of
from bastion.authz import Principal
from bastion.db import transaction
from bastion.tokens import service as tokens


def principal_from_secret(request: Request, secret: str) -> Principal:
    """The principal of a presented token secret (UnknownCredentials if it is no live token)."""
    hub = hub_of(request)
    ip, agent = request.state.client_ip, request.headers.get("user-agent")
    # A read: every API request passes here, so it must not take SQLite's write lock.
    with transaction(hub.sessions, readonly=True) as session:
        tok = tokens.authenticate(session, secret, ip, agent, touch=False)
        principal = tokens.principal_for_token(tok)
        touch = tokens.needs_touch(tok)
    # The token row (and its user) as read just now, for routes that report it (whoami-v2).
    request.state.access_token = tok
    if touch:  # at most once a minute per token
        with transaction(hub.sessions) as session:
            tokens.touch_last_used(session, tok.id, ip, agent)
    return principal

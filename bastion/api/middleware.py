"""Per-request context: request id, client IP (through trusted proxies), audit context,
and the strict-authz guard that rejects a successful response without exactly one check;
and the Host check that refuses requests naming a host this instance does not serve.
"""

from __future__ import annotations

import ipaddress
import logging
import uuid
from datetime import timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.api.errors import error_response
from bastion.audit import aggregate
from bastion.audit.context import AuditContext, bind_context
from bastion.authz import start_request_checks
from bastion.config import host_name
from bastion.timing import server_timing_header, start_request_timings

log = logging.getLogger("bastion.authz")
log_hosts = logging.getLogger("bastion.hosts")


def client_ip(scope: Scope, trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str | None:
    peer = (scope.get("client") or (None, None))[0]
    if not peer or not trusted:
        return peer
    try:
        if not any(ipaddress.ip_address(peer) in net for net in trusted):
            return peer
    except ValueError:
        return peer
    headers = {k.lower(): v for k, v in scope.get("headers", [])}
    forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1")
    # Walk right to left, skipping our own proxies: the first untrusted hop is the client.
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        try:
            if any(ipaddress.ip_address(hop) in net for net in trusted):
                continue
        except ValueError:
            return peer
        return hop
    return peer


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, trusted_proxies: list[str], strict_authz: bool,
                 server_timing: bool = False) -> None:
        self.app = app
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]
        self.strict = strict_authz
        self.server_timing = server_timing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        request_id = uuid.uuid4().hex
        ip = client_ip(scope, self.trusted)
        ua = headers.get(b"user-agent", b"").decode("latin-1")[:512] or None
        state: dict[str, Any] = scope.setdefault("state", {})
        state["client_ip"] = ip
        state["request_id"] = request_id
        checks = start_request_checks()
        deferred = aggregate.start_request()
        timings = start_request_timings()
        blocked = False

        async def guarded_send(message: Message) -> None:
            nonlocal blocked
            if message["type"] == "http.response.start":
                status = message["status"]
                declared = getattr(scope.get("endpoint"), "__bastion_permissions__", None)
                undeclared = [str(c) for c in checks if declared is not None and c not in declared]
                if self.strict and "endpoint" in scope and (
                        len(checks) > 1 or (status < 400 and len(checks) != 1) or undeclared):
                    blocked = True
                    log.error("authz invariant broken on %s %s: checks=%s declared=%s", scope["method"],
                              scope["path"], checks, sorted(map(str, declared or ())))
                    body = (f"authz invariant: {len(checks)} checks on this route" + (
                        f", {', '.join(undeclared)} not declared" if undeclared else "")).encode()
                    await send({"type": "http.response.start", "status": 500,
                                "headers": [(b"content-type", b"text/plain"),
                                            (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})
                    return
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", request_id.encode())]
                if self.server_timing and timings:
                    message["headers"].append((b"server-timing", server_timing_header(timings)))
            if blocked:
                return
            await send(message)

        with bind_context(AuditContext(ip=ip, user_agent=ua, request_id=request_id, via="api")):
            await self.app(scope, receive, guarded_send)
            if deferred and "app" in scope:
                # After the response: the request's own transaction is over, so this write never waits on it.
                await run_in_threadpool(_record_deferred, scope["app"].state.hub, list(deferred))


def _record_deferred(hub: Any, items: list[aggregate.Deferred]) -> None:
    """Denied token uses and failed authentications, aggregated (a flood cannot fill the log)."""
    from bastion.db import transaction

    try:
        with transaction(hub.sessions) as session:
            aggregate.record_deferred(session, items, timedelta(seconds=hub.settings.audit_repeat_window_seconds))
    except Exception:  # auditing a denial must never turn the denial into a 500
        log.exception("could not record denied token uses and failed authentications")


def request_host(scope: Scope) -> str | None:
    """The host name a request addresses (its Host header without the port); None without one."""
    raw = next((v for k, v in scope.get("headers", []) if k.lower() == b"host"), b"").decode("latin-1").strip()
    if not raw:
        return None
    if raw.startswith("["):  # [v6]:port
        return host_name(raw.partition("]")[0] + "]")
    return host_name(raw.rpartition(":")[0] if raw.count(":") == 1 else raw)


def _is_the_server(host: str, scope: Scope) -> bool:
    """An IP literal naming this server itself: a loopback address, or the address it is bound to. The git
    receive hooks call back that way, and so do local health checks; no other site can be named so."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    bound = (scope.get("server") or ("", None))[0]
    return address.is_loopback or host == host_name(str(bound or ""))


class AllowedHostsMiddleware:
    """Django's ALLOWED_HOSTS: once the instance knows its names (BASTION_PUBLIC_URL, BASTION_XET_CAS_URL,
    BASTION_ALLOWED_HOSTS), a request naming another host is refused before any route sees it, so no
    absolute URL Bastion builds (LFS actions, pagination links, Xet URLs) can name an attacker's host."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.hosts:
            host = request_host(scope)
            # No Host at all (HTTP/1.0): URLs are then built from the bound address, which nobody else names.
            if host is not None and host not in self.hosts and not _is_the_server(host, scope):
                log_hosts.warning("refused a request for host %r (served: %s; see BASTION_ALLOWED_HOSTS)",
                                  host[:200], ", ".join(sorted(self.hosts)))
                response = error_response(400, "BadRequest", f"Invalid Host header {host[:200]!r}: this server "
                                                             "does not answer to that name")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

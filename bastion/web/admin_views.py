"""The instance administrators' page: the health of what Bastion runs beside itself (the malware scanner) and
the audit log's streaming (sinks, their backlog, dead letters).

Read only (no forms); what it shows is `GET /api/admin/clamd` (bastion.scanning.clamd) and
`GET /api/admin/audit/sinks` / `…/dead-letters` (bastion.audit.delivery); re-driving is the API's.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from bastion.api.auth import current_principal, hub_of
from bastion.audit import delivery
from bastion.authz import Permission, Principal, permission, require
from bastion.db import transaction
from bastion.scanning import clamd
from bastion.web.pages import HtmlRoute, render

router = APIRouter(route_class=HtmlRoute)


@router.get("/admin")
@permission(Permission.INSTANCE_STATUS_READ)
def admin_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.INSTANCE_STATUS_READ)
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        sinks = [delivery.sink_json(s, session) for s in delivery.list_sinks(session)]
        letters = delivery.dead_letters(session, limit=100)
    return render(request, "admin.html", clamd=clamd.instance_status(hub.settings), sinks=sinks,
                  dead_letters=letters)

"""The instance administrators' page: the health of what Bastion runs beside itself (the malware scanner).

Read only (no forms); what it shows is `GET /api/admin/clamd`, from bastion.scanning.clamd.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from bastion.api.auth import current_principal, hub_of
from bastion.authz import Permission, Principal, permission, require
from bastion.scanning import clamd
from bastion.web.pages import HtmlRoute, render

router = APIRouter(route_class=HtmlRoute)


@router.get("/admin")
@permission(Permission.INSTANCE_STATUS_READ)
def admin_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.INSTANCE_STATUS_READ)
    return render(request, "admin.html", clamd=clamd.instance_status(hub_of(request).settings))

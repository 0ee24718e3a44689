"""The Hub's products that Bastion does not offer, answered as such: a 400 in the Hub's error format naming
what is missing, for every method, instead of a bare 404/405 the client reports as an unexplained failure.

Buckets, collections, webhooks and jobs are huggingface.co services beside the repositories; a Space's
runtime (hardware, secrets, variables, restarts) needs the Hub's compute. Nothing is read or stored here.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from bastion.api.auth import current_principal
from bastion.authz import Permission, Principal, permission, require
from bastion.errors import BadRequest

router = APIRouter()
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]

FEATURES = {
    "/api/buckets": "Storage buckets are",
    "/api/collections": "Collections are",
    "/api/settings/webhooks": "Webhooks are",
    "/api/jobs": "Jobs are",
}
# What a Space's page on the Hub runs: its container, hardware, secrets and variables.
SPACE_RUNTIME = ("runtime", "restart", "pause", "hardware", "sleeptime", "secrets", "variables", "logs", "events",
                 "metrics")


def _refuse(what: str):  # type: ignore[no-untyped-def]
    @permission(Permission.PUBLIC)
    def refuse(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
        require(principal, Permission.PUBLIC)
        raise BadRequest(f"{what} not offered by this Bastion instance")
    return refuse


for prefix, what in FEATURES.items():
    router.add_api_route(prefix, _refuse(what), methods=METHODS)
    router.add_api_route(prefix + "/{rest:path}", _refuse(what), methods=METHODS)
for verb in SPACE_RUNTIME:
    what = "Running Spaces (their runtime, hardware, secrets and variables) is"
    router.add_api_route(f"/api/spaces/{{ns}}/{{name}}/{verb}", _refuse(what), methods=METHODS)
    router.add_api_route(f"/api/spaces/{{ns}}/{{name}}/{verb}/{{rest:path}}", _refuse(what), methods=METHODS)

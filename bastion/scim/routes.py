"""The SCIM 2.0 endpoints (RFC 7644) of the instance (/scim/v2) and of each organization
(/api/organizations/{org}/scim/v2, the Hub's path): Users, Groups and the discovery resources.

Each route parses with scim2-models, calls authz.require(SCIM_PROVISION, ScimScope) once (only a SCIM
token of that scope passes: an account's token or browser session never does), then scim.service.
Every error on these paths is a SCIM Error (§3.12) with application/scim+json; bad input is a 400 with
its scimType, never a 500. Audit events name the SCIM client ("scim:<label>#<id>", via "scim").
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    ETag,
    Filter,
    Group,
    InvalidFilterException,
    InvalidSyntaxException,
    InvalidValueException,
    ListResponse,
    Mutability,
    NotFoundException,
    Patch,
    PatchOp,
    PreconditionFailedException,
    Required,
    ResourceType,
    ResponseParameters,
    SCIMException,
    ScimFilter,
    SearchRequest,
    ServiceProviderConfig,
    Sort,
    User,
)
from scim2_models import Error as ScimError
from scim2_models import Schema as ScimSchema
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from bastion.api.auth import current_principal, hub_of, presented_token
from bastion.api.bodies import json_object
from bastion.api.urls import base_url
from bastion.audit.context import bind_context
from bastion.authz import Permission, Principal, permission, require
from bastion.authz.policy import ScimScope
from bastion.db import transaction
from bastion.errors import BadRequest, BastionError, InvalidCredentials, UnknownCredentials
from bastion.orgs import service as orgs
from bastion.scim import service as scim
from bastion.tokens import service as tokens_service

SCIM_JSON = "application/scim+json"
MAX_BODY = 1 << 20
MAX_RESULTS = 200  # filter.maxResults: the largest page (count) served
# A filter's length, in a query string or a search body alike: it bounds the parse and the SQL it becomes (a few
# hundred comparisons at most, far below a database's bound parameters).
MAX_FILTER = 2000
INSTANCE_PREFIX = "/scim/v2"
ORG_PREFIX = "/api/organizations/{org}/scim/v2"
# The User attributes Bastion keeps (the published schema lists only these; userName is immutable: it is
# the account's namespace). Other core attributes (title, phoneNumbers, …: IdPs' default mappings send them) are
# ignored; a password is refused (scim.service._refuse_password); unknown extensions fail validation.
USER_ATTRIBUTES = ("userName", "name", "displayName", "active", "emails", "groups")


def _scim_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type=SCIM_JSON, headers=headers or {})


def error_response(status: int, detail: str, scim_type: str | None = None) -> Response:
    err = ScimError(status=status, scim_type=scim_type, detail=detail[:1000])
    headers = {"WWW-Authenticate": 'Bearer realm="SCIM"'} if status == 401 else {}
    return _scim_response(err.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE), status, headers)


_BASTION_SCIM_TYPES = {400: "invalidValue", 409: "uniqueness"}


class ScimRoute(APIRoute):
    """Every error on a SCIM path rendered as a SCIM Error (the Hub format stays on the other routes)."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def scim_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except SCIMException as exc:
                return error_response(exc.status, exc.detail or str(exc), exc.scim_type or None)
            except ValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(x) for x in first.get("loc", ()))
                return error_response(400, f"Invalid value{' at ' + where if where else ''}: {first.get('msg', exc)}",
                                      "invalidValue")
            except RequestValidationError:
                return error_response(400, "Invalid request", "invalidSyntax")
            except IntegrityError:  # two requests creating the same name at once: the loser is told as any clash
                return error_response(409, "The resource exists already (a concurrent request created it)",
                                      "uniqueness")
            except InvalidCredentials as exc:
                return error_response(401, exc.message)
            except BastionError as exc:
                return error_response(exc.status, exc.message, _BASTION_SCIM_TYPES.get(exc.status))

        return scim_handler


router = APIRouter(route_class=ScimRoute)


# ---- who calls, which endpoint ----------------------------------------------------------------------------------

def _principal(request: Request) -> tuple[Principal, scim.ScimToken | None]:
    """A SCIM token's principal, or whatever other credential was presented (which the policy refuses)."""
    secret = presented_token(request)
    if secret is None or not scim.is_scim_secret(secret):
        return current_principal(request), None
    with transaction(hub_of(request).sessions) as session:
        tok = scim.authenticate(session, secret)
        if tok is None:
            tokens_service.note_failed_authentication(request.state.client_ip, "unknown or revoked SCIM token",
                                                      request.method, request.url.path)
            raise UnknownCredentials("unknown or revoked SCIM token")
        session.expunge(tok)
    return scim.principal_for(tok), tok


def _authorized(request: Request, session: Any) -> tuple[scim.Scope, scim.ScimToken | None]:
    """The endpoint's scope after the one authorization check (a missing org answers 404)."""
    principal, tok = request.state.scim_caller
    name = request.path_params.get("org")
    if name is None:
        scope, target = scim.Scope(None), ScimScope(None)
    else:
        org = orgs.get_org(session, name)
        scope, target = scim.Scope(org), ScimScope(org.id)
    require(principal, Permission.SCIM_PROVISION, target)
    return scope, tok


def _base(request: Request) -> str:
    name = request.path_params.get("org")
    return base_url(request) + (INSTANCE_PREFIX if name is None else ORG_PREFIX.replace("{org}", name))


async def _run(request: Request, work: Callable[[Any, scim.Scope], Response], *, readonly: bool = False) -> Response:
    """Authenticate, then run `work(session, scope)` in one transaction, as the SCIM client."""
    request.state.scim_caller = await run_in_threadpool(_principal, request)

    def run() -> Response:
        with transaction(hub_of(request).sessions, readonly=readonly) as session:
            scope, tok = _authorized(request, session)
            if tok is None:  # refused by require() already; no other credential gets this far
                raise InvalidCredentials("SCIM needs a SCIM token")
            with bind_context(actor_id=None, actor_name=scim.actor_name(tok), token_id=None, via="scim"):
                return work(session, scope)

    return await run_in_threadpool(run)


async def _body(request: Request) -> dict[str, Any]:
    data = await request.body()
    if len(data) > MAX_BODY:
        raise SCIMException(detail="The request body is too large")  # 400
    try:
        parsed = json.loads(data or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidSyntaxException(detail=f"The body is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise InvalidSyntaxException(detail="The body must be a JSON object")
    return parsed


# ---- discovery ------------------------------------------------------------------------------------------------

def _user_schema() -> ScimSchema:
    schema = User.to_schema()
    schema.attributes = [a for a in schema.attributes or [] if a.name in USER_ATTRIBUTES]
    for a in schema.attributes:
        if a.name == "userName":
            a.mutability = Mutability.immutable
        if a.name == "active":  # Bastion keeps no "unknown" state: an account is active or not
            a.required = Required.true
    return schema


def _group_schema() -> ScimSchema:
    schema = Group.to_schema()
    for a in schema.attributes or []:
        for sub in (a.sub_attributes or []) if a.name == "members" else []:
            if sub.name == "display":  # the member's userName or group name, as Bastion knows it
                sub.mutability = Mutability.read_only
    return schema


def _schemas() -> list[ScimSchema]:
    return [_user_schema(), _group_schema()]


def _resource_types() -> list[ResourceType]:
    return [ResourceType.from_resource(User), ResourceType.from_resource(Group)]


def _config(base: str) -> ServiceProviderConfig:
    return ServiceProviderConfig(
        documentation_uri=None,
        patch=Patch(supported=True), bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=MAX_RESULTS), change_password=ChangePassword(supported=False),
        sort=Sort(supported=False), etag=ETag(supported=True),
        authentication_schemes=[AuthenticationScheme(
            type="oauthbearertoken", name="SCIM bearer token", primary=True,
            description="A SCIM token (bsc_…) from `bastion admin scim-token` or the SCIM settings page")],
        meta={"resourceType": "ServiceProviderConfig", "location": f"{base}/ServiceProviderConfig"})


def _dump(obj: Any, params: ResponseParameters[Any] | None = None) -> dict[str, Any]:
    return obj.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE, response_parameters=params)  # type: ignore[no-any-return]


def _listed(items: list[dict[str, Any]], base: str, kind: str) -> dict[str, Any]:
    for item in items:
        item.setdefault("meta", {})["location"] = f"{base}/{kind}/{item['id']}"
    return {"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": len(items),
            "itemsPerPage": len(items), "startIndex": 1, "Resources": items}


@permission(Permission.SCIM_PROVISION)
async def service_provider_config(request: Request) -> Response:
    base = _base(request)
    return await _run(request, lambda _s, _sc: _scim_response(_dump(_config(base))), readonly=True)


@permission(Permission.SCIM_PROVISION)
async def resource_types(request: Request) -> Response:
    base = _base(request)
    return await _run(request, lambda _s, _sc: _scim_response(
        _listed([_dump(r) for r in _resource_types()], base, "ResourceTypes")), readonly=True)


async def _discovery_one(request: Request, items: Any, kind: str, wanted: str) -> Response:
    """One ResourceType or Schema by id, with its location (a SCIM 404 for an unknown id)."""
    base = _base(request)

    def work(_s: Any, _sc: scim.Scope) -> Response:
        for item in items():
            if item.id == wanted:
                payload = _dump(item)
                payload.setdefault("meta", {})["location"] = f"{base}/{kind}s/{item.id}"
                return _scim_response(payload)
        raise NotFoundException(detail=f"{kind} {wanted} not found")

    return await _run(request, work, readonly=True)


@permission(Permission.SCIM_PROVISION)
async def resource_type(request: Request) -> Response:
    return await _discovery_one(request, _resource_types, "ResourceType", request.path_params["rid"])


@permission(Permission.SCIM_PROVISION)
async def schemas(request: Request) -> Response:
    base = _base(request)
    return await _run(request, lambda _s, _sc: _scim_response(
        _listed([_dump(s) for s in _schemas()], base, "Schemas")), readonly=True)


@permission(Permission.SCIM_PROVISION)
async def schema(request: Request) -> Response:
    return await _discovery_one(request, _schemas, "Schema", request.path_params["sid"])


# ---- query parameters, versions -----------------------------------------------------------------------------------

def _params(request: Request) -> ResponseParameters[Any] | None:
    q = request.query_params
    attributes, excluded = q.get("attributes"), q.get("excludedAttributes")
    if not attributes and not excluded:
        return None
    try:
        return ResponseParameters(attributes=[a.strip() for a in attributes.split(",")] if attributes else None,
                                  excluded_attributes=[a.strip() for a in excluded.split(",")] if excluded else None)
    except ValidationError as exc:
        raise InvalidValueException(detail="Invalid attributes or excludedAttributes") from exc


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidValueException(detail=f"{name} must be an integer") from None


def _check_filter_length(text: Any) -> None:
    if isinstance(text, str) and len(text) > MAX_FILTER:
        raise InvalidFilterException(detail=f"The filter is too long (at most {MAX_FILTER} characters)")


def _filter(request: Request, model: type[Any]) -> ScimFilter[Any] | None:
    text = request.query_params.get("filter")
    if not text:
        return None
    _check_filter_length(text)
    try:
        return ScimFilter[model](text)  # type: ignore[valid-type]
    except SCIMException:
        raise
    except (ValueError, ValidationError) as exc:
        raise InvalidFilterException(detail=f"Invalid filter: {exc}") from exc


def _versioned(payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    version = scim.version_of(payload)
    payload.setdefault("meta", {})["version"] = version
    return payload, version


def _check_if_match(request: Request, version: str) -> None:
    wanted = request.headers.get("if-match")
    if wanted is None:
        return
    tags = [t.strip() for t in wanted.split(",")]
    strip = lambda t: t[2:] if t.startswith("W/") else t  # noqa: E731 (weak comparison, RFC 7232 §2.3.2)
    if "*" not in tags and strip(version) not in {strip(t) for t in tags}:
        raise PreconditionFailedException(detail="The resource changed: its version no longer matches If-Match")


def _one(payload: dict[str, Any], params: ResponseParameters[Any] | None, model: type[Any],
         status: int = 200, location: bool = False) -> Response:
    payload, version = _versioned(payload)
    body = payload
    if params is not None:
        body = model.model_validate(payload, scim_ctx=Context.RESOURCE_QUERY_RESPONSE).model_dump(
            scim_ctx=Context.RESOURCE_QUERY_RESPONSE, response_parameters=params)
        body.setdefault("meta", {})["version"] = version
    headers = {"ETag": version}
    if location:
        headers["Location"] = payload["meta"]["location"]
    return _scim_response(body, status, headers)


# ---- Users ---------------------------------------------------------------------------------------------------

def _user_payload(session: Any, scope: scim.Scope, seen: scim.Seen, base: str) -> dict[str, Any]:
    return _dump(scim.serve_users(session, scope, [seen], base)[0])


@dataclass(frozen=True)
class Query:
    """A list or search request (RFC 7644 §3.4.2, §3.4.3): filter, page and the attributes to return."""

    filter: ScimFilter[Any] | None
    params: ResponseParameters[Any] | None
    start: int
    count: int


def _query_of(request: Request, model: type[Any]) -> Query:
    """startIndex is 1-based (below 1 counts as 1); count is capped and below 0 counts as 0 (§3.4.2.4)."""
    return Query(_filter(request, model), _params(request), max(1, _int_param(request, "startIndex", 1)),
                 min(MAX_RESULTS, max(0, _int_param(request, "count", MAX_RESULTS))))


def _search_of(data: dict[str, Any], model: type[Any]) -> Query:
    _check_filter_length(data.get("filter"))  # before scim2-models parses it
    search = SearchRequest[model].model_validate(data, scim_ctx=Context.SEARCH_REQUEST)  # type: ignore[valid-type]
    params = None
    if search.attributes or search.excluded_attributes:
        params = ResponseParameters(attributes=search.attributes, excluded_attributes=search.excluded_attributes)
    start = max(1, search.start_index or 1)
    count = MAX_RESULTS if search.count is None else min(MAX_RESULTS, max(0, search.count))
    return Query(search.filter, params, start, count)


def _listing(session: Any, scope: scim.Scope, model: type[Any], base: str, query: Query) -> Response:
    """A list or search of one resource type: the filter and the page are one SQL query (scim.service)."""
    lister = scim.list_users if model is User else scim.list_groups
    return _page_of(lister(session, scope, query.filter, query.start, query.count, base), query)


def _page_of(listing: scim.Listing, query: Query) -> Response:
    items = []
    for r in listing.resources:
        payload, _version = _versioned(_dump(r))
        if query.params is not None:
            payload = _dump(type(r).model_validate(payload, scim_ctx=Context.RESOURCE_QUERY_RESPONSE), query.params)
        items.append(payload)
    out = _dump(ListResponse[User | Group](total_results=listing.total, start_index=query.start,
                                           items_per_page=len(items)))
    out["Resources"] = items
    return _scim_response(out)


@permission(Permission.SCIM_PROVISION)
async def list_users(request: Request) -> Response:
    base, query = _base(request), _query_of(request, User)
    return await _run(request, lambda session, scope: _listing(session, scope, User, base, query), readonly=True)


@permission(Permission.SCIM_PROVISION)
async def search_users(request: Request) -> Response:
    base, data = _base(request), await _body(request)
    return await _run(request, lambda session, scope: _listing(session, scope, User, base, _search_of(data, User)),
                      readonly=True)


@permission(Permission.SCIM_PROVISION)
async def search_all(request: Request) -> Response:
    """POST /.search over every resource type at once (RFC 7644 §3.4.3): Users then Groups; a filter naming an
    attribute only one type has is false for the other (§3.4.2.1)."""
    base, data = _base(request), await _body(request)

    def work(session: Any, scope: scim.Scope) -> Response:
        query = _search_of(data, User | Group)
        return _page_of(scim.search_all(session, scope, query.filter, query.start, query.count, base), query)

    return await _run(request, work, readonly=True)


@permission(Permission.SCIM_PROVISION)
async def get_user(request: Request) -> Response:
    base, params, uid = _base(request), _params(request), request.path_params["uid"]

    def work(session: Any, scope: scim.Scope) -> Response:
        return _one(_user_payload(session, scope, scim.find_user(session, scope, uid), base), params, User)

    return await _run(request, work, readonly=True)


@permission(Permission.SCIM_PROVISION)
async def create_user(request: Request) -> Response:
    base, data = _base(request), await _body(request)

    def work(session: Any, scope: scim.Scope) -> Response:
        resource = User.model_validate(data, scim_ctx=Context.RESOURCE_CREATION_REQUEST)
        seen = scim.create_user(session, scope, resource)
        return _one(_user_payload(session, scope, seen, base), None, User, status=201, location=True)

    return await _run(request, work)


@permission(Permission.SCIM_PROVISION)
async def replace_user(request: Request) -> Response:
    base, data, uid = _base(request), await _body(request), request.path_params["uid"]

    def work(session: Any, scope: scim.Scope) -> Response:
        seen = scim.find_user(session, scope, uid)
        before = scim.serve_users(session, scope, [seen], base)[0]
        _check_if_match(request, scim.version_of(_dump(before)))
        after = User.model_validate(data, scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
        after.groups = before.groups  # read-only: what the request says about groups is ignored (RFC 7643 §4.1.2)
        scim.update_user(session, scope, seen, before, after)
        return _one(_user_payload(session, scope, seen, base), None, User)

    return await _run(request, work)


@permission(Permission.SCIM_PROVISION)
async def patch_user(request: Request) -> Response:
    base, data, uid = _base(request), await _body(request), request.path_params["uid"]

    def work(session: Any, scope: scim.Scope) -> Response:
        seen = scim.find_user(session, scope, uid)
        before = scim.serve_users(session, scope, [seen], base)[0]
        _check_if_match(request, scim.version_of(_dump(before)))
        patch = PatchOp[User].model_validate(data, scim_ctx=Context.RESOURCE_PATCH_REQUEST)
        after = before.model_copy(deep=True)
        patch.patch(after)
        after.groups = before.groups
        scim.update_user(session, scope, seen, before, after)
        return _one(_user_payload(session, scope, seen, base), None, User)

    return await _run(request, work)


@permission(Permission.SCIM_PROVISION)
async def delete_user(request: Request) -> Response:
    base, uid = _base(request), request.path_params["uid"]

    def work(session: Any, scope: scim.Scope) -> Response:
        seen = scim.find_user(session, scope, uid)
        _check_if_match(request, scim.version_of(_user_payload(session, scope, seen, base)))
        scim.delete_user(session, scope, seen)
        return Response(status_code=204)

    return await _run(request, work)


# ---- Groups ---------------------------------------------------------------------------------------------------

@permission(Permission.SCIM_PROVISION)
async def list_groups(request: Request) -> Response:
    base, query = _base(request), _query_of(request, Group)
    return await _run(request, lambda session, scope: _listing(session, scope, Group, base, query), readonly=True)


@permission(Permission.SCIM_PROVISION)
async def search_groups(request: Request) -> Response:
    base, data = _base(request), await _body(request)
    return await _run(request, lambda session, scope: _listing(session, scope, Group, base, _search_of(data, Group)),
                      readonly=True)


@permission(Permission.SCIM_PROVISION)
async def get_group(request: Request) -> Response:
    base, params, gid = _base(request), _params(request), request.path_params["gid"]

    def work(session: Any, scope: scim.Scope) -> Response:
        return _one(_dump(scim.group_resource(session, scim.find_group(session, scope, gid), base)), params, Group)

    return await _run(request, work, readonly=True)


@permission(Permission.SCIM_PROVISION)
async def create_group(request: Request) -> Response:
    base, data = _base(request), await _body(request)

    def work(session: Any, scope: scim.Scope) -> Response:
        resource = Group.model_validate(data, scim_ctx=Context.RESOURCE_CREATION_REQUEST)
        group = scim.create_group(session, scope, resource)
        return _one(_dump(scim.group_resource(session, group, base)), None, Group, status=201, location=True)

    return await _run(request, work)


def _change_group(request: Request, data: dict[str, Any], patch: bool) -> Callable[[Any, scim.Scope], Response]:
    base, gid = _base(request), request.path_params["gid"]

    def work(session: Any, scope: scim.Scope) -> Response:
        group = scim.find_group(session, scope, gid)
        before = scim.group_resource(session, group, base)
        _check_if_match(request, scim.version_of(_dump(before)))
        if patch:
            op = PatchOp[Group].model_validate(data, scim_ctx=Context.RESOURCE_PATCH_REQUEST)
            after = before.model_copy(deep=True)
            op.patch(after)
        else:
            after = Group.model_validate(data, scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
        scim.update_group(session, scope, group, after)
        return _one(_dump(scim.group_resource(session, group, base)), None, Group)

    return work


@permission(Permission.SCIM_PROVISION)
async def replace_group(request: Request) -> Response:
    data = await _body(request)
    return await _run(request, _change_group(request, data, patch=False))


@permission(Permission.SCIM_PROVISION)
async def patch_group(request: Request) -> Response:
    data = await _body(request)
    return await _run(request, _change_group(request, data, patch=True))


@permission(Permission.SCIM_PROVISION)
async def delete_group(request: Request) -> Response:
    base, gid = _base(request), request.path_params["gid"]

    def work(session: Any, scope: scim.Scope) -> Response:
        group = scim.find_group(session, scope, gid)
        _check_if_match(request, scim.version_of(_dump(scim.group_resource(session, group, base))))
        scim.delete_group(session, scope, group)
        return Response(status_code=204)

    return await _run(request, work)


@permission(Permission.PUBLIC)
async def unknown(request: Request) -> Response:
    """Any other path under a SCIM prefix: a SCIM 404 (RFC 7644 §3.12), not the Hub's."""
    require(Principal.anonymous(), Permission.PUBLIC)
    rest = "/" + request.path_params["rest"]
    allowed = sorted({m for m, pattern in _KNOWN if pattern.match(rest)})
    if allowed:
        response = error_response(405, f"{request.method} is not allowed on {rest}")
        response.headers["Allow"] = ", ".join(allowed)
        return response
    raise NotFoundException(detail=f"No SCIM resource at {request.url.path}")


ROUTES: list[tuple[str, str, Callable[[Request], Awaitable[Response]]]] = [
    ("GET", "/ServiceProviderConfig", service_provider_config),
    ("GET", "/ResourceTypes", resource_types),
    ("GET", "/ResourceTypes/{rid}", resource_type),
    ("GET", "/Schemas", schemas),
    ("GET", "/Schemas/{sid}", schema),
    ("POST", "/.search", search_all),
    ("GET", "/Users", list_users),
    ("POST", "/Users/.search", search_users),
    ("POST", "/Users", create_user),
    ("GET", "/Users/{uid}", get_user),
    ("PUT", "/Users/{uid}", replace_user),
    ("PATCH", "/Users/{uid}", patch_user),
    ("DELETE", "/Users/{uid}", delete_user),
    ("GET", "/Groups", list_groups),
    ("POST", "/Groups/.search", search_groups),
    ("POST", "/Groups", create_group),
    ("GET", "/Groups/{gid}", get_group),
    ("PUT", "/Groups/{gid}", replace_group),
    ("PATCH", "/Groups/{gid}", patch_group),
    ("DELETE", "/Groups/{gid}", delete_group),
]
for _prefix in (INSTANCE_PREFIX, ORG_PREFIX):
    for _method, _path, _endpoint in ROUTES:
        router.add_api_route(_prefix + _path, _endpoint, methods=[_method])
_KNOWN = [(m, re.compile("^" + re.sub(r"\\{[a-z]+\\}", "[^/]+", re.escape(p)) + "$")) for m, p, _e in ROUTES]
for _prefix in (INSTANCE_PREFIX, ORG_PREFIX):
    router.add_api_route(_prefix + "/{rest:path}", unknown, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])


# ---- an org's SCIM settings over the Hub-format API (org admins; tokens are managed in the browser or CLI) -------

settings_router = APIRouter()


@settings_router.get("/api/organizations/{name}/settings/scim")
@permission(Permission.ORG_WRITE)
def get_settings(name: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    """The org's SCIM endpoint, its tokens (never a secret), its SCIM groups with their links, and the
    accounts its SCIM provisioned."""
    with transaction(hub_of(request).sessions, readonly=True) as session:
        org, facts = orgs.org_with_facts(session, name)
        require(principal, Permission.ORG_WRITE, facts)
        return JSONResponse(scim.settings_view(session, scim.Scope(org),
                                               base_url(request) + ORG_PREFIX.replace("{org}", org.name)))


@settings_router.put("/api/organizations/{name}/settings/scim/groups/{gid}")
@permission(Permission.ORG_WRITE)
async def link_group(name: str, gid: str, request: Request,
                     principal: Principal = Depends(current_principal)) -> JSONResponse:
    """Link a SCIM group to an org role (`role`, null: none) and to resource groups (`resourceGroups`:
    [{"id": id or name, "role": ROLE}]), replacing earlier links; members' roles follow at once."""
    data = await json_object(request)

    def run() -> JSONResponse:
        with transaction(hub_of(request).sessions) as session:
            org, facts = orgs.org_with_facts(session, name)
            require(principal, Permission.ORG_WRITE, facts)
            group = scim.find_org_group(session, org, gid)
            role = data.get("role")
            if role is not None and not isinstance(role, str):
                raise BadRequest("'role' must be an org role or null")
            scim.link_group(session, org, group, role or None,
                            scim.parse_links(session, org, data.get("resourceGroups", [])))
            return JSONResponse(scim.group_view(session, group))

    return await run_in_threadpool(run)

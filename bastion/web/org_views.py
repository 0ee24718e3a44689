"""Organization web pages: the org page (repos, members), its settings (members and roles, invitations,
resource groups, security, tokens) and the invitation page. Pages only: every change is an orgs.service call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from bastion.accounts.service import user_by_id
from bastion.api.auth import current_principal, hub_of
from bastion.authz import Permission, Principal, authorize, permission, require
from bastion.authz.policy import ORG_ROLES, GroupRef, OrgFacts
from bastion.db import transaction
from bastion.errors import AuthenticationRequired, BadRequest, BastionError
from bastion.orgs import service as orgs
from bastion.orgs.models import Organization, ResourceGroup
from bastion.relocation import service as relocation
from bastion.repos import service as repos
from bastion.storage.regions import DEFAULT_REGION, check_region, region_of_key
from bastion.tokens import governance
from bastion.web.pages import HtmlRoute, check_csrf, redirect, render

if TYPE_CHECKING:
    from bastion.accounts.models import User

router = APIRouter(route_class=HtmlRoute)
SETTINGS_TABS = (("members", "Members"), ("resource-groups", "Resource groups"), ("regions", "Regions"),
                 ("security", "Security"), ("sso", "SSO"), ("scim", "SCIM"), ("tokens", "Tokens"),
                 ("audit-logs", "Audit logs"))  # audit logs: bastion.web.audit_views; SSO: bastion.web.sso_views;
# SCIM: bastion.web.scim_views


def _text(form: FormData, key: str, limit: int = 4096) -> str:
    value = form.get(key)
    return value.strip()[:limit] if isinstance(value, str) else ""


def _me(session: Session, principal: Principal) -> User:
    user = user_by_id(session, principal.user_id)
    if user is None:
        raise AuthenticationRequired("Sign in to continue.")
    return user


def _settings_page(request: Request, principal: Principal, session: Session, org: Organization, facts: OrgFacts,
                   tab: str, status: int = 200, **extra: Any) -> Response:
    ctx: dict[str, Any] = {"org": org, "tab": tab, "tabs": SETTINGS_TABS, **extra}
    if tab == "members":
        ctx["members"] = orgs.list_members(session, org)
        ctx["invitations"] = orgs.pending_invitations(session, org)
        ctx["roles"] = ORG_ROLES
    elif tab == "resource-groups":
        # A group's private repos are listed only to those who may read them (the same policy). A group
        # admin without an org role that shows the settings sees the groups they administer.
        groups = orgs.list_groups(session, org) if authorize(principal, Permission.ORG_READ, facts) else \
            _administered_groups(session, org, principal)
        ctx["groups"] = [(g, orgs.group_members(session, g),
                          [r for r in repos.group_repos(session, g)
                           if authorize(principal, Permission.REPO_METADATA_READ, repos.repo_ref(r))])
                         for g in groups]
        ctx["members"] = orgs.list_members(session, org)
        ctx["org_repos"] = [r for repo_type in ("model", "dataset", "space")
                            for r in repos.list_repos(session, principal, repo_type, author=org.name, search=[],
                                                      sort=None, direction=-1, limit=500, offset=0).repos]
        ctx["group_roles"] = orgs.GROUP_ROLES
        ctx["can_create"] = bool(authorize(principal, Permission.RESOURCE_GROUP_WRITE, GroupRef(facts)))
    elif tab == "security":
        ctx["audit_retention_choices"] = [d for d in orgs.AUDIT_RETENTION_CHOICES
                                          if not hub_of(request).settings.audit_retention_days
                                          or d <= hub_of(request).settings.audit_retention_days]
    elif tab == "regions":
        # Where each org repo the viewer may read lives; a move under way is shown with its step.
        org_default = org.default_region or DEFAULT_REGION
        listed = [r for repo_type in ("model", "dataset", "space")
                  for r in repos.list_repos(session, principal, repo_type, author=org.name, search=[], sort=None,
                                            direction=-1, limit=1000, offset=0).repos]
        ctx["repos"] = [(r, relocation.active_move(session, r.id)) for r in listed]
        ctx["org_default"] = org_default
        ctx["type_defaults"] = orgs.default_regions(org)
        ctx["groups"] = orgs.list_groups(session, org)
        ctx["regions"] = sorted(hub_of(request).regions)
        ctx["is_admin"] = bool(authorize(principal, Permission.ORG_WRITE, facts))
        ctx["region_of"] = region_of_key
    elif tab == "tokens":
        ctx["tokens"] = [governance.org_token_payload(org, t) for t in governance.tokens_reaching(
            session, org, include_revoked=request.query_params.get("revoked") == "1")]
    return render(request, f"orgs/settings_{tab.replace('-', '_')}.html", status, **ctx)


async def _post(request: Request, principal: Principal, perm: Permission, name: str,
                resource: Callable[[Session, Organization, OrgFacts], object],
                act: Callable[[Session, Organization, FormData], str | None], tab: str) -> Response:
    """A settings form post: authorize once on the resource, run the service call, redirect back
    (or show the page again with the error)."""
    form = await request.form()

    def run() -> Response:
        with transaction(hub_of(request).sessions) as session:
            org, facts = orgs.org_with_facts(session, name)
            require(principal, perm, resource(session, org, facts))
            check_csrf(request, form)
            try:
                with session.begin_nested():
                    notice = act(session, org, form)
            except BadRequest as exc:
                return _settings_page(request, principal, session, org, facts, tab, 400, error=exc.message)
            except BastionError as exc:
                if exc.status in (404, 409):
                    return _settings_page(request, principal, session, org, facts, tab, exc.status,
                                          error=exc.message)
                raise
        return redirect(f"/organizations/{org.name}/settings/{tab}" + (f"?done={notice}" if notice else ""))

    return await run_in_threadpool(run)


# ---- the org page and creation --------------------------------------------------------------------

@router.get("/organizations/new")
@permission(Permission.ORG_CREATE)
def new_org_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.ORG_CREATE)
    return render(request, "orgs/new.html")


@router.post("/organizations/new")
@permission(Permission.ORG_CREATE)
async def create_org(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    require(principal, Permission.ORG_CREATE)
    check_csrf(request, form)

    def run() -> Response:
        try:
            with transaction(hub_of(request).sessions) as session:
                org = orgs.create_org(session, _me(session, principal), _text(form, "name", 96),
                                      _text(form, "fullname", 200))
                return redirect(f"/organizations/{org.name}")
        except (BadRequest, BastionError) as exc:
            if exc.status not in (400, 409):
                raise
            return render(request, "orgs/new.html", exc.status, error=exc.message)

    return await run_in_threadpool(run)


@router.get("/organizations/{name}")
@permission(Permission.REPO_LIST)
def org_page(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.REPO_LIST)  # the listing below is filtered by the same policy
    with transaction(hub_of(request).sessions, readonly=True) as session:
        org, facts = orgs.org_with_facts(session, name)
        listings = {t: repos.list_repos(session, principal, t, author=org.name, search=[], sort=None, direction=-1,
                                        limit=200, offset=0).repos for t in ("model", "dataset", "space")}
        show_members = bool(authorize(principal, Permission.ORG_MEMBERS_READ, facts))
        return render(request, "orgs/org.html", org=org, listings=listings,
                      members=orgs.list_members(session, org) if show_members else None,
                      is_admin=bool(authorize(principal, Permission.ORG_WRITE, facts)),
                      is_member=principal.user_id in facts.roles,
                      prefixes={"model": "", "dataset": "/datasets", "space": "/spaces"})


@router.post("/organizations/{name}/leave")
@permission(Permission.ORG_MEMBERSHIP_SELF)
async def leave_org(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    require(principal, Permission.ORG_MEMBERSHIP_SELF)
    check_csrf(request, form)

    def run() -> Response:
        with transaction(hub_of(request).sessions) as session:
            orgs.leave(session, orgs.get_org(session, name), _me(session, principal))
        return redirect("/")

    return await run_in_threadpool(run)


# ---- invitations ------------------------------------------------------------------------------

@router.get("/organizations/invitations/{secret}")
@permission(Permission.ORG_MEMBERSHIP_SELF)
def invitation_page(secret: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.ORG_MEMBERSHIP_SELF)  # signed out: the error page sends them to sign in
    with transaction(hub_of(request).sessions, readonly=True) as session:
        inv, org = orgs.invitation_for(session, secret)
        return render(request, "orgs/invitation.html", org=org, invitation=inv, secret=secret)


@router.post("/organizations/invitations/{secret}")
@permission(Permission.ORG_MEMBERSHIP_SELF)
async def answer_invitation(secret: str, request: Request,
                            principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    require(principal, Permission.ORG_MEMBERSHIP_SELF)
    check_csrf(request, form)
    answer = _text(form, "answer", 16)
    if answer not in ("accept", "decline"):
        raise BadRequest("Accept or decline the invitation")

    def run() -> Response:
        with transaction(hub_of(request).sessions) as session:
            fn = orgs.accept_invitation if answer == "accept" else orgs.decline_invitation
            org = fn(session, secret, _me(session, principal))
        return redirect(f"/organizations/{org.name}" if answer == "accept" else "/")

    return await run_in_threadpool(run)


# ---- settings: members, roles, invitations -----------------------------------------------------------

@router.get("/organizations/{name}/settings/{tab}")
@permission(Permission.ORG_READ, Permission.ORG_MEMBERS_WRITE, Permission.ORG_WRITE, Permission.RESOURCE_GROUP_WRITE)
def settings_page(name: str, tab: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    if tab not in dict(SETTINGS_TABS):
        raise BadRequest("Unknown settings page")
    # Members, security and tokens are the admins'; resource groups are listed to every member with a role.
    perm = Permission.ORG_READ if tab in ("resource-groups", "regions") else (
        Permission.ORG_MEMBERS_WRITE if tab == "members" else Permission.ORG_WRITE)
    with transaction(hub_of(request).sessions, readonly=True) as session:
        org, facts = orgs.org_with_facts(session, name)
        if tab == "resource-groups" and not authorize(principal, perm, facts):
            # Administering a group (whatever the org role, no_access included) opens that group's page.
            administered = _administered_groups(session, org, principal)
            if administered:
                require(principal, Permission.RESOURCE_GROUP_WRITE,
                        GroupRef(facts, orgs.group_facts(session, administered[0])))
                return _settings_page(request, principal, session, org, facts, tab)
        require(principal, perm, facts)
        return _settings_page(request, principal, session, org, facts, tab)


def _administered_groups(session: Session, org: Organization, principal: Principal) -> list[ResourceGroup]:
    return [g for g in orgs.list_groups(session, org)
            if orgs.group_facts(session, g).roles.get(principal.user_id) == "admin"]  # type: ignore[arg-type]


def _org_resource(_s: Session, _o: Organization, facts: OrgFacts) -> object:
    return facts


@router.post("/organizations/{name}/settings/members/{username}/{verb}")
@permission(Permission.ORG_MEMBERS_WRITE)
async def member_change(name: str, username: str, verb: str, request: Request,
                        principal: Principal = Depends(current_principal)) -> Response:
    def act(session: Session, org: Organization, form: FormData) -> str | None:
        user = orgs.user_by_name(session, username)
        if verb == "role":
            orgs.change_role(session, org, user, _text(form, "role", 16))
        elif verb == "remove":
            orgs.remove_member(session, org, user)
        else:
            raise BadRequest("Unknown action")
        return verb

    return await _post(request, principal, Permission.ORG_MEMBERS_WRITE, name, _org_resource, act, "members")


@router.post("/organizations/{name}/settings/invitations")
@permission(Permission.ORG_MEMBERS_WRITE)
async def invite(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    mailer = request.app.state.mailer

    def act(session: Session, org: Organization, form: FormData) -> str | None:
        orgs.invite(session, mailer, org, _me(session, principal), _text(form, "email", 320),
                    _text(form, "role", 16) or None)
        return "invited"

    return await _post(request, principal, Permission.ORG_MEMBERS_WRITE, name, _org_resource, act, "members")


@router.post("/organizations/{name}/settings/default-role")
@permission(Permission.ORG_MEMBERS_WRITE)
async def default_role(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    def act(session: Session, org: Organization, form: FormData) -> str | None:
        orgs.set_default_role(session, org, _text(form, "role", 16))
        return "saved"

    return await _post(request, principal, Permission.ORG_MEMBERS_WRITE, name, _org_resource, act, "members")


# ---- settings: resource groups ----------------------------------------------------------------

@router.post("/organizations/{name}/settings/resource-groups")
@permission(Permission.RESOURCE_GROUP_WRITE)
async def create_group(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    def act(session: Session, org: Organization, form: FormData) -> str | None:
        orgs.create_group(session, org, _text(form, "name", 200), _text(form, "description", 500))
        return "created"

    return await _post(request, principal, Permission.RESOURCE_GROUP_WRITE, name,
                       lambda _s, _o, facts: GroupRef(facts), act, "resource-groups")


@router.post("/organizations/{name}/settings/resource-groups/{group_id}/{verb}")
@permission(Permission.RESOURCE_GROUP_WRITE)
async def group_change(name: str, group_id: str, verb: str, request: Request,
                       principal: Principal = Depends(current_principal)) -> Response:
    """rename / delete (org admins); members (group admins too)."""
    if verb not in ("rename", "delete", "members", "remove-member"):
        raise BadRequest("Unknown action")

    def resource(session: Session, org: Organization, facts: OrgFacts) -> object:
        if verb in ("rename", "delete"):
            return GroupRef(facts)
        return GroupRef(facts, orgs.group_facts(session, orgs.get_group(session, org, group_id)))

    def act(session: Session, org: Organization, form: FormData) -> str | None:
        group = orgs.get_group(session, org, group_id)
        if verb == "rename":
            orgs.rename_group(session, org, group, _text(form, "name", 200))
        elif verb == "delete":
            orgs.delete_group(session, org, group)
        elif verb == "members":
            orgs.set_group_member(session, org, group, orgs.user_by_name(session, _text(form, "user", 96)),
                                  _text(form, "role", 16))
        else:
            orgs.remove_group_member(session, org, group, orgs.user_by_name(session, _text(form, "user", 96)))
        return verb

    return await _post(request, principal, Permission.RESOURCE_GROUP_WRITE, name, resource, act, "resource-groups")


@router.post("/organizations/{name}/settings/repo-group")
@permission(Permission.REPO_RESOURCE_GROUP)
async def move_repo(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    """Move an org repo (form: repo as `type:name` or a model's name, group id or empty for the org root)."""
    form = await request.form()
    repo_field, group_id = _text(form, "repo", 120), _text(form, "group", 24)
    kind, sep, repo_name = repo_field.partition(":")
    if not sep:
        kind, repo_name = _text(form, "type", 16) or "model", repo_field
    repo_type = repos.parse_repo_type(kind)
    group_pk = orgs.parse_group_id(group_id) if group_id else None  # the id's form: no repo needed

    def resource(session: Session, org: Organization, _facts: OrgFacts) -> object:
        # A group the org lacks is judged as the root; `act` reports it, after the decision.
        return repos.group_move(session, repos.find_repo(session, repo_type, org.name, repo_name), group_pk)[1]

    def act(session: Session, org: Organization, _form: FormData) -> str | None:
        group = orgs.get_group(session, org, group_id) if group_id else None
        repos.set_repo_group(session, repos.find_repo(session, repo_type, org.name, repo_name), group)
        return "moved"

    return await _post(request, principal, Permission.REPO_RESOURCE_GROUP, name, resource, act, "resource-groups")


# ---- settings: storage regions ----------------------------------------------------------------

@router.post("/organizations/{name}/settings/regions/default")
@permission(Permission.ORG_WRITE)
async def default_region(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    """The region new repositories of the org are created in (the org's default), and per repo type."""
    def act(session: Session, org: Organization, form: FormData) -> str | None:
        regions = hub_of(request).regions
        region = check_region(_text(form, "region", 32), regions)
        orgs.set_default_region(session, org, None if region in (None, DEFAULT_REGION) else region)
        for repo_type in orgs.REGION_REPO_TYPES:  # per type: a region, or "" for the org's default
            if f"region_{repo_type}" in form:
                orgs.set_type_default_region(session, org, repo_type,
                                             check_region(_text(form, f"region_{repo_type}", 32) or None, regions))
        return "saved"

    return await _post(request, principal, Permission.ORG_WRITE, name, _org_resource, act, "regions")


@router.post("/organizations/{name}/settings/regions/move")
@permission(Permission.ORG_WRITE)
async def move_region(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    """Move an org repository to another region (org admins): a durable job on the workers, which copies,
    verifies and switches it; readers keep reading it where it is until the switch."""
    hub = hub_of(request)
    queued: list[int] = []

    def act(session: Session, org: Organization, form: FormData) -> str | None:
        kind, _, repo_name = _text(form, "repo", 120).partition(":")
        repo = repos.find_repo(session, repos.parse_repo_type(kind or "model"), org.name, repo_name)
        move = relocation.request_move(hub, session, repo, _text(form, "region", 32),
                                       _me(session, principal).name)
        queued.append(move.id)
        return "moving"

    response = await _post(request, principal, Permission.ORG_WRITE, name, _org_resource, act, "regions")
    for move_id in queued:  # after the request's transaction committed
        await run_in_threadpool(relocation.enqueue, hub, move_id)
    return response


# ---- settings: security and tokens ------------------------------------------------------------

@router.post("/organizations/{name}/settings/security")
@permission(Permission.ORG_WRITE)
async def security(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    def act(session: Session, org: Organization, form: FormData) -> str | None:
        if form.get("profile"):
            orgs.update_profile(session, org, _text(form, "fullname", 200), _text(form, "description", 1000))
        orgs.set_security(session, org, require_2fa=form.get("require_2fa") == "on",
                          repo_visibility=_text(form, "repo_visibility", 16),
                          hide_members=form.get("hide_members") == "on",
                          delegate_protection_changes=form.get("delegate_protection_changes") == "on")
        if "audit_retention_days" in form:
            raw = _text(form, "audit_retention_days", 8)
            if raw and not raw.isdigit():
                raise BadRequest("Choose a retention period from the list")
            orgs.set_audit_retention(session, org, int(raw) if raw else None,
                                     hub_of(request).settings.audit_retention_days)
        return "saved"

    return await _post(request, principal, Permission.ORG_WRITE, name, _org_resource, act, "security")


@router.post("/organizations/{name}/settings/delete")
@permission(Permission.ORG_DELETE)
async def delete_org(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    """Delete the org (admins, in a browser, typing its name); refused while it owns repositories."""
    form = await request.form()

    def run() -> Response:
        with transaction(hub_of(request).sessions) as session:
            org, facts = orgs.org_with_facts(session, name)
            require(principal, Permission.ORG_DELETE, facts)
            check_csrf(request, form)
            if _text(form, "confirm", 96) != org.name:
                return _settings_page(request, principal, session, org, facts, "security", 400,
                                      error="Type the organization's name to confirm.")
            try:
                with session.begin_nested():
                    orgs.delete_org(session, org)
            except BastionError as exc:
                if exc.status != 409:
                    raise
                return _settings_page(request, principal, session, org, facts, "security", 409, error=exc.message)
        return redirect("/")

    return await run_in_threadpool(run)


@router.post("/organizations/{name}/settings/tokens/policy")
@permission(Permission.ORG_WRITE)
async def token_policy(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    def act(session: Session, org: Organization, form: FormData) -> str | None:
        orgs.set_token_policy(session, org, _text(form, "policy", 16))
        return "saved"

    return await _post(request, principal, Permission.ORG_WRITE, name, _org_resource, act, "tokens")


@router.post("/organizations/{name}/settings/tokens/{token_id}/{verb}")
@permission(Permission.ORG_WRITE)
async def token_decision(name: str, token_id: int, verb: str, request: Request,
                         principal: Principal = Depends(current_principal)) -> Response:
    mailer = request.app.state.mailer

    def act(session: Session, org: Organization, _form: FormData) -> str | None:
        governance.decide_token(session, mailer, org, governance.get_reaching_token(session, org, token_id),
                          _me(session, principal), verb)
        return verb

    return await _post(request, principal, Permission.ORG_WRITE, name, _org_resource, act, "tokens")

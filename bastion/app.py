"""ASGI app factory: settings → hub (database, stores) → routers → middleware."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from bastion import __version__, wiring
from bastion.api.errors import install_error_handlers
from bastion.api.middleware import AllowedHostsMiddleware, RequestContextMiddleware
from bastion.audit.aggregate import Flusher
from bastion.audit.worker import AuditWorker
from bastion.authz import Permission, permission, require
from bastion.authz.policy import Principal
from bastion.config import Settings
from bastion.hub import Hub
from bastion.mail import Mailer

log = logging.getLogger("bastion")


def create_app(settings: Settings | None = None, hub: Hub | None = None) -> FastAPI:
    settings = settings or Settings()
    hub = hub or Hub.open(settings)
    wiring.load()  # every feature's hooks and ports filled before the first request
    from bastion.scanning.queue import Workers, attach

    queue = attach(hub)  # commits hand scan jobs to this queue
    from bastion.signing.service import install as install_signing

    install_signing(hub)  # the instance key signs Bastion's commits; every commit that enters is verified

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        workers = Workers(queue, settings.scan_workers, embedded=True) if settings.embedded_workers else None
        if workers is not None:
            workers.start()
        # Writes the counts of repeated failures once their window is over (bastion.audit.aggregate).
        flusher = Flusher(hub.sessions, timedelta(seconds=settings.audit_repeat_window_seconds))
        flusher.start()
        # Streams the outbox to the SIEM sinks, signs checkpoints, applies retention (bastion.audit.worker).
        audit_worker = AuditWorker(hub.sessions, settings)
        audit_worker.start()
        yield
        audit_worker.stop()
        flusher.stop()
        if workers is not None:
            workers.stop()
        app.state.mailer.close()
        hub.close()

    app = FastAPI(title="Bastion", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.hub = hub
    app.state.mailer = Mailer(settings.smtp_url, settings.mail_from, public_url=settings.public_url)
    hub.mailer = app.state.mailer  # services outside a request (scan workers) send mail too
    install_error_handlers(app)
    # Credentials → principals: the API layer asks the features that own them.
    from bastion.accounts import sessions as web_sessions
    from bastion.api import auth
    from bastion.tokens import authn as token_authn
    from bastion.tokens import service as tokens_service
    auth.install(auth.Authenticators(token=token_authn.principal_from_secret, cookie=web_sessions.cookie_principal,
                                     token_by_id=tokens_service.principal_for_token_id,
                                     session_by_id=web_sessions.session_id_principal,
                                     failed=tokens_service.note_failed_authentication))

    from bastion.gitserver.routes import router as git_router
    from bastion.lfs.routes import router as lfs_router
    from bastion.repos.downloads import router as downloads_router
    from bastion.repos.routes import router as repos_router
    from bastion.scanning.routes import router as scanning_router
    from bastion.tokens.routes import router as tokens_router
    from bastion.xet.routes import install as install_xet

    @app.get("/api/health")
    @permission(Permission.PUBLIC)
    def health() -> JSONResponse:
        require(Principal.anonymous(), Permission.PUBLIC)
        return JSONResponse({"status": "ok", "version": __version__})

    from bastion.api.not_offered import router as not_offered_router
    app.include_router(not_offered_router)  # buckets, collections, webhooks, jobs, Space runtimes: a clear 400
    from bastion.auditlog.admin_routes import router as audit_admin_router
    app.include_router(audit_admin_router)  # /api/admin/audit/…: before any /api/{plural}/… pattern
    from bastion.auditlog.routes import router as auditlog_router
    app.include_router(auditlog_router)  # …/audit-log before the orgs' and admin routers' patterns
    from bastion.scanning.routes import admin_router as scanning_admin_router
    app.include_router(scanning_admin_router)  # /api/admin/…: before any /api/{plural}/… pattern
    from bastion.lifecycle.routes import router as lifecycle_router
    app.include_router(lifecycle_router)  # /api/admin/users/…, /api/settings/data-export: before /api/{plural}/…
    app.include_router(tokens_router)
    from bastion.signing.routes import router as signing_router
    app.include_router(signing_router)  # before repos: /api/signing-key is not a repo type listing
    from bastion.orgs.routes import router as orgs_router
    from bastion.tokens import governance as token_governance
    token_governance.install(hub.engine, app.state.mailer)  # token approval requests are e-mailed
    from bastion.scim.routes import router as scim_router
    app.include_router(scim_router)  # /scim/v2/… and /api/organizations/{org}/scim/v2/…: SCIM errors, SCIM tokens
    from bastion.scim.routes import settings_router as scim_settings_router
    app.include_router(scim_settings_router)  # /api/organizations/{name}/settings/scim…
    from bastion.sso.routes import router as sso_router
    app.include_router(sso_router)  # /api/organizations/{name}/settings/sso
    app.include_router(orgs_router)  # before repos: /api/{plural}/{ns}/{name}/resource-group
    from bastion.gating.routes import router as gating_router
    app.include_router(gating_router)  # access requests: …/user-access-request/…
    from bastion.web.gating_views import form_router as gate_form_router
    app.include_router(gate_form_router)  # the gate form's POST /{ns}/{name}/ask-access (JSON or form)
    from bastion.community.routes import router as community_router
    app.include_router(community_router)  # discussions and pull requests: …/discussions[/…]
    app.include_router(repos_router)
    from bastion.objects.routes import router as objects_router
    app.include_router(objects_router)  # …/lfs-files: list and permanently delete a repo's LFS files
    app.include_router(lfs_router)
    app.include_router(scanning_router)
    install_xet(app, hub)  # the Xet CAS under /xet-cas; before downloads (catch-all model URLs)
    app.include_router(git_router)  # before downloads: /{ns}/{name}/info/refs is not a file path
    app.include_router(downloads_router)  # its model URLs are a catch-all /{ns}/{name}/resolve/...
    # The web UI after every API and git route: its /{ns} and /{ns}/{name} pages match almost anything.
    from bastion.web.audit_views import router as web_audit_router
    from bastion.web.instance_sso_views import router as web_instance_sso_router
    from bastion.web.key_views import router as web_key_router
    from bastion.web.org_views import router as web_orgs_router
    from bastion.web.repo_views import router as web_repo_router
    from bastion.web.settings_views import router as web_settings_router
    from bastion.web.signin_views import router as web_signin_router
    from bastion.web.sso_views import router as web_sso_router
    from bastion.web.token_views import router as web_token_router
    from bastion.web.twofactor_views import router as web_twofactor_router
    from bastion.web.views import router as web_router
    app.include_router(web_audit_router)  # before the org settings' /organizations/{name}/settings/{tab}
    app.include_router(web_instance_sso_router)  # /login/sso…, /admin/sso: before the user pages
    app.include_router(web_sso_router)  # before the org pages: /organizations/{name}/settings/sso
    from bastion.web.scim_views import router as web_scim_router
    app.include_router(web_scim_router)  # before the org pages and the user pages: …/settings/scim, /admin/scim
    app.include_router(web_orgs_router)  # before the repo pages: /organizations/{name} is no repo
    from bastion.web.gating_views import router as web_gating_router
    app.include_router(web_gating_router)  # before the repo pages: /{ns}/{name}/access-requests
    from bastion.web.community_views import router as web_community_router
    app.include_router(web_community_router)  # before the repo pages: /{ns}/{name}/discussions
    from bastion.web.admin_views import router as web_admin_router
    app.include_router(web_admin_router)  # before the user pages: /admin is a reserved name
    from bastion.web.lifecycle_views import router as web_lifecycle_router
    app.include_router(web_lifecycle_router)  # /admin/users, /settings/account: before the user pages
    app.include_router(web_router)
    app.include_router(web_signin_router)
    app.include_router(web_settings_router)
    app.include_router(web_twofactor_router)
    app.include_router(web_token_router)
    app.include_router(web_key_router)
    app.include_router(web_repo_router)
    app.add_middleware(AllowedHostsMiddleware, hosts=settings.served_hosts)  # inside: its 400 gets a request id
    app.add_middleware(RequestContextMiddleware, trusted_proxies=settings.trusted_proxies,
                       strict_authz=settings.strict_authz, server_timing=settings.server_timing)

    return app


def app_from_env() -> FastAPI:
    """Entry point for ASGI servers started with a factory (granian --factory, uvicorn --factory)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app(Settings())

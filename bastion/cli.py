"""The `bastion` command: serve, admin (users, tokens). Every command honours --data-dir."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from bastion import __version__, wiring
from bastion.audit.context import AuditContext, bind_context
from bastion.config import Settings
from bastion.db import transaction
from bastion.errors import BastionError


def _settings(data_dir: Path | None) -> Settings:
    if data_dir is not None:
        # Exported so that server worker processes (which build their own Settings) agree.
        os.environ["BASTION_DATA_DIR"] = str(data_dir)
    return Settings()


@click.group()
@click.version_option(__version__, prog_name="bastion")
def main() -> None:
    """Bastion: a self-hosted, security-first hub for ML models and datasets."""


data_dir_option = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                               help="Data directory (default: $BASTION_DATA_DIR or ./data).")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="Server processes.")
@data_dir_option
def serve(host: str, port: int, workers: int, data_dir: Path | None) -> None:
    """Run the hub server (embedded default: SQLite + local disk)."""
    from granian import Granian
    from granian.constants import Interfaces

    from bastion.db import migrate

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings(data_dir)
    migrate(settings.resolved_database_url)
    log = logging.getLogger("bastion")
    log.info("data directory: %s", settings.resolved_data_dir)
    log.info("database: %s", settings.resolved_database_url.split("@")[-1])
    log.info("Bastion %s listening on http://%s:%d", __version__, host, port)
    if not settings.public_url:
        log.warning("BASTION_PUBLIC_URL is not set: e-mail that needs a link (address verification, password "
                    "reset, invitations) is refused, and absolute URLs in answers follow each request's Host "
                    "header%s. Set it to the URL users reach this server at.",
                    "" if settings.allowed_hosts else " (any host: BASTION_ALLOWED_HOSTS is not set either)")
    from bastion.audit import chain
    from bastion.db import make_engine

    # This process writes audit events too (the clamd supervisor): the chain's key for its database.
    keyring_engine = make_engine(settings.resolved_database_url)
    chain.install(keyring_engine, settings.resolved_audit_key_file)
    keyring_engine.dispose()
    supervisor = None
    if settings.embedded_clamd and "av" in settings.scanners:
        # No BASTION_CLAMD_ADDRESS: this process starts and watches a clamd of its own (never blocking here).
        from bastion.scanning.clamd import ClamdSupervisor, audit_to

        supervisor = ClamdSupervisor(settings, audit_hook=audit_to(settings.resolved_database_url))
        supervisor.start()
    try:
        Granian("bastion.app:app_from_env", factory=True, address=host, port=port, interface=Interfaces.ASGI,
                workers=workers, blocking_threads=1, log_access=False).serve()
    finally:
        if supervisor is not None:
            supervisor.stop()


@main.command()
@click.option("--workers", default=2, show_default=True, type=int, help="Scan threads in this process.")
@data_dir_option
def worker(workers: int, data_dir: Path | None) -> None:
    """Run scan workers and the audit log's worker (delivery to sinks, checkpoints, retention); scale-out: any
    number of these share the queue set by BASTION_QUEUE_URL."""
    from bastion.audit.worker import AuditWorker
    from bastion.hub import Hub
    from bastion.scanning.queue import Workers, attach
    from bastion.signing import service as signing

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    wiring.load()  # scans read LFS objects (Xet-stored too) and report through every feature's hooks
    hub = Hub.open(_settings(data_dir))
    signing.install(hub)  # checkpoints of the audit chain are signed with the instance key
    queue = attach(hub)
    audit_worker = AuditWorker(hub.sessions, hub.settings)
    audit_worker.start()
    logging.getLogger("bastion").info("scan worker started: %d threads, queue %s", workers,
                                      "redis" if (hub.settings.queue_url or "").startswith("redis") else "sqlite")
    try:
        Workers(queue, workers, embedded=False).run_forever()
    finally:
        audit_worker.stop()
        hub.close()


SCAN_CHOICES = {"pickle": "pickle", "malware": "av", "av": "av", "format": "format", "secrets": "secrets"}


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--only", type=click.Choice(sorted(SCAN_CHOICES)), default=None, help="Run only this scanner.")
def scan(paths: tuple[Path, ...], as_json: bool, only: str | None) -> None:
    """Scan files or directories offline with every enabled scanner. Exit 0 only if all are safe."""
    import json

    from bastion.scanning.adapters import build_scanners, scan_file_offline

    settings = Settings()
    scanners = build_scanners(settings, [SCAN_CHOICES[only]] if only else None)
    files = []
    findings = []
    for root in paths:
        targets = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for target in targets:
            rel = target.relative_to(root).as_posix() if root.is_dir() else target.name
            entry = {"path": rel, **scan_file_offline(scanners, target)}
            secrets = entry["scans"].get("secrets", {})
            secrets.pop("detail", None)  # the redacted detail is for stored notices, not this report
            findings += [{**f, "file": rel} for f in secrets.pop("findings", [])]
            files.append(entry)
    document = {"scanner": {"name": "bastion", "version": __version__,
                            "scanners": {name: s.version() for name, s in scanners.items()}},
                "files": files, "findings": findings}
    if as_json:
        click.echo(json.dumps(document, indent=2, sort_keys=False))
    else:
        for f in files:
            click.echo(f"{f['status']:>11}  {f['path']}")
    sys.exit(0 if files and all(f["status"] == "safe" for f in files) else 1)


@main.group()
def admin() -> None:
    """Administrative commands (run against the data of a running or stopped server)."""


def _admin_hub(data_dir: Path | None, *, features: bool = False):  # type: ignore[no-untyped-def]
    """The hub a command works on. `features`: for commands that read repos' content or scan (storage
    GC, fsck, rescans) every feature's hooks and ports are filled first (bastion.wiring); the account,
    token and org commands need none and start faster without (about 2 s less a call)."""
    if features:
        wiring.load()
    from bastion.hub import Hub

    return Hub.open(_settings(data_dir))


@admin.command("create-user")
@click.argument("name")
@click.option("--email", required=True)
@click.option("--fullname", default="")
@click.option("--admin", "is_admin", is_flag=True, default=False)
@click.option("--password-stdin", is_flag=True, default=False,
              help="Read the account's password from standard input (first line); without it the account "
                   "signs in only with tokens until a password is reset.")
@data_dir_option
def create_user(name: str, email: str, fullname: str, is_admin: bool, password_stdin: bool,
                data_dir: Path | None) -> None:
    """Create a user account (the e-mail address given here counts as verified)."""
    from bastion.accounts import service as accounts

    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    hub = _admin_hub(data_dir)
    try:
        with bind_context(AuditContext(via="cli", actor_name=_os_user())), transaction(hub.sessions) as session:
            user = accounts.create_user(session, name, email, fullname, is_admin, password=password,
                                        email_verified=True,
                                        min_password_length=hub.settings.password_min_length)
            click.echo(f"created user {user.name}", err=True)
    except BastionError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        hub.close()


@admin.command("scim-token")
@click.option("--instance", is_flag=True, default=False, help="A token for the instance's SCIM endpoint (/scim/v2).")
@click.option("--org", "org_name", default=None, metavar="ORG",
              help="A token for ORG's SCIM endpoint (/api/organizations/ORG/scim/v2).")
@click.option("--label", default="SCIM", show_default=True, help="A name for the token (e.g. the IdP's).")
@click.option("--rotate", "rotate_id", type=int, default=None, metavar="ID",
              help="Issue a new token with the label of token ID and revoke ID in the same transaction.")
@click.option("--revoke", "revoke_id", type=int, default=None, metavar="ID", help="Revoke token ID (prints nothing).")
@click.option("--list", "list_tokens", is_flag=True, default=False, help="List the scope's tokens (never secrets).")
@data_dir_option
def scim_token(instance: bool, org_name: str | None, label: str, rotate_id: int | None, revoke_id: int | None,
               list_tokens: bool, data_dir: Path | None) -> None:
    """Create a SCIM bearer token (printed once, on standard output), or rotate, revoke or list them.

    Several tokens may be live at once (one per IdP, or during a hand-over); --rotate replaces one.
    """
    from bastion.orgs import service as orgs
    from bastion.scim import service as scim

    if instance == (org_name is not None):
        raise click.UsageError("Give exactly one of --instance or --org ORG")
    if sum(x is not None and x is not False for x in (rotate_id, revoke_id, list_tokens or None)) > 1:
        raise click.UsageError("Give at most one of --rotate, --revoke and --list")
    hub = _admin_hub(data_dir)
    try:
        with bind_context(AuditContext(via="cli", actor_name=_os_user())), transaction(hub.sessions) as session:
            scope = scim.Scope(orgs.get_org(session, org_name) if org_name is not None else None)
            if list_tokens:
                for tok in scim.list_tokens(session, scope):
                    view = scim.token_view(tok)
                    click.echo(f"{view['id']:>5}  {view['state']:<8} …{view['last4']}  {view['label']}  "
                               f"created {view['createdAt']}  last used {view['lastUsedAt'] or 'never'}")
                return
            if revoke_id is not None:
                scim.revoke_token(session, scope, scim.get_token(session, scope, revoke_id))
                click.echo(f"revoked SCIM token {revoke_id}", err=True)
                return
            if rotate_id is not None:
                issued = scim.rotate_token(session, scope, scim.get_token(session, scope, rotate_id), None)
            else:
                issued = scim.issue_token(session, scope, label, None)
            where = "/scim/v2" if org_name is None else f"/api/organizations/{scope.org.name}/scim/v2"  # type: ignore[union-attr]
            click.echo(f"SCIM token {issued.token.id} for {where} (shown once; store it in your IdP):", err=True)
            click.echo(issued.secret)
    except BastionError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        hub.close()


@admin.command("invite")
@click.argument("email")
@data_dir_option
def invite(email: str, data_dir: Path | None) -> None:
    """Print a sign-up link for EMAIL (valid 7 days), for BASTION_SIGNUP=invite."""
    from bastion.accounts import service as accounts

    settings = _settings(data_dir)
    try:
        token = accounts.make_invite(settings.secret_key, email)
    except BastionError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"{(settings.public_url or '').rstrip('/')}/join?invite={token}")


ENTITY_PREFIXES = ("user", "org", "model", "dataset", "space", "resource-group")


def _parse_scope_option(value: str):  # type: ignore[no-untyped-def]
    """`ENTITY=PERM[,PERM…]` with ENTITY `user:NAME`, `org:NAME`, `model:NS/NAME`, … → a Scope."""
    from bastion.tokens.restrictions import InvalidRestriction, parse_scope

    entity, sep, perms = value.partition("=")
    kind, colon, name = entity.partition(":")
    if not sep or not colon or kind not in ENTITY_PREFIXES:
        raise click.BadParameter(f"{value!r}: expected ENTITY=PERM[,PERM…] with ENTITY one of "
                                 f"{', '.join(p + ':NAME' for p in ENTITY_PREFIXES)}", param_hint="--scope")
    try:
        return parse_scope(kind, name, [p.strip() for p in perms.split(",") if p.strip()], group_by_name=True)
    except InvalidRestriction as exc:
        raise click.BadParameter(str(exc), param_hint="--scope") from None


@admin.command("create-token")
@click.argument("user")
@click.option("--name", required=True)
@click.option("--role", type=click.Choice(["read", "write", "fineGrained"]), default="read", show_default=True)
@click.option("--scope", "scopes", multiple=True, metavar="ENTITY=PERM[,PERM…]",
              help="Fine-grained scope, e.g. model:alice/bert=repo.content.read (repeatable).")
@click.option("--can-read-gated-repos", "can_read_gated", is_flag=True,
              help="Fine-grained: read the files of public gated repos the user has access to.")
@click.option("--expires", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, help="Expiry date (UTC).")
@data_dir_option
def create_token(user: str, name: str, role: str, scopes: tuple[str, ...], can_read_gated: bool, expires: Any,
                 data_dir: Path | None) -> None:
    """Create an access token for USER and print only the token."""
    from datetime import UTC

    from bastion.accounts import service as accounts
    from bastion.tokens import service as tokens

    parsed = [_parse_scope_option(s) for s in scopes]
    if parsed and role != "fineGrained":
        raise click.BadParameter("--scope needs --role fineGrained", param_hint="--scope")
    hub = _admin_hub(data_dir)
    from bastion.mail import Mailer
    from bastion.tokens import governance as token_governance

    mailer = Mailer(hub.settings.smtp_url, hub.settings.mail_from, public_url=hub.settings.public_url)
    token_governance.install(hub.engine, mailer)  # org admins are e-mailed about tokens awaiting approval
    try:
        with bind_context(AuditContext(via="cli", actor_name=_os_user())), transaction(hub.sessions) as session:
            issued = tokens.create_token(session, accounts.get_user_by_name(session, user), name, role,
                                         expires.replace(tzinfo=UTC) if expires else None, parsed or None,
                                         can_read_gated=can_read_gated)
            secret = issued.secret
    except BastionError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        mailer.close()  # waits for queued mail
        hub.close()
    click.echo(secret)


@admin.command("create-org")
@click.argument("name")
@click.option("--owner", required=True, help="The user who becomes the organization's first admin.")
@click.option("--fullname", default="", help="The organization's display name.")
@data_dir_option
def create_org(name: str, owner: str, fullname: str, data_dir: Path | None) -> None:
    """Create an organization with OWNER as its admin (same rules and audit events as the API)."""
    from bastion.accounts import service as accounts
    from bastion.orgs import service as orgs

    hub = _admin_hub(data_dir)
    try:
        with bind_context(AuditContext(via="cli", actor_name=_os_user())), transaction(hub.sessions) as session:
            org = orgs.create_org(session, accounts.get_user_by_name(session, owner), name, fullname)
            click.echo(f"created organization {org.name}", err=True)
    except BastionError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        hub.close()


@admin.command("add-member")
@click.argument("org")
@click.argument("user")
@click.option("--role", type=click.Choice(["read", "contributor", "write", "admin"]), required=True)
@data_dir_option
def add_member(org: str, user: str, role: str, data_dir: Path | None) -> None:
    """Add USER to ORG with a role, or change the role of a member (audited as org.add_user / org.change_role)."""
    from bastion.accounts import service as accounts
    from bastion.orgs import service as orgs

    hub = _admin_hub(data_dir)
    try:
        with bind_context(AuditContext(via="cli", actor_name=_os_user())), transaction(hub.sessions) as session:
            found = orgs.get_org(session, org)
            member = accounts.get_user_by_name(session, user)
            if orgs.member(session, found, member) is None:
                orgs.add_member(session, found, member, role)
            else:
                orgs.change_role(session, found, member, role)
            click.echo(f"{member.name} is {role} of {found.name}", err=True)
    except BastionError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        hub.close()


@admin.command("sso")
@click.option("--org", "org_name", default=None, help="The organization whose SSO this configures.")
@click.option("--instance", is_flag=True, default=False, help="The whole instance's SSO (sign-in to Bastion itself).")
@click.option("--username-claim", default="", help="--instance: the claim new usernames come from "
              "(default preferred_username, then the e-mail's local part).")
@click.option("--sso-only/--no-sso-only", "sso_only", default=None,
              help="--instance: refuse password sign-in for everyone but the break-glass admin (tokens keep working).")
@click.option("--break-glass-admin", default=None, help="--instance: the instance admin who keeps password sign-in.")
@click.option("--oidc-issuer", default=None, help="OpenID Connect issuer URL (discovery is fetched and checked now).")
@click.option("--client-id", default=None)
@click.option("--client-secret-stdin", is_flag=True, default=False,
              help="Read the OIDC client secret from standard input (first line).")
@click.option("--token-auth-method", type=click.Choice(["client_secret_post", "client_secret_basic"]),
              default="client_secret_post", show_default=True, help="How Bastion authenticates at the token endpoint.")
@click.option("--role-claim", default="", help="Claim path (dot notation, arrays such as groups) the role map reads.")
@click.option("--role-map", default="", metavar="VALUE=ROLE[,VALUE=ROLE…]",
              help="Claim value → read | contributor | write | admin (at least one admin); highest match wins.")
@click.option("--group-claim", default="", help="Claim path the resource-group map reads.")
@click.option("--group-map", default="", metavar="VALUE=GROUP:ROLE[,…]",
              help="Claim value → resource group and role (additive).")
@click.option("--email-domain", "email_domains", multiple=True, help="A matching e-mail domain (repeatable).")
@click.option("--session-days", type=int, default=7, show_default=True, help="How long an SSO session lasts.")
@click.option("--saml-metadata", type=click.Path(path_type=Path), default=None,
              help="Configure SAML 2.0 instead: the IdP's metadata (XML file).")
@click.option("--enable", is_flag=True, default=False,
              help="Switch SSO on (audited); from the CLI the test is the discovery and JWKS check.")
@data_dir_option
def sso(org_name: str | None, instance: bool, username_claim: str, sso_only: bool | None,
        break_glass_admin: str | None, oidc_issuer: str | None, client_id: str | None,
        client_secret_stdin: bool, token_auth_method: str, role_claim: str, role_map: str, group_claim: str,
        group_map: str, email_domains: tuple[str, ...], session_days: int, saml_metadata: Path | None, enable: bool,
        data_dir: Path | None) -> None:
    """Configure an organization's single sign-on (OpenID Connect or SAML 2.0) and optionally enable it."""
    from bastion.orgs import service as orgs
    from bastion.sso import oidc
    from bastion.sso import service as sso_service

    if instance == bool(org_name):
        raise click.UsageError("Give exactly one of --org ORG or --instance")
    if instance:
        if role_claim or role_map or group_claim or group_map or email_domains or session_days != 7:
            raise click.UsageError("--role-claim, --role-map, --group-claim, --group-map, --email-domain and "
                                   "--session-days are organization SSO settings: not with --instance")
        _sso_instance(oidc_issuer, client_id, client_secret_stdin, token_auth_method, saml_metadata, username_claim,
                      sso_only, break_glass_admin, enable, data_dir)
        return
    if username_claim or sso_only is not None or break_glass_admin is not None:
        raise click.UsageError("--username-claim, --sso-only and --break-glass-admin are instance settings "
                               "(--instance)")
    if saml_metadata is not None:
        if oidc_issuer or client_id or client_secret_stdin:
            raise click.UsageError("--saml-metadata configures SAML 2.0: give no --oidc-issuer, --client-id or "
                                   "--client-secret-stdin with it")
        _sso_saml(org_name or "", saml_metadata, role_claim, role_map, group_claim, group_map, email_domains,
                  session_days, enable, data_dir)
        return
    if not oidc_issuer or not client_id or not client_secret_stdin:
        raise click.UsageError("--oidc-issuer, --client-id and --client-secret-stdin are required")
    secret = sys.stdin.readline().rstrip("\r\n")
    hub = _admin_hub(data_dir, features=True)
    try:
        discovery = oidc.discover(oidc_issuer, token_auth_method)
        settings = sso_service.Settings(
            issuer=oidc_issuer, client_id=client_id, client_secret=secret, token_auth_method=token_auth_method,
            role_claim=role_claim, role_map=sso_service.parse_role_map(role_map), group_claim=group_claim,
            group_map=sso_service.parse_group_map(group_map), email_domains=list(email_domains),
            session_days=session_days)
        with bind_context(AuditContext(via="cli", actor_name=_os_user())), transaction(hub.sessions) as session:
            org = orgs.get_org(session, org_name or "")
            sso_service.configure(session, sso_service.secret_box(hub.settings.secret_key), org, settings, discovery)
            if enable:
                sso_service.set_enabled(session, org, True, require_test=False)
            click.echo(f"SSO of {org.name}: OpenID Connect with {discovery['issuer']}, "
                       f"{'enabled' if enable else 'not enabled'}", err=True)
    except BastionError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        hub.close()


def _sso_instance(oidc_issuer: str | None, client_id: str | None, client_secret_stdin: bool, token_auth_method: str,
                  saml_metadata: Path | None, username_claim: str, sso_only: bool | None,
                  break_glass_admin: str | None, enable: bool, data_dir: Path | None) -> None:
    from bastion.sso import instance, oidc, saml
    from bastion.sso import service as sso_service

    configure = bool(oidc_issuer or client_id or client_secret_stdin or saml_metadata)
    if not (configure or enable or sso_only is not None or break_glass_admin is not None):
        raise click.UsageError("--instance: give the IdP (--oidc-issuer … or --saml-metadata FILE), --enable, "
                               "--sso-only/--no-sso-only or --break-glass-admin")
    if saml_metadata is not None and (oidc_issuer or client_id or client_secret_stdin):
        raise click.UsageError("--saml-metadata configures SAML 2.0: give no --oidc-issuer, --client-id or "
                               "--client-secret-stdin with it")
    if configure and saml_metadata is None and not (oidc_issuer and client_id and client_secret_stdin):
        raise click.UsageError("--oidc-issuer, --client-id and --client-secret-stdin are required")
    xml = secret = ""
    if saml_metadata is not None:
        try:
            xml = saml_metadata.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise click.ClickException(f"Cannot read {saml_metadata}: {exc}") from None
    elif configure:
        secret = sys.stdin.readline().rstrip("\r\n")
    hub = _admin_hub(data_dir, features=True)
    try:
        idp = saml.check_idp_metadata(xml) if xml else None
        discovery = oidc.discover(oidc_issuer or "", token_auth_method) if configure and idp is None else None
        with bind_context(AuditContext(via="cli", actor_name=_os_user())), transaction(hub.sessions) as session:
            if idp is not None:
                instance.configure_saml(session, idp, username_claim)
            elif discovery is not None:
                instance.configure_oidc(session, sso_service.secret_box(hub.settings.secret_key),
                                        client_id=client_id or "", client_secret=secret,
                                        token_auth_method=token_auth_method, username_claim=username_claim,
                                        discovery=discovery)
            if enable:
                instance.set_enabled(session, True)
            if sso_only is not None or break_glass_admin is not None:
                config = instance.get_config(session)
                instance.set_sso_only(session, config.sso_only if sso_only is None and config else bool(sso_only),
                                      break_glass_admin)
            view = instance.settings_view(session)
            base = (hub.settings.public_url or "").rstrip("/")
            click.echo(f"Instance SSO: {'SAML 2.0' if view['protocol'] == 'saml' else 'OpenID Connect'} with "
                       f"{view.get('issuer')}, {'enabled' if view['enabled'] else 'not enabled'}"
                       f"{', SSO only (break-glass: ' + view['breakGlassAdmin'] + ')' if view['ssoOnly'] else ''}; "
                       f"redirect URI {base}/login/oidc/consume, SP metadata {base}/login/saml/metadata", err=True)
    except BastionError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        hub.close()


def _sso_saml(org_name: str, metadata: Path, role_claim: str, role_map: str, group_claim: str, group_map: str,
              email_domains: tuple[str, ...], session_days: int, enable: bool, data_dir: Path | None) -> None:
    from bastion.orgs import service as orgs
    from bastion.sso import saml
    from bastion.sso import service as sso_service

    try:
        xml = metadata.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"Cannot read {metadata}: {exc}") from None
    hub = _admin_hub(data_dir, features=True)
    try:
        idp = saml.check_idp_metadata(xml)
        settings = sso_service.Settings(
            issuer=idp["entity_id"], client_id="", client_secret=None, role_claim=role_claim,
            role_map=sso_service.parse_role_map(role_map), group_claim=group_claim,
            group_map=sso_service.parse_group_map(group_map), email_domains=list(email_domains),
            session_days=session_days)
        with bind_context(AuditContext(via="cli", actor_name=_os_user())), transaction(hub.sessions) as session:
            org = orgs.get_org(session, org_name)
            sso_service.configure_saml(session, org, settings, idp)
            if enable:
                sso_service.set_enabled(session, org, True, require_test=False)
            base = (hub.settings.public_url or "").rstrip("/")
            click.echo(f"SSO of {org.name}: SAML 2.0 with {idp['entity_id']}, "
                       f"{'enabled' if enable else 'not enabled'}; SP metadata: {base}/organizations/{org.name}"
                       "/saml/metadata", err=True)
    except BastionError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        hub.close()


def _storage_gc(grace_hours: float | None, dry_run: bool, data_dir: Path | None) -> None:
    from datetime import timedelta

    from bastion.objects import gc

    hub = _admin_hub(data_dir, features=True)
    try:
        hours = hub.settings.xet_gc_grace_hours if grace_hours is None else grace_hours
        if hours < 0:
            raise click.ClickException("--grace-hours must not be negative")
        result = gc.collect_garbage(hub, timedelta(hours=hours), dry_run=dry_run)
        x = result.xet
        assert x is not None
        if not dry_run:
            from bastion import audit
            from bastion.audit.actions import AuditAction

            with bind_context(AuditContext(via="cli", actor_name=_os_user())), \
                    transaction(hub.sessions) as session:
                audit.record(session, AuditAction.STORAGE_GC, target=("instance", "storage"), details={
                    "graceHours": hours, "linksRemoved": result.links_removed,
                    "objectsRemoved": result.objects_removed, "objectBytesFreed": result.object_bytes_freed,
                    "xorbsRemoved": x.xorbs_removed, "xorbBytesFreed": x.bytes_freed,
                    "regionCopiesRemoved": result.region_copies_removed})
    finally:
        hub.close()
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {result.links_removed} repository links to unreachable files and {result.objects_removed} "
               f"LFS objects ({result.object_bytes_freed} bytes)")
    if result.region_copies_removed:
        click.echo(f"{verb} {result.region_copies_removed} copies of LFS objects, Xet xorbs and shards in regions "
                   f"none of whose repositories needs them ({result.region_bytes_freed} bytes)")
    click.echo(f"{verb} {x.xorbs_removed} xorbs ({x.bytes_freed} bytes) and {x.files_removed} "
               f"unreferenced files; {x.xorbs_kept} xorbs kept")


_GRACE_HELP = ("Keep anything uploaded or referenced more recently than this "
               "(default: BASTION_XET_GC_GRACE_HOURS, 24).")


@admin.command("gc")
@click.option("--grace-hours", type=float, default=None, help=_GRACE_HELP)
@click.option("--dry-run", is_flag=True, default=False, help="Only report what would be deleted.")
@data_dir_option
def storage_gc(grace_hours: float | None, dry_run: bool, data_dir: Path | None) -> None:
    """Free the storage of large files (LFS objects, Xet xorbs) that no ref of any repo reaches.

    A file deleted from every branch, tag and pull-request ref, and from their history (for example
    after super_squash_history), or whose repo was deleted, is collected; a reachable one never is.
    """
    _storage_gc(grace_hours, dry_run, data_dir)


@admin.command("xet-gc")
@click.option("--grace-hours", type=float, default=None, help=_GRACE_HELP)
@click.option("--dry-run", is_flag=True, default=False, help="Only report what would be deleted.")
@data_dir_option
def xet_gc(grace_hours: float | None, dry_run: bool, data_dir: Path | None) -> None:
    """Delete Xet xorbs that no reachable file references (the same collection as `gc`)."""
    _storage_gc(grace_hours, dry_run, data_dir)


@admin.command("fsck")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@data_dir_option
def storage_fsck(as_json: bool, data_dir: Path | None) -> None:
    """Re-verify every stored LFS object, xorb and shard against its hash and recorded size.

    Reports what does not match and exits 1; never changes anything (a genuine upload of a damaged
    object replaces it). Exit 0: every stored object is what its key says.
    """
    import json

    from bastion import audit
    from bastion.audit.actions import AuditAction
    from bastion.objects.fsck import fsck

    hub = _admin_hub(data_dir, features=True)
    try:
        report = fsck(hub, progress=lambda msg: click.echo(msg, err=True))
        with bind_context(AuditContext(via="cli", actor_name=_os_user())), transaction(hub.sessions) as session:
            audit.record(session, AuditAction.STORAGE_FSCK, target=("instance", "storage"), details={
                name: {"checked": part["checked"], "bad": len(part["bad"])}
                for name, part in report.as_json().items()})
    finally:
        hub.close()
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        for name, part in report.as_json().items():
            click.echo(f"{name}: {part['checked']} checked, {len(part['bad'])} damaged")
            for bad in part["bad"]:
                click.echo(f"  {bad['oid']}: {bad['problem']}")
    if not report.clean:
        sys.exit(1)


@admin.command("rescan")
@click.argument("repo_id")
@click.option("--type", "repo_type", type=click.Choice(["model", "dataset", "space"]), default="model")
@data_dir_option
def admin_rescan(repo_id: str, repo_type: str, data_dir: Path | None) -> None:
    """Scan every file of a repository again with the current scanners (history is kept)."""
    from bastion.repos import service as repos
    from bastion.scanning.enqueue import rescan_repo
    from bastion.scanning.queue import attach

    hub = _admin_hub(data_dir, features=True)
    attach(hub)
    try:
        ns, name = repos.split_repo_id(repo_id)
        with bind_context(AuditContext(via="cli", actor_name=_os_user())), transaction(hub.sessions) as session:
            queued = rescan_repo(hub, session, repos.find_repo(session, repo_type, ns, name))
    except BastionError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        hub.close()
    click.echo(f"queued {queued} scan jobs", err=True)


@admin.command("move-region")
@click.argument("repo_id")
@click.argument("region")
@click.option("--type", "repo_type", type=click.Choice(["model", "dataset", "space"]), default="model")
@data_dir_option
def admin_move_region(repo_id: str, region: str, repo_type: str, data_dir: Path | None) -> None:
    """Move a repository (git objects, LFS objects, Xet xorbs) to another storage region, in the foreground.

    Copies, verifies every object's hash in the destination, switches the repository over atomically
    (audited repo.update_region), then deletes the source copies. Interrupted (even killed), run it again:
    it resumes at the step it was in. Readers keep reading from the source until the switch.
    """
    from bastion.relocation import service as relocation
    from bastion.repos import service as repos
    from bastion.storage.regions import region_of_key

    hub = _admin_hub(data_dir, features=True)
    try:
        ns, name = repos.split_repo_id(repo_id)
        with bind_context(AuditContext(via="cli", actor_name=_os_user())):
            with transaction(hub.sessions) as session:
                repo = repos.find_repo(session, repo_type, ns, name)
                current = relocation.active_move(session, repo.id)
                if current is not None and region_of_key(current.target_key) == region \
                        or (current is None and repo.region == region):
                    move_id = current.id if current is not None else None
                else:
                    move_id = relocation.request_move(hub, session, repo, region, f"cli:{_os_user()}").id
            if move_id is None:
                click.echo(f"{repo_id} is in the region {region!r}")
                return
            state = relocation.run_move(hub, move_id, progress=lambda msg: click.echo(msg, err=True))
    except BastionError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        hub.close()
    if state == "busy":
        raise click.ClickException("another worker is moving this repository right now; it resumes by itself")
    click.echo(f"{repo_id}: {state}")


@admin.command("add-key")
@click.argument("user")
@click.option("--gpg", "gpg_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="An ASCII-armored GPG public key (gpg --armor --export KEYID).")
@click.option("--ssh", "ssh_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="An SSH public key used for signing commits (~/.ssh/id_ed25519.pub).")
@data_dir_option
def add_key(user: str, gpg_file: Path | None, ssh_file: Path | None, data_dir: Path | None) -> None:
    """Add a commit-signing key to USER's profile, with the same checks as the settings page."""
    from bastion.accounts import service as accounts
    from bastion.signing import service as signing

    if (gpg_file is None) == (ssh_file is None):
        raise click.UsageError("give exactly one of --gpg FILE or --ssh FILE")
    kind, path = ("gpg", gpg_file) if gpg_file is not None else ("ssh", ssh_file)
    assert path is not None
    hub = _admin_hub(data_dir)
    signing.install(hub)  # the instance key: refused as a user's key
    try:
        with bind_context(AuditContext(via="cli", actor_name=_os_user())), transaction(hub.sessions) as session:
            key = signing.add_key(session, accounts.get_user_by_name(session, user), kind,
                                  path.read_text(errors="replace"), hub.settings.tmp_dir)
            shown = key.fingerprint
    except BastionError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        hub.close()
    click.echo(f"added {kind} key {shown} to {user}", err=True)


# ---- audit ---------------------------------------------------------------------------------------

@main.group("audit")
def audit_group() -> None:
    """The audit logs: export (the API's filters and record shape), verify the chain, checkpoints, keys."""


def _audit_hub(data_dir: Path | None):  # type: ignore[no-untyped-def]
    """A hub with the instance key loaded (checkpoints are signed and checked with it)."""
    from bastion.hub import Hub
    from bastion.signing import service as signing

    hub = Hub.open(_settings(data_dir))
    signing.install(hub)
    return hub


def _public_key(value: str):  # type: ignore[no-untyped-def]
    from bastion.audit import sshsig

    text = Path(value).read_text() if not value.startswith("ssh-") and Path(value).exists() else value
    try:
        return sshsig.load_public_key(text.strip().splitlines()[0])
    except (ValueError, IndexError) as exc:
        raise click.BadParameter(f"not an ssh-ed25519 public key (or a file holding one): {exc}") from None


def _report(walk: Any) -> None:
    if walk.problem is not None:
        click.echo(f"FAILED at event {walk.problem.event_id} ({walk.problem.kind}): {walk.problem.message}")
        click.echo(f"the chain is intact through event {walk.last_id} ({walk.checked} events checked)", err=True)
        sys.exit(1)
    redacted = (f"; {walk.redacted} of them redacted (personal data of deleted accounts replaced by a pseudonym, "
                f"each vouched for by its redaction event)" if walk.redacted else "")
    click.echo(f"OK: {walk.checked} events verified, the chain is intact through event {walk.last_id} "
               f"({walk.count} events in all){redacted}")


@audit_group.command("verify")
@click.option("--export", "export_file", type=click.Path(exists=True, path_type=Path), default=None,
              help="Verify this export (NDJSON chain records, gzip or not) instead of the database, without it.")
@click.option("--checkpoints", "checkpoints_file", type=click.Path(exists=True, path_type=Path), default=None,
              help="The signed checkpoints (`bastion audit checkpoints --output`) the export is checked against.")
@click.option("--public-key", default=None,
              help="The instance's public key (ssh-ed25519 …, or a file): from GET /api/signing-key.")
@data_dir_option
def audit_verify(export_file: Path | None, checkpoints_file: Path | None, public_key: str | None,
                 data_dir: Path | None) -> None:
    """Walk the audit chain and report the first edited, deleted or reordered event (exit 1)."""
    from bastion.audit import checkpoints

    if export_file is not None:
        if checkpoints_file is None or public_key is None:
            raise click.UsageError("--export needs --checkpoints FILE and --public-key KEY")
        import gzip

        opener = gzip.open if export_file.read_bytes()[:2] == b"\x1f\x8b" else open
        with opener(export_file, "rb") as fh:  # type: ignore[operator]
            walk = checkpoints.verify_export(fh, checkpoints.load_file(checkpoints_file), _public_key(public_key))
        _report(walk)
        return
    hub = _audit_hub(data_dir)
    try:
        key = _public_key(public_key) if public_key else _public_key(checkpoints.signer().public_key)
        with transaction(hub.sessions, readonly=True) as session:
            walk = checkpoints.verify_database(session, key)
    finally:
        hub.close()
    _report(walk)


@audit_group.command("checkpoints")
@click.option("--output", type=click.Path(path_type=Path), required=True, help="File to write (JSON).")
@click.option("--now", "sign_now", is_flag=True, help="Sign a checkpoint of the chain's head first.")
@data_dir_option
def audit_checkpoints(output: Path, sign_now: bool, data_dir: Path | None) -> None:
    """Export the signed checkpoints (and the public key they verify with)."""
    import json

    from bastion.audit import checkpoints
    from bastion.db import utcnow

    hub = _audit_hub(data_dir)
    try:
        if sign_now:
            with transaction(hub.sessions) as session:
                checkpoints.write(session, utcnow())
        with transaction(hub.sessions, readonly=True) as session:
            document = checkpoints.export_document(session)
    finally:
        hub.close()
    output.write_text(json.dumps(document, indent=1))
    click.echo(f"{len(document['checkpoints'])} checkpoints written to {output}", err=True)


@audit_group.command("export-chain")
@click.option("--output", type=click.Path(path_type=Path), required=True, help="File to write (NDJSON).")
@data_dir_option
def audit_export_chain(output: Path, data_dir: Path | None) -> None:
    """Write the chain as it is verified (every event's hashed fields, link and MAC), from its anchor."""
    import json

    from bastion.audit import service

    hub = _audit_hub(data_dir)
    n = 0
    try:
        with transaction(hub.sessions, readonly=True) as session, output.open("w") as fh:
            anchor = service.anchor_of(session)
            if anchor.last_id:
                fh.write(json.dumps({"type": "anchor", "last_id": anchor.last_id, "last_hash": anchor.last_hash,
                                     "count": anchor.count}) + "\n")
            for rec in service.chain_records(session, anchor.last_id):
                fh.write(json.dumps(rec, default=str) + "\n")
                n += 1
    finally:
        hub.close()
    click.echo(f"{n} events written to {output}", err=True)


@audit_group.command("rotate-key")
@data_dir_option
def audit_rotate_key(data_dir: Path | None) -> None:
    """Add a new audit key: it keys every event from now on (the old ones still verify theirs)."""
    from bastion import audit as audit_log
    from bastion.audit import chain
    from bastion.audit.actions import AuditAction

    hub = _audit_hub(data_dir)
    try:
        with bind_context(AuditContext(via="cli", actor_name=_os_user())), transaction(hub.sessions) as session:
            ring = chain.keyring_for(session)
            old = ring.current
            new = ring.rotate()
            audit_log.record(session, AuditAction.INSTANCE_AUDIT_KEY_ROTATE, target=("instance", "audit_log"),
                             details={"from": old, "to": new})
    finally:
        hub.close()
    click.echo(f"audit key {new} now keys new events (restart running servers to pick it up)", err=True)


@audit_group.command("export")
@click.option("--org", "org_name", default=None, help="Export this organization's log.")
@click.option("--instance", "instance", is_flag=True, help="Export the instance log.")
@click.option("--q", "q", default="", help="The Hub's search syntax: type:EVENT author:USER ip:ADDRESS.")
@click.option("--start", default=None, help="Oldest date (ISO-8601 date or date-time, UTC).")
@click.option("--end", default=None, help="Newest date (ISO-8601; a bare date includes that day).")
@click.option("--format", "fmt", type=click.Choice(["json", "ndjson"]), default="json", show_default=True)
@click.option("--limit", type=click.IntRange(1, None), default=100_000, show_default=True,
              help="At most this many events, the newest.")
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write to this file instead of standard output.")
@data_dir_option
def audit_export(org_name: str | None, instance: bool, q: str, start: str | None, end: str | None, fmt: str,
                 limit: int, output: Path | None, data_dir: Path | None) -> None:
    """Export an organization's log (--org ORG) or the instance log (--instance), newest first, as the Hub's
    JSON array or NDJSON. The export is audited (org.audit_log.export / instance.audit_log.export)."""
    from bastion.audit.query import instance_scope
    from bastion.auditlog import service
    from bastion.orgs import service as orgs

    if (org_name is None) == (not instance):
        raise click.UsageError("give exactly one of --org ORG and --instance")
    hub = _admin_hub(data_dir)
    params = {k: v for k, v in (("q", q), ("start", start or ""), ("end", end or "")) if v}
    try:
        f = service.parse_filter(hub.settings, params)
        with bind_context(AuditContext(via="cli", actor_name=_os_user())), transaction(hub.sessions) as session:
            if org_name is not None:
                org = orgs.get_org(session, org_name)
                scope, label = service.org_scope(org.name, org.created_at), org.name
            else:
                scope, label = instance_scope(), None
            service.record_export(session, fmt, params, org=label)
        out = output.open("wb") if output is not None else sys.stdout.buffer
        try:
            for chunk in service.stream(hub.sessions, hub.settings, scope, f, fmt, limit=limit):
                out.write(chunk)
            out.flush()
        finally:
            if output is not None:
                out.close()
    except BastionError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        hub.close()


def _os_user() -> str:
    try:
        return f"os:{os.getlogin()}"
    except OSError:
        return f"os:uid{os.getuid()}"



# ---- identity lifecycle (bastion.lifecycle) ----------------------------------------------------------

@admin.command("deactivate-user")
@click.argument("name")
@click.option("--reason", default="", help="Why (kept in the audit event).")
@data_dir_option
def deactivate_user(name: str, reason: str, data_dir: Path | None) -> None:
    """Deprovision NAME at once: inactive, and every web session, access token, pending token approval and
    SSO session revoked in one transaction (Xet CAS tokens and git credentials stop with them)."""
    from bastion.accounts import service as accounts
    from bastion.lifecycle import service as lifecycle

    hub = _admin_hub(data_dir)
    try:
        with bind_context(AuditContext(via="cli", actor_name=_os_user())), transaction(hub.sessions) as session:
            user = accounts.get_user_by_name(session, name)
            revoked = lifecycle.deactivate_user(session, user, reason=reason)
            click.echo(f"deactivated {user.name}: revoked {revoked.web_sessions} web sessions, {revoked.tokens} "
                       f"tokens, {revoked.approvals} pending approvals, {revoked.sso_sessions} SSO sessions, "
                       f"{revoked.unverified_emails} unverified e-mail addresses", err=True)
    except BastionError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        hub.close()


@admin.command("reactivate-user")
@click.argument("name")
@click.option("--reason", default="", help="Why (kept in the audit event).")
@data_dir_option
def reactivate_user(name: str, reason: str, data_dir: Path | None) -> None:
    """Let a deactivated NAME sign in again; none of the revoked tokens or sessions come back."""
    from bastion.accounts import service as accounts
    from bastion.lifecycle import service as lifecycle

    hub = _admin_hub(data_dir)
    try:
        with bind_context(AuditContext(via="cli", actor_name=_os_user())), transaction(hub.sessions) as session:
            user = accounts.get_user_by_name(session, name)
            lifecycle.reactivate_user(session, user, reason=reason)
            click.echo(f"reactivated {user.name} (revoked credentials stay revoked)", err=True)
    except BastionError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        hub.close()



@admin.command("delete-user")
@click.argument("name")
@click.option("--transfer-to", default=None, metavar="USER_OR_ORG",
              help="Give every repository of the account to this user or organization now; without it they are "
                   "kept under the account's pseudonym and deleted after BASTION_ACCOUNT_DELETION_GRACE_DAYS.")
@data_dir_option
def delete_user(name: str, transfer_to: str | None, data_dir: Path | None) -> None:
    """Delete NAME: every credential revoked, personal data removed, its audit events pseudonymised (the chain
    still verifies: `bastion audit verify` counts them as redacted). Prints the pseudonym."""
    from bastion.accounts import service as accounts
    from bastion.lifecycle import deletion

    hub = _admin_hub(data_dir, features=True)
    try:
        with bind_context(AuditContext(via="cli", actor_name=_os_user())), transaction(hub.sessions) as session:
            user = accounts.get_user_by_name(session, name)
            done = deletion.delete_account(hub, session, user, grace_days=hub.settings.account_deletion_grace_days,
                                           transfer_to=transfer_to)
        when = done.purge_repos_after.isoformat() if done.purge_repos_after else None
        click.echo(f"deleted {name}: now {done.pseudonym}; {done.redacted_events} audit events pseudonymised; "
                   f"{len(done.transferred)} repositories transferred, {len(done.kept)} kept"
                   + (f" until {when}" if when else ""), err=True)
        click.echo(done.pseudonym)
    except BastionError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        hub.close()


@admin.command("purge-deleted-accounts")
@data_dir_option
def purge_deleted_accounts(data_dir: Path | None) -> None:
    """Delete now the repositories of deleted accounts whose grace period is over (the workers' sweeper does
    it too, once a minute)."""
    from bastion.lifecycle import deletion

    hub = _admin_hub(data_dir, features=True)
    try:
        with bind_context(AuditContext(via="cli", actor_name=_os_user())):
            done = deletion.purge_due(hub)
        names = f": {', '.join(done)}" if done else ""
        click.echo(f"purged the repositories of {len(done)} deleted accounts{names}", err=True)
    except BastionError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        hub.close()


if __name__ == "__main__":
    sys.exit(main())

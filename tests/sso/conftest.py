"""SSO tests: a real OpenID provider (the npm package `oidc-provider`, installed by scripts/test into
tests/sso/idp) on loopback, and a Bastion server whose SSO clock the tests move (BASTION_TEST_CLOCK_FILE).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from joserfc.jwk import RSAKey
from sqlalchemy.orm import Session, sessionmaker

from bastion.db import make_engine, transaction
from tests.accounts.fixtures import PASSWORD, http_login
from tests.conftest import BastionServer, ClamdServer, free_port

IDP_DIR = Path(__file__).parent / "idp"
SECRET_POST = "post-secret-" + "p" * 32
SECRET_BASIC = "basic-secret-" + "b" * 32
ORG_SLOTS = 48  # orgs the IdP knows redirect URIs for (the SSO tests of a session make about 30)


def _key(kid: str) -> dict[str, object]:
    key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"}, private=True)
    return key.as_dict(private=True)


class OidcIdp:
    """`node tests/sso/idp/server.mjs` with its clients: `bastion-post` (client_secret_post) and
    `bastion-basic` (client_secret_basic), both with PKCE required; restartable with other keys."""

    def __init__(self, root: Path, redirect_uris: list[str]) -> None:
        self.root = root
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.redirect_uris = redirect_uris
        self.keys = [_key("key-1")]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OidcIdp:
        if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError("tests/sso/idp/node_modules is missing: scripts/test runs `npm ci` there")
        config = {"port": self.port, "keys": self.keys, "clients": [
            {"client_id": "bastion-post", "client_secret": SECRET_POST,
             "token_endpoint_auth_method": "client_secret_post", "redirect_uris": self.redirect_uris},
            {"client_id": "bastion-basic", "client_secret": SECRET_BASIC,
             "token_endpoint_auth_method": "client_secret_basic", "redirect_uris": self.redirect_uris}]}
        path = self.root / "idp.json"
        path.write_text(json.dumps(config))
        log = (self.root / "idp.log").open("ab")
        self.proc = subprocess.Popen(["node", str(IDP_DIR / "server.mjs"), str(path)], stdout=log,
                                     stderr=subprocess.STDOUT, cwd=IDP_DIR)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"oidc-provider exited: {(self.root / 'idp.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("oidc-provider did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def rotate_keys(self) -> None:
        """Restart with a new signing key only (the old one gone): Bastion must fetch the JWKS again."""
        self.stop()
        self.keys = [_key(f"key-{secrets.token_hex(3)}")]
        self.start()

    def next_login(self, sub: str, **claims: object) -> None:
        httpx.post(f"{self.issuer}/test/next-login", json={"sub": sub, "claims": claims}, timeout=10).raise_for_status()

    def set_mode(self, mode: str) -> None:
        httpx.post(f"{self.issuer}/test/mode", json={"mode": mode}, timeout=10).raise_for_status()

    def jwks_fetches(self) -> int:
        return int(httpx.get(f"{self.issuer}/test/jwks-fetches", timeout=10).json()["count"])


@dataclass
class SsoWorld:
    server: BastionServer
    idp: OidcIdp
    clock_file: Path
    org_names: list[str] = field(default_factory=list)

    def new_org_name(self) -> str:
        return self.org_names.pop()

    def move_clock(self, seconds: float) -> None:
        self.clock_file.write_text(str(seconds))

    @contextmanager
    def db(self) -> Iterator[Session]:
        """The server's database, through Bastion's own services (setup only: the tests drive HTTP)."""
        from bastion.audit import chain

        engine = make_engine(f"sqlite:///{self.server.data_dir / 'bastion.sqlite3'}")
        chain.install(engine, self.server_settings().resolved_audit_key_file)  # audited, as `bastion serve` does
        try:
            with transaction(sessionmaker(engine, expire_on_commit=False)) as session:
                yield session
        finally:
            engine.dispose()

    def user(self) -> tuple[str, str]:
        """A user with a password (e-mail NAME@example.com, verified) and a write token."""
        from bastion.accounts import service as accounts
        from bastion.tokens import service as tokens

        name = f"u{secrets.token_hex(4)}"
        with self.db() as session:
            user = accounts.create_user(session, name, f"{name}@example.com", password=PASSWORD, email_verified=True)
            return name, tokens.create_token(session, user, "t", "write").secret

    def org(self, owner: str) -> str:
        from bastion.accounts import service as accounts
        from bastion.orgs import service as orgs

        name = self.new_org_name()
        with self.db() as session:
            orgs.create_org(session, accounts.get_user_by_name(session, owner), name)
        return name

    def add_member(self, org: str, user: str, role: str) -> None:
        from bastion.accounts import service as accounts
        from bastion.orgs import service as orgs

        with self.db() as session:
            orgs.add_member(session, orgs.get_org(session, org), accounts.get_user_by_name(session, user), role)

    def _cli(self) -> list[str]:
        import sys

        return [sys.executable, "-m", "bastion.cli"]

    def configure(self, org: str, *, client: str = "bastion-post", role_claim: str = "", role_map: str = "",
                  domains: tuple[str, ...] = (), enable: bool = True, cli: bool = False) -> str:
        """Set the org's OIDC settings and enable them (as `bastion admin sso … --enable` does); "" or the
        refusal's message."""
        if cli:
            done = self.configure_cli(org, client=client, role_claim=role_claim, role_map=role_map,
                                      extra=tuple(a for d in domains for a in ("--email-domain", d)), enable=enable)
            return "" if done.returncode == 0 else done.stderr
        from bastion.errors import BadRequest
        from bastion.orgs import service as orgs
        from bastion.sso import oidc
        from bastion.sso import service as sso

        secret = SECRET_POST if client == "bastion-post" else SECRET_BASIC
        method = "client_secret_post" if client == "bastion-post" else "client_secret_basic"
        try:
            discovery = oidc.discover(self.idp.issuer, method)
            with self.db() as session:
                found = orgs.get_org(session, org)
                box = sso.secret_box(self.server_settings().secret_key)
                sso.configure(session, box, found, sso.Settings(
                    issuer=self.idp.issuer, client_id=client, client_secret=secret, token_auth_method=method,
                    role_claim=role_claim, role_map=sso.parse_role_map(role_map), email_domains=list(domains)),
                    discovery)
                if enable:
                    sso.set_enabled(session, found, True, require_test=False)
        except BadRequest as exc:
            return exc.message
        return ""

    def server_settings(self):  # type: ignore[no-untyped-def]
        from bastion.config import Settings

        return Settings(data_dir=self.server.data_dir)

    def configure_cli(self, org: str, *, client: str = "bastion-post", role_claim: str = "", role_map: str = "",
                      extra: tuple[str, ...] = (), enable: bool = True) -> subprocess.CompletedProcess[str]:
        secret = SECRET_POST if client == "bastion-post" else SECRET_BASIC
        method = "client_secret_post" if client == "bastion-post" else "client_secret_basic"
        args = ["admin", "sso", "--org", org, "--oidc-issuer", self.idp.issuer, "--client-id", client,
                "--client-secret-stdin", "--token-auth-method", method]
        if role_claim:
            args += ["--role-claim", role_claim]
        if role_map:
            args += ["--role-map", role_map]
        args += [*extra, *(["--enable"] if enable else [])]
        return subprocess.run([*self._cli(), *args], env=self.server.env, input=secret + "\n", capture_output=True,
                              text=True, timeout=120)

    def signed_in(self, name: str) -> httpx.Client:
        return http_login(self.server, name)

    def sso_login(self, client: httpx.Client, org: str, sub: str, /, next_path: str = "/", test: bool = False,
                  **claims: object) -> httpx.Response:
        """The whole SP-initiated sign-in: Bastion → IdP (which signs in `sub` with `claims`) → Bastion's
        consume URL. Returns Bastion's answer to the consume request."""
        self.idp.next_login(sub, **claims)
        start = client.get(f"/organizations/{org}/sso/login", params={"next": next_path, **({"test": "1"} if test else {})})
        assert start.status_code == 303, start.text[:500]
        back = self.through_idp(start.headers["location"])
        return client.get(back)

    def through_idp(self, url: str) -> str:
        """Follow the IdP's redirects (its own cookies) until it sends the browser back to Bastion."""
        assert url.startswith(self.idp.issuer), url
        with httpx.Client(timeout=30) as idp_browser:
            for _ in range(10):
                resp = idp_browser.get(url)
                assert resp.status_code in (302, 303), (resp.status_code, resp.text[:800])
                location = resp.headers["location"]
                url = location if location.startswith("http") else f"{self.idp.issuer}{location}"
                if not url.startswith(self.idp.issuer):
                    assert urlsplit(url).netloc == urlsplit(self.server.url).netloc, url
                    return url
        raise AssertionError("the IdP never sent the browser back")


@pytest.fixture(scope="session")
def sso_world(tmp_path_factory: pytest.TempPathFactory, clamd: ClamdServer) -> Iterator[SsoWorld]:
    root = tmp_path_factory.mktemp("sso")
    clock = root / "clock"
    clock.write_text("0")
    server = BastionServer(root / "bastion", env={"BASTION_SIGNUP": "open", "BASTION_TEST_CLOCK_FILE": str(clock),
                                                  "BASTION_CLAMD_ADDRESS": clamd.address})
    names = [f"ssoorg{i}{secrets.token_hex(3)}" for i in range(ORG_SLOTS)]
    idp = OidcIdp(root, [f"{server.url}/organizations/{n}/oidc/consume" for n in names]
                  + [f"{server.url}/login/oidc/consume"])  # instance SSO
    try:  # whatever started is stopped, also when the other one fails to start
        idp.start()
        server.start(timeout=240)  # one server for every SSO test file: worth waiting for on a loaded machine
        yield SsoWorld(server, idp, clock, names)
    finally:
        server.stop()
        idp.stop()

"""The instance's SCIM cannot deactivate the break-glass administrator. Found: the instance SCIM client (an
identity provider's token) could set `active: false` on, or DELETE, any account, the break-glass administrator
included: a compromised or misconfigured IdP could then lock everyone out of an "SSO only" instance, with the
one password sign-in meant for exactly that case gone too. Now SCIM gets a 403 for that account, which stays
active; an administrator can still deactivate it with `bastion admin deactivate-user`.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.accounts.fixtures import PASSWORD
from tests.sso.conftest import SsoWorld, sso_world  # noqa: F401 (the fixture)
from tests.sso.saml_idp import SamlIdp
from tests.sso.test_instance_sso import saml_idp, world  # noqa: F401 (fixtures)

TIMEOUT = 30
SCIM = "application/scim+json"


def test_scim_cannot_deactivate_the_break_glass_admin(world: SsoWorld, saml_idp: SamlIdp,  # noqa: F811
                                                      tmp_path: Path) -> None:
    server = world.server
    root, root_token = server.create_user(admin=True, password=PASSWORD)
    entity = f"{server.url}/login/saml/metadata"
    saml_idp.trust_sp(entity)
    meta = tmp_path / "idp.xml"
    meta.write_text(saml_idp.metadata())
    server.cli("admin", "sso", "--instance", "--saml-metadata", str(meta), "--username-claim", "uid",
               "--break-glass-admin", root, "--enable")
    scim = {"authorization": f"Bearer {server.cli('admin', 'scim-token', '--instance').stdout.strip()}",
            "content-type": SCIM}
    with httpx.Client(base_url=f"{server.url}/scim/v2", headers=scim, timeout=TIMEOUT) as idp:
        linked = idp.post("/Users", json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                                          "userName": root, "active": True})
        assert linked.status_code in (200, 201), linked.text
        user_id = linked.json()["id"]
        patched = idp.patch(f"/Users/{user_id}", json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": False}]})
        assert patched.status_code == 403 and "break-glass" in patched.text, patched.text
        assert idp.delete(f"/Users/{user_id}").status_code == 403
    whoami = httpx.get(f"{server.url}/api/whoami-v2", headers={"authorization": f"Bearer {root_token}"},
                       timeout=TIMEOUT)
    assert whoami.status_code == 200 and whoami.json()["name"] == root  # still active, its token works
    # An administrator (not the IdP) still can.
    assert server.cli("admin", "deactivate-user", root, "--reason", "left").returncode == 0

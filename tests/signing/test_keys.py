"""Managing signing keys: the JSON API and `bastion admin add-key` apply the same validation, only
the owner changes keys, from a browser session in sudo mode (never with a token), and every change is
audited.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bastion.audit.models import AuditEvent
from bastion.signing.verify import parse_gpg_status
from tests.conftest import BastionServer
from tests.signing.conftest import GpgHome, SshKey, api, keys_api


def audit_actions(server: BastionServer, target: str) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    try:
        with Session(engine) as session:
            rows = session.scalars(sa.select(AuditEvent).where(AuditEvent.target_id == target)
                                   .order_by(AuditEvent.id))
            return [(e.action, e.details) for e in rows if e.action.startswith("user.") and "key" in e.action]
    finally:
        engine.dispose()


def test_gpg_key_api_validation_permissions_and_audit(server: BastionServer, gpg_home: GpgHome) -> None:
    name, token = server.create_user()
    _, read_token = server.create_user(name="r" + name[1:], role="read")
    fpr = gpg_home.generate(f"Me <{name}@example.com>")
    armored = gpg_home.export(fpr)

    assert api(server, "POST", "/api/settings/gpg-keys", None, json={"key": armored}).status_code == 401
    assert api(server, "GET", "/api/settings/gpg-keys", None).status_code == 401
    # Keys are managed from the browser only (in sudo mode), as on the Hub: no token changes them.
    for any_token in (read_token, token):
        denied = api(server, "POST", "/api/settings/gpg-keys", any_token, json={"key": armored})
        assert denied.status_code == 403, denied.text

    secret = keys_api(server, token, "POST", "/api/settings/gpg-keys", json={"key": gpg_home.export_secret(fpr)})
    assert secret.status_code == 400 and "private key" in secret.headers["X-Error-Message"]
    junk = keys_api(server, token, "POST", "/api/settings/gpg-keys",
                    json={"key": "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5\n-----END PGP PUBLIC KEY BLOCK-----\n"})
    assert junk.status_code == 400
    stranger = gpg_home.generate("Stranger <stranger@example.net>")
    refused = keys_api(server, token, "POST", "/api/settings/gpg-keys", json={"key": gpg_home.export(stranger)})
    assert refused.status_code == 400 and "stranger@example.net" in refused.headers["X-Error-Message"]

    created = keys_api(server, token, "POST", "/api/settings/gpg-keys", json={"key": armored})
    assert created.status_code == 201, created.text
    key = created.json()
    assert (key["fingerprint"], key["keyId"], key["expiresAt"]) == (fpr, fpr[-16:], None)
    again = keys_api(server, token, "POST", "/api/settings/gpg-keys", json={"key": armored})
    assert again.status_code == 409
    listed = api(server, "GET", "/api/settings/gpg-keys", token).json()
    assert [k["fingerprint"] for k in listed] == [fpr]
    # Someone else neither sees nor deletes it; a token does not delete it either.
    _, other_token = server.create_user()
    assert api(server, "GET", "/api/settings/gpg-keys", other_token).json() == []
    assert keys_api(server, other_token, "DELETE", f"/api/settings/gpg-keys/{key['id']}").status_code == 404
    assert api(server, "DELETE", f"/api/settings/gpg-keys/{key['id']}", token).status_code == 403
    assert keys_api(server, token, "DELETE", f"/api/settings/gpg-keys/{key['id']}").status_code == 200
    assert api(server, "GET", "/api/settings/gpg-keys", token).json() == []

    assert [a for a, _ in audit_actions(server, name)] == ["user.gpg_key_add", "user.gpg_key_remove"]
    assert audit_actions(server, name)[0][1]["fingerprint"] == fpr


def test_ssh_key_api(server: BastionServer, ssh_key: SshKey, tmp_path: Path) -> None:
    name, token = server.create_user()
    assert api(server, "POST", "/api/settings/ssh-signing-keys", token, json={"key": ssh_key.public}).status_code == 403
    bad = keys_api(server, token, "POST", "/api/settings/ssh-signing-keys", json={"key": "ssh-ed25519 not-base64!"})
    assert bad.status_code == 400
    private = keys_api(server, token, "POST", "/api/settings/ssh-signing-keys", json={"key": ssh_key.path.read_text()})
    assert private.status_code == 400
    created = keys_api(server, token, "POST", "/api/settings/ssh-signing-keys", json={"key": ssh_key.public})
    assert created.status_code == 201, created.text
    assert created.json()["title"] == "test"  # the key's comment when no title is given
    assert keys_api(server, token, "POST", "/api/settings/ssh-signing-keys",
                    json={"key": ssh_key.public}).status_code == 409
    key_id = created.json()["id"]
    assert keys_api(server, token, "DELETE", f"/api/settings/ssh-signing-keys/{key_id}").status_code == 200
    assert [a for a, _ in audit_actions(server, name)] == ["user.ssh_signing_key_add", "user.ssh_signing_key_remove"]


def test_cli_add_key(server: BastionServer, gpg_home: GpgHome, ssh_key: SshKey, tmp_path: Path) -> None:
    name, token = server.create_user()
    fpr = gpg_home.generate(f"Me <{name}@example.com>")
    key_file = tmp_path / "key.asc"
    key_file.write_text(gpg_home.export(fpr))
    done = server.cli("admin", "add-key", name, "--gpg", str(key_file))
    assert fpr in done.stderr
    assert [k["fingerprint"] for k in api(server, "GET", "/api/settings/gpg-keys", token).json()] == [fpr]

    server.cli("admin", "add-key", name, "--ssh", str(ssh_key.path.with_suffix(".pub")))
    assert len(api(server, "GET", "/api/settings/ssh-signing-keys", token).json()) == 1

    # Same validation as the API: an identity that is not a verified e-mail is refused.
    other = gpg_home.generate("Other <other@example.net>")
    key_file.write_text(gpg_home.export(other))
    failed = server.cli("admin", "add-key", name, "--gpg", str(key_file), check=False)
    assert failed.returncode != 0 and "verified e-mail" in failed.stderr
    both = server.cli("admin", "add-key", name, "--gpg", str(key_file), "--ssh", str(key_file), check=False)
    assert both.returncode != 0
    assert [a for a, _ in audit_actions(server, name)] == ["user.gpg_key_add", "user.ssh_signing_key_add"]


def test_instance_key_is_public(server: BastionServer) -> None:
    resp = api(server, "GET", "/api/signing-key", None)
    assert resp.status_code == 200
    body = resp.json()
    assert body["fingerprint"].startswith("SHA256:") and body["principal"] == "bastion-instance"
    assert body["allowedSigners"] == f'bastion-instance namespaces="git" {body["publicKey"]}\n'


def test_gpg_status_parsing_is_strict() -> None:
    good = ("[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG AAAABBBBCCCCDDDD Me <me@x>\n"
            "[GNUPG:] VALIDSIG " + "F" * 40 + " 2024-01-01 1 0 4 0 22 8 00 " + "E" * 40 + "\n")
    result = parse_gpg_status(good)
    assert (result.status, result.issuer, result.primary_fingerprint) == ("good", "AAAABBBBCCCCDDDD", "E" * 40)
    # Two signatures in one gpgsig, or a GOODSIG without VALIDSIG, are never "good".
    assert parse_gpg_status(good + good).status == "error"
    assert parse_gpg_status("[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG AAAABBBBCCCCDDDD Me\n").status == "error"
    assert parse_gpg_status("[GNUPG:] NEWSIG\n[GNUPG:] BADSIG AAAABBBBCCCCDDDD Me\n").status == "bad"
    missing = parse_gpg_status("[GNUPG:] NEWSIG\n[GNUPG:] ERRSIG AAAABBBBCCCCDDDD 22 8 00 1 9 " + "C" * 40 + "\n")
    assert (missing.status, missing.issuer_fingerprint) == ("no_pubkey", "C" * 40)
    assert parse_gpg_status("[GNUPG:] NEWSIG\n[GNUPG:] ERRSIG AAAABBBBCCCCDDDD 99 8 00 1 4 -\n").status == "error"

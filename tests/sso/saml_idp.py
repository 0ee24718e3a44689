"""A SAML 2.0 identity provider built with pysaml2 (signatures by xmlsec1), in the test process: it reads
Bastion's AuthnRequests, and issues responses (signed as asked, or stale, or for another SP) that the test
posts to Bastion's ACS URL as the browser would."""

from __future__ import annotations

import base64
import datetime as dt
import warnings
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from saml2 import BINDING_HTTP_REDIRECT
    from saml2.config import IdPConfig
    from saml2.metadata import create_metadata_string
    from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NameID
    from saml2.server import Server

AUTHN = {"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:Password", "authn_auth": "test-idp"}


def self_signed(root: Path, name: str) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365)).sign(key, hashes.SHA256()))
    key_path, cert_path = root / f"{name}.key", root / f"{name}.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class SamlIdp:
    def __init__(self, root: Path, entity_id: str = "http://127.0.0.1:9/test-idp") -> None:
        self.root = root
        self.entity_id = entity_id
        self.key, self.cert = self_signed(root, "idp")
        self.sp_metadata: list[str] = []

    def _conf(self) -> dict[str, Any]:
        return {"entityid": self.entity_id, "xmlsec_binary": "/usr/bin/xmlsec1",
                "service": {"idp": {"endpoints": {"single_sign_on_service": [
                    (f"{self.entity_id}/sso", BINDING_HTTP_REDIRECT)]},
                    "policy": {"default": {"lifetime": {"minutes": 5}, "attribute_restrictions": None}},
                    "name_id_format": [NAMEID_FORMAT_EMAILADDRESS]}},
                "key_file": str(self.key), "cert_file": str(self.cert),
                "metadata": {"inline": list(self.sp_metadata)} if self.sp_metadata else {}}

    def metadata(self) -> str:
        return create_metadata_string(None, config=IdPConfig().load(self._conf()), valid=None, sign=False).decode()

    def trust_sp(self, metadata_url: str) -> None:
        """Load an SP's metadata from Bastion's /organizations/{org}/saml/metadata (as an IdP admin does)."""
        got = httpx.get(metadata_url, timeout=30)
        assert got.status_code == 200 and "application/samlmetadata+xml" in got.headers["content-type"], got.text
        self.sp_metadata.append(got.text)

    def server(self) -> Server:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Server(config=IdPConfig().load(self._conf()))

    def request_id(self, location: str) -> tuple[str, str]:
        """(AuthnRequest ID, RelayState) of the IdP URL Bastion redirected the browser to."""
        from urllib.parse import parse_qs, urlsplit

        query = parse_qs(urlsplit(location).query)
        req = self.server().parse_authn_request(query["SAMLRequest"][0], BINDING_HTTP_REDIRECT)
        return str(req.message.id), query.get("RelayState", [""])[0]

    def response(self, email: str, acs: str, sp_entity_id: str, in_response_to: str | None, *,
                 sign_response: bool = True, sign_assertion: bool = True, **attributes: list[str]) -> str:
        resp = self.server().create_authn_response(
            dict(attributes), in_response_to, acs, sp_entity_id,
            name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=email), sign_response=sign_response,
            sign_assertion=sign_assertion, authn=AUTHN)
        return str(resp)


def b64(xml: str) -> str:
    return base64.b64encode(xml.encode()).decode()

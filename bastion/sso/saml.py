"""SAML 2.0 service provider (pysaml2, signatures checked by Debian's xmlsec1): SP metadata, the AuthnRequest
(HTTP-Redirect) and the Response posted back. A response is accepted only when the Response AND its Assertion
are signed by the IdP's certificate, it is addressed to this org's ACS URL, its audience is this org's SP
entity id, it is within its NotBefore / NotOnOrAfter (CLOCK_SKEW seconds of slack), and it answers the
request this sign-in sent (InResponseTo) or, IdP-initiated, none at all. Replays are refused by the caller
(the assertion-id cache, sso_saml_assertions).
"""

from __future__ import annotations

import base64
import logging
import shutil
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from bastion.errors import BadRequest

if TYPE_CHECKING:
    from saml2.client import Saml2Client
    from saml2.config import SPConfig

# pysaml2's constants (saml2.BINDING_HTTP_*, saml2.saml.NAMEID_FORMAT_EMAILADDRESS): pysaml2 itself is imported
# only when SAML is used (it loads XML schemas: seconds at every server start otherwise).
BINDING_HTTP_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
BINDING_HTTP_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
NAMEID_FORMAT_EMAILADDRESS = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"


def _pysaml2() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pysaml2 imports a cipher mode cryptography moved (CFB)
        import saml2
        import saml2.client
        import saml2.config
        import saml2.mdstore
        import saml2.metadata
    assert saml2.BINDING_HTTP_POST == BINDING_HTTP_POST and saml2.BINDING_HTTP_REDIRECT == BINDING_HTTP_REDIRECT
    return saml2

CLOCK_SKEW = 120
FINISH_TTL = 120  # seconds an IdP-initiated sign-in's finish link is valid
XMLSEC = shutil.which("xmlsec1") or "/usr/bin/xmlsec1"
MAX_METADATA = 512 * 1024
logging.getLogger("saml2").setLevel(logging.CRITICAL)  # pysaml2 logs every refused response at ERROR


class SamlError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass(frozen=True)
class SpUrls:
    entity_id: str  # the SP metadata URL
    acs: str


def idp_metadata_from_parts(entity_id: str, sso_url: str, certificate_pem: str) -> str:
    """IdP metadata for an IdP given as entity id + sign-on URL + certificate (the Hub's form)."""
    pem = certificate_pem.strip()
    if not pem.startswith("-----BEGIN CERTIFICATE-----") or not pem.endswith("-----END CERTIFICATE-----"):
        raise BadRequest("The IdP certificate must be PEM (-----BEGIN CERTIFICATE----- …)")
    body = "".join(pem.splitlines()[1:-1])
    try:
        base64.b64decode(body, validate=True)
    except ValueError:
        raise BadRequest("The IdP certificate is not valid PEM") from None
    if not sso_url.startswith(("https://", "http://")):
        raise BadRequest("The IdP sign-on URL must be an http(s) URL")
    return (f'<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
            f'xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{escape(entity_id, {chr(34): "&quot;"})}">'
            '<md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" '
            'WantAuthnRequestsSigned="false"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data>'
            f'<ds:X509Certificate>{body}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>'
            f'<md:SingleSignOnService Binding="{BINDING_HTTP_REDIRECT}" '
            f'Location="{escape(sso_url, {chr(34): "&quot;"})}"/></md:IDPSSODescriptor></md:EntityDescriptor>')


def check_idp_metadata(xml: str) -> dict[str, Any]:
    """The IdP's entity id and sign-on URL from its metadata; BadRequest unless it has exactly one IdP with an
    HTTP-Redirect sign-on service and a signing certificate."""
    if len(xml.encode()) > MAX_METADATA:
        raise BadRequest("The IdP metadata is too large")
    store = _pysaml2().mdstore.MetadataStore(attrc=None, config=_bare_config())
    try:
        store.load("inline", xml)
    except Exception as exc:  # pysaml2 raises many types for bad XML
        raise BadRequest(f"The IdP metadata could not be read: {exc}") from None
    idps = list(store.with_descriptor("idpsso"))
    if len(idps) != 1:
        raise BadRequest("The IdP metadata must describe exactly one identity provider (IDPSSODescriptor)")
    entity_id = idps[0]
    try:
        sso = store.single_sign_on_service(entity_id, BINDING_HTTP_REDIRECT)
    except Exception:
        sso = []
    if not sso:
        raise BadRequest("The IdP metadata has no HTTP-Redirect SingleSignOnService")
    if not store.certs(entity_id, "idpsso", "signing"):
        raise BadRequest("The IdP metadata has no signing certificate")
    return {"entity_id": entity_id, "sso_url": sso[0]["location"], "metadata": xml}


def _bare_config() -> SPConfig:
    return _pysaml2().config.SPConfig().load({"entityid": "urn:bastion:metadata-check", "xmlsec_binary": XMLSEC})


def _client(urls: SpUrls, idp_metadata: str | None) -> Saml2Client:
    conf: dict[str, Any] = {
        "entityid": urls.entity_id, "xmlsec_binary": XMLSEC,
        "service": {"sp": {
            "endpoints": {"assertion_consumer_service": [(urls.acs, BINDING_HTTP_POST)]},
            "want_response_signed": True, "want_assertions_signed": True,
            "want_assertions_or_response_signed": True, "allow_unsolicited": True,
            "authn_requests_signed": False, "name_id_format": NAMEID_FORMAT_EMAILADDRESS,
            "name_id_format_allow_create": False}},
        "accepted_time_diff": CLOCK_SKEW, "allow_unknown_attributes": True,
    }
    if idp_metadata:
        conf["metadata"] = {"inline": [idp_metadata]}
    saml2 = _pysaml2()
    return saml2.client.Saml2Client(config=saml2.config.SPConfig().load(conf))


def sp_metadata(urls: SpUrls) -> str:
    conf = _client(urls, None).config
    return _pysaml2().metadata.create_metadata_string(None, config=conf, valid=None, sign=False).decode()


def authn_request(urls: SpUrls, idp: dict[str, Any], relay_state: str) -> tuple[str, str]:
    """(request id, the IdP URL with the AuthnRequest) for an SP-initiated sign-in."""
    client = _client(urls, idp["metadata"])
    request_id, info = client.prepare_for_authenticate(entityid=idp["entity_id"], relay_state=relay_state,
                                                       binding=BINDING_HTTP_REDIRECT)
    location = dict(info["headers"])["Location"]
    return str(request_id), str(location)


@dataclass(frozen=True)
class Assertion:
    assertion_id: str
    not_on_or_after: str
    in_response_to: str | None
    name_id: str
    attributes: dict[str, list[str]]


def parse_response(urls: SpUrls, idp: dict[str, Any], saml_response: str, request_id: str | None) -> Assertion:
    """The verified assertion of a posted SAMLResponse (request_id: the AuthnRequest this sign-in sent; None for
    an IdP-initiated one, which must then answer no request)."""
    client = _client(urls, idp["metadata"])
    outstanding = {request_id: "/"} if request_id else {}
    try:
        response = client.parse_authn_request_response(saml_response, BINDING_HTTP_POST, outstanding=outstanding)
    except Exception as exc:  # pysaml2's many refusal types: signature, time, audience, destination
        raise SamlError(_reason(exc), f"The SAML response was refused: {type(exc).__name__}: {str(exc)[:200]}") \
            from None
    if response is None:
        raise SamlError("invalid_response", "The SAML response was refused")
    if response.issuer() != idp["entity_id"]:
        raise SamlError("wrong_issuer", "The SAML response comes from another identity provider")
    in_response_to = response.in_response_to or None
    if request_id is None and in_response_to:
        raise SamlError("unknown_request", "The SAML response answers a request this sign-in did not send")
    if request_id is not None and in_response_to != request_id:
        raise SamlError("wrong_in_response_to", "The SAML response answers another request (InResponseTo)")
    if response.response.destination and response.response.destination != urls.acs:
        raise SamlError("wrong_recipient", "The SAML response was sent to another service provider (Destination)")
    assertion = response.assertion
    if assertion is None or response.name_id is None or not (response.name_id.text or "").strip():
        raise SamlError("no_subject", "The SAML assertion names no subject")
    conditions = assertion.conditions
    return Assertion(assertion_id=str(assertion.id), not_on_or_after=str(conditions.not_on_or_after or ""),
                     in_response_to=in_response_to, name_id=response.name_id.text.strip(),
                     attributes={k: [str(v) for v in vs] for k, vs in (response.ava or {}).items()})


def keep_until(assertion: Assertion) -> datetime:
    """How long the replay cache keeps an assertion's id: past its NotOnOrAfter (and the skew), at least a day."""
    floor = datetime.now(UTC) + timedelta(days=1)
    try:
        until = datetime.strptime(assertion.not_on_or_after[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return floor
    return max(floor, until + timedelta(seconds=CLOCK_SKEW))


def finish_keep() -> timedelta:
    return timedelta(seconds=FINISH_TTL * 2)


def _reason(exc: Exception) -> str:
    name = type(exc).__name__
    text = str(exc).lower()
    if "signature" in name.lower() or "signature" in text:
        return "bad_signature"
    if "too old" in text or "lifetime" in name.lower() or "not_on_or_after" in text:
        return "expired"
    if "audience" in text or "audience" in name.lower():
        return "wrong_audience"
    if "destination" in text or "recipient" in text:
        return "wrong_recipient"
    if "inresponseto" in text.replace("_", "").replace(" ", "") or "unsolicited" in text or "outstanding" in text:
        return "wrong_in_response_to"
    return "invalid_response"

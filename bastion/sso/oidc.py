"""OpenID Connect relying party: discovery, the authorization request (state, nonce, PKCE S256), the code
exchange (authlib's OAuth 2 client, client_secret_post or client_secret_basic) and the ID token's
validation (joserfc: signature by a key of the issuer's JWKS, issuer, audience, expiry, issued-at, nonce).

JWKS are cached per URI for JWKS_TTL; a token signed with a key id the cache does not know fetches the set
again (key rotation); a key id still missing after that is not asked for again within JWKS_REFETCH_EVERY, so
tokens naming unknown keys cannot make Bastion hammer the IdP.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bastion.errors import BadRequest

TOKEN_AUTH_METHODS = ("client_secret_post", "client_secret_basic")
SIGNING_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
HTTP_TIMEOUT = 10.0
JWKS_TTL = 3600.0
JWKS_REFETCH_EVERY = 30.0
CLOCK_SKEW = 120  # seconds of leeway on exp / iat
MAX_TOKEN_AGE = 600  # an ID token issued longer ago than this is refused (replayed or stale)


class OidcError(Exception):
    """A sign-in the relying party refuses; `reason` is a short stable code for the audit log."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _http_url(value: str, what: str) -> str:
    parts = urlsplit(value or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadRequest(f"The identity provider's {what} must be an http(s) URL, not {value!r}")
    return value


def discover(issuer: str, token_auth_method: str) -> dict[str, Any]:
    """The issuer's discovery document, fetched and checked now (the settings are refused otherwise), and
    its JWKS fetched once to make sure it holds a signing key."""
    issuer = _http_url(issuer.strip(), "issuer URL")
    if token_auth_method not in TOKEN_AUTH_METHODS:
        raise BadRequest(f"Invalid token endpoint authentication method {token_auth_method!r}: expected one of "
                         f"{', '.join(TOKEN_AUTH_METHODS)}")
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = httpx.get(url, timeout=HTTP_TIMEOUT, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise BadRequest(f"Could not fetch the OpenID discovery document at {url}: {exc}") from None
    if response.status_code != 200:
        raise BadRequest(f"The OpenID discovery document at {url} answered HTTP {response.status_code}")
    try:
        doc = response.json()
    except ValueError:
        raise BadRequest(f"The OpenID discovery document at {url} is not JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest(f"The OpenID discovery document at {url} is not a JSON object")
    if doc.get("issuer") != issuer:
        raise BadRequest(f"The discovery document names the issuer {doc.get('issuer')!r}, not {issuer!r} "
                         "(OpenID Connect Discovery requires them to be identical)")
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(doc.get(key), str):
            raise BadRequest(f"The discovery document has no {key}")
        _http_url(doc[key], key)
    if "code" not in (doc.get("response_types_supported") or []):
        raise BadRequest("The identity provider does not support the authorization code flow (response type 'code')")
    methods = doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    if token_auth_method not in methods:
        raise BadRequest(f"The identity provider does not accept {token_auth_method} at its token endpoint "
                         f"(it supports {', '.join(map(str, methods))})")
    challenges = doc.get("code_challenge_methods_supported")
    if challenges is not None and "S256" not in challenges:
        raise BadRequest("The identity provider does not support PKCE with S256")
    try:
        keys = JWKS_CACHE.get(doc["jwks_uri"], refresh=True)
    except OidcError as exc:
        raise BadRequest(exc.message) from None
    if not keys.keys:
        raise BadRequest("The identity provider's JWKS holds no key")
    return {k: doc[k] for k in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri",
                                "token_endpoint_auth_methods_supported", "id_token_signing_alg_values_supported")
            if k in doc}


class JwksCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sets: dict[str, tuple[KeySet, float]] = {}
        self._missing: dict[tuple[str, str], float] = {}  # (uri, kid) → when a fetch last did not find it

    def _fetch(self, uri: str) -> KeySet:
        try:
            response = httpx.get(uri, timeout=HTTP_TIMEOUT, follow_redirects=False)
            response.raise_for_status()
            data = response.json()
            keys = [k for k in data.get("keys", []) if k.get("use", "sig") == "sig"]
            return KeySet.import_key_set({"keys": keys})
        except (httpx.HTTPError, ValueError, AttributeError, TypeError, JoseError) as exc:
            raise OidcError("jwks_unavailable", f"Could not fetch the identity provider's keys (JWKS): {exc}") from None

    def get(self, uri: str, *, refresh: bool = False) -> KeySet:
        with self._lock:
            cached = self._sets.get(uri)
            now = time.monotonic()
            if cached is None or refresh or now - cached[1] > JWKS_TTL:
                cached = (self._fetch(uri), now)
                self._sets[uri] = cached
            return cached[0]

    def refresh_for_kid(self, uri: str, kid: str) -> KeySet | None:
        """The set fetched again because a token names key `kid` the cache lacks (rotation); None when
        it was fetched too recently to ask again."""
        with self._lock:
            cached = self._sets.get(uri)
            if cached is not None and any(k.kid == kid for k in cached[0].keys):
                return cached[0]
            missed = self._missing.get((uri, kid))
            if missed is not None and time.monotonic() - missed < JWKS_REFETCH_EVERY:
                return None
            fresh = (self._fetch(uri), time.monotonic())
            self._sets[uri] = fresh
            if not any(k.kid == kid for k in fresh[0].keys):
                if len(self._missing) > 1000:
                    self._missing.clear()
                self._missing[(uri, kid)] = fresh[1]
            return fresh[0]


JWKS_CACHE = JwksCache()


@dataclass(frozen=True)
class Client:
    discovery: dict[str, Any]
    client_id: str
    client_secret: str
    token_auth_method: str
    redirect_uri: str

    def _oauth(self) -> OAuth2Client:
        return OAuth2Client(client_id=self.client_id, client_secret=self.client_secret,
                            token_endpoint_auth_method=self.token_auth_method, redirect_uri=self.redirect_uri,
                            scope="openid email profile", code_challenge_method="S256", timeout=HTTP_TIMEOUT)

    def authorization_url(self, state: str, nonce: str, code_verifier: str) -> str:
        with self._oauth() as oauth:
            url, _ = oauth.create_authorization_url(self.discovery["authorization_endpoint"], state=state, nonce=nonce,
                                                    code_verifier=code_verifier)
        assert create_s256_code_challenge(code_verifier) in url
        return str(url)

    def exchange(self, code: str, code_verifier: str) -> str:
        """The ID token the token endpoint returns for this code (authenticated as configured)."""
        try:
            with self._oauth() as oauth:
                token = oauth.fetch_token(self.discovery["token_endpoint"], grant_type="authorization_code",
                                          code=code, code_verifier=code_verifier)
        except Exception as exc:  # authlib raises OAuthError, httpx errors, ValueError on bad JSON
            raise OidcError("token_exchange_failed", f"The identity provider refused the sign-in code: {exc}") \
                from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError("no_id_token", "The identity provider returned no ID token")
        return id_token

    def validate(self, id_token: str, nonce: str, now: float | None = None) -> dict[str, Any]:
        """The ID token's claims once its signature, issuer, audience, expiry, issued-at and nonce hold."""
        uri = self.discovery["jwks_uri"]
        keys = JWKS_CACHE.get(uri)
        try:
            header = _header(id_token)
        except (ValueError, UnicodeDecodeError, IndexError) as exc:
            raise OidcError("malformed_id_token", f"The ID token is malformed: {exc}") from None
        alg = header.get("alg")
        if alg not in SIGNING_ALGORITHMS:
            raise OidcError("bad_algorithm", f"The ID token's algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        if kid is not None and not any(k.kid == kid for k in keys.keys):
            keys = JWKS_CACHE.refresh_for_kid(uri, kid) or keys
        try:
            token = jwt.decode(id_token, keys, algorithms=[alg])
        except JoseError as exc:
            raise OidcError("bad_signature", f"The ID token's signature does not verify: {exc}") from None
        claims = dict(token.claims)
        now = time.time() if now is None else now
        if claims.get("iss") != self.discovery["issuer"]:
            raise OidcError("wrong_issuer", f"The ID token was issued by {claims.get('iss')!r}, not by the "
                                            "configured identity provider")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if self.client_id not in audiences:
            raise OidcError("wrong_audience", "The ID token was issued for another client (audience)")
        if len(audiences) > 1 and claims.get("azp") != self.client_id:
            raise OidcError("wrong_audience", "The ID token has several audiences and is not authorized for us (azp)")
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise OidcError("missing_times", "The ID token lacks its expiry (exp) or issue time (iat)")
        if exp + CLOCK_SKEW < now:
            raise OidcError("expired", "The ID token has expired")
        if iat - CLOCK_SKEW > now or iat + MAX_TOKEN_AGE + CLOCK_SKEW < now:
            raise OidcError("bad_iat", "The ID token's issue time (iat) is in the future or too old")
        if "nonce" not in claims:
            raise OidcError("missing_nonce", "The ID token carries no nonce")
        if claims.get("nonce") != nonce:
            raise OidcError("wrong_nonce", "The ID token's nonce does not match this sign-in")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise OidcError("missing_subject", "The ID token names no subject (sub)")
        return claims


def _header(token: str) -> dict[str, Any]:
    import base64
    import json

    head = token.split(".")[0]
    data = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    if not isinstance(data, dict):
        raise ValueError("header is not a JSON object")
    return data

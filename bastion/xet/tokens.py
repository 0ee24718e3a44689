"""Xet CAS tokens and fetch URLs: short-lived HMAC-signed claims minted after the hub's authz check.

A CAS token names one repo, a scope (read | write), the ref it was asked for, and the credential
that obtained it (`bastion.api.auth.credential_claims`: access token or browser session, and user);
a fetch URL names one byte range of one xorb, and carries the same repo and credential. Both are
verified by `bastion.authz.capability`, never stored; each use re-checks the credential and the
holder's rights on the repo (`bastion.authz.policy.BoundCapability`).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bastion.authz import capability
from bastion.config import Settings
from bastion.errors import AuthenticationRequired, Forbidden
from bastion.repos.service import incarnation  # noqa: F401 (the CAS URL's repo scope)

CAS_PURPOSE = "xet-cas"
FETCH_PURPOSE = "xet-fetch"
CAS_PREFIX = "/xet-cas"


class XetTokenRejected(AuthenticationRequired):
    """401 makes hf_xet fetch a fresh token from the hub (auth.md "Token refresh")."""

    code = "XetTokenRejected"


@dataclass(frozen=True)
class XetToken:
    access_token: str
    exp: int
    cas_url: str

    def as_json(self) -> dict[str, Any]:
        return {"accessToken": self.access_token, "exp": self.exp, "casUrl": self.cas_url}

    def headers(self) -> dict[str, str]:
        # huggingface_hub reads the headers, the spec (auth.md) the JSON body: send both.
        return {"X-Xet-Cas-Url": self.cas_url, "X-Xet-Access-Token": self.access_token,
                "X-Xet-Token-Expiration": str(self.exp)}


def repo_scope(repo_id: int, key: str) -> str:
    return f"r{repo_id}-{key}"


def parse_scope(scope: str) -> tuple[int, str] | None:
    """(repo id, incarnation) of a CAS URL's scope, None when it is not one."""
    number, _, key = scope[1:].partition("-")
    if scope[:1] != "r" or not number.isdigit() or not key.isalnum() or len(key) > 64:
        return None
    return int(number), key


def cas_url(settings: Settings, server_base: str, repo_id: int, key: str) -> str:
    """The CAS URL of one repo. One URL per repo on purpose: hf_xet keys its local shard cache by
    CAS URL, so a client never dedupes one repo's upload against xorbs only another repo holds
    (which that repo's shards may not reference). The repo's incarnation is part of it: a repo
    created after another was deleted may get its id, and a client that uploaded to the deleted one
    must not take the new repo's URL for the old one's (its cache would claim xorbs the new repo
    never received, and its shards would be refused as referencing xorbs that do not exist)."""
    base = (settings.xet_cas_url or server_base).rstrip("/")
    return f"{base}{CAS_PREFIX}/{repo_scope(repo_id, key)}"


# The claims that bind a capability to the credential that obtained it (credential_claims()).
BINDING_CLAIMS = ("via", "user_id", "token_id", "session_id")


def issue(settings: Settings, server_base: str, repo_id: int, key: str, scope: str, ref: str,
          credential: Mapping[str, Any], *, pull_request: bool = False) -> XetToken:
    """A token for the CAS of `repo_id` (incarnation `key`) bound to `credential`; the caller has already
    made the hub's authz check. Each use re-decides what its holder may do (reading file contents included).
    `pull_request`: a write token for a pull request's contents (its holder needs REPO_CONTENT_UPLOAD, not
    REPO_WRITE)."""
    ttl = settings.xet_token_ttl_seconds
    exp = int(time.time()) + ttl
    claims = {"repo_id": repo_id, "repo_key": key, "scope": scope, "ref": ref, **_binding(credential)}
    if pull_request:
        claims["pr"] = True
    token = capability.sign(settings.secret_key, CAS_PURPOSE, claims, ttl)
    return XetToken(token, exp, cas_url(settings, server_base, repo_id, key))


def _binding(claims: Mapping[str, Any]) -> dict[str, Any]:
    return {k: claims[k] for k in BINDING_CLAIMS if k in claims}


def verify(settings: Settings, authorization: str | None) -> dict[str, Any]:
    """The claims of the bearer CAS token in an Authorization header; XetTokenRejected (401) otherwise."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise XetTokenRejected("A Xet CAS token is required (Authorization: Bearer <token from "
                               "/api/{type}s/{repo}/xet-read-token/{revision}>)")
    token = value.strip()
    try:
        return capability.verify(settings.secret_key, CAS_PURPOSE, token)
    except Forbidden:
        if _unverified_exp(token) < time.time():
            raise XetTokenRejected("The Xet CAS token has expired; request a new one from the xet-read-token "
                                   "or xet-write-token route") from None
        raise XetTokenRejected("Invalid Xet CAS token") from None


def _unverified_exp(token: str) -> float:
    # Only chooses the error message after verification failed; decides nothing.
    try:
        payload = token.split(".")[0]
        exp = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("exp")
        return float(exp) if isinstance(exp, int | float) else float("inf")
    except (ValueError, TypeError, AttributeError):
        return float("inf")


def fetch_token(settings: Settings, xorb_hex: str, http_range: str, cas_claims: Mapping[str, Any]) -> str:
    """A fetch URL's token, bound to the repo and credential of the CAS token that asked for it."""
    claims = {"xorb": xorb_hex, "range": http_range, "repo_id": cas_claims.get("repo_id"), **_binding(cas_claims)}
    return capability.sign(settings.secret_key, FETCH_PURPOSE, claims, settings.xet_fetch_url_ttl_seconds)


def verify_fetch(settings: Settings, token: str) -> dict[str, Any]:
    try:
        return capability.verify(settings.secret_key, FETCH_PURPOSE, token)
    except Forbidden:
        raise Forbidden("Invalid or expired Xet fetch URL; query the reconstruction again") from None

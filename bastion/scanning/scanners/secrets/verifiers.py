"""Pluggable verifiers: ask whether a found secret is live, per provider, off by default.

A Verifier turns a raw secret into live / invalid / unknown. Third-party verifiers call the
provider's "who am I" endpoint; base URLs are configurable so air-gapped installs point them at
nothing (they are only used when a registry is passed to the scanner) and tests at 127.0.0.1.

Bastion's own tokens are verified locally, not over HTTP: the token service registers a verifier
for detector id ``bastion.token`` at startup, e.g.
``registry.register(BASTION_TOKEN_DETECTOR, CallableVerifier(token_service.is_live))``.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Status = Literal["live", "invalid", "unknown"]
BASTION_TOKEN_DETECTOR = "bastion.token"


@dataclass(frozen=True)
class VerificationResult:
    status: Status
    detail: str = ""


LIVE = VerificationResult("live")
INVALID = VerificationResult("invalid")


@runtime_checkable
class Verifier(Protocol):
    def verify(self, secret: str) -> VerificationResult:
        """Never raises for provider trouble: answer "unknown" instead."""
        ...


@dataclass(frozen=True)
class CallableVerifier:
    """Adapts a function (True live, False invalid, None unknown), e.g. a database lookup."""

    check: Callable[[str], bool | None]

    def verify(self, secret: str) -> VerificationResult:
        result = self.check(secret)
        if result is None:
            return VerificationResult("unknown")
        return LIVE if result else INVALID


@dataclass(frozen=True)
class HttpVerifier:
    """One authenticated request to a provider endpoint; the status code decides."""

    provider: str
    base_url: str
    path: str
    auth: Callable[[str], dict[str, str]]
    method: str = "GET"
    timeout: float = 5.0
    # Some APIs (Slack) answer 200 with {"ok": false}: the body decides there.
    body_ok: Callable[[dict[str, object]], bool | None] | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Only http(s): a misconfigured file:// or custom-scheme endpoint must not be opened.
        if not self.base_url.startswith(("https://", "http://")):
            raise ValueError(f"{self.provider}: verifier endpoint must be an http(s) URL")

    def verify(self, secret: str) -> VerificationResult:
        url = self.base_url.rstrip("/") + self.path
        headers = {"User-Agent": "bastion-secret-verifier", **self.extra_headers, **self.auth(secret)}
        data = b"" if self.method == "POST" else None
        # The scheme is checked in __post_init__, which is what S310 asks for.
        request = urllib.request.Request(url, data=data, headers=headers, method=self.method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                status, body = response.status, response.read(65536)
        except urllib.error.HTTPError as exc:
            status, body = exc.code, b""
            exc.close()
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            return VerificationResult("unknown", f"{self.provider}: {type(exc).__name__}")
        if status in (401, 403):
            return VerificationResult("invalid", f"{self.provider}: HTTP {status}")
        if not 200 <= status < 300:
            # 429s and 5xx say nothing about the secret.
            return VerificationResult("unknown", f"{self.provider}: HTTP {status}")
        if self.body_ok is None:
            return LIVE
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            return VerificationResult("unknown", f"{self.provider}: unreadable body")
        verdict = self.body_ok(parsed) if isinstance(parsed, dict) else None
        if verdict is None:
            return VerificationResult("unknown", f"{self.provider}: unexpected body")
        return LIVE if verdict else INVALID


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _slack_ok(body: dict[str, object]) -> bool | None:
    if body.get("ok") is True:
        return True
    if body.get("error") in ("invalid_auth", "account_inactive", "token_revoked", "token_expired", "not_authed"):
        return False
    return None


def _basic(secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{secret}:".encode()).decode()}


DEFAULT_ENDPOINTS: dict[str, str] = {
    "huggingface": "https://huggingface.co",
    "github": "https://api.github.com",
    "openai": "https://api.openai.com",
    "slack": "https://slack.com",
    "anthropic": "https://api.anthropic.com",
    "gitlab": "https://gitlab.com",
    "stripe": "https://api.stripe.com",
    "npm": "https://registry.npmjs.org",
    "groq": "https://api.groq.com",
    "replicate": "https://api.replicate.com",
}


def http_verifiers(endpoints: Mapping[str, str] | None = None, timeout: float = 5.0) -> dict[str, HttpVerifier]:
    """The built-in "who am I" verifiers, keyed by provider; `endpoints` overrides base URLs."""
    base = {**DEFAULT_ENDPOINTS, **(endpoints or {})}

    def make(provider: str, path: str, auth: Callable[[str], dict[str, str]], **kw: object) -> HttpVerifier:
        return HttpVerifier(provider, base[provider], path, auth, timeout=timeout, **kw)  # type: ignore[arg-type]

    return {
        "huggingface": make("huggingface", "/api/whoami-v2", _bearer),
        "github": make("github", "/user", lambda s: {"Authorization": f"token {s}"},
                       extra_headers={"Accept": "application/vnd.github+json"}),
        "openai": make("openai", "/v1/models", _bearer),
        "slack": make("slack", "/api/auth.test", _bearer, method="POST", body_ok=_slack_ok),
        "anthropic": make("anthropic", "/v1/models", lambda s: {"x-api-key": s},
                          extra_headers={"anthropic-version": "2023-06-01"}),
        "gitlab": make("gitlab", "/api/v4/personal_access_tokens/self", lambda s: {"PRIVATE-TOKEN": s}),
        "stripe": make("stripe", "/v1/balance", _basic),
        "npm": make("npm", "/-/whoami", _bearer),
        "groq": make("groq", "/openai/v1/models", _bearer),
        "replicate": make("replicate", "/v1/account", _bearer),
    }


class VerifierRegistry:
    """Verifiers keyed by detector id (most specific) or provider. Empty means: verify nothing."""

    def __init__(self, verifiers: Mapping[str, Verifier] | None = None) -> None:
        self._verifiers: dict[str, Verifier] = dict(verifiers or {})

    def register(self, key: str, verifier: Verifier) -> None:
        """Register at runtime, e.g. the local Bastion token lookup under BASTION_TOKEN_DETECTOR."""
        if not isinstance(verifier, Verifier):
            raise TypeError("verifier must have a verify(secret) method")
        self._verifiers[key] = verifier

    def unregister(self, key: str) -> None:
        self._verifiers.pop(key, None)

    def find(self, detector_id: str, provider: str) -> Verifier | None:
        return self._verifiers.get(detector_id) or self._verifiers.get(provider)

    def __len__(self) -> int:
        return len(self._verifiers)

    @classmethod
    def with_http(
        cls,
        endpoints: Mapping[str, str] | None = None,
        *,
        providers: set[str] | None = None,
        timeout: float = 5.0,
    ) -> VerifierRegistry:
        """Opt in to third-party verification (all built-ins, or only `providers`)."""
        built = http_verifiers(endpoints, timeout)
        return cls({p: v for p, v in built.items() if providers is None or p in providers})

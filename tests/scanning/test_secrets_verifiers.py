"""Verifier tests against a fake provider on 127.0.0.1: live, revoked, unreachable, off by default."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bastion.scanning.scanners.secrets import (
    BASTION_TOKEN_DETECTOR,
    CallableVerifier,
    SecretScanner,
    VerifierRegistry,
)
from bastion.scanning.scanners.secrets.verifiers import http_verifiers
from bastion.tokens.format import generate

LIVE_HF = "hf_" + "QwErTyUiOpAsDfGhJkLzXcVbNmQwErTyUi"
DEAD_HF = "hf_" + "ZxCvBnMqWeRtYuIoPaSdFgHjKlZxCvBnMq"
LIVE_SLACK = "xoxb-583920174652-4829301746583-Ab3De6Gh9Jk2Mn5Pq8St1Vw4"


class FakeProviders(BaseHTTPRequestHandler):
    """Answers like the providers' "who am I" endpoints, recording what it was asked."""

    requests: list[tuple[str, str, str]] = []

    def _answer(self) -> None:
        auth = self.headers.get("Authorization", "")
        FakeProviders.requests.append((self.command, self.path, auth))
        if self.path == "/api/whoami-v2":
            status, body = (200, {"name": "alice"}) if auth == f"Bearer {LIVE_HF}" else (401, {"error": "bad"})
        elif self.path == "/user":
            status, body = 503, {"message": "down for maintenance"}
        elif self.path == "/api/auth.test":
            ok = auth == f"Bearer {LIVE_SLACK}"
            status, body = 200, ({"ok": True, "user": "bot"} if ok else {"ok": False, "error": "invalid_auth"})
        else:
            status, body = 404, {}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        pass


@pytest.fixture
def provider_url() -> Iterator[str]:
    FakeProviders.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeProviders)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _registry(url: str) -> VerifierRegistry:
    return VerifierRegistry.with_http({p: url for p in http_verifiers()}, timeout=2)


def test_live_and_revoked_tokens(provider_url: str) -> None:
    scanner = SecretScanner(verifiers=_registry(provider_url))
    findings = scanner.scan_text(f"A={LIVE_HF}\nB={DEAD_HF}\nC={LIVE_HF}\n", "x.env")
    assert [(f.line, f.verification, f.verified) for f in findings] == [
        (1, "api", True), (2, "api", False), (3, "api", True),
    ]
    # The same secret is asked about once per scan.
    assert [r[1] for r in FakeProviders.requests].count("/api/whoami-v2") == 2


def test_slack_answers_in_the_body(provider_url: str) -> None:
    scanner = SecretScanner(verifiers=_registry(provider_url))
    dead = LIVE_SLACK[:-4] + "Zz99"
    findings = scanner.scan_text(f"{LIVE_SLACK}\n{dead}\n", "s.txt")
    assert [(f.verification, f.verified) for f in findings] == [("api", True), ("api", False)]
    assert all(r[0] == "POST" for r in FakeProviders.requests)


def test_provider_outage_keeps_the_offline_result(provider_url: str) -> None:
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "make_corpus", Path(__file__).parent / "secrets_corpus" / "make_corpus.py"
    )
    assert spec and spec.loader
    mc = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_corpus", mc)
    spec.loader.exec_module(mc)
    token = mc.Fakes(5).github("ghp")
    scanner = SecretScanner(verifiers=_registry(provider_url))
    (finding,) = scanner.scan_text(f"GITHUB_TOKEN={token}", ".env")
    assert (finding.verification, finding.verified) == ("checksum", True)
    assert "verification unavailable" in finding.note
    assert FakeProviders.requests[0][2] == f"token {token}"


def test_unreachable_endpoint_is_unknown_not_invalid() -> None:
    registry = VerifierRegistry.with_http({"huggingface": "http://127.0.0.1:9"}, providers={"huggingface"}, timeout=1)
    (finding,) = SecretScanner(verifiers=registry).scan_text(f"T={LIVE_HF}", "a")
    assert (finding.verification, finding.verified) == ("none", False)
    assert "verification unavailable" in finding.note


def test_verification_is_off_by_default(provider_url: str) -> None:
    (finding,) = SecretScanner().scan_text(f"T={LIVE_HF}", "a")
    assert finding.verification == "none"
    assert FakeProviders.requests == []


def test_bastion_tokens_use_a_runtime_registered_local_verifier() -> None:
    live, revoked = generate(), generate()
    asked: list[str] = []

    def lookup(token: str) -> bool | None:
        asked.append(token)
        return token == live

    registry = VerifierRegistry()
    registry.register(BASTION_TOKEN_DETECTOR, CallableVerifier(lookup))
    findings = SecretScanner(verifiers=registry).scan_text(f"a={live}\nb={revoked}\n", "f")
    assert [(f.verification, f.verified) for f in findings] == [("api", True), ("api", False)]
    assert asked == [live, revoked]
    with pytest.raises(TypeError):
        registry.register("x", object())  # type: ignore[arg-type]


def test_a_crashing_verifier_does_not_lose_the_finding() -> None:
    def broken(_: str) -> bool:
        raise RuntimeError("db down")

    registry = VerifierRegistry({BASTION_TOKEN_DETECTOR: CallableVerifier(broken)})
    (finding,) = SecretScanner(verifiers=registry).scan_text(f"t={generate()}", "f")
    assert (finding.verification, finding.verified) == ("checksum", True)
    assert "verification unavailable" in finding.note

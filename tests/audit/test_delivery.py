"""Streaming audit events: the outbox is written with the event (and rolled back with it), an HTTPS webhook
receives HMAC-signed batches, failures back off exponentially on the worker's clock, end as dead letters and
are re-driven; syslog receives RFC 5424 messages in RFC 6587 frames over TCP and TLS."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bastion import audit
from bastion.audit import delivery
from bastion.audit.actions import AuditAction
from bastion.audit.context import AuditContext, bind_context
from bastion.audit.models import AuditOutbox
from bastion.audit.worker import AuditWorker
from bastion.config import Settings
from bastion.db import transaction, utcnow
from bastion.errors import BadRequest
from bastion.hub import Hub
from tests.audit.sinks import SyslogListener, WebhookReceiver, self_signed

SECRET = "s3cret-webhook-key-0123456789"


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


@pytest.fixture
def hub(tmp_path: Path, certs: tuple[Path, Path]) -> Iterator[Hub]:
    h = Hub.open(Settings(data_dir=tmp_path / "data", scanners=[], audit_sink_ca_file=certs[0],
                          audit_delivery_max_attempts=3))
    yield h
    h.close()


def _sink(hub: Hub, kind: str, url: str, secret: str | None = None) -> int:
    with transaction(hub.sessions) as s:
        return delivery.create_sink(s, hub.settings.secret_key, kind, url, secret, None).id


def _events(hub: Hub, n: int, start: int = 0) -> list[int]:
    ids = []
    with bind_context(AuditContext(actor_name="dora", ip="192.0.2.4", via="api")):
        for i in range(start, start + n):
            with transaction(hub.sessions) as s:
                ids.append(audit.record(s, AuditAction.TOKEN_REVOKE, target=("token", str(i)), namespace="dora").id)
    return ids


def _outbox(hub: Hub) -> list[tuple[int, str, int]]:
    with transaction(hub.sessions, readonly=True) as s:
        return [(o.event_id, o.state, o.attempts) for o in s.scalars(select(AuditOutbox).order_by(AuditOutbox.id))]


def test_the_outbox_row_commits_and_rolls_back_with_its_event(hub: Hub, certs: tuple[Path, Path]) -> None:
    _sink(hub, "webhook", "https://127.0.0.1:9/hook", SECRET)
    with pytest.raises(RuntimeError), transaction(hub.sessions) as s:
        audit.record(s, AuditAction.TOKEN_REVOKE, target=("token", "x"))
        raise RuntimeError("the act failed")
    assert _outbox(hub) == []
    [eid] = _events(hub, 1)
    assert _outbox(hub) == [(eid, "pending", 0)]


def test_webhook_batches_are_signed_retried_with_backoff_dead_lettered_and_redriven(
        hub: Hub, certs: tuple[Path, Path]) -> None:
    receiver = WebhookReceiver(SECRET, *certs)
    try:
        _sink(hub, "webhook", receiver.url, SECRET)
        worker = AuditWorker(hub.sessions, hub.settings)
        ids = _events(hub, 3)
        t0 = utcnow()
        assert worker.tick(t0)["delivered"] == 3
        assert receiver.ids() == ids and receiver.bad_signatures == 0 and _outbox(hub) == []
        first = receiver.events[0]
        assert first["type"] == "token.revoke" and first["author"]["user"] == "dora" and first["ip"] == "192.0.2.4"

        # The receiver fails: the next attempts wait 2 s, then 4 s (the worker's clock, not sleeps).
        receiver.fail = 100
        more = _events(hub, 2, start=3)
        t1 = utcnow()
        assert worker.tick(t1)["delivered"] == 0 and receiver.requests == 2
        assert {(a, s) for _, s, a in _outbox(hub)} == {(1, "pending")}
        assert worker.tick(t1 + timedelta(seconds=1.9))["delivered"] == 0 and receiver.requests == 2  # not yet due
        worker.tick(t1 + timedelta(seconds=2))
        assert receiver.requests == 3 and {a for _, _, a in _outbox(hub)} == {2}
        worker.tick(t1 + timedelta(seconds=5.9))
        assert receiver.requests == 3
        worker.tick(t1 + timedelta(seconds=6))  # the third failure: max attempts reached
        assert receiver.requests == 4 and _outbox(hub) == [(more[0], "dead", 3), (more[1], "dead", 3)]
        worker.tick(t1 + timedelta(hours=2))
        assert receiver.requests == 4  # dead letters wait for an administrator
        with transaction(hub.sessions, readonly=True) as s:
            letters = delivery.dead_letters(s)
        assert [d["eventId"] for d in letters] == more and letters[0]["lastError"] == "OSError: HTTP 500"

        receiver.fail = 0
        with transaction(hub.sessions) as s:
            assert delivery.redrive(s, t1 + timedelta(hours=2)) == 2
        assert worker.tick(t1 + timedelta(hours=2))["delivered"] == 2
        assert receiver.ids() == ids + more and _outbox(hub) == []
    finally:
        receiver.close()


def test_a_receiver_with_another_secret_refuses_the_signature(hub: Hub, certs: tuple[Path, Path]) -> None:
    receiver = WebhookReceiver("another-secret-entirely-0000", *certs)
    try:
        _sink(hub, "webhook", receiver.url, SECRET)
        _events(hub, 1)
        AuditWorker(hub.sessions, hub.settings).tick(utcnow())
        assert receiver.bad_signatures == 1 and receiver.events == [] and _outbox(hub)[0][1:] == ("pending", 1)
    finally:
        receiver.close()


def test_an_untrusted_certificate_is_a_failed_delivery(tmp_path: Path, certs: tuple[Path, Path]) -> None:
    hub = Hub.open(Settings(data_dir=tmp_path / "plain", scanners=[]))  # no CA file: the self-signed cert fails
    receiver = WebhookReceiver(SECRET, *certs)
    try:
        _sink(hub, "webhook", receiver.url, SECRET)
        _events(hub, 1)
        AuditWorker(hub.sessions, hub.settings).tick(utcnow())
        assert receiver.requests == 0 and "CERTIFICATE_VERIFY_FAILED" in (_last_error(hub) or "")
    finally:
        receiver.close()
        hub.close()


def _last_error(hub: Hub) -> str | None:
    with transaction(hub.sessions, readonly=True) as s:
        return s.scalar(select(AuditOutbox.last_error))


RFC5424 = re.compile(rb"^<(\d+)>1 (\S+) (\S+) bastion - (\S+) \[meta sequenceId=\"(\d+)\"\] \xef\xbb\xbf(\{.*\})$")


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_syslog_over_tcp_and_tls(hub: Hub, certs: tuple[Path, Path], tls: bool) -> None:
    listener = SyslogListener(*certs) if tls else SyslogListener()
    try:
        _sink(hub, "syslog", listener.url)
        ids = _events(hub, 3)
        with bind_context(AuditContext(via="web")), transaction(hub.sessions) as s:
            ids.append(audit.record(s, AuditAction.USER_LOGIN_FAILED, target=("user", "dora")).id)
        assert AuditWorker(hub.sessions, hub.settings).tick(utcnow())["delivered"] == 4
        deadline = utcnow() + timedelta(seconds=10)
        while len(listener.messages) < 4 and utcnow() < deadline:
            listener.thread.join(0.05)
        parsed = [RFC5424.match(m) for m in listener.messages]
        assert all(parsed), listener.messages
        assert [int(p.group(5)) for p in parsed] == ids  # type: ignore[union-attr]
        assert [p.group(4) for p in parsed] == [b"token.revoke"] * 3 + [b"user.login_failed"]  # type: ignore[union-attr]
        # authpriv (10): info for acts, warning for failures
        assert [int(p.group(1)) for p in parsed] == [86, 86, 86, 84]  # type: ignore[union-attr]
        assert _outbox(hub) == []
    finally:
        listener.close()


def test_syslog_listener_down_backs_off(hub: Hub) -> None:
    listener = SyslogListener()
    url = listener.url
    listener.close()  # nobody listens there now
    _sink(hub, "syslog", url)
    _events(hub, 1)
    worker = AuditWorker(hub.sessions, hub.settings)
    t0 = utcnow()
    worker.tick(t0)
    assert _outbox(hub)[0][1:] == ("pending", 1) and "ConnectionRefusedError" in (_last_error(hub) or "")


@pytest.mark.parametrize(("kind", "url", "secret", "message"), [
    ("webhook", "http://127.0.0.1/hook", SECRET, "https://"),
    ("webhook", "https://127.0.0.1/hook", "short", "16 to 200"),
    ("syslog", "udp://127.0.0.1:514", None, "UDP is not supported"),
    ("syslog", "tcp://127.0.0.1", None, "tcp://host:port"),
    ("syslog", "tls://127.0.0.1:6514", SECRET, "for webhooks"),
    ("kafka", "https://x", None, "'webhook' or 'syslog'"),
])
def test_sinks_bastion_cannot_serve_are_refused(hub: Hub, kind: str, url: str, secret: str | None,
                                                 message: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(message)), transaction(hub.sessions) as s:
        delivery.create_sink(s, hub.settings.secret_key, kind, url, secret, None)

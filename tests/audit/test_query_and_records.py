"""The read side without a server: `q` parsing, IPv6 network matching on canonical text, anonymising,
GeoIP lookups in a built database, a refused GeoIP setting, and a sentence for every audited action."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from bastion.audit.actions import AuditAction
from bastion.audit.geoip import Locator
from bastion.audit.models import AuditEvent
from bastion.audit.query import anonymize_ip, filter_clause, ipv6_text_prefixes, parse_filter
from bastion.audit.records import MESSAGES, AuthorFacts, RecordContext, TokenFacts, hub_record, message
from bastion.config import Settings
from bastion.errors import BadRequest


def test_q_syntax() -> None:
    f = parse_filter("type:repo.create type:org.* author:alice ip:81.2.69.160 ip:2a02:cf40::/32")
    assert f.types == ("repo.create", "org.*") and f.authors == ("alice",)
    assert [str(n) for n in f.ips] == ["81.2.69.160/32", "2a02:cf40::/32"]
    assert [str(n) for n in parse_filter("ip:81.2.69.160", anonymized=True).ips] == ["81.2.69.0/24"]
    assert [str(n) for n in parse_filter("ip:2a02:cf40:1:2::5", anonymized=True).ips] == ["2a02:cf40:1::/48"]
    assert parse_filter(None).types == () and parse_filter("  ").authors == ()
    f = parse_filter(None, "2026-01-02", "2026-01-02")
    assert (f.start, f.end) == (datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC))
    assert parse_filter(None, "2026-01-02T10:00:00+02:00").start == datetime(2026, 1, 2, 8, tzinfo=UTC)
    for bad in ["free text", "type:", "kind:x", "type:repo;drop", "author:" + "a" * 200, "ip:1.2.3.4/33",
                "ip:1.2.3.0/20", "ip:2001:db8::/40", " ".join(["type:a"] * 21)]:
        with pytest.raises(BadRequest):
            parse_filter(bad)
    with pytest.raises(BadRequest):
        parse_filter(None, "2026-13-01")


def test_ipv6_networks_match_canonical_text_exactly() -> None:
    """For networks on group boundaries, the SQL's text patterns select exactly the addresses in the network
    (checked against ipaddress on many seeded addresses rich in zero groups, where `::` moves)."""
    rnd = random.Random(18)
    engine = sa.create_engine("sqlite://")
    AuditEvent.__table__.create(engine)
    addresses = set()
    while len(addresses) < 4000:
        groups = [rnd.choice((0, 0, 0, 1, 5, 0xDB8, 0x2001, 0xCF40)) for _ in range(8)]
        addr = ipaddress.IPv6Address(b"".join(g.to_bytes(2, "big") for g in groups))
        if addr.ipv4_mapped is None and "." not in str(addr):
            addresses.add(addr)
    with engine.begin() as conn:
        conn.execute(AuditEvent.__table__.insert(), [
            {"id": i + 1, "created_at": datetime.now(UTC), "action": "user.login", "ip": str(a), "via": "api",
             "target_type": "user", "target_id": "x", "details": {}, "prev_hash": "", "hash": str(i)}
            for i, a in enumerate(sorted(addresses))])
    for net in ["2001:db8:1::/48", "2001:db8::/48", "2001::/48", "::/48", "0:0:5::/48", "2001:0:0:1::/64",
                "1:0:0:0:5::/80", "::/16", "cf40::/16", "0:0:0:0:0:0:0:0/112", "2001:db8::/32"]:
        network = ipaddress.ip_network(net)
        where = filter_clause(parse_filter(f"ip:{net} type:user.login"))
        with engine.connect() as conn:
            got = {ipaddress.ip_address(ip) for ip in conn.scalars(sa.select(AuditEvent.ip).where(where))}
        assert got == {a for a in addresses if a in network}, (net, ipv6_text_prefixes(network))
    engine.dispose()


def test_anonymize() -> None:
    assert anonymize_ip("203.0.113.77") == "203.0.113.0"
    assert anonymize_ip("2001:db8:1:2:3::9") == "2001:db8:1::"
    assert anonymize_ip("::ffff:198.51.100.9") == "198.51.100.0"
    assert anonymize_ip(None) is None and anonymize_ip("not-an-ip") == "not-an-ip"


def test_geoip_locations(geoip_db: Path) -> None:
    loc = Locator(geoip_db)
    assert loc.locate("81.2.69.160") == {"formatted": "London, United Kingdom", "country": "United Kingdom",
                                         "city": "London"}
    assert loc.locate("2a02:cf40:9::1") == {"formatted": "Paris, France", "country": "France", "city": "Paris"}
    assert loc.locate("89.160.20.112") == {"formatted": "Sweden", "country": "Sweden"}
    for nowhere in ("8.8.8.8", "127.0.0.1", "10.1.2.3", "garbage", None):
        assert loc.locate(nowhere) is None
    assert Locator(None).locate("81.2.69.160") is None


def test_a_geoip_setting_that_cannot_be_read_is_refused(tmp_path: Path, geoip_db: Path) -> None:
    assert Settings(data_dir=tmp_path, geoip_database=geoip_db).geoip_database == geoip_db.resolve()
    (tmp_path / "bad.mmdb").write_bytes(b"not a database")
    for path in (tmp_path / "missing.mmdb", tmp_path / "bad.mmdb"):
        with pytest.raises(ValidationError, match="not a readable MaxMind database"):
            Settings(data_dir=tmp_path, geoip_database=path)


def test_every_audited_action_has_a_sentence() -> None:
    assert set(MESSAGES) == set(AuditAction)
    for action in AuditAction:
        ev = AuditEvent(id=1, created_at=datetime.now(UTC), action=str(action), actor_id=7, actor_name="alice",
                        via="api", target_type="repo", target_id="model/acme/bert", details={"reason": "why"})
        text = message(ev, "alice")
        assert text and "{" not in text and "  " not in text, action


def test_record_shape_for_deleted_authors_and_tokens() -> None:
    ev = AuditEvent(id=42, created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), action="token.create", actor_id=7,
                    actor_name="old-name", ip="203.0.113.9", user_agent="ua", token_id=9, via="api",
                    target_type="token", target_id="9", details={"name": "ci"})
    gone = hub_record(ev, RecordContext({}, {}, Locator(None)))
    assert gone["author"] == {"_id": f"{7:024x}", "user": "old-name", "type": "user", "deleted": True}
    assert gone["token"] == {"type": "access_token", "id": f"{9:024x}", "deleted": True}
    assert gone["createdAt"] == "2026-01-02T03:04:05.000Z" and gone["_id"] == f"{42:024x}"
    here = hub_record(ev, RecordContext({7: AuthorFacts("new-name")}, {9: TokenFacts("write", "abcd")},
                                        Locator(None), anonymize=True))
    assert here["author"]["user"] == "new-name" and "deleted" not in here["author"]
    assert here["token"] == {"type": "access_token", "id": f"{9:024x}", "deleted": False, "role": "write",
                             "last4": "abcd"}
    assert here["ip"] == "203.0.113.0" and here["message"] == "new-name created the access token ci"


def test_anonymized_addresses_as_targets() -> None:
    ev = AuditEvent(id=5, created_at=datetime.now(UTC), action="token.auth_failed", actor_id=None, actor_name=None,
                    ip="198.51.100.23", user_agent=None, token_id=None, via="api", target_type="ip",
                    target_id="198.51.100.23", details={"reason": "unknown token"})
    shown = hub_record(ev, RecordContext({}, {}, Locator(None), anonymize=True))
    assert shown["ip"] == "198.51.100.0" and shown["data"]["target"] == {"type": "ip", "id": "198.51.100.0"}
    assert "198.51.100.23" not in str(shown)
    assert hub_record(ev, RecordContext({}, {}, Locator(None)))["data"]["target"]["id"] == "198.51.100.23"

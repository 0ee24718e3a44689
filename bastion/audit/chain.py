"""The audit chain's links and their proof: public SHA-256 links, each keyed with an HMAC the database cannot forge.

Version 1 (events written before the keyed chain): `hash = SHA-256(prev_hash "\n" fields)`.
Version 2: `hash = SHA-256(prev_hash "\n" fields + id + version + key id)`, and `mac = HMAC-SHA256(key, hash)`
under the audit key, which lives in a file outside the database (`BASTION_AUDIT_KEY_FILE`, default
`DATA_DIR/audit_key`, created 0600 at first start). The hashes stay computable by anyone holding an
export, so signed checkpoints (`checkpoints.py`) prove an export outside Bastion; the MACs stop
someone who can write the database from rewriting the events after the last checkpoint. Version 2
ids are consecutive, so a deleted event is named by its id.

The key file also pins the last version 1 event (`legacy-until N`, written when the file is first
loaded against a database): a version 1 event after it is a forgery (someone recomputed the chain
without the key), not an old event.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

GENESIS = "0" * 64
V1, V2 = 1, 2
MAC_CONTEXT = b"bastion-audit-v2\n"
# The chained fields, in the order the verifier reads them (chain records carry exactly these).
CHAINED = ("created_at", "action", "actor_id", "actor_name", "ip", "user_agent", "token_id", "via", "target_type",
           "target_id", "namespace", "details")


class AuditKeyError(RuntimeError):
    """The audit key file is missing what verification needs, or cannot be written."""


# ---- the key file -------------------------------------------------------------------------------

@dataclass
class Keyring:
    """Every audit key by id (the last one signs new events) and the last version 1 event."""

    path: Path
    keys: dict[str, bytes] = field(default_factory=dict)
    current: str = ""
    legacy_until: int | None = None

    @classmethod
    def read(cls, path: Path) -> Keyring:
        ring = cls(path)
        for n, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if parts[0] == "key" and len(parts) == 3:
                ring.keys[parts[1]] = bytes.fromhex(parts[2])
                ring.current = parts[1]
            elif parts[0] == "legacy-until" and len(parts) == 2 and parts[1].isdigit():
                ring.legacy_until = int(parts[1])
            else:
                raise AuditKeyError(f"{path}:{n}: not a line of an audit key file")
        if not ring.current:
            raise AuditKeyError(f"{path}: no key in the audit key file")
        return ring

    @classmethod
    def load_or_create(cls, path: Path) -> Keyring:
        """Read the key file, creating it (0600, one key) if it does not exist. Two processes starting
        together agree on one file: it is created with O_EXCL."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            body = ("# Bastion audit chain keys (HMAC-SHA256). Not in the database on purpose: keep it apart,\n"
                    "# back it up apart. The last key signs new events; older ones verify older events.\n"
                    f"key {_new_key_id()} {secrets.token_hex(32)}\n")
            # Written whole under a temporary name, then linked: link() fails if another process won the race,
            # and nobody ever reads a half-written key file.
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(body)
                    fh.flush()
                    os.fsync(fh.fileno())
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        return cls.read(path)

    def _append(self, line: str) -> None:
        try:
            with self.path.open("a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                fh.write(line + "\n")
        except OSError as exc:
            raise AuditKeyError(f"cannot write the audit key file {self.path}: {exc}") from None

    def pin_legacy(self, last_v1_id: int) -> None:
        """Record (once) the id of the last unkeyed event: later unkeyed events are forgeries."""
        with self.path.open("a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # one process writes it; the others read what it wrote
            fh.seek(0)
            current = Keyring.read(self.path)
            if current.legacy_until is None:
                fh.write(f"legacy-until {last_v1_id}\n")
                self.legacy_until = last_v1_id
            else:
                self.legacy_until = current.legacy_until

    def rotate(self) -> str:
        """Add a new key; it signs every event from now on (the old ones still verify theirs)."""
        key_id = _new_key_id()
        self._append(f"key {key_id} {secrets.token_hex(32)}")
        fresh = Keyring.read(self.path)
        self.keys, self.current = fresh.keys, fresh.current
        return key_id

    def mac(self, key_id: str, link: str) -> str:
        key = self.keys.get(key_id)
        if key is None and self.path.exists():  # rotated by another process since this one read the file
            fresh = Keyring.read(self.path)
            self.keys.update(fresh.keys)
            key = self.keys.get(key_id)
        if key is None:
            raise AuditKeyError(f"audit key {key_id!r} is not in {self.path}")
        return hmac.new(key, MAC_CONTEXT + link.encode(), hashlib.sha256).hexdigest()


def _new_key_id() -> str:
    return secrets.token_hex(4)


# The keyring of each database this process writes to, by URL (Hub.open installs it; tests open many hubs).
_keyrings: dict[str, Keyring] = {}


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def install(engine: Engine, key_file: Path) -> Keyring:
    """Load the audit key for this database (creating it at first start) and pin the last unkeyed event."""
    from bastion.audit.models import AuditEvent

    ring = Keyring.load_or_create(key_file)
    if ring.legacy_until is None:
        with engine.connect() as conn:
            last = conn.execute(select(func.max(AuditEvent.id)).where(AuditEvent.chain_version == V1)).scalar()
        ring.pin_legacy(int(last or 0))
    _keyrings[_url(engine)] = ring
    return ring


def keyring_for(session: Session) -> Keyring:
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    ring = _keyrings.get(_url(engine))
    if ring is None:
        raise AuditKeyError("no audit key loaded for this database: open it through Hub.open() or call "
                            "bastion.audit.chain.install(engine, settings.resolved_audit_key_file)")
    return ring


# ---- links --------------------------------------------------------------------------------------

def canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()


def link_hash(record: dict[str, Any]) -> str:
    """The hash a chain record (see `chain_record`) must carry: anyone can compute it."""
    fields = {name: record.get(name) for name in CHAINED}
    if record.get("v", V1) >= V2:
        fields.update(id=record["id"], v=record["v"], key_id=record["key_id"])
    return hashlib.sha256(record["prev_hash"].encode() + b"\n" + canonical(fields)).hexdigest()


def anchor_link(last_id: int, last_hash: str, count: int) -> str:
    """What an anchor's MAC covers."""
    return f"anchor {last_id} {last_hash} {count}"


def chain_record(ev: Any) -> dict[str, Any]:
    """An event as the chain sees it: what its hash covers, its link and its MAC (the archive's and the
    verifier's format; `ev` is an AuditEvent or a row with the same columns)."""
    created = ev.created_at
    return {"id": ev.id, "v": ev.chain_version, "key_id": ev.key_id,
            "created_at": created.isoformat() if hasattr(created, "isoformat") else created,
            "action": ev.action, "actor_id": ev.actor_id, "actor_name": ev.actor_name, "ip": ev.ip,
            "user_agent": ev.user_agent, "token_id": ev.token_id, "via": ev.via, "target_type": ev.target_type,
            "target_id": ev.target_id, "namespace": ev.namespace, "details": ev.details,
            "prev_hash": ev.prev_hash, "hash": ev.hash, "mac": ev.mac}


# ---- verification -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Anchor:
    """Where a chain starts: the genesis, or the last event removed by retention (id, hash, events through it)."""

    last_id: int = 0
    last_hash: str = GENESIS
    count: int = 0


@dataclass(frozen=True)
class Problem:
    event_id: int
    kind: str  # edited | forged | deleted | reordered | unlinked | downgraded | unknown-key | checkpoint
    message: str

    def __str__(self) -> str:
        return f"event {self.event_id}: {self.kind}: {self.message}"


@dataclass
class Walk:
    """Where a verification got to: the last good event and how many it checked."""

    last_id: int
    last_hash: str
    count: int  # events in the chain through last_id (those removed by retention included)
    checked: int = 0
    problem: Problem | None = None
    redacted: int = 0  # events whose personal fields an account deletion pseudonymised (listed by its redaction)


def verify_records(records: Iterable[dict[str, Any]], *, anchor: Anchor = Anchor(), keyring: Keyring | None = None,
                   legacy_until: int | None = None, on_good: Any = None) -> Walk:
    """Walk chain records in id order and stop at the first one that is wrong. Without a keyring (outside
    Bastion) the MACs are not checked: signed checkpoints prove the hashes instead. `on_good(walk)` is
    called after each good event (checkpoints are compared there)."""
    walk = Walk(anchor.last_id, anchor.last_hash, anchor.count)
    seen: dict[str, int] = {}
    emptied: dict[int, list[int]] = {}  # purge event id -> the events it emptied (not reached yet)
    redacted: dict[int, dict[int, tuple[str, str | None]]] = {}  # redaction event id -> its events (not reached)
    last_v = V1
    if legacy_until is None and keyring is not None:
        legacy_until = keyring.legacy_until
    for rec in records:
        problem = (_check(rec, walk, seen, last_v, keyring, legacy_until) or _purges(rec, emptied)
                   or _redactions(rec, redacted, walk, anchor))
        if problem is not None:
            walk.problem = problem
            return walk
        seen[walk.last_hash] = walk.last_id
        walk.last_id, walk.last_hash, walk.count = rec["id"], rec["hash"], walk.count + 1
        walk.checked += 1
        last_v = rec["v"]
        if len(seen) > 4096:
            seen.clear()  # reordering is found among recent events; memory stays bounded
        if on_good is not None:
            problem = on_good(walk)
            if problem is not None:
                walk.problem = problem
                return walk
    if redacted and walk.problem is None:
        redaction_id, events = min(redacted.items(), key=lambda kv: min(kv[1]))
        walk.problem = Problem(min(events), "edited", f"its content was changed in the name of redaction event "
                                                      f"{redaction_id}, which is not in the chain")
        return walk
    if emptied:
        purge_id, ids = min(emptied.items(), key=lambda kv: kv[1][0])
        walk.problem = Problem(ids[0], "edited", f"its content was removed in the name of purge event {purge_id}, "
                                                 "which is not in the chain")
    return walk


def _purges(rec: dict[str, Any], emptied: dict[int, list[int]]) -> Problem | None:
    """An event emptied by an organization's retention keeps its link and MAC; the keyed purge event after it
    says how many it emptied, so emptying one more (to hide it) is found."""
    by = rec.get("purged_by")
    if by is not None:
        if by <= rec["id"]:
            return Problem(rec["id"], "edited", f"its content was removed in the name of event {by}, which is "
                                                "not a later purge")
        emptied.setdefault(by, []).append(rec["id"])
    ids = emptied.pop(rec["id"], None)
    if rec.get("action") == "org.audit_log.purge" or ids is not None:
        claimed = (rec.get("details") or {}).get("emptied", 0)
        if len(ids or []) != claimed:
            first = (ids or [rec["id"]])[0]
            return Problem(first, "edited", f"purge event {rec['id']} emptied {claimed} events, but "
                                            f"{len(ids or [])} events name it")
    return None


REDACTION_ACTION = "user.audit_redact"


def _redactions(rec: dict[str, Any], pending: dict[int, dict[int, tuple[str, str | None]]], walk: Walk,
                anchor: Anchor) -> Problem | None:
    """An account deletion pseudonymises the personal fields of the deleted user's events (actor name, address,
    user agent, their name and e-mail addresses wherever they appear). Such an event keeps its stored hash and
    MAC (the next event links to them) and names the keyed redaction event written after it, which lists it
    with that stored hash and the hash of its redacted content. So a redacted event verifies only if a later
    redaction event, itself intact and signed with the audit key, vouches for exactly its present content;
    it is counted as redacted, never taken for an original. What the personal fields said is gone by design."""
    eid = rec["id"]
    by = rec.get("redacted_by")
    if by is not None:
        if by <= eid:
            return Problem(eid, "edited", f"its content was changed in the name of event {by}, which is not a "
                                          "later redaction")
        content = None if rec.get("purged_by") is not None else link_hash(rec)  # emptied since: its purge vouches
        pending.setdefault(by, {})[eid] = (rec["hash"], content)
    named = pending.pop(eid, None)
    if rec.get("action") != REDACTION_ACTION:
        if named is not None:
            first = min(named)
            return Problem(first, "edited", f"its content was changed in the name of event {eid}, which is not a "
                                            "redaction")
        return None
    listed: dict[int, tuple[str, str]] = {}
    for entry in (rec.get("details") or {}).get("redacted") or []:
        if isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], int):
            listed[entry[0]] = (str(entry[1]), str(entry[2]))
    named = named or {}
    for event_id, (stored, content) in sorted(named.items()):
        entry = listed.get(event_id)
        if entry is None:
            return Problem(event_id, "edited", f"its content was changed in the name of redaction event {eid}, "
                                               "which does not list it")
        if entry[0] != stored:
            return Problem(event_id, "edited", f"redaction event {eid} lists it with another hash")
        if content is not None and entry[1] != content:
            return Problem(event_id, "edited", f"its content changed after redaction event {eid}")
    for event_id in sorted(listed):
        if event_id in named or event_id <= anchor.last_id:
            continue  # vouched for above, or removed by retention since
        if any(event_id in later for later_id, later in pending.items() if later_id > eid):
            continue  # redacted again by a later deletion (an event naming two deleted accounts)
        return Problem(event_id, "edited", f"redaction event {eid} lists it, but it does not name that redaction")
    walk.redacted += len(named)
    return None


def _check(rec: dict[str, Any], walk: Walk, seen: dict[str, int], last_v: int, keyring: Keyring | None,
           legacy_until: int | None) -> Problem | None:
    eid, version = rec["id"], rec.get("v") or V1
    if eid <= walk.last_id:
        return Problem(eid, "reordered", f"comes after event {walk.last_id}")
    if version == V1 and (last_v >= V2 or (legacy_until is not None and eid > legacy_until)):
        return Problem(eid, "downgraded", "an unkeyed (version 1) event where the chain is keyed: the chain was "
                                          "recomputed without the audit key")
    if version >= V2 and eid != walk.last_id + 1:  # record() numbers each event after the chain's head
        missing = f"{walk.last_id + 1}" if eid == walk.last_id + 2 else f"{walk.last_id + 1}..{eid - 1}"
        return Problem(walk.last_id + 1, "deleted", f"event {missing} is missing (the next one is {eid})")
    if rec["prev_hash"] != walk.last_hash:
        if rec["prev_hash"] in seen:
            return Problem(eid, "reordered", f"links to event {seen[rec['prev_hash']]}, not to event {walk.last_id}")
        return Problem(eid, "unlinked",
                       f"does not link to event {walk.last_id} (an event before it was deleted, moved or its "
                       f"link edited)")
    if rec.get("purged_by") is None and rec.get("redacted_by") is None and link_hash(rec) != rec["hash"]:
        return Problem(eid, "edited", "its content does not match its hash")
    if version >= V2 and keyring is not None:
        if rec.get("key_id") not in keyring.keys and not _reload_has(keyring, rec.get("key_id")):
            return Problem(eid, "unknown-key", f"signed with audit key {rec.get('key_id')!r}, which is not in "
                                               f"{keyring.path}")
        if not hmac.compare_digest(keyring.mac(rec["key_id"], rec["hash"]), rec.get("mac") or ""):
            return Problem(eid, "forged", "its MAC does not match: the event was rewritten without the audit key")
    return None


def _reload_has(keyring: Keyring, key_id: Any) -> bool:
    try:
        keyring.mac(str(key_id), "")
    except AuditKeyError:
        return False
    return True


def iter_ndjson(lines: Iterable[bytes | str]) -> Iterator[dict[str, Any]]:
    for raw in lines:
        text = raw.decode() if isinstance(raw, bytes) else raw
        if text.strip():
            yield json.loads(text)

"""Storage fsck: re-verify that every stored object is what its key says it is.

The store's invariant (docs/architecture.md, invariant 8): bytes stored under oid X hash to X. Uploads
check it as they write; this walks what is on disk and in the database and reports -- never fixes --
every object that breaks it, so an operator learns of damage (a disk, a bug, a hand-edited file) before
a user downloads it. A genuine upload of a reported object replaces the damaged copy.

Checked: every LFS blob-store file (its sha256 is its name; its size the recorded one), every LFS object
stored only as Xet chunks (its reconstruction hashes to its oid), every xorb (fully parsed: each chunk
decoded and re-hashed, the Merkle hash recomputed and compared with its name) and every shard (sha256).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from bastion.db import transaction
from bastion.hub import Hub
from bastion.lfs.models import LfsObject
from bastion.storage import BlobStore
from bastion.storage.regions import DEFAULT_REGION
from bastion.xet.content import XetObject
from bastion.xet.errors import XorbFormatError
from bastion.xet.hashing import hash_to_hex, hex_to_hash
from bastion.xet.models import XetFile, XetXorb
from bastion.xet.service import load_xorbs, region_segments, unpack_segments, xorb_store
from bastion.xet.store import XorbStore
from bastion.xet.xorb import parse_xorb

BLOCK = 8 << 20


@dataclass
class Section:
    checked: int = 0
    bad: list[dict[str, str]] = field(default_factory=list)

    def report(self, key: str, problem: str) -> None:
        self.bad.append({"oid": key, "problem": problem})


@dataclass
class FsckReport:
    lfs: Section = field(default_factory=Section)
    xorbs: Section = field(default_factory=Section)
    shards: Section = field(default_factory=Section)

    @property
    def clean(self) -> bool:
        return not (self.lfs.bad or self.xorbs.bad or self.shards.bad)

    def as_json(self) -> dict[str, Any]:
        return {name: {"checked": s.checked, "bad": s.bad}
                for name, s in (("lfs", self.lfs), ("xorbs", self.xorbs), ("shards", self.shards))}


def _sha256_of(pieces: Iterable[bytes]) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    for piece in pieces:
        h.update(piece)
        n += len(piece)
    return h.hexdigest(), n


def _read_blocks(store: BlobStore, key: str) -> Iterable[bytes]:
    with store.open(key) as fh:
        yield from iter(lambda: fh.read(BLOCK), b"")


def _check_lfs(hub: Hub, report: Section, progress: Callable[[str], None]) -> None:
    with transaction(hub.sessions, readonly=True) as session:
        sizes = dict(session.execute(select(LfsObject.oid, LfsObject.size)).all())
    on_disk = set()
    for blobs, oid in ((hub.blobs_in(r), oid) for r in sorted(hub.regions) for oid in hub.blobs_in(r).stored_keys()):
        on_disk.add(oid)
        digest, size = _sha256_of(_read_blocks(blobs, oid))
        report.checked += 1
        if digest != oid:
            report.report(oid, f"sha256 mismatch: the stored bytes hash to {digest}")
        elif oid in sizes and int(sizes[oid]) != size:
            report.report(oid, f"size mismatch: {size} bytes stored, {sizes[oid]} recorded")
        if report.checked % 100 == 0:
            progress(f"lfs: {report.checked} objects checked")
    for oid, size in sorted(sizes.items()):
        if oid in on_disk:
            continue
        report.checked += 1
        with transaction(hub.sessions, readonly=True) as session:
            row = session.scalar(select(XetFile).where(XetFile.sha256 == oid).limit(1))
            if row is None:
                report.report(oid, "missing: recorded in the database, stored nowhere")
                continue
            # The region holding its chunks (the first whose own segments' first xorb it stores).
            region, segments = DEFAULT_REGION, unpack_segments(row.segments)
            for r in sorted(hub.regions):
                segs = region_segments(hub, r, row)
                if segs and xorb_store(hub, r).has_xorb(hash_to_hex(segs[0].xorb_hash)):
                    region, segments = r, segs
                    break
            xorbs = load_xorbs(session, {hash_to_hex(s.xorb_hash) for s in segments})
        if any(s.xorb_hash not in xorbs for s in segments):
            report.report(oid, "missing: a xorb of its Xet reconstruction is not stored")
            continue
        obj = XetObject(hub, int(row.size), segments, {h: x.layout for h, x in xorbs.items()}, region)
        try:
            digest, n = _sha256_of(obj.iter_bytes())
        except (ValueError, XorbFormatError, OSError) as exc:
            report.report(oid, f"Xet reconstruction failed: {exc}")
            continue
        if digest != oid:
            report.report(oid, f"sha256 mismatch: the Xet reconstruction hashes to {digest}")
        elif n != int(size):
            report.report(oid, f"size mismatch: {n} bytes reconstructed, {size} recorded")


def _check_xet(hub: Hub, report: FsckReport, progress: Callable[[str], None]) -> None:
    with transaction(hub.sessions, readonly=True) as session:
        recorded = dict(session.execute(select(XetXorb.hash, XetXorb.size)).all())
    on_disk: set[str] = set()
    for region in sorted(hub.regions):
        _check_xet_region(xorb_store(hub, region), recorded, on_disk, report, progress)
    for key in sorted(set(recorded) - on_disk):
        report.xorbs.checked += 1
        report.xorbs.report(key, "missing: recorded in the database, stored nowhere")


def _check_xet_region(store: XorbStore, recorded: dict[str, int], on_disk: set[str], report: FsckReport,
                      progress: Callable[[str], None]) -> None:
    for key in store.xorbs.stored_keys():
        on_disk.add(key)
        report.xorbs.checked += 1
        with store.xorbs.open(key) as fh:
            data = fh.read()
        try:
            parse_xorb(data, hex_to_hash(key))
        except XorbFormatError as exc:
            report.xorbs.report(key, str(exc))
            continue
        if key in recorded and int(recorded[key]) != len(data):
            report.xorbs.report(key, f"size mismatch: {len(data)} bytes stored, {recorded[key]} recorded")
        if report.xorbs.checked % 100 == 0:
            progress(f"xorbs: {report.xorbs.checked} checked")
    for key in store.shards.stored_keys():
        report.shards.checked += 1
        digest, _ = _sha256_of(_read_blocks(store.shards, key))
        if digest != key:
            report.shards.report(key, f"sha256 mismatch: the stored bytes hash to {digest}")


def fsck(hub: Hub, progress: Callable[[str], None] = lambda _msg: None) -> FsckReport:
    report = FsckReport()
    _check_lfs(hub, report.lfs, progress)
    _check_xet(hub, report, progress)
    return report

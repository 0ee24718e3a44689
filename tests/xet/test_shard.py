"""Shards: round trips, structural rejection, and verification of uploads against stored xorbs."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import struct

import pytest

from bastion.xet.errors import ShardFormatError
from bastion.xet.hashing import file_hash, hash_to_hex, hmac_chunk_hash, verification_range_hash
from bastion.xet.packing import pack_file
from bastion.xet.shard import (
    FOOTER_LEN,
    FileEntry,
    FileSegment,
    Shard,
    XorbEntry,
    dedupe_shard,
    parse_shard,
    serialize_shard,
    sha256_field,
    verify_upload_shard,
)
from bastion.xet.xorb import serialize_xorb


def two_files() -> tuple[list[FileEntry], list[XorbEntry], dict]:
    rng = random.Random(7)
    a = pack_file([rng.randbytes(700_000)])
    b = pack_file([rng.randbytes(300_000), bytes(100_000)])
    stored = {x.hash: x.chunk_list() for p in (a, b) for _, x in p.xorbs}
    return [a.file, b.file], [*a.xorb_entries, *b.xorb_entries], stored


@pytest.mark.parametrize("with_footer", [False, True])
def test_round_trip(with_footer: bool) -> None:
    files, xorbs, _ = two_files()
    body = serialize_shard(files, xorbs, with_footer=with_footer)
    shard = parse_shard(body)
    assert shard.files == tuple(files) and shard.xorbs == tuple(xorbs)
    assert (shard.footer is not None) is with_footer
    assert serialize_shard(shard.files, shard.xorbs, with_footer=False) == serialize_shard(
        files, xorbs, with_footer=False
    )
    if with_footer:
        assert shard.footer.footer_offset == len(body) - FOOTER_LEN
        assert shard.footer.chunk_lookup_num_entry == sum(len(x.chunks) for x in xorbs)


def test_sha256_field_reads_back_as_the_usual_hex() -> None:
    digest = hashlib.sha256(b"hello world").digest()
    entry = FileEntry(bytes(32), (), (), sha256_field(digest))
    assert entry.sha256_hex == digest.hex()
    packed = pack_file([b"hello world"])
    assert packed.file.sha256_hex == digest.hex()


def test_verify_accepts_a_consistent_upload() -> None:
    files, xorbs, stored = two_files()
    check = verify_upload_shard(parse_shard(serialize_shard(files, xorbs, with_footer=False)), stored.get)
    assert check.files == files
    assert check.xorbs == set(stored)


def shard_with(files: list[FileEntry], xorbs: list[XorbEntry] | None = None) -> Shard:
    return parse_shard(serialize_shard(files, xorbs or [], with_footer=False))


def test_verify_rejects_each_lie() -> None:
    files, xorbs, stored = two_files()
    f = files[0]
    seg = f.segments[0]
    bad = f"file {hash_to_hex(f.file_hash)}"

    missing = {k: v for k, v in stored.items() if k != seg.xorb_hash}
    with pytest.raises(ShardFormatError, match=f"references xorb {hash_to_hex(seg.xorb_hash)}, which does not"):
        verify_upload_shard(shard_with([f]), missing.get)

    wrong_proof = dataclasses.replace(f, verification=(os.urandom(32), *f.verification[1:]))
    with pytest.raises(ShardFormatError, match=f"{bad} term 0: verification hash"):
        verify_upload_shard(shard_with([wrong_proof]), stored.get)

    wrong_hash = dataclasses.replace(f, file_hash=os.urandom(32))
    with pytest.raises(ShardFormatError, match="reconstruct a file hashing to"):
        verify_upload_shard(shard_with([wrong_hash]), stored.get)

    size_lie = dataclasses.replace(f, segments=(dataclasses.replace(seg, unpacked_bytes=seg.unpacked_bytes + 1),))
    with pytest.raises(ShardFormatError, match="declares"):
        verify_upload_shard(shard_with([size_lie]), stored.get)

    past_end = dataclasses.replace(f, segments=(dataclasses.replace(seg, chunk_end=seg.chunk_end + 1),))
    with pytest.raises(ShardFormatError, match="is not inside"):
        verify_upload_shard(shard_with([past_end]), stored.get)

    no_proofs = dataclasses.replace(f, verification=None)
    with pytest.raises(ShardFormatError, match="no verification entries"):
        verify_upload_shard(shard_with([no_proofs]), stored.get)

    no_sha = dataclasses.replace(f, sha256=None)
    with pytest.raises(ShardFormatError, match="no sha256"):
        verify_upload_shard(shard_with([no_sha]), stored.get)
    verify_upload_shard(shard_with([no_sha]), stored.get, require_sha256=False)

    x = xorbs[0]
    lied = dataclasses.replace(x, chunks=(dataclasses.replace(x.chunks[0], unpacked_bytes=1), *x.chunks[1:]))
    with pytest.raises(ShardFormatError, match="does not match the stored xorb"):
        verify_upload_shard(shard_with([], [lied]), stored.get)
    with pytest.raises(ShardFormatError, match="num_bytes_in_cas"):
        verify_upload_shard(shard_with([], [dataclasses.replace(x, num_bytes_in_xorb=1)]), stored.get)


def test_a_file_may_reuse_chunks_of_another_files_xorb() -> None:
    files, _, stored = two_files()
    a = files[0]
    # A new file made of the second half of file a's first xorb: provable only with its chunks.
    h, n = a.segments[0].xorb_hash, a.segments[0].chunk_end
    chunks = stored[h][n // 2 : n]
    seg = FileSegment(h, sum(s for _, s in chunks), n // 2, n)
    entry = FileEntry(file_hash(chunks), (seg,), (verification_range_hash(c for c, _ in chunks),), bytes(32))
    assert verify_upload_shard(shard_with([entry]), stored.get).files == [entry]


def test_structural_rejections() -> None:
    files, xorbs, _ = two_files()
    body = serialize_shard(files, xorbs, with_footer=False)
    with pytest.raises(ShardFormatError, match="wrong header tag"):
        parse_shard(b"X" + body[1:])
    with pytest.raises(ShardFormatError, match="header version 3"):
        parse_shard(body[:32] + struct.pack("<Q", 3) + body[40:])
    with pytest.raises(ShardFormatError, match="footer_size is 7"):
        parse_shard(body[:40] + struct.pack("<Q", 7) + body[48:])
    with pytest.raises(ShardFormatError, match="truncated"):
        parse_shard(body[:-10])
    with pytest.raises(ShardFormatError, match="unexpected bytes"):
        parse_shard(body + bytes(48))
    huge = bytearray(body)
    huge[48 + 36 : 48 + 40] = struct.pack("<I", 2**31)  # num_entries of the first file
    with pytest.raises(ShardFormatError, match="truncated"):
        parse_shard(bytes(huge))
    with pytest.raises(ShardFormatError, match="limit is 100"):
        parse_shard(body, max_bytes=100)
    full = serialize_shard(files, xorbs)
    damaged = bytearray(full)
    damaged[-8:] = struct.pack("<Q", 12)  # footer_offset
    with pytest.raises(ShardFormatError, match="footer_offset"):
        parse_shard(bytes(damaged))
    damaged = bytearray(full)
    lookup = parse_shard(full).footer.chunk_lookup_offset
    damaged[lookup] ^= 1
    with pytest.raises(ShardFormatError, match="chunk lookup"):
        parse_shard(bytes(damaged))


def test_dedupe_shard_lets_only_chunk_owners_match() -> None:
    _, xorbs, stored = two_files()
    key = os.urandom(32)
    shard = parse_shard(dedupe_shard(xorbs, key, key_expiry=2_000_000_000))
    assert shard.files == () and shard.hmac_key == key
    assert shard.footer.shard_key_expiry == 2_000_000_000
    published = {c.chunk_hash for x in shard.xorbs for c in x.chunks}
    owned = next(iter(stored.values()))[3][0]
    assert owned not in published  # raw chunk hashes are never sent back
    assert hmac_chunk_hash(owned, key) in published
    with pytest.raises(ShardFormatError, match="HMAC"):
        verify_upload_shard(shard, stored.get)


def test_shard_of_real_serialized_xorbs_lists_their_layout() -> None:
    body, xorb = serialize_xorb([b"a" * 10_000, b"b" * 20_000])
    entry = XorbEntry.from_chunk_list(xorb.hash, xorb.chunk_list(), len(body))
    assert [c.byte_range_start for c in entry.chunks] == [0, 10_000]
    assert entry.num_bytes_in_xorb == 30_000 and entry.num_bytes_on_disk == len(body)

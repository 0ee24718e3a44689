"""Xet hashes against the reference implementation's published vectors and the real client."""

from __future__ import annotations

import json
import os
from pathlib import Path

import hf_xet
import pytest

from bastion.xet.chunking import iter_chunks
from bastion.xet.errors import InvalidHash
from bastion.xet.hashing import (
    ZERO_HASH,
    chunk_hash,
    file_hash,
    hash_to_hex,
    hex_to_hash,
    hmac_chunk_hash,
    is_global_dedup_eligible,
    keyed_hash,
    verification_range_hash,
    xorb_hash,
)

REFERENCE = json.loads((Path(__file__).parent / "data" / "merkle_reference.json").read_text())


def test_hash_string_uses_the_api_byte_order() -> None:
    # api.md "Converting Hashes to Strings", the worked example.
    h = bytes(range(32))
    s = hash_to_hex(h)
    assert s == "07060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918"
    assert hex_to_hash(s) == h
    assert hex_to_hash(s.upper()) == h


@pytest.mark.parametrize("bad", ["", "00" * 31, "zz" * 32, "0" * 65, " " + "0" * 63])
def test_malformed_hash_strings_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidHash):
        hex_to_hash(bad)


@pytest.mark.parametrize("case", REFERENCE["cases"], ids=lambda c: f"{len(c['leaves'])}-leaves")
def test_xet_core_reference_vectors(case: dict) -> None:
    """xet-core's test_correctness table: xorb hash and salted file hashes of fixed leaf lists."""
    leaves = [(hex_to_hash(h), n) for h, n in case["leaves"]]
    assert hash_to_hex(xorb_hash(leaves)) == case["xorb_hash"]
    for expected in case["file_hashes"]:
        assert hash_to_hex(file_hash(leaves, hex_to_hash(expected["salt"]))) == expected["file_hash"]


def test_single_chunk_tree_is_the_chunk_and_file_hash_rehashes_it() -> None:
    h = chunk_hash(b"hello world")
    assert xorb_hash([(h, 11)]) == h
    assert file_hash([(h, 11)]) == keyed_hash(ZERO_HASH, h)
    assert file_hash([]) == ZERO_HASH


def test_verification_hash_is_keyed_over_concatenated_chunk_hashes() -> None:
    hashes = [chunk_hash(bytes([i]) * 100) for i in range(5)]
    assert verification_range_hash(hashes) == verification_range_hash(iter(hashes))
    assert verification_range_hash(hashes) != verification_range_hash(hashes[:4])
    assert verification_range_hash(hashes[1:3]) != verification_range_hash(hashes[2:4])


def test_hmac_and_dedupe_eligibility() -> None:
    key = os.urandom(32)
    h = chunk_hash(b"x")
    assert hmac_chunk_hash(h, key) == keyed_hash(key, h) != h
    assert is_global_dedup_eligible(bytes(24) + (1024 * 7).to_bytes(8, "little"))
    assert not is_global_dedup_eligible(bytes(24) + (1024 * 7 + 1).to_bytes(8, "little"))


@pytest.mark.parametrize("size", [1, 11, 8191, 70_000, 1_000_000, 3_000_000])
def test_file_hash_matches_hf_xet(tmp_path: Path, size: int) -> None:
    """The real client's hash_files (chunking + chunk, merkle and file hashing) agrees with ours."""
    data = os.urandom(size // 2) + bytes(size - size // 2)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    (info,) = hf_xet.hash_files([str(path)])
    chunks = [(chunk_hash(c), len(c)) for c in iter_chunks(data)]
    assert info.file_size == size
    assert info.hash == hash_to_hex(file_hash(chunks))

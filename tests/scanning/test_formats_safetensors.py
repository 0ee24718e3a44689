"""The safetensors format scanner: valid files are safe, every kind of broken header is suspicious."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from bastion.scanning.results import Verdict
from bastion.scanning.scanners import model_formats
from tests.scanning.format_samples import MALICIOUS_PICKLE, safetensors_file

F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


def test_a_file_written_by_the_safetensors_library_is_safe(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    safetensors.numpy.save_file({"w": np.zeros((2, 3), np.float32), "b": np.arange(4, dtype=np.int64)}, str(path),
                                metadata={"format": "pt"})
    result = model_formats.scan_path(path)
    assert result.verdict is Verdict.SAFE, result.details
    assert result.scanner == "format" and result.scanner_version == model_formats.SCANNER_VERSION
    assert result.details["format"] == "safetensors" and result.details["tensors"] == 2
    assert result.details["dtypes"] == ["F32", "I64"] and result.details["metadataKeys"] == 1
    assert result.details["findings"] == []


def test_an_empty_header_with_no_tensors_is_valid(tmp_path: Path) -> None:
    assert model_formats.scan_path(safetensors_file(tmp_path / "e.safetensors", {})).verdict is Verdict.SAFE


@pytest.mark.parametrize(("header", "data", "length", "expected"), [
    (b"{}", b"", 1 << 62, "exceeds the 100000000-byte limit"),
    (b"{}", b"", 4096, "does not fit in a file"),
    (b'{"a": ', b"", None, "header is not JSON"),
    (b'{"\xff": 1}', b"", None, "header is not UTF-8"),
    (b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "a": '
     b'{"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', bytes(8), None, "duplicate key 'a'"),
    (b"[1, 2]", b"", None, "does not start with a JSON object"),
    ({"w": {"dtype": "F128", "shape": [2], "data_offsets": [0, 32]}}, bytes(32), None, "unknown dtype 'F128'"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8), None,
     "data_offsets do not match dtype and shape"),
    ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8), None, "bad shape"),
    ({"a": F32, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12), None, "overlaps"),
    ({"a": F32, "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}}, bytes(20), None,
     "leaves a gap before"),
    ({"a": F32}, bytes(4), None, "tensors cover 8 bytes, the data section holds 4"),
    ({"a": F32}, bytes(8) + MALICIOUS_PICKLE, None, "tensors cover 8 bytes"),
    ({"a": F32, "__metadata__": {"k": 1}}, bytes(8), None, "__metadata__ is not a string-to-string map"),
    ({"a": {**F32, "extra": 1}}, bytes(8), None, "entry is not {dtype, shape, data_offsets}"),
])
def test_broken_headers_are_suspicious_with_the_reason(tmp_path: Path, header: dict | bytes, data: bytes,
                                                       length: int | None, expected: str) -> None:
    path = safetensors_file(tmp_path / "m.safetensors", header, data, length)
    result = model_formats.scan_path(path)
    assert result.verdict is Verdict.SUSPICIOUS, result.details
    assert result.details["format"] == "safetensors"
    assert any(expected in f["message"] for f in result.details["findings"]), result.details["findings"]


def test_a_short_file_is_suspicious(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"\x02\x00")
    result = model_formats.scan_path(path)
    assert result.verdict is Verdict.SUSPICIOUS and "shorter than the 8-byte header" in result.summary


def test_a_pickle_named_safetensors_is_suspicious(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(MALICIOUS_PICKLE)
    result = model_formats.scan_path(path)
    assert result.verdict is Verdict.SUSPICIOUS and result.details["format"] == "safetensors"


def test_safetensors_content_under_another_name_is_still_judged(tmp_path: Path) -> None:
    broken = safetensors_file(tmp_path / "pytorch_model.bin", {"a": F32}, bytes(4))
    result = model_formats.scan_path(broken)
    assert result.details["format"] == "safetensors" and result.verdict is Verdict.SUSPICIOUS


def test_header_length_is_read_little_endian(tmp_path: Path) -> None:
    raw = b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack(">Q", len(raw)) + raw + b"\x00")
    result = model_formats.scan_path(path)
    assert result.verdict is Verdict.SUSPICIOUS and "exceeds" in result.summary

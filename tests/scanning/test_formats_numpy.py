"""The NumPy format scanner: strict .npy headers, .npz members, object arrays judged by the pickle scanner."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bastion.scanning.results import Verdict
from bastion.scanning.scanners import model_formats
from tests.scanning.format_samples import MALICIOUS_PICKLE, npy_header, object_npy


def _npy(tmp_path: Path, array: np.ndarray, name: str = "a.npy") -> Path:
    path = tmp_path / name
    np.save(path, array, allow_pickle=array.dtype.hasobject)
    return path


def _messages(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [f["message"] for f in result.details["findings"]]


@pytest.mark.parametrize("array", [
    np.arange(10), np.zeros((3, 4), np.float32, order="F"), np.array([], np.int8),
    np.zeros(3, dtype=[("x", "<f4"), ("y", "<i2")]), np.array(["ab", "c"]),
])
def test_numeric_arrays_are_safe(tmp_path: Path, array: np.ndarray) -> None:
    result = model_formats.scan_path(_npy(tmp_path, array))
    assert result.verdict is Verdict.SAFE, result.details
    assert result.details["format"] == "npy" and "objectArrays" not in result.details


def test_an_object_array_of_plain_data_is_safe_and_reported(tmp_path: Path) -> None:
    result = model_formats.scan_path(_npy(tmp_path, np.array([{"a": 1}, "x", None], dtype=object)))
    assert result.verdict is Verdict.SAFE, result.details
    assert result.details["objectArrays"] == 1
    assert result.details["pickleScans"][0]["status"] == "safe"


def test_an_object_array_carrying_a_malicious_pickle_is_unsafe(tmp_path: Path) -> None:
    path = tmp_path / "evil.npy"
    path.write_bytes(object_npy(MALICIOUS_PICKLE))
    result = model_formats.scan_path(path)
    assert result.verdict is Verdict.UNSAFE, result.details
    assert "imports os.system" in result.summary
    imports = result.details["pickleScans"][0]["imports"]
    assert [(i["module"], i["name"], i["safety"]) for i in imports] == [("os", "system", "dangerous")]


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("padding", [0, 200_000])  # larger than the header probe: read again whole
def test_a_malicious_object_array_inside_an_npz_is_unsafe(tmp_path: Path, compression: int, padding: int) -> None:
    benign = io.BytesIO()
    np.save(benign, np.arange(5))
    path = tmp_path / "arrays.npz"
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("ok.npy", benign.getvalue())
        # A pickle stops at STOP; what numpy.load does not read after it is padding.
        archive.writestr("evil.npy", object_npy(MALICIOUS_PICKLE) + bytes(padding))
    result = model_formats.scan_path(path)
    assert result.verdict is Verdict.UNSAFE, result.details
    assert result.details["format"] == "npz" and result.details["members"] == 2
    assert result.details["findings"][0]["location"] == "evil.npy"
    assert [a["name"] for a in result.details["arrays"]] == ["ok.npy", "evil.npy"]


def test_savez_and_savez_compressed_archives_are_safe(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    for name, save in (("a.npz", np.savez), ("b.npz", np.savez_compressed)):
        save(tmp_path / name, w=rng.standard_normal((64, 64)), b=np.arange(3))
        result = model_formats.scan_path(tmp_path / name)
        assert result.verdict is Verdict.SAFE, result.details
        assert result.details["members"] == 2


@pytest.mark.parametrize(("data", "expected"), [
    (npy_header({"descr": "<i8", "fortran_order": False, "shape": (2,)}) + bytes(16) + MALICIOUS_PICKLE,
     "bytes after the array data"),
    (npy_header({"descr": "<i8", "fortran_order": False, "shape": (4,)}) + bytes(16), "array data is truncated"),
    (npy_header({"descr": "<i8", "fortran_order": False, "shape": (2,), "extra": 1}) + bytes(16),
     "are not numpy's"),
    (npy_header({"descr": "<i8", "fortran_order": False, "shape": (-2,)}), "not a tuple of non-negative integers"),
    (npy_header({"descr": "<q9", "fortran_order": False, "shape": (2,)}) + bytes(16), "not a dtype numpy reads"),
    (npy_header({"descr": "<i8", "fortran_order": 1, "shape": (2,)}) + bytes(16), "fortran_order"),
    (b"\x93NUMPY\x01\x00\xff\xff{", "oversized or truncated"),
    (b"\x93NUMPY\x09\x00\x10\x00" + bytes(16), "unknown .npy version 9"),
    (b"\x93NUMPY\x01\x00\x10\x00__import__('os')" + bytes(8), "unreadable .npy header"),
])
def test_malformed_npy_files_are_suspicious(tmp_path: Path, data: bytes, expected: str) -> None:
    path = tmp_path / "m.npy"
    path.write_bytes(data)
    result = model_formats.scan_path(path)
    assert result.verdict is Verdict.SUSPICIOUS, result.details
    assert any(expected in m for m in _messages(result)), _messages(result)


def test_a_broken_npz_is_suspicious(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    path.write_bytes(b"PK\x03\x04" + bytes(26))
    result = model_formats.scan_path(path)
    assert result.verdict is Verdict.SUSPICIOUS and result.details["format"] == "npz"

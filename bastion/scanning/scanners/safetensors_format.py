"""The safetensors scanner: the 8-byte header length, the JSON header and every tensor's span.

Builds on the pickle scanner's header check (`pickles.formats.validate_safetensors`: dtypes, shapes
times dtype size, offsets in range, non-overlapping, covering the data area, `__metadata__`) and adds
what a loader trips over or an attacker hides in: absurd header sizes, duplicate keys (JSON readers
disagree on which one wins), a header that is not UTF-8 JSON, and the reference parser's own opinion
(`safetensors.safe_open` reads the header only; no tensor is ever loaded).
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path
from typing import Any

from bastion.scanning.results import ScanResult
from bastion.scanning.scanners.format_report import FormatReport
from bastion.scanning.scanners.pickles.formats import validate_safetensors

NAME = "safetensors"
VERSION = "1"
# The reference implementation refuses headers over 100 MB; so does the pickle scanner.
MAX_HEADER = 100 * 1000 * 1000


def sniff(head: bytes) -> bool:
    """A header length that fits a header and a JSON object right after it."""
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= MAX_HEADER and head[8:9] == b"{"


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _Duplicate(key)
        seen[key] = value
    return seen


def scan_path(path: Path) -> ScanResult:
    report = FormatReport(NAME)
    size = path.stat().st_size
    if size < 8:
        report.suspicious("header", f"file of {size} bytes is shorter than the 8-byte header length")
        return report.result(VERSION)
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        (n,) = struct.unpack("<Q", buf[:8])
        report.info["headerBytes"] = n
        if n > MAX_HEADER:
            report.suspicious("header", f"header length {n} exceeds the {MAX_HEADER}-byte limit loaders accept")
            return report.result(VERSION)
        if n < 2 or 8 + n > size:
            report.suspicious("header", f"header length {n} does not fit in a file of {size} bytes")
            return report.result(VERSION)
        raw = bytes(buf[8 : 8 + n])
        if raw[:1] != b"{":
            report.suspicious("header", "header does not start with a JSON object")
            return report.result(VERSION)
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
        except _Duplicate as exc:
            report.suspicious("header", f"duplicate key {str(exc)!r}: loaders disagree on which entry wins")
            return report.result(VERSION)
        except UnicodeDecodeError as exc:
            report.suspicious("header", f"header is not UTF-8: {exc}")
            return report.result(VERSION)
        except (ValueError, RecursionError) as exc:
            report.suspicious("header", f"header is not JSON: {exc}")
            return report.result(VERSION)
        del raw
        if not isinstance(header, dict):
            report.suspicious("header", "header is not a JSON object")
            return report.result(VERSION)
        meta = header.get("__metadata__")
        report.info["tensors"] = sum(1 for k in header if k != "__metadata__")
        report.info["dtypes"] = sorted({str(v.get("dtype")) for k, v in header.items()
                                        if k != "__metadata__" and isinstance(v, dict)})[:20]
        report.info["metadataKeys"] = len(meta) if isinstance(meta, dict) else 0
        del header
        for problem in validate_safetensors(buf, 0, size, MAX_HEADER):
            report.suspicious("header", problem)
    if not report.levels:  # a second opinion on a header this scanner accepts
        _reference_check(path, report)
    return report.result(VERSION)


def _reference_check(path: Path, report: FormatReport) -> None:
    """The safetensors library's own header validation (Rust): a header it refuses is not one a loader
    reads the way this scanner did."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            f.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        report.suspicious("header", f"the safetensors library refuses the file: {exc}")

"""The GGUF scanner: header, metadata and tensor table read with bounds, chat templates checked for injection.

Its own reader walks the header (magic, version, counts), every metadata key/value and every tensor's
entry with each length checked against the bytes left, so a hostile count or string length costs
nothing, and checks every tensor's data (sized with the `gguf` package's type table) inside the file,
aligned and unshared. The `gguf` package's GGUFReader (llama.cpp's Python reader) reads small files
as a second opinion: it builds a numpy array per metadata item, 37 s for a 150k-token vocabulary, so
a real model's vocabulary is read by ours alone. Every `tokenizer.chat_template*` string goes to
bastion.scanning.scanners.jinja_templates (parsed, never rendered).
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

from bastion.scanning.results import ScanResult, Verdict
from bastion.scanning.scanners import jinja_templates
from bastion.scanning.scanners.format_report import FormatReport

NAME = "gguf"
VERSION = "1"
MAGIC = b"GGUF"
MAX_KEY = 1 << 16
MAX_DIMS = 8  # GGML_MAX_DIMS is 4; readers accept up to this many
MAX_NESTING = 4
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
TEMPLATE_KEY = "tokenizer.chat_template"
REFERENCE_MAX_ITEMS = 20_000


def sniff(head: bytes) -> bool:
    return head[:4] == MAGIC


class _Malformed(Exception):
    pass


class _Reader:
    """Bounded reads from the mmap: every length is checked against what is left of the file."""

    def __init__(self, buf: Any, order: str) -> None:
        self.buf, self.order, self.pos, self.end = buf, order, 0, len(buf)
        self.items = 0  # metadata values read, array elements counted

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > self.end:
            raise _Malformed(f"truncated at byte {self.pos}")
        (value,) = struct.unpack_from(self.order + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self, limit: int | None = None) -> bytes:
        n = self.unpack("Q")
        if n > self.end - self.pos:
            raise _Malformed(f"string of {n} bytes at byte {self.pos} runs past the end of the file")
        if limit is not None and n > limit:
            raise _Malformed(f"string of {n} bytes at byte {self.pos} is over the {limit}-byte limit for it")
        raw = bytes(self.buf[self.pos : self.pos + n]) if limit is not None else b""
        self.pos += n
        return raw

    def count(self, n: int, min_item: int, what: str) -> int:
        if n * min_item > self.end - self.pos:
            raise _Malformed(f"{what} count {n} cannot fit in the {self.end - self.pos} bytes left")
        return n


def scan_path(path: Path) -> ScanResult:
    report = FormatReport(NAME)
    size = path.stat().st_size
    if size < 24:
        report.suspicious("header", f"file of {size} bytes is shorter than a GGUF header")
        return report.result(VERSION)
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        try:
            templates, items = _read(buf, report)
        except _Malformed as exc:
            report.suspicious("header", f"malformed GGUF: {exc}")
            return report.result(VERSION)
    for key, source in templates:
        try:
            text = source.decode("utf-8")
        except UnicodeDecodeError:
            report.suspicious(key, "chat template is not UTF-8")
            continue
        for finding in jinja_templates.check_template(text):
            report.add(_level(finding.unsafe), key, finding.message)
    report.info["chatTemplates"] = [key for key, _ in templates]
    if items <= REFERENCE_MAX_ITEMS:
        _reference_check(path, report)
    return report.result(VERSION)


def _level(unsafe: bool) -> Verdict:
    return Verdict.UNSAFE if unsafe else Verdict.SUSPICIOUS


def _read(buf: Any, report: FormatReport) -> tuple[list[tuple[str, bytes]], int]:
    """The chat templates, and how many metadata items (array elements counted) the file holds."""
    if buf[:4] != MAGIC:
        raise _Malformed("no GGUF magic")
    order = "<"
    (version,) = struct.unpack_from("<I", buf, 4)
    if version & 0xFFFF == 0 and version:  # written big-endian (the byte-swapped version)
        order = ">"
        (version,) = struct.unpack_from(">I", buf, 4)
    if version not in (2, 3):
        raise _Malformed(f"unsupported GGUF version {version} (2 and 3 are read)")
    r = _Reader(buf, order)
    r.pos = 8
    n_tensors = r.count(r.unpack("Q"), 8 + 4 + 4 + 8, "tensor")
    n_kv = r.count(r.unpack("Q"), 8 + 4 + 1, "metadata")
    report.info.update(version=version, byteOrder="big" if order == ">" else "little", tensors=n_tensors,
                       metadataKeys=n_kv)
    keys: set[str] = set()
    templates: list[tuple[str, bytes]] = []
    alignment = 32
    for _ in range(n_kv):
        at = r.pos
        try:
            key = r.string(MAX_KEY).decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed(f"metadata key at byte {at} is not UTF-8") from None
        if key in keys:
            raise _Malformed(f"duplicate metadata key {key!r}")
        keys.add(key)
        kind = r.unpack("I")
        if key.startswith(TEMPLATE_KEY) and kind == _STRING:
            templates.append((key, r.string(jinja_templates.MAX_TEMPLATE_CHARS * 4)))
        elif key == "general.alignment":
            if kind != 4:
                raise _Malformed("general.alignment is not a uint32")
            alignment = r.unpack("I")
            if alignment == 0 or alignment & (alignment - 1) or alignment % 8:
                raise _Malformed(f"general.alignment {alignment} is not a power of two multiple of 8")
        else:
            _skip_value(r, kind, 0)
    spans = []
    names: set[bytes] = set()
    for _ in range(n_tensors):
        at = r.pos
        name = r.string(MAX_KEY)
        if name in names:
            raise _Malformed(f"duplicate tensor name {name[:80]!r}")
        names.add(name)
        dims = r.unpack("I")
        if dims > MAX_DIMS:
            raise _Malformed(f"tensor at byte {at} has {dims} dimensions")
        elements = 1
        for _ in range(dims):
            elements *= r.unpack("Q")
            elements = min(elements, 1 << 64)  # past any file's size already: keep the number small
        kind = r.unpack("I")
        spans.append((at, name, elements, kind, r.unpack("Q")))
    report.info["alignment"] = alignment
    data_start = -(-r.pos // alignment) * alignment
    problem = _tensor_data_problem(spans, data_start, len(buf), alignment)
    if problem:
        report.suspicious("tensors", problem)  # the templates are still checked
    return templates, r.items


def _tensor_data_problem(entries: list[tuple[int, bytes, int, int, int]], data_start: int, size: int,
                         alignment: int) -> str | None:
    """What is wrong with where the tensors' bytes lie: each inside the file's data area, aligned,
    sized by its type, unshared (None: nothing)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    spans = []
    for _, raw_name, elements, kind, offset in entries:
        name = raw_name[:80].decode("utf-8", "replace")
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            return f"tensor {name!r} has unknown type {kind}"
        if elements % block:
            return f"tensor {name!r}: {elements} elements are not whole blocks of {block}"
        if offset % alignment:
            return f"tensor {name!r} data offset is not aligned to {alignment}"
        lo = data_start + offset
        hi = lo + elements // block * type_size
        if hi > size:
            return f"tensor {name!r} data [{lo}, {hi}) runs past the end of the file ({size} bytes)"
        spans.append((lo, hi, name))
    spans.sort()
    for (_, hi, first), (lo, _, second) in zip(spans, spans[1:], strict=False):
        if lo < hi:
            return f"tensor {second!r} data overlaps tensor {first!r}'s"
    return None


def _skip_value(r: _Reader, kind: int, depth: int) -> None:
    r.items += 1
    if kind in _SCALARS:
        r.unpack(_SCALARS[kind])
    elif kind == _STRING:
        r.string()
    elif kind == _ARRAY:
        if depth >= MAX_NESTING:
            raise _Malformed(f"arrays nested more than {MAX_NESTING} deep")
        item = r.unpack("I")
        if item in _SCALARS:
            n = r.count(r.unpack("Q"), struct.calcsize(_SCALARS[item]), "array")
            r.pos += n * struct.calcsize(_SCALARS[item])
            r.items += n
            return
        n = r.count(r.unpack("Q"), 8 if item == _STRING else 12, "array")
        for _ in range(n):
            _skip_value(r, item, depth + 1)
    else:
        raise _Malformed(f"unknown metadata value type {kind} at byte {r.pos - 4}")


def _reference_check(path: Path, report: FormatReport) -> None:
    """llama.cpp's Python reader on the same file, as a second opinion (on files with few metadata items)."""
    from gguf import GGUFReader

    try:
        GGUFReader(path)
    except (ValueError, KeyError, IndexError, OSError, struct.error) as exc:
        report.suspicious("header", f"the gguf reader refuses the file: {type(exc).__name__}: {exc}")

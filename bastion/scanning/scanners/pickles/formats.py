"""Readers for the non-pickle layers around pickles: compression, .npy headers, safetensors, Keras.

Each reader is bounded (output size, header size) and reports problems instead of raising them.
"""

from __future__ import annotations

import ast
import bz2
import json
import lzma
import math
import mmap
import re
import struct
import tempfile
import time
import zlib
from dataclasses import dataclass
from typing import Any

import lz4.frame

# -- compression -------------------------------------------------------------------------------

GZIP, BZ2, XZ, LZMA_ALONE, ZLIB, RAW_DEFLATE, LZ4 = "gzip", "bz2", "xz", "lzma", "zlib", "deflate", "lz4"
ZSTD = "zstd"
# A zip member's LZMA (method 14): a 4-byte header, the LZMA1 properties, then a raw LZMA1 stream.
ZIP_LZMA = "zip-lzma"
# Compressions Bastion cannot read (neither the standard library nor a dependency it already has:
# lz4 comes with Xet): what they hold cannot be examined.
UNREADABLE = (ZSTD,)


def sniff_compression(head: bytes) -> str | None:
    """The compression a stream starts with (the magics joblib and the stdlib write)."""
    if head[:3] == b"\x1f\x8b\x08":
        return GZIP
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] == b"1AY&SY":
        return BZ2
    if head[:6] == b"\xfd7zXZ\x00":
        return XZ
    if head[:3] == b"\x5d\x00\x00":
        return LZMA_ALONE
    if head[:4] == b"\x04\x22\x4d\x18":
        return LZ4
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return ZSTD
    if len(head) >= 2 and head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and (head[0] << 8 | head[1]) % 31 == 0:
        return ZLIB
    return None


def zip_lzma_filter(header: bytes) -> tuple[int, dict[str, int]]:
    """The length of a zip LZMA member's header and the LZMA1 filter it describes (APPNOTE 5.8.8):
    version (2 bytes), properties size (2), then lc/lp/pb packed in one byte and the dictionary size."""
    if len(header) < 4:
        raise ValueError("truncated LZMA header")
    (props_size,) = struct.unpack_from("<H", header, 2)
    if props_size != 5 or len(header) < 4 + props_size:
        raise ValueError(f"unsupported LZMA properties size {props_size}")
    packed, dict_size = header[4], struct.unpack_from("<I", header, 5)[0]
    if packed >= 9 * 5 * 5:
        raise ValueError("invalid LZMA properties")
    pb, rest = divmod(packed, 45)
    lp, lc = divmod(rest, 9)
    return 4 + props_size, {"id": lzma.FILTER_LZMA1, "dict_size": dict_size, "lc": lc, "lp": lp, "pb": pb}


def _new_decompressor(kind: str, lzma_filter: dict[str, int] | None = None) -> Any:
    if kind == ZIP_LZMA:
        return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma_filter or {}])
    if kind == GZIP:
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if kind == ZLIB:
        return zlib.decompressobj()
    if kind == RAW_DEFLATE:
        return zlib.decompressobj(-zlib.MAX_WBITS)
    if kind == BZ2:
        return bz2.BZ2Decompressor()
    if kind in (XZ, LZMA_ALONE):
        return lzma.LZMADecompressor(lzma.FORMAT_AUTO)
    if kind == LZ4:
        return lz4.frame.LZ4FrameDecompressor()  # the bz2/lzma interface: max_length, eof, needs_input
    raise ValueError(f"no decompressor for {kind}")


# Inflated bytes up to this size stay in memory; beyond it they go to a temporary file that the
# walk reads through a read-only mmap, so a large member costs disk and page cache, not heap.
SPOOL_OVER = 16 << 20
_IN_CHUNK = 64 << 10  # compressed bytes per step: the ratio is measured at this granularity
_OUT_CHUNK = 1 << 20  # the most one step inflates


@dataclass
class Decompressed:
    data: Any  # bytes, or a read-only mmap of a spooled temporary file: call close() when done
    complete: bool  # False when the output limit or the ratio limit cut it short
    problem: str | None  # corrupt or truncated stream
    bomb: str | None = None  # set when it inflated past the ratio limit (and was cut short there)
    _spool: Any = None

    def close(self) -> None:
        if self._spool is not None:
            mapped, file = self._spool
            if mapped is not None:
                mapped.close()
            file.close()
            self._spool = None


class _Sink:
    """Collects inflated bytes up to `limit`: in memory up to SPOOL_OVER, then in a temporary file."""

    def __init__(self, limit: int, spool_dir: str | None) -> None:
        self.limit = limit
        self.spool_dir = spool_dir
        self.pieces: list[bytes] = []
        self.size = 0
        self.file: Any = None

    def write(self, piece: bytes) -> None:
        piece = piece[: self.limit - self.size]
        if not piece:
            return
        if self.file is None and self.size + len(piece) > SPOOL_OVER:
            # Closed by Decompressed.close() (or discard()), after the walk that reads it.
            self.file = tempfile.TemporaryFile(prefix="bastion-inflate-", dir=self.spool_dir)  # noqa: SIM115
            for held in self.pieces:
                self.file.write(held)
            self.pieces = []
        if self.file is None:
            self.pieces.append(piece)
        else:
            self.file.write(piece)
        self.size += len(piece)

    def result(self, complete: bool, problem: str | None, bomb: str | None = None) -> Decompressed:
        if self.file is None:
            return Decompressed(b"".join(self.pieces), complete, problem, bomb)
        self.file.flush()
        mapped = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ)
        return Decompressed(mapped, complete, problem, bomb, (mapped, self.file))

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()


def bounded_decompress(kind: str, buf: Any, lo: int, hi: int, limit: int, deadline: float = math.inf, *,
                       max_ratio: int = 0, ratio_floor: int = 0, spool_dir: str | None = None,
                       lzma_filter: dict[str, int] | None = None) -> Decompressed:
    """Decompress buf[lo:hi] producing at most `limit` bytes by `deadline` (time.monotonic());
    multi-member streams are followed like the gzip/bz2/lzma readers do.

    Streaming, in bounded memory: at most _OUT_CHUNK bytes are inflated per step, and what is kept
    beyond SPOOL_OVER is spooled to disk. With `max_ratio`, inflation stops as soon as the output
    passes `ratio_floor` bytes and `max_ratio` times the compressed bytes consumed (a bomb).
    `lzma_filter`: for ZIP_LZMA, the filter its header describes (zip_lzma_filter)."""
    sink = _Sink(limit, spool_dir)
    try:
        return _inflate(kind, buf, lo, hi, limit, deadline, max_ratio, ratio_floor, sink, lzma_filter)
    except BaseException:
        sink.discard()
        raise


def _inflate(kind: str, buf: Any, lo: int, hi: int, limit: int, deadline: float, max_ratio: int,
             ratio_floor: int, sink: _Sink, lzma_filter: dict[str, int] | None = None) -> Decompressed:
    total = 0
    pos = lo
    d = _new_decompressor(kind, lzma_filter)
    is_zlib = kind in (GZIP, ZLIB, RAW_DEFLATE)
    pending = b""
    try:
        while total <= limit:
            if time.monotonic() > deadline:
                return sink.result(False, "time limit exceeded while decompressing")
            want = min(_OUT_CHUNK, limit + 1 - total)
            if is_zlib:
                if d.unconsumed_tail:
                    data = d.unconsumed_tail
                elif pending:
                    data, pending = pending, b""
                elif pos < hi:
                    data = bytes(buf[pos : min(hi, pos + _IN_CHUNK)])
                    pos += len(data)
                else:
                    break
                piece = d.decompress(data, want)
            else:
                if d.eof:
                    piece = b""
                elif not d.needs_input:
                    piece = d.decompress(b"", want)
                elif pending:
                    data, pending = pending, b""
                    piece = d.decompress(data, want)
                elif pos < hi:
                    data = bytes(buf[pos : min(hi, pos + _IN_CHUNK)])
                    pos += len(data)
                    piece = d.decompress(data, want)
                else:
                    break
            sink.write(piece)
            total += len(piece)
            if max_ratio and total > ratio_floor:
                consumed = pos - lo - (len(d.unconsumed_tail) if is_zlib else 0) - len(pending)
                if total > max_ratio * max(consumed, 1):
                    return sink.result(False, None, f"inflates more than {max_ratio} times its compressed size "
                                                    f"(a decompression bomb): only its first {total} bytes "
                                                    "were examined")
            if d.eof:
                rest = (d.unused_data or b"") + (pending if is_zlib else b"")
                if kind in (GZIP, BZ2, XZ, LZ4) and (rest or pos < hi):
                    # gzip/bz2/xz/lz4 readers continue with the next member (frame), so must we.
                    remaining = rest + bytes(buf[pos:hi]) if len(rest) + (hi - pos) <= _OUT_CHUNK else None
                    if remaining is not None and not remaining.strip(b"\x00"):
                        break
                    d = _new_decompressor(kind)
                    pending = rest
                    continue
                break
    except (zlib.error, OSError, EOFError, lzma.LZMAError, RuntimeError) as exc:  # lz4 raises RuntimeError
        return sink.result(total <= limit, f"corrupt {kind} stream: {exc}")
    problem = None if d.eof else f"truncated {kind} stream"
    return sink.result(total <= limit, problem)


# -- numpy .npy ---------------------------------------------------------------------------------

NPY_MAGIC = b"\x93NUMPY"
_MAX_NPY_HEADER = 1 << 16


@dataclass
class NpyHeader:
    data_offset: int
    has_object: bool
    descr: Any
    fields: dict[Any, Any] | None = None  # the whole header literal


def parse_npy_header(buf: Any, start: int, end: int) -> NpyHeader:
    """Parse a .npy header (a Python literal, read with literal_eval like numpy does); raises ValueError."""
    if buf[start : start + 6] != NPY_MAGIC or end - start < 10:
        raise ValueError("not a .npy file")
    major = buf[start + 6]
    if major == 1:
        (hlen,) = struct.unpack("<H", buf[start + 8 : start + 10])
        hstart = start + 10
    elif major in (2, 3):
        (hlen,) = struct.unpack("<I", buf[start + 8 : start + 12])
        hstart = start + 12
    else:
        raise ValueError(f"unknown .npy version {major}")
    if hlen > _MAX_NPY_HEADER or hstart + hlen > end:
        raise ValueError("oversized or truncated .npy header")
    text = bytes(buf[hstart : hstart + hlen]).decode("utf-8" if major == 3 else "latin-1")
    try:
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError, RecursionError, MemoryError) as exc:
        raise ValueError(f"unreadable .npy header: {exc}") from exc
    if not isinstance(header, dict) or "descr" not in header:
        raise ValueError(".npy header without descr")
    return NpyHeader(hstart + hlen, _descr_has_object(header["descr"]), header["descr"], header)


def _descr_has_object(descr: Any) -> bool:
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, list | tuple):
        return any(_descr_has_object(part) for part in descr)
    return True  # anything else is not a dtype numpy writes; assume the worst


# -- safetensors ------------------------------------------------------------------------------------

_ST_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16,
    "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "I64": 64, "U64": 64, "F64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


def looks_like_safetensors(buf: Any, start: int, end: int) -> bool:
    if end - start < 10:
        return False
    (n,) = struct.unpack("<Q", buf[start : start + 8])
    return 2 <= n <= end - start - 8 and buf[start + 8] == 0x7B  # '{'


def validate_safetensors(buf: Any, start: int, end: int, max_header: int) -> list[str]:
    """Problems with a safetensors header (empty when valid); tensor bytes are never read."""
    (n,) = struct.unpack("<Q", buf[start : start + 8])
    if n > max_header:
        return [f"header of {n} bytes exceeds the {max_header}-byte limit"]
    if start + 8 + n > end:
        return ["header runs past the end of the file"]
    try:
        header = json.loads(bytes(buf[start + 8 : start + 8 + n]).decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        return [f"header is not JSON: {exc}"]
    if not isinstance(header, dict):
        return ["header is not a JSON object"]
    problems: list[str] = []
    meta = header.pop("__metadata__", None)
    if meta is not None and not (
        isinstance(meta, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    ):
        problems.append("__metadata__ is not a string-to-string map")
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) - {"dtype", "shape", "data_offsets"}:
            problems.append(f"tensor {name!r}: entry is not {{dtype, shape, data_offsets}}")
            continue
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in _ST_BITS:
            problems.append(f"tensor {name!r}: unknown dtype {dtype!r}")
            continue
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            problems.append(f"tensor {name!r}: bad shape")
            continue
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            problems.append(f"tensor {name!r}: bad data_offsets")
            continue
        count = 1
        for d in shape:
            count *= d
        bits = count * _ST_BITS[dtype]
        lo, hi = offsets
        if bits % 8 or not 0 <= lo <= hi or hi - lo != bits // 8:
            problems.append(f"tensor {name!r}: data_offsets do not match dtype and shape")
            continue
        spans.append((lo, hi, name))
    spans.sort()
    cursor = 0
    for lo, hi, name in spans:
        if lo != cursor:
            problems.append(f"tensor {name!r}: {'overlaps' if lo < cursor else 'leaves a gap before'} its data")
        cursor = max(cursor, hi)
    data_len = end - start - 8 - n
    if cursor != data_len:
        problems.append(f"tensors cover {cursor} bytes, the data section holds {data_len}")
    return problems


# -- Keras ---------------------------------------------------------------------------------------------

_KERAS_OWN = re.compile(r"(keras|keras_hub|keras_nlp|keras_cv|tf_keras|tensorflow\.keras)(\.|$)")
_H5_LAMBDA = re.compile(rb'"class_name"\s*:\s*"(Lambda|TFOpLambda|SlicingOpLambda)"')


@dataclass
class CodeObject:
    module: str
    name: str
    dangerous: bool
    reason: str


def keras_config_code(config: Any) -> list[CodeObject]:
    """Objects in a Keras config that carry or import Python code (Lambda layers, custom objects)."""
    found: list[CodeObject] = []
    stack = [config]
    seen = 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > 1_000_000:
            found.append(CodeObject("keras", "config", False, "config too large to examine"))
            break
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        stack.extend(node.values())
        cls = node.get("class_name")
        module = node.get("module")
        if cls in ("Lambda", "TFOpLambda", "SlicingOpLambda", "__lambda__"):
            found.append(CodeObject(str(module or "keras.layers"), str(cls), True,
                                    "Lambda layer: Python bytecode or code that runs when the model loads"))
        elif isinstance(module, str) and isinstance(cls, str) and not _KERAS_OWN.match(module):
            name = node.get("config") if cls == "function" and isinstance(node.get("config"), str) else cls
            found.append(CodeObject(module, str(name), False,
                                    f"registered object from module {module!r} is imported when the model loads"))
    return found


def h5_lambda_layers(buf: Any, start: int, end: int) -> list[str]:
    """Lambda layer class names found in the raw bytes of a Keras HDF5 model_config attribute."""
    names = []
    pos = buf.find(b"Lambda", start, end)
    while pos >= 0:
        window = bytes(buf[max(start, pos - 64) : pos + 16])
        m = _H5_LAMBDA.search(window)
        if m:
            names.append(m.group(1).decode())
        pos = buf.find(b"Lambda", pos + 6, end)
    return names

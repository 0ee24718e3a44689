"""PickleScanner: finds every pickle in a file by content and classifies everything it would import.

It owns the container walk (zip, tar, npy/npz, joblib, compression, Keras, safetensors) and the verdict.

Over 500 lines on purpose: each container format is a short reader, and they nest (a zip in a tar in a
gzip); keeping the walk in one file keeps its one budget (depth, inflated size, members) in one place.
"""

from __future__ import annotations

import json
import mmap
import pickletools
import re
import struct
import tarfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.scanning.results import ImportSafety, ScanResult, Verdict
from bastion.scanning.scanners.pickles import formats
from bastion.scanning.scanners.pickles.policy import Classification, classify, is_dotted_identifier
from bastion.scanning.scanners.pickles.walker import (
    MAX_NOTES,
    Budget,
    BytesRef,
    Call,
    Global,
    PickleWalker,
    WalkError,
    WalkHooks,
    class_of,
)
from bastion.scanning.scanners.pickles.zipread import ZipFormatError, list_members, looks_like_zip, read_member

SCANNER_NAME = "pickle"
# Bump on every change to classification or container coverage: stored verdicts keyed by an older
# version are rescanned.
SCANNER_VERSION = "1.3.0"

_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PICKLES = 5  # magic, protocol version, sys info, the object, storage keys
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_CARVE = re.compile(rb"\x80[\x00-\x05]|c[A-Za-z_][A-Za-z0-9_.]{0,200}\n[A-Za-z_][A-Za-z0-9_.]{0,200}\n")
_NESTED_LOADER = ("torch.storage", "_load_from_bytes")
_PREFIX_PROBE = 1 << 16
_STORAGE_ELEMENT_SIZE = {
    "Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1, "Byte": 1,
    "Bool": 1, "ComplexDouble": 16, "ComplexFloat": 8, "QUInt8": 1, "QInt8": 1, "QInt32": 4, "QUInt4x2": 1,
    "QUInt2x4": 1, "Untyped": 1,
}
# Every byte the Unpickler accepts as an opcode (protocols 0-5), from the stdlib's opcode table.
_OPCODE_BYTES = frozenset(ord(op.code) for op in pickletools.opcodes)
_RANK = {ImportSafety.INNOCUOUS: 0, ImportSafety.SUSPICIOUS: 1, ImportSafety.DANGEROUS: 2}
CARRIED_REASON = "nested pickle carried as data (would run only if unpickled again)"
# Bounds of the bookkeeping for pickles carried as data: records kept for promotion, and how much of a
# call's arguments is searched for carried bytes.
_MAX_CARRIED_RECORDS = 10_000
_MAX_ARG_NODES = 2_000


@dataclass(frozen=True)
class ScanLimits:
    """Every bound the scanner enforces; exceeding one yields error/suspicious, never safe.

    Together they bound the scan's memory whatever the input: inflated bytes beyond 16 MiB are
    spooled to disk (`max_decompressed_bytes` of it at most), and the walker holds at most about
    70 bytes per reference it keeps (`max_kept` + `max_stack`, memo entries included) plus
    `max_held` bytes of string values; longer values are read in place, never copied.
    """

    max_file_bytes: int = 64 << 30
    max_decompressed_bytes: int = 4 << 30
    # A member or stream that inflates past the floor to more than this ratio is a decompression
    # bomb (deflate tops out near 1032:1; real data pickles stay far below 200:1).
    max_inflate_ratio: int = 200
    inflate_ratio_floor: int = 64 << 20
    max_opcodes: int = 50_000_000
    max_memo: int = 4_000_000
    max_kept: int = 10_000_000
    max_stack: int = 1_000_000
    max_marks: int = 100_000
    max_value: int = 1 << 20
    max_held: int = 256 << 20
    max_imports: int = 100_000
    max_depth: int = 6
    max_seconds: float = 600.0
    max_zip_members: int = 200_000
    max_safetensors_header: int = 100 << 20
    max_keras_config: int = 16 << 20  # parsed whole: a JSON of tiny lists costs ~30x its size
    max_nested_probes: int = 200_000
    max_carve_hits: int = 2_000_000


class _Pending:
    """Imports of the walk in progress, recorded once we know whether the walk could run them: one
    entry per distinct import (a walk may repeat one GLOBAL millions of times), at most `limit`."""

    def __init__(self, limit: int) -> None:
        self.imports: dict[tuple[Any, Any, str], list[Any]] = {}  # -> [count, locations]
        self.called = False
        self.limit = limit

    def add(self, module: Any, name: Any, where: str, opcode: str, offset: int) -> None:
        entry = self.imports.get((module, name, opcode))
        if entry is None:
            if len(self.imports) >= self.limit:
                raise WalkError(f"more than {self.limit} distinct imports", offset, limit=True)
            entry = self.imports[(module, name, opcode)] = [0, []]
        entry[0] += 1
        if len(entry[1]) < 20:
            entry[1].append(where)


@dataclass
class _Import:
    module: str
    name: str
    safety: ImportSafety
    reason: str
    locations: list[str] = field(default_factory=list)
    count: int = 0

    def merge(self, other: _Import) -> None:
        self.count += other.count
        self.locations.extend(other.locations[: max(0, 20 - len(self.locations))])


@dataclass
class _Carried:
    """What a pickle held as a bytes/str value would import if some code unpickled it a second time.

    Loading the file does not run it, so it is reported apart from the file's own imports, as
    suspicious; it is promoted to the file's own imports when the file hands those bytes to a
    callable that is not a known data constructor (pickle.loads, torch.storage._load_from_bytes, a
    custom class's constructor or __setstate__): then loading the file may well run it."""

    location: str
    data: Any  # the bytes object itself: keeps its id() unique while the record is kept
    imports: dict[tuple[str, str], _Import] = field(default_factory=dict)
    promoted: bool = False

    def flagged(self) -> bool:
        return any(r.safety is not ImportSafety.INNOCUOUS for r in self.imports.values())


class _Scan:
    """The state of one scan: every import seen, every problem, the shared limits."""

    def __init__(self, limits: ScanLimits, spool_dir: str | None = None) -> None:
        self.limits = limits
        self.spool_dir = spool_dir
        self.budget = Budget(limits.max_opcodes, limits.max_memo, time.monotonic() + limits.max_seconds,
                             max_kept=limits.max_kept, max_stack=limits.max_stack, max_marks=limits.max_marks,
                             max_value=limits.max_value, max_held=limits.max_held)
        self.imports: dict[tuple[str, str], _Import] = {}
        self.problems: list[dict[str, str]] = []
        self.notes: list[str] = []
        self.pickles = 0
        self.flags = 0  # non-innocuous imports plus problems: lets a nested scan tell whether it was clean
        self.decompressed = 0
        self.nested_probes = 0
        self.probed: dict[int, tuple[bytes, bool]] = {}
        self.loader_calls = 0
        self.loader_unverified = False
        self.formats: list[str] = []
        # Pickles carried as data: the bytes being examined as such (None: findings run on load), their
        # record (made on their first import), and the records by id() of their bytes, until the walk
        # that pushed those bytes ends or hands them to a callable.
        self.carrying: tuple[str, Any] | None = None
        self.carrier: _Carried | None = None
        self.carried: dict[int, _Carried] = {}
        self.carried_flagged: list[_Carried] = []
        self.carried_more = 0
        self.classified: dict[tuple[str, str], Classification] = {}

    # -- recording -------------------------------------------------------------------------------
    def problem(self, level: Verdict, where: str, message: str) -> None:
        self.flags += 1
        if len(self.problems) < 200:
            self.problems.append({"level": level.value, "location": where, "message": message})

    def add_import(self, module: Any, name: Any, where: str | list[str], opcode: str = "GLOBAL",
                   count: int = 1) -> None:
        mod = module if isinstance(module, str) else f"<computed {type(module).__name__}>"
        nm = name if isinstance(name, str) else f"<computed {type(name).__name__}>"
        target = self._target()
        rec = target.get((mod, nm))
        if rec is None:
            if len(target) >= self.limits.max_imports:
                raise WalkError(f"more than {self.limits.max_imports} distinct imports", 0, limit=True)
            c = self._classify(module, name)
            if opcode == "EXT":
                c = Classification(ImportSafety.SUSPICIOUS, "EXT opcode: imports whatever the loading process "
                                   "registered under this code with copyreg.add_extension")
            rec = target[(mod, nm)] = _Import(mod, nm, c.safety, c.reason)
        rec.count += count
        for location in [where] if isinstance(where, str) else where:
            if len(rec.locations) < 20:
                rec.locations.append(location)
        if rec.safety is not ImportSafety.INNOCUOUS:
            self.flags += count

    def _classify(self, module: Any, name: Any) -> Classification:
        """classify(), remembered per scan: carried pickles record the same imports over and over."""
        if not (isinstance(module, str) and isinstance(name, str)):
            return classify(module, name)
        c = self.classified.get((module, name))
        if c is None:
            c = classify(module, name)
            if len(self.classified) < self.limits.max_imports:
                self.classified[(module, name)] = c
        return c

    def _target(self) -> dict[tuple[str, str], _Import]:
        """Where an import found now is recorded: the file's own, or the carried pickle's record."""
        if self.carrying is None:
            return self.imports
        if self.carrier is None:
            self.carrier = _Carried(*self.carrying)
        return self.carrier.imports

    def note(self, message: str) -> None:
        if len(self.notes) < MAX_NOTES:
            self.notes.append(message)

    def add_code_object(self, module: str, name: str, dangerous: bool, reason: str, where: str) -> None:
        safety = ImportSafety.DANGEROUS if dangerous else ImportSafety.SUSPICIOUS
        if not dangerous:
            c = classify(module, name)
            if c.safety is ImportSafety.DANGEROUS:
                safety, reason = c.safety, f"{reason}; {c.reason}"
        rec = self._target().setdefault((module, name), _Import(module, name, safety, reason))
        rec.count += 1
        if len(rec.locations) < 20:
            rec.locations.append(where)
        self.flags += 1

    def check_time(self, where: str) -> None:
        if time.monotonic() > self.budget.deadline:
            raise WalkError(f"time limit exceeded in {where}", 0, limit=True)

    # -- dispatch --------------------------------------------------------------------------------
    def examine(self, buf: Any, start: int, end: int, where: str, depth: int, lenient: bool) -> None:
        """Find pickles in buf[start:end] by content. `lenient` marks content nobody is known to
        unpickle as a whole (archive members, embedded bytes): only what it would import can flag it."""
        if depth > self.limits.max_depth:
            self.problem(Verdict.SUSPICIOUS, where, "nesting depth limit exceeded")
            return
        self.check_time(where)
        if end <= start:
            self._label(depth, "empty")
            return
        head = bytes(buf[start : min(end, start + 300)])
        if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
            self._zip(buf, start, end, where, depth, lenient)
        elif head[:6] == formats.NPY_MAGIC:
            self._npy(buf, start, end, where, depth, lenient)
        elif formats.looks_like_safetensors(buf, start, end) and self._safetensors(buf, start, end, where, depth,
                                                                                   lenient):
            return
        elif head[:6] == b"7z\xbc\xaf\x27\x1c":
            # Not a format torch, numpy or joblib load, and not readable with the stdlib: say so.
            self._label(depth, "7z")
            self.problem(Verdict.CAUTION, where, "7z archive: its contents were not examined")
        elif head[:8] == _HDF5_MAGIC:
            self._hdf5(buf, start, end, where, depth)
        elif head[257:262] == b"ustar":
            self._tar(buf, start, end, where, depth)
            # A tar header starts with a free-form file name, so the same bytes can be a pickle too.
            self._pickles(buf, start, end, where, depth, lenient=True)
        elif (kind := self._compression(head, lenient)) is not None:
            self._decompress(kind, buf, start, end, where, depth, lenient)
        elif head[:2] == b"ZF" and (kind := self._joblib_zfile(head)) is not None:
            self._decompress(formats.ZLIB, buf, start + kind, end, where, depth, lenient)
        elif not lenient and depth == 0 and looks_like_zip(buf, start, end) and self._prefixed_zip(buf, start, end):
            # A zip behind a prefix (self-extracting style) is read by zip readers, while
            # pickle.load reads the prefix: examine both.
            self._zip(buf, start, end, where, depth, lenient)
            self._pickles(buf, start, end, where, depth, lenient=True)
        else:
            self._pickles(buf, start, end, where, depth, lenient)

    def _prefixed_zip(self, buf: Any, start: int, end: int) -> bool:
        """True when a central directory found near the end really lists members with local headers."""
        try:
            listing = list_members(buf, start, end, self.limits.max_zip_members)
        except ZipFormatError:
            return False
        return listing.central_directory and any(m.in_central_directory and m.data_offset >= 0
                                                 for m in listing.members)

    def _label(self, depth: int, fmt: str) -> None:
        if depth == 0 and fmt not in self.formats:
            self.formats.append(fmt)

    @staticmethod
    def _compression(head: bytes, lenient: bool) -> str | None:
        kind = formats.sniff_compression(head)
        if lenient and kind in (formats.ZLIB, formats.LZMA_ALONE, formats.LZ4, *formats.UNREADABLE):
            return None  # two- or three-byte magics occur by chance in tensor data
        return kind

    @staticmethod
    def _joblib_zfile(head: bytes) -> int | None:
        """Where the zlib data of a joblib < 0.10 "ZF" file starts: "ZF", hex(length) padded to 19
        characters (one more space in Python 2 files), then zlib."""
        if not re.fullmatch(rb"0x[0-9a-fA-F]+L? *", head[2:21]):
            return None
        return 22 if head[21:22] == b" " else 21

    # -- pickles ---------------------------------------------------------------------------------
    def _hooks(self, buf: Any, end: int, where: str, depth: int, lenient: bool) -> tuple[WalkHooks, _Pending]:
        pending = _Pending(self.limits.max_imports)

        def on_import(module: Any, name: Any, offset: int, opcode: str) -> None:
            if lenient and not (is_dotted_identifier(module) and is_dotted_identifier(name)):
                # In bytes nobody is known to unpickle, only an import that could succeed counts;
                # random tensor data produces EXT codes and garbage names by chance.
                raise WalkError("not a pickle: impossible import", offset)
            pending.add(module, name, f"{where}@{offset}", opcode, offset)

        def on_bytes(data: bytes | BytesRef, offset: int) -> None:
            self._probe(data, f"{where}@{offset}", depth)

        def on_call(func: Global, args: Any, offset: int) -> None:
            pending.called = True
            if self.carried and not self._innocuous(func):
                # Whatever it does with bytes it is given, it may unpickle them (pickle.loads).
                self._promote_reachable(args)
            if func.key() != _NESTED_LOADER:
                return
            self.loader_calls += 1
            arg = args[0] if isinstance(args, tuple) and args else None
            if isinstance(arg, Call):
                arg = arg.value
            if not isinstance(arg, bytes | BytesRef):
                self.loader_unverified = True
                return
            if not self._probe(arg, f"{where}@{offset}", depth, force=True):
                self.loader_unverified = True

        def on_nested(offset: int) -> int:
            walker = PickleWalker(buf, offset, end, self.budget, hooks)
            stop = walker.run()
            self.pickles += 1
            return stop

        def on_anomaly(message: str, offset: int) -> None:
            if lenient:
                raise WalkError(f"not a pickle: {message}", offset)
            self.problem(Verdict.SUSPICIOUS, f"{where}@{offset}", message)

        def on_handover(receiver: Any, value: Any) -> None:
            # BUILD hands a state to the object's __setstate__, a computed callable gets its arguments:
            # unless that is a known data constructor, it may unpickle bytes found there.
            if self.carried:
                cls = class_of(receiver)
                if cls is None or not self._innocuous(Global(cls[0], cls[1], 0)):
                    self._promote_reachable(value)

        hooks = WalkHooks(on_import, on_bytes, on_call, on_nested, on_anomaly, notes=self.notes,
                          on_handover=on_handover)
        return hooks, pending

    def _walk(
        self, buf: Any, pos: int, end: int, hooks: WalkHooks, pending: _Pending
    ) -> tuple[PickleWalker, WalkError | None, int]:
        """Walk one pickle and record what it imports: everything when it reaches STOP or calls
        something; when it breaks off before any call, only the dangerous imports (importing runs the
        module; "config\nmodel\n" in a text file merely looks like a GLOBAL opcode)."""
        pending.imports.clear()
        pending.called = False
        walker = PickleWalker(buf, pos, end, self.budget, hooks)
        error: WalkError | None = None
        carried = len(self.carried)
        try:
            walker.run()
        except WalkError as exc:
            error = exc
        finally:
            self._settle_carried(carried)
        committed = 0
        for (module, name, opcode), (count, locations) in pending.imports.items():
            if error is None or pending.called or classify(module, name).safety is ImportSafety.DANGEROUS:
                self.add_import(module, name, locations, opcode, count)
                committed += 1
        pending.imports.clear()
        return walker, error, committed

    def _probe(self, data: bytes | BytesRef, where: str, depth: int, force: bool = False) -> bool:
        """Scan bytes held by a pickle as a possible nested pickle; True when it is one and clean.
        A BytesRef is examined where it lies, in the buffer being walked."""
        cached = self.probed.get(id(data))
        if cached is not None and cached[0] is data:
            return cached[1]
        if len(data) < 4 and not force:
            return False
        if self.nested_probes >= self.limits.max_nested_probes:
            if force:
                self.problem(Verdict.SUSPICIOUS, where, "too many embedded byte strings to examine")
            return False
        self.nested_probes += 1
        flags, pickles = self.flags, self.pickles
        # Bytes a loader is called on (force) run on load; any other bytes are data until the walk
        # hands them to a callable (see _promote_reachable).
        carried = not force and self.carrying is None
        if carried:
            self.carrying = (where, data)
        try:
            if isinstance(data, BytesRef):
                self.examine(data.buf, data.lo, data.hi, f"{where}!bytes", depth + 1, lenient=True)
            else:
                self.examine(data, 0, len(data), f"{where}!bytes", depth + 1, lenient=True)
        finally:
            if carried:
                record, self.carrying, self.carrier = self.carrier, None, None
                if record is not None:
                    self._keep_carried(record)
        clean = self.flags == flags and self.pickles > pickles
        if len(self.probed) >= 10_000:
            self.probed.clear()
        self.probed[id(data)] = (data, clean)
        return clean

    def _keep_carried(self, record: _Carried) -> None:
        if len(self.carried) >= _MAX_CARRIED_RECORDS:
            # No room to remember these bytes until a call might consume them: judged as if they
            # ran on load (never the other way round). Known-safe imports lose nothing by waiting.
            if record.flagged():
                self._promote(record)
            return
        self.carried[id(record.data)] = record

    def _settle_carried(self, keep: int) -> None:
        """A walk ended: no later opcode can reach the bytes it pushed, so the records it made (those
        after the first `keep`) are final: carried as data unless promoted."""
        while len(self.carried) > keep:
            _, record = self.carried.popitem()
            record.data = None
            if record.promoted or not record.flagged():
                continue
            if len(self.carried_flagged) < 1000:
                self.carried_flagged.append(record)
            else:
                self.carried_more += 1

    def _promote(self, record: _Carried) -> None:
        """The file hands carried bytes to a callable: what they import counts as run on load."""
        if record.promoted:
            return
        record.promoted = True
        target = self._target()
        for key, rec in record.imports.items():
            if key in target:
                target[key].merge(rec)
            elif len(target) >= self.limits.max_imports:
                raise WalkError(f"more than {self.limits.max_imports} distinct imports", 0, limit=True)
            else:
                target[key] = rec

    def _innocuous(self, func: Any) -> bool:
        """True when `func` is a Global on the allowlist (a data constructor that unpickles nothing)."""
        return isinstance(func, Global) and self._classify(func.module, func.name).safety is ImportSafety.INNOCUOUS

    def _promote_reachable(self, value: Any) -> None:
        """Promote every carried record whose bytes are reachable from `value` (a call's arguments or a
        BUILD state), searching a bounded number of nodes; past the bound, every record still waiting
        is promoted, so a large argument cannot hide the bytes it passes."""
        if not self.carried:
            return
        stack = [value]
        seen = 0
        while stack:
            node = stack.pop()
            seen += 1
            if seen > _MAX_ARG_NODES:
                for record in self.carried.values():
                    if record.flagged():
                        self._promote(record)
                return
            if isinstance(node, bytes | BytesRef):
                record = self.carried.get(id(node))
                if record is not None and record.data is node:
                    self._promote(record)
            elif isinstance(node, tuple | list):
                stack.extend(node)  # a PDict is a list of (key, value) tuples
            elif isinstance(node, Call):
                stack.append(node.value)
                stack.append(node.args)
                stack.append(node.state)

    def _pickles(self, buf: Any, start: int, end: int, where: str, depth: int, lenient: bool,
                 expect_pickle: bool = False) -> int:
        """Walk pickles back to back (legacy torch and joblib write several); returns how many."""
        if start >= end:
            if expect_pickle:
                self.problem(Verdict.SUSPICIOUS, where, "malformed pickle: no data")
            return 0
        first = buf[start]
        if lenient and (first not in _OPCODE_BYTES or (first == 0x80 and end - start > 1 and buf[start + 1] > 5)):
            # Most tensor members fail on their first byte: settle them without building a walker.
            return 0
        pos = start
        count = 0
        hooks, pending = self._hooks(buf, end, where, depth, lenient)
        legacy = False
        while pos < end:
            walker, exc, committed = self._walk(buf, pos, end, hooks, pending)
            if exc is not None:
                if exc.limit:
                    self.problem(Verdict.ERROR, where, f"scan incomplete: {exc}")
                elif committed or (count == 0 and (expect_pickle or self._pickle_start(buf, pos, lenient))):
                    self.problem(Verdict.SUSPICIOUS, where, f"malformed pickle: {exc}")
                elif count == 0:
                    self._label(depth, "not-pickle")
                else:
                    self.note(f"{where}: {end - pos} bytes of non-pickle data after pickle {count}")
                break
            pos = walker.pos
            count += 1
            self.pickles += 1
            if count == 1 and walker.result == _TORCH_LEGACY_MAGIC:
                legacy = True
            if legacy and count == _LEGACY_PICKLES:
                # torch.load reads the remaining bytes as raw storage data and never unpickles them.
                self._legacy_storages(buf, pos, end, walker.result, hooks.persistent_ids, where)
                break
        if count:
            self._label(depth, "torch-legacy" if legacy else "pickle")
        return count

    def _legacy_storages(self, buf: Any, pos: int, end: int, keys: Any, pids: list[Any], where: str) -> None:
        """Check the raw storages after a legacy torch pickle: per key, an int64 count then the elements."""
        sizes: dict[str, int] = {}
        for pid in pids:
            if isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], Global):
                kind = pid[1].key()
                if kind and kind[0] in ("torch", "torch.cuda") and kind[1].endswith("Storage"):
                    size = _STORAGE_ELEMENT_SIZE.get(kind[1][: -len("Storage")])
                    if size and isinstance(pid[2], str):
                        sizes[pid[2]] = size
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            self.problem(Verdict.SUSPICIOUS, where, "legacy torch file without a storage key list")
            return
        start = pos
        for key in keys:
            if key not in sizes:
                self.problem(Verdict.SUSPICIOUS, where, f"legacy torch storage {key!r} of unknown type")
                return
            if pos + 8 > end:
                break
            (numel,) = struct.unpack("<q", bytes(buf[pos : pos + 8]))
            pos += 8 + max(numel, 0) * sizes[key]
        if pos > end or (keys and pos == start):
            self.problem(Verdict.SUSPICIOUS, where, "legacy torch storage data is truncated")
        else:
            self.note(f"{where}: {pos - start} bytes of legacy torch storage data")
            if pos < end:
                self.note(f"{where}: {end - pos} bytes after the last legacy storage")

    @staticmethod
    def _pickle_start(buf: Any, pos: int, lenient: bool) -> bool:
        # At top level a stream that opens with PROTO claims to be a pickle, so failing is an anomaly;
        # archive members of tensor bytes start with 0x80 by chance.
        return not lenient and buf[pos] == 0x80

    # -- containers ------------------------------------------------------------------------------
    def _zip(self, buf: Any, start: int, end: int, where: str, depth: int, lenient: bool) -> None:
        try:
            listing = list_members(buf, start, end, self.limits.max_zip_members)
        except ZipFormatError as exc:
            self.problem(Verdict.SUSPICIOUS, where, f"unreadable zip: {exc}")
            return
        if lenient and not listing.central_directory:
            # Tensor bytes that merely start with "PK\x03\x04": nobody reads them as an archive.
            self._pickles(buf, start, end, where, depth, lenient)
            return
        names = {m.name for m in listing.members}
        fmt = "torch-zip" if any(n.endswith("data.pkl") for n in names) else "zip"
        if "config.json" in names and "metadata.json" in names:
            fmt = "keras"
        if all(n.endswith(".npy") for n in names) and names:
            fmt = "npz"
        self._label(depth, fmt)
        for anomaly in listing.anomalies:
            self.problem(Verdict.SUSPICIOUS, where, f"zip structure: {anomaly}")
        if not listing.members:
            self.problem(Verdict.SUSPICIOUS, where, "zip archive without readable members")
        for m in listing.members:
            self.check_time(where)
            inner = f"{where}!{m.name}" if where else m.name
            for anomaly in m.anomalies:
                self.problem(Verdict.SUSPICIOUS, inner, f"zip member: {anomaly}")
            if m.data_offset < 0 or (m.name.endswith("/") and m.compressed_size == 0):
                continue
            remaining = max(0, self.limits.max_decompressed_bytes - self.decompressed)
            try:
                if m.method != 0 and m.uncompressed_size > _PREFIX_PROBE:
                    # Inflate a prefix first: a numeric .npy or tensor bytes are settled by their
                    # first bytes, so only members that may hold a pickle are inflated whole.
                    probe, lo, hi = read_member(buf, m, _PREFIX_PROBE, self.budget.deadline)
                    try:
                        settled = not probe.complete and self._prefix_settles(probe.data, lo, hi)
                    finally:
                        probe.close()
                    if settled:
                        self.note(f"{inner}: settled from its first {_PREFIX_PROBE} bytes")
                        continue
                out, lo, hi = read_member(buf, m, remaining, self.budget.deadline, **self._inflate_limits())
            except ZipFormatError as exc:
                self.problem(Verdict.SUSPICIOUS, inner, f"member cannot be examined: {exc}")
                continue
            try:
                self._member(buf, m, out, lo, hi, inner, fmt, depth)
            finally:
                out.close()

    def _inflate_limits(self) -> dict[str, Any]:
        return {"max_ratio": self.limits.max_inflate_ratio, "ratio_floor": self.limits.inflate_ratio_floor,
                "spool_dir": self.spool_dir}

    def _member(self, buf: Any, m: Any, out: formats.Decompressed, lo: int, hi: int, inner: str, fmt: str,
                depth: int) -> None:
        data = out.data
        if data is not buf:
            self.decompressed += hi - lo
        if out.bomb:
            self.problem(Verdict.SUSPICIOUS, inner, f"zip member {out.bomb}")
        elif not out.complete:
            self.problem(Verdict.ERROR, inner, "decompressed size limit exceeded")
        if out.problem:
            self.problem(Verdict.SUSPICIOUS, inner, out.problem)
        if m.flags & 0x01:
            self.note(f"{inner}: encryption flag set, read as plain data like torch does")
        strict = m.name.endswith((".pkl", ".pickle")) or m.name.endswith("data.pkl")
        if fmt == "keras" and m.name == "config.json":
            self._keras_config(data, lo, hi, inner)
        if strict:
            self._pickles(data, lo, hi, inner, depth + 1, lenient=False, expect_pickle=True)
        else:
            self.examine(data, lo, hi, inner, depth + 1, lenient=True)

    def _prefix_settles(self, data: bytes, lo: int, hi: int) -> bool:
        """True when the start of a member proves it holds no pickle (a member nobody unpickles whole)."""
        if data[lo : lo + 6] == formats.NPY_MAGIC:
            try:
                return not formats.parse_npy_header(data, lo, hi).has_object
            except ValueError:
                return False
        if data[lo : lo + 4] in (b"PK\x03\x04", b"PK\x05\x06") or formats.sniff_compression(data[lo : lo + 16]):
            return False

        def refuse(*_: Any) -> None:
            raise WalkError("prefix probe", 0)

        hooks = WalkHooks(refuse, lambda *_: None, lambda *_: None, refuse, refuse)  # type: ignore[arg-type]
        try:
            PickleWalker(data, lo, hi, self.budget, hooks).run()
        except WalkError as exc:
            # Failing inside the prefix before any import settles it; running out of bytes does not.
            return not (exc.limit or exc.truncated) and "prefix probe" not in str(exc)
        return False

    def _keras_config(self, buf: Any, lo: int, hi: int, where: str) -> None:
        if hi - lo > self.limits.max_keras_config:
            self.problem(Verdict.SUSPICIOUS, where, "Keras config too large to examine")
            return
        try:
            config = json.loads(bytes(buf[lo:hi]))
        except (ValueError, RecursionError) as exc:
            self.problem(Verdict.SUSPICIOUS, where, f"Keras config is not JSON: {exc}")
            return
        for obj in formats.keras_config_code(config):
            self.add_code_object(obj.module, obj.name, obj.dangerous, obj.reason, where)

    def _npy(self, buf: Any, start: int, end: int, where: str, depth: int, lenient: bool) -> None:
        self._label(depth, "npy")
        try:
            header = formats.parse_npy_header(buf, start, end)
        except ValueError as exc:
            self.problem(Verdict.SUSPICIOUS, where, f"malformed .npy: {exc}")
            return
        if header.has_object:
            # numpy.load(allow_pickle=True) unpickles everything after the header.
            self._pickles(buf, header.data_offset, end, where, depth, lenient=False, expect_pickle=True)

    def _safetensors(self, buf: Any, start: int, end: int, where: str, depth: int, lenient: bool) -> bool:
        problems = formats.validate_safetensors(buf, start, end, self.limits.max_safetensors_header)
        if problems and (lenient or buf[start] == 0x80):
            # An int64 tensor [5, 123, ...] "looks like" a header length and a "{"; only a valid
            # header makes a member a safetensors file. At top level, PROTO means a pickle.
            return False
        self._label(depth, "safetensors")
        for p in problems[:20]:
            self.problem(Verdict.SUSPICIOUS, where, f"invalid safetensors: {p}")
        return True

    def _hdf5(self, buf: Any, start: int, end: int, where: str, depth: int) -> None:
        self._label(depth, "hdf5")
        for cls in formats.h5_lambda_layers(buf, start, end):
            self.add_code_object("keras.layers", cls, True,
                                 "Lambda layer in the Keras model_config: code runs when the model loads", where)
        # PyTables and h5py users store pickled objects in attributes and object columns.
        self._carve(buf, start, end, where, depth)

    def _tar(self, buf: Any, start: int, end: int, where: str, depth: int) -> None:
        self._label(depth, "tar")
        view = memoryview(buf)[start:end] if not isinstance(buf, bytes) else memoryview(buf)[start:end]
        try:
            with tarfile.open(fileobj=_ReadOnly(view), mode="r:") as tar:
                members = [m for m in tar.getmembers() if m.isfile()]
        except (tarfile.TarError, OSError, ValueError) as exc:
            view.release()
            self.problem(Verdict.SUSPICIOUS, where, f"unreadable tar: {exc}")
            return
        view.release()
        for m in members:
            lo = start + m.offset_data
            hi = min(end, lo + m.size)
            inner = f"{where}!{m.name}" if where else m.name
            # A loader reads a member from its start; legacy torch "storages" members then interleave
            # pickles with raw storage bytes, so the rest is carved.
            self._pickles(buf, lo, hi, inner, depth + 1, lenient=True)
            self._carve(buf, lo + 1, hi, inner, depth + 1)

    def _carve(self, buf: Any, start: int, end: int, where: str, depth: int) -> None:
        """Walk every place a pickle could start inside a region (PROTO marker or protocol-0 GLOBAL)."""
        hooks, pending = self._hooks(buf, end, where, depth, lenient=True)
        covered_to = start
        hits = 0
        for m in _CARVE.finditer(buf, start, end):
            pos = m.start()
            if pos < covered_to:
                continue
            hits += 1
            if hits > self.limits.max_carve_hits:
                self.problem(Verdict.ERROR, where, "too many possible pickle starts to examine")
                return
            if hits % 4096 == 0:
                self.check_time(where)
            walker, exc, committed = self._walk(buf, pos, end, hooks, pending)
            if exc is None:
                covered_to = walker.pos
                self.pickles += 1
            elif exc.limit:
                self.problem(Verdict.ERROR, where, f"scan incomplete: {exc}")
                return
            elif committed:
                self.problem(Verdict.SUSPICIOUS, where, f"fragment of a pickle at offset {pos}: {exc}")

    def _decompress(self, kind: str, buf: Any, start: int, end: int, where: str, depth: int,
                    lenient: bool) -> None:
        if kind in formats.UNREADABLE:
            # Others write .pkl.zst: what a loader decompresses and unpickles here is unknown,
            # so it is not safe.
            self._label(depth, kind)
            self.problem(Verdict.SUSPICIOUS, where, f"compressed with {kind}: cannot inspect")
            return
        remaining = max(0, self.limits.max_decompressed_bytes - self.decompressed)
        out = formats.bounded_decompress(kind, buf, start, end, remaining, self.budget.deadline,
                                         **self._inflate_limits())
        try:
            if out.problem and not out.data and (lenient or kind in (formats.ZLIB, formats.LZMA_ALONE)):
                # Not really compressed (a two- or three-byte magic by chance): examine the bytes as they are.
                self._pickles(buf, start, end, where, depth, lenient)
                return
            self._label(depth, kind)
            self.decompressed += len(out.data)
            if out.bomb:
                self.problem(Verdict.SUSPICIOUS, where, f"{kind} stream {out.bomb}")
            elif not out.complete:
                self.problem(Verdict.ERROR, where, "decompressed size limit exceeded")
            if out.problem and lenient:
                self.note(f"{where}: {out.problem}")  # chance magic in data nobody decompresses
            elif out.problem:
                self.problem(Verdict.SUSPICIOUS, where, out.problem)
            self.examine(out.data, 0, len(out.data), f"{where}!{kind}", depth + 1, lenient)
        finally:
            out.close()

    # -- result ----------------------------------------------------------------------------------
    def finish(self) -> ScanResult:
        self._settle_carried(0)
        verified = self.loader_calls and not self.loader_unverified
        for table in [self.imports, *(r.imports for r in self.carried_flagged)]:
            loader = table.get(_NESTED_LOADER)
            if loader is not None and verified:
                loader.safety = ImportSafety.INNOCUOUS
                loader.reason = "torch.load of embedded bytes that were scanned here and are clean"
            elif loader is not None:
                loader.reason = "calls torch.load on embedded bytes that could not be proven clean"
        carried = [r for r in self.carried_flagged if r.flagged()]
        for record in carried[:20]:
            bad = sorted(f"{i.module}.{i.name}" for i in record.imports.values()
                         if i.safety is not ImportSafety.INNOCUOUS)
            self.problem(Verdict.SUSPICIOUS, record.location,
                         f"{CARRIED_REASON}: it imports {', '.join(bad[:5])}{' …' if len(bad) > 5 else ''}")
        if more := max(0, len(carried) - 20) + self.carried_more:
            self.problem(Verdict.SUSPICIOUS, carried[20].location if len(carried) > 20 else "",
                         f"{more} more nested pickles carried as data")
        imports = sorted(self.imports.values(), key=lambda r: (-_RANK[r.safety], r.module, r.name))
        highest = max((r.safety for r in imports), key=_RANK.__getitem__, default=None)
        verdicts = [Verdict(p["level"]) for p in self.problems]
        if carried or self.carried_more:
            verdicts.append(Verdict.SUSPICIOUS)  # even when the problem list was already full
        if highest is ImportSafety.DANGEROUS:
            verdicts.append(Verdict.UNSAFE)
        elif highest is ImportSafety.SUSPICIOUS:
            verdicts.append(Verdict.SUSPICIOUS)
        verdict = max(verdicts, key=lambda v: v.rank) if verdicts else Verdict.SAFE
        details: dict[str, Any] = {
            # "not-pickle" only describes files in which nothing else was recognised.
            "format": "+".join([f for f in self.formats if f != "not-pickle"] or self.formats) or "unknown",
            "highestSafetyLevel": highest.value if highest else None,
            "imports": [_import_entry(r) for r in imports],
            "pickles": self.pickles,
            "problems": self.problems,
            # Pickles held as bytes values that loading the file does not unpickle: what they would
            # import if someone did (their own classification), apart from the file's own imports.
            "carried": [
                {"location": r.location, "reason": CARRIED_REASON,
                 "imports": [_import_entry(i) for i in sorted(r.imports.values(),
                                                              key=lambda i: (-_RANK[i.safety], i.module, i.name))][:50]}
                for r in carried[:50]
            ],
            "notes": self.notes[:50],
            "opcodes": self.budget.opcodes,
        }
        return ScanResult(SCANNER_NAME, SCANNER_VERSION, verdict, _summary(verdict, imports, self.problems), details)


def _import_entry(r: _Import) -> dict[str, Any]:
    return {"module": r.module, "name": r.name, "safety": r.safety.value, "locations": r.locations,
            **({"reason": r.reason} if r.safety is not ImportSafety.INNOCUOUS else {})}


def _summary(verdict: Verdict, imports: list[_Import], problems: list[dict[str, str]]) -> str:
    bad = [f"{r.module}.{r.name}" for r in imports if r.safety is not ImportSafety.INNOCUOUS]
    if bad:
        return f"{verdict.value}: imports {', '.join(bad[:5])}{' …' if len(bad) > 5 else ''}"
    if problems:
        return f"{verdict.value}: {problems[0]['message']}"
    return f"{verdict.value}: {len(imports)} known-safe imports" if imports else f"{verdict.value}: no pickle imports"


class _ReadOnly:
    """A minimal seekable file over a memoryview, so tarfile reads headers without copying the data."""

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        hi = len(self.view) if n is None or n < 0 else min(len(self.view), self.pos + n)
        data = bytes(self.view[self.pos : hi])
        self.pos = hi
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = {0: pos, 1: self.pos + pos, 2: len(self.view) + pos}[whence]
        return self.pos

    def tell(self) -> int:
        return self.pos


class PickleScanner:
    """Bastion's own static pickle scanner. Entry points never raise: a bug becomes verdict `error`."""

    name = SCANNER_NAME
    version = SCANNER_VERSION

    def __init__(self, limits: ScanLimits | None = None, spool_dir: str | None = None) -> None:
        self.limits = limits or ScanLimits()
        self.spool_dir = spool_dir  # where large inflated members go (default: the system's temp dir)

    # MemoryError passes through: in a scan process under a memory limit, it is that limit's verdict.
    def scan_bytes(self, data: bytes, name: str = "") -> ScanResult:
        try:
            if len(data) > self.limits.max_file_bytes:
                return self._error(f"file larger than the {self.limits.max_file_bytes}-byte limit")
            return self._scan(bytes(data), name)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - the worker must get a verdict, never a crash
            return self._error(f"scanner failure: {type(exc).__name__}: {exc}", traceback.format_exc(limit=5))

    def scan_path(self, path: Path, name: str | None = None) -> ScanResult:
        """Scan a file (read through a read-only mmap); `name` (default: the file's) is how it is reported."""
        name = path.name if name is None else name
        try:
            if not path.is_file():
                return self._error(f"not a regular file: {name}")  # a FIFO would block the worker
            size = path.stat().st_size
            if size > self.limits.max_file_bytes:
                return self._error(f"file larger than the {self.limits.max_file_bytes}-byte limit")
            with path.open("rb") as fh:
                if size == 0:
                    return self._scan(b"", name)
                with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    return self._scan(mm, name)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - the worker must get a verdict, never a crash
            return self._error(f"scanner failure: {type(exc).__name__}: {exc}", traceback.format_exc(limit=5))

    def _scan(self, buf: Any, name: str) -> ScanResult:
        scan = _Scan(self.limits, self.spool_dir)
        try:
            scan.examine(buf, 0, len(buf), "", 0, lenient=False)
        except WalkError as exc:
            scan.problem(Verdict.ERROR, name, f"scan incomplete: {exc}")
        except RecursionError:
            scan.problem(Verdict.ERROR, name, "scan incomplete: structure nested too deeply")
        if name.endswith(".safetensors") and "safetensors" not in scan.formats:
            # Loaders trust the extension; content that is not a valid safetensors file is not proven safe.
            scan.problem(Verdict.SUSPICIOUS, name, "named .safetensors but is not a safetensors file")
        result = scan.finish()
        result.details["file"] = name
        return result

    def _error(self, message: str, trace: str = "") -> ScanResult:
        details: dict[str, Any] = {"imports": [], "highestSafetyLevel": None, "error": message}
        if trace:
            details["trace"] = trace
        return ScanResult(SCANNER_NAME, SCANNER_VERSION, Verdict.ERROR, f"error: {message}", details)


def scan_embedded(buf: Any, start: int, end: int, name: str, limits: ScanLimits | None = None,
                  spool_dir: str | None = None) -> ScanResult:
    """The verdict on the pickle stored at buf[start:end] that a loader unpickles as a whole (what
    numpy.load(allow_pickle=True) reads after an object array's header): for format scanners that find
    a pickle inside their format. Never raises, like the entry points above (MemoryError aside)."""
    scan = _Scan(limits or ScanLimits(), spool_dir)
    try:
        scan._pickles(buf, start, end, name, 0, lenient=False, expect_pickle=True)
    except WalkError as exc:
        scan.problem(Verdict.ERROR, name, f"scan incomplete: {exc}")
    except RecursionError:
        scan.problem(Verdict.ERROR, name, "scan incomplete: structure nested too deeply")
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a verdict, never a crash
        scan.problem(Verdict.ERROR, name, f"scanner failure: {type(exc).__name__}: {exc}")
    result = scan.finish()
    result.details["file"] = name
    return result


def scan_source(source: Path | bytes, name: str, spool_dir: str | None = None) -> ScanResult:
    """One scan of a file or of bytes: what a scan process runs (bastion.scanning.isolation)."""
    scanner = PickleScanner(spool_dir=spool_dir)
    if isinstance(source, Path):
        return scanner.scan_path(source, name)
    return scanner.scan_bytes(source, name)

"""SavedModelScanner: the operations a TensorFlow graph would run, read from its protobuf without TensorFlow.

A SavedModel (`saved_model.pb`), a frozen GraphDef (`.pb`) or Keras's `keras_metadata.pb` is read
with a small bounded protobuf wire-format reader that follows only the fields below; every NodeDef
`op` of meta_graphs[].graph_def.node and graph_def.library.function[].node_def is judged, and Keras
metadata JSON is judged by the Keras scanner's config walk.

Which ops are flagged, and why (references: TensorFlow's SECURITY.md "TensorFlow models are
programs", `saved_model_cli scan`'s denylist ReadFile/WriteFile/PrintV2, modelscan's unsafe
operators, the TensorAbuse paper's list of ops with file and network access):
- unsafe: ops that run Python (PyFunc, EagerPyFunc), write or read arbitrary files or list
  directories (a model's output can carry /etc/shadow or a cloud credential file back to the
  caller), talk to the network (RPC, tf.data service, debugger gRPC URLs) or run SQL. A model served
  to others needs none of them.
- suspicious: input-pipeline readers (TFRecord, CSV, text lines, LMDB) and checkpoint I/O outside
  the model's own saver: legitimate in some exported pipelines, but they read files named at run
  time, so a person should look.
- noted, not flagged: checkpoint I/O inside the saver (every SavedModel has SaveV2/RestoreV2 there),
  vocabulary tables initialised from asset files, PrintV2 to stderr/stdout/logs.
"""

from __future__ import annotations

import json
import mmap
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.scanning.results import ScanResult, Verdict, worst
from bastion.scanning.scanners.keras import config_findings

SCANNER_NAME = "savedmodel"
# Bump on every change to what is flagged: stored verdicts keyed by an older version are rescanned.
SCANNER_VERSION = "1.0.0"

_RUNS_PYTHON = "runs a Python function of the process that loads the model"
_WRITES = "writes files on the machine that runs the model"
_READS = "reads files the machine running the model can read, into the model's outputs"
_LISTS = "lists files and directories on the machine that runs the model"
_NETWORK = "connects to a network address named in the model"
_SQL = "opens a database and runs SQL named in the model"
_PIPELINE = "input pipeline reading files named at run time"
_CHECKPOINT = "checkpoint file I/O outside the model's own saver"

UNSAFE_OPS: dict[str, str] = {
    **dict.fromkeys(("PyFunc", "PyFuncStateless", "EagerPyFunc"), _RUNS_PYTHON),
    **dict.fromkeys(("WriteFile", "DatasetToTFRecord", "ExperimentalDatasetToTFRecord", "SaveDataset",
                     "SaveDatasetV2", "DistributedSave", "SnapshotDataset", "SnapshotDatasetV2",
                     "CreateSummaryFileWriter", "CreateSummaryDbWriter"), _WRITES),
    **dict.fromkeys(("ReadFile", "ImmutableConst"), _READS),
    **dict.fromkeys(("MatchingFiles", "MatchingFilesDataset", "ExperimentalMatchingFilesDataset"), _LISTS),
    **dict.fromkeys(("Rpc", "TryRpc", "RpcCall", "RpcClient", "RpcServer", "RpcServerRegister", "RpcServerStart",
                     "RpcCheckStatus", "RpcGetValue", "DataServiceDataset", "DataServiceDatasetV2",
                     "DataServiceDatasetV3", "DataServiceDatasetV4", "RegisterDataset", "RegisterDatasetV2",
                     "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary",
                     "DebugNumericSummaryV2"), _NETWORK),
    **dict.fromkeys(("SqlDataset", "ExperimentalSqlDataset"), _SQL),
}
SUSPICIOUS_OPS: dict[str, str] = {
    **dict.fromkeys(("TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset", "FixedLengthRecordDataset",
                     "FixedLengthRecordDatasetV2", "CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset",
                     "LMDBDataset", "ExperimentalLMDBDataset", "LoadDataset", "ExperimentalLoadDataset",
                     "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2", "TFRecordReader",
                     "TFRecordReaderV2", "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "LMDBReader",
                     "IdentityReader", "IdentityReaderV2", "LoadAndRemapMatrix", "GenerateVocabRemapping"),
                   _PIPELINE),
}
CHECKPOINT_OPS = frozenset({"Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice",
                            "MergeV2Checkpoints"})
NOTED_OPS = frozenset({"InitializeTableFromTextFile", "InitializeTableFromTextFileV2", "PrintV2"})
# Where SavedModels keep their saver: TF1 "save/..." scopes, TF2 traced save/restore functions.
_SAVER_NODE = re.compile(r"^save(_\d+)?/")
_SAVER_FUNCTION = re.compile(r"_traced_(save|restore)|(^|_)(save|restore)_fn(_|$)")
_MAX_LOCATIONS = 10


class ProtoError(ValueError):
    def __init__(self, message: str, *, limit: bool = False) -> None:
        super().__init__(message)
        self.limit = limit  # a bound of the scan, not a fault of the file


class _Wire:
    """A bounded protobuf wire-format reader: fields of one message in buf[lo:hi], without a schema."""

    def __init__(self, buf: Any, deadline: float, max_fields: int) -> None:
        self.buf = buf
        self.deadline = deadline
        self.max_fields = max_fields
        self.fields = 0

    def varint(self, pos: int, hi: int) -> tuple[int, int]:
        result = shift = 0
        while True:
            if pos >= hi or shift > 63:
                raise ProtoError(f"bad varint at offset {pos}")
            b = self.buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result, pos
            shift += 7

    def fields_of(self, lo: int, hi: int) -> Any:
        """(field number, wire type, value): an int for varints and fixed, (start, end) for bytes."""
        buf = self.buf
        pos = lo
        while pos < hi:
            self.fields += 1
            if self.fields > self.max_fields:
                raise ProtoError(f"more than {self.max_fields} protobuf fields", limit=True)
            if not self.fields & 0xFFF and time.monotonic() > self.deadline:
                raise ProtoError("time limit exceeded", limit=True)
            key = buf[pos]  # one-byte varints first: field numbers under 16, lengths under 128
            if key < 0x80:
                pos += 1
            else:
                key, pos = self.varint(pos, hi)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise ProtoError(f"field number 0 at offset {pos}")
            if wire == 0:
                value, pos = self.varint(pos, hi)
                yield number, wire, value
            elif wire == 2:
                n = buf[pos] if pos < hi else 0x80
                if n < 0x80:
                    pos += 1
                else:
                    n, pos = self.varint(pos, hi)
                if pos + n > hi:
                    raise ProtoError(f"length-delimited field runs past its message at offset {pos}")
                yield number, wire, (pos, pos + n)
                pos += n
            elif wire in (1, 5):
                size = 8 if wire == 1 else 4
                if pos + size > hi:
                    raise ProtoError(f"truncated fixed field at offset {pos}")
                yield number, wire, int.from_bytes(self.buf[pos : pos + size], "little")
                pos += size
            else:
                raise ProtoError(f"unsupported wire type {wire} at offset {pos}")  # groups: not in these protos

    def text(self, span: tuple[int, int]) -> str:
        return bytes(self.buf[span[0] : span[1]]).decode("utf-8", "replace")


@dataclass
class _OpUse:
    op: str
    level: Verdict
    reason: str
    count: int = 0
    locations: list[str] = field(default_factory=list)


class _Scan:
    def __init__(self, buf: Any, deadline: float, max_fields: int) -> None:
        self.wire = _Wire(buf, deadline, max_fields)
        self.ops: dict[str, int] = {}
        self.flagged: dict[tuple[str, str], _OpUse] = {}
        self.nodes = 0
        self.functions = 0
        self.meta_graphs = 0
        self.keras: list[dict[str, str]] = []
        self.keras_levels: list[Verdict] = []
        self.problems: list[dict[str, str]] = []
        self.notes: list[str] = []
        self.format = "unknown"

    def problem(self, level: Verdict, where: str, message: str) -> None:
        if len(self.problems) < 200:
            self.problems.append({"level": level.value, "location": where, "message": message})

    def note(self, message: str) -> None:
        if len(self.notes) < 50 and message not in self.notes:
            self.notes.append(message)

    def flag(self, op: str, level: Verdict, reason: str, where: str) -> None:
        use = self.flagged.setdefault((op, reason), _OpUse(op, level, reason))
        use.count += 1
        if len(use.locations) < _MAX_LOCATIONS:
            use.locations.append(where)

    # -- the schema: only the fields that lead to ops or Keras metadata ---------------------------------
    def saved_model(self, lo: int, hi: int) -> None:
        for number, wire, value in self.wire.fields_of(lo, hi):
            if number == 2 and wire == 2:  # SavedModel.meta_graphs
                self.meta_graphs += 1
                self.meta_graph(*value, f"meta_graphs[{self.meta_graphs - 1}]")

    def meta_graph(self, lo: int, hi: int, where: str) -> None:
        for number, wire, value in self.wire.fields_of(lo, hi):
            if number == 2 and wire == 2:  # MetaGraphDef.graph_def
                self.graph_def(*value, where)
            elif number == 7 and wire == 2:  # MetaGraphDef.object_graph_def (SavedObjectGraph)
                self.object_graph(*value, f"{where}.object_graph_def")

    def graph_def(self, lo: int, hi: int, where: str) -> None:
        for number, wire, value in self.wire.fields_of(lo, hi):
            if number == 1 and wire == 2:  # GraphDef.node
                self.node(*value, where, None)
            elif number == 2 and wire == 2:  # GraphDef.library (FunctionDefLibrary)
                for n2, w2, v2 in self.wire.fields_of(*value):
                    if n2 == 1 and w2 == 2:  # FunctionDefLibrary.function
                        self.function(*v2, where)

    def function(self, lo: int, hi: int, where: str) -> None:
        self.functions += 1
        name = ""
        nodes: list[tuple[int, int]] = []
        for number, wire, value in self.wire.fields_of(lo, hi):
            if number == 1 and wire == 2:  # FunctionDef.signature (OpDef): its name is field 1
                for n2, w2, v2 in self.wire.fields_of(*value):
                    if n2 == 1 and w2 == 2:
                        name = self.wire.text(v2)
            elif number == 3 and wire == 2:  # FunctionDef.node_def
                nodes.append(value)
        for span in nodes:
            self.node(*span, f"{where}.library.{name or '?'}", name)

    def node(self, lo: int, hi: int, where: str, function: str | None) -> None:
        self.nodes += 1
        name = op = ""
        entries: list[tuple[int, int]] = []
        for number, wire, value in self.wire.fields_of(lo, hi):
            if wire != 2:
                continue
            if number == 1:
                name = self.wire.text(value)
            elif number == 2:
                op = self.wire.text(value)
            elif number == 5:  # NodeDef.attr: map entries, read only for the ops whose attrs are judged
                entries.append(value)
        if not op:
            return
        attrs: dict[str, tuple[int, int]] = {}
        if op == "PrintV2":
            for entry in entries:
                key, attr = "", None
                for n2, w2, v2 in self.wire.fields_of(*entry):
                    if n2 == 1 and w2 == 2:
                        key = self.wire.text(v2)
                    elif n2 == 2 and w2 == 2:
                        attr = v2
                if attr is not None and key == "output_stream":
                    attrs[key] = attr
        if len(self.ops) < 10_000 or op in self.ops:
            self.ops[op] = self.ops.get(op, 0) + 1
        self.judge(op, name, f"{where}:{name}", function, attrs)

    def judge(self, op: str, name: str, where: str, function: str | None,
              attrs: dict[str, tuple[int, int]]) -> None:
        if op in UNSAFE_OPS:
            self.flag(op, Verdict.UNSAFE, UNSAFE_OPS[op], where)
        elif op in SUSPICIOUS_OPS:
            self.flag(op, Verdict.SUSPICIOUS, SUSPICIOUS_OPS[op], where)
        elif op in CHECKPOINT_OPS:
            in_saver = _SAVER_FUNCTION.search(function) if function is not None else _SAVER_NODE.match(name)
            if in_saver:
                self.note(f"checkpoint ops in the model's saver ({op})")
            else:
                self.flag(op, Verdict.SUSPICIOUS, _CHECKPOINT, where)
        elif op == "PrintV2":
            stream = self.attr_string(attrs.get("output_stream"))
            if stream is None or stream.startswith("file://") or not re.fullmatch(
                    r"stderr|stdout|log\((info|warning|error)\)", stream):
                self.flag(op, Verdict.UNSAFE, f"prints to {stream!r}: {_WRITES}", where)
            else:
                self.note(f"PrintV2 to {stream}")
        elif op in NOTED_OPS:
            self.note(f"{op}: a lookup table read from a file (vocabulary assets)")

    def attr_string(self, span: tuple[int, int] | None) -> str | None:
        """AttrValue.s (field 2), or None. An absent attr means the op's default (stderr for PrintV2)."""
        if span is None:
            return "stderr"
        for number, wire, value in self.wire.fields_of(*span):
            if number == 2 and wire == 2:
                return self.wire.text(value)
        return None

    def object_graph(self, lo: int, hi: int, where: str) -> None:
        for number, wire, value in self.wire.fields_of(lo, hi):
            if number != 1 or wire != 2:  # SavedObjectGraph.nodes
                continue
            for n2, w2, v2 in self.wire.fields_of(*value):
                if n2 == 4 and w2 == 2:  # SavedObject.user_object (SavedUserObject): metadata is field 3
                    for n3, w3, v3 in self.wire.fields_of(*v2):
                        if n3 == 3 and w3 == 2:
                            self.keras_json(v3, where)

    def saved_metadata(self, lo: int, hi: int) -> None:
        """keras_metadata.pb: SavedMetadata.nodes (1), each a SavedObject with metadata JSON in field 5."""
        for number, wire, value in self.wire.fields_of(lo, hi):
            if number != 1 or wire != 2:
                continue
            path = ""
            metadata = None
            for n2, w2, v2 in self.wire.fields_of(*value):
                if n2 == 3 and w2 == 2:
                    path = self.wire.text(v2)
                elif n2 == 5 and w2 == 2:
                    metadata = v2
            if metadata is not None:
                self.keras_json(metadata, f"keras_metadata:{path or '?'}")

    def keras_json(self, span: tuple[int, int], where: str) -> None:
        if span[1] - span[0] > 16 << 20:
            self.problem(Verdict.SUSPICIOUS, where, "Keras metadata over 16 MiB: not examined")
            return
        raw = bytes(self.wire.buf[span[0] : span[1]])
        if not raw.strip():
            return
        try:
            config = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            self.problem(Verdict.SUSPICIOUS, where, f"Keras metadata is not JSON: {exc}")
            return
        for f in config_findings(config, where):
            self.keras_levels.append(f.level)
            if len(self.keras) < 200:
                self.keras.append(f.as_dict())

    # -- which message is it ------------------------------------------------------------------------------
    def examine(self, name: str) -> None:
        buf = self.wire.buf
        end = len(buf)
        if name.endswith(".pbtxt"):
            self.format = "pbtxt"
            self.text_format(buf)
            return
        first = self.first_field(0, end)
        if name.endswith("keras_metadata.pb"):
            self.format = "keras-metadata"
            self.saved_metadata(0, end)
        elif first == (1, 0):  # SavedModel.saved_model_schema_version
            self.format = "saved-model"
            self.saved_model(0, end)
        elif first == (1, 2):
            if self.looks_like_keras_object(self.first_span(0, end)):
                self.format = "keras-metadata"
                self.saved_metadata(0, end)
            else:
                self.format = "graph-def"
                self.graph_def(0, end, "graph_def")
        elif first == (2, 2):
            # A SavedModel whose schema version is 0 (not serialized), or a GraphDef with only a library:
            # read both ways; only exact op names count, so the wrong reading flags nothing.
            self.format = "saved-model"
            self.saved_model(0, end)
            self.graph_def(0, end, "graph_def")
        elif first is None:
            self.format = "empty"
        else:
            self.problem(Verdict.SUSPICIOUS, "", f"not a SavedModel, GraphDef or Keras metadata (field {first[0]} "
                         f"wire type {first[1]} first)")

    def first_field(self, lo: int, hi: int) -> tuple[int, int] | None:
        for number, wire, _ in self.wire.fields_of(lo, hi):
            return number, wire
        return None

    def first_span(self, lo: int, hi: int) -> tuple[int, int]:
        for _, wire, value in self.wire.fields_of(lo, hi):
            if wire == 2:
                return value
            break
        return (lo, lo)

    def looks_like_keras_object(self, span: tuple[int, int]) -> bool:
        """Tells SavedMetadata.nodes[0] (a Keras SavedObject: version 1, node_id 2 a varint, node_path 3,
        identifier 4, metadata 5 a JSON string) from GraphDef.node[0] (a NodeDef: every field is
        length-delimited, and its field 5 is an attr map entry, a message)."""
        try:
            for number, wire, value in self.wire.fields_of(*span):
                if wire == 0 or (number == 5 and wire == 2 and self.wire.buf[value[0] : value[0] + 1] == b"{"):
                    return True
        except ProtoError:
            return False
        return False

    def text_format(self, buf: Any) -> None:
        """A text-format SavedModel/GraphDef: every `op: "..."` is an op, whatever message holds it."""
        text = bytes(buf[:]).decode("utf-8", "replace")
        for i, m in enumerate(re.finditer(r'(?m)^\s*op\s*:\s*"([^"\\]{1,200})"', text)):
            if i and not i & 0xFFF and time.monotonic() > self.wire.deadline:
                raise ProtoError("time limit exceeded", limit=True)
            self.nodes += 1
            op = m.group(1)
            self.ops[op] = self.ops.get(op, 0) + 1
            self.judge(op, "", f"line {text.count(chr(10), 0, m.start()) + 1}", None, {})

    def result(self, file: str) -> ScanResult:
        levels = [u.level for u in self.flagged.values()] + self.keras_levels
        levels += [Verdict(p["level"]) for p in self.problems]
        verdict = worst(levels) if levels else Verdict.SAFE
        flagged = sorted(self.flagged.values(), key=lambda u: (-u.level.rank, u.op))
        details: dict[str, Any] = {
            "file": file, "format": self.format, "metaGraphs": self.meta_graphs, "nodes": self.nodes,
            "functions": self.functions,
            "findings": [{"op": u.op, "level": u.level.value, "reason": u.reason, "count": u.count,
                          "locations": u.locations} for u in flagged],
            "kerasFindings": self.keras,
            "ops": dict(sorted(self.ops.items())[:1000]),
            "problems": self.problems, "notes": self.notes,
        }
        if flagged:
            names = sorted({u.op for u in flagged if u.level is verdict})
            summary = f"{verdict.value}: ops {', '.join(names[:5])}{' …' if len(names) > 5 else ''}"
        elif self.keras and verdict is not Verdict.SAFE:
            summary = f"{verdict.value}: Keras metadata {self.keras[0]['kind']} {self.keras[0]['name']}"
        elif self.problems:
            summary = f"{verdict.value}: {self.problems[0]['message']}"
        else:
            summary = f"{verdict.value}: {self.nodes} nodes, {len(self.ops)} kinds of op, none with file, process " \
                      "or network access"
        return ScanResult(SCANNER_NAME, SCANNER_VERSION, verdict, summary, details)


@dataclass(frozen=True)
class SavedModelLimits:
    max_file_bytes: int = 4 << 30  # protobuf itself refuses messages over 2 GiB
    max_fields: int = 200_000_000
    max_seconds: float = 600.0


class SavedModelScanner:
    """TensorFlow SavedModel / GraphDef / Keras metadata protobufs. Entry points never raise."""

    name = SCANNER_NAME

    def __init__(self, limits: SavedModelLimits | None = None) -> None:
        self.limits = limits or SavedModelLimits()

    def version(self) -> str:
        return SCANNER_VERSION

    def scan_bytes(self, data: bytes, name: str = "") -> ScanResult:
        try:
            if len(data) > self.limits.max_file_bytes:
                return _error(f"file larger than the {self.limits.max_file_bytes}-byte limit")
            return self._scan(bytes(data), name)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - the worker must get a verdict, never a crash
            return _error(f"scanner failure: {type(exc).__name__}: {exc}", traceback.format_exc(limit=5))

    def scan_path(self, path: Path, name: str | None = None) -> ScanResult:
        name = path.name if name is None else name
        try:
            if not path.is_file():
                return _error(f"not a regular file: {name}")
            size = path.stat().st_size
            if size > self.limits.max_file_bytes:
                return _error(f"file larger than the {self.limits.max_file_bytes}-byte limit")
            if size == 0:
                return self._scan(b"", name)
            with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return self._scan(mm, name)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - the worker must get a verdict, never a crash
            return _error(f"scanner failure: {type(exc).__name__}: {exc}", traceback.format_exc(limit=5))

    def _scan(self, buf: Any, name: str) -> ScanResult:
        scan = _Scan(buf, time.monotonic() + self.limits.max_seconds, self.limits.max_fields)
        try:
            scan.examine(name)
        except ProtoError as exc:
            # A loader refuses a protobuf it cannot parse; what was read so far still counts.
            if exc.limit:
                scan.problem(Verdict.ERROR, name, f"scan incomplete: {exc}")
            else:
                scan.problem(Verdict.SUSPICIOUS, name, f"malformed protobuf: {exc}")
        return scan.result(name)


def _error(message: str, trace: str = "") -> ScanResult:
    details: dict[str, Any] = {"findings": [], "error": message}
    if trace:
        details["trace"] = trace
    return ScanResult(SCANNER_NAME, SCANNER_VERSION, Verdict.ERROR, f"error: {message}", details)


def scan_source(source: Path | bytes, name: str) -> ScanResult:
    """One scan of a file or of bytes: what an isolated scan process runs (bastion.scanning.isolation)."""
    scanner = SavedModelScanner()
    if isinstance(source, Path):
        return scanner.scan_path(source, name)
    return scanner.scan_bytes(source, name)

"""The ONNX scanner: external data that points outside the model's folder, and operators from custom domains.

The model is read with the `onnx` package (its ModelProto parsed as `onnx.load(...,
load_external_data=False)` does: the protobuf only, no external file is opened) and never run. Every
tensor that can carry external data is checked (initializers, sparse initializers, tensor attributes
of nodes, in the main graph, in every subgraph of If/Loop/Scan, in training graphs and in model-local
functions): an absolute location or one that climbs out of the model's folder (`..`) makes a loader
read any file on the machine into the model (`unsafe`).

Operator domains: the ONNX standard's (`''`/`ai.onnx`, `ai.onnx.ml`, `ai.onnx.training`,
`ai.onnx.preview.training`) and `com.microsoft` (ONNX Runtime's contrib operators, built into every
ONNX Runtime, so no foreign code is loaded for them) are known. Any other domain that is not a
function defined in the model itself needs a custom operator library registered by whoever loads the
model -- native code the file asks for -- so the file is `suspicious` with the domains named.
"""

from __future__ import annotations

import mmap
import ntpath
import posixpath
from pathlib import Path
from typing import Any

from bastion.scanning.results import ScanResult
from bastion.scanning.scanners.format_report import FormatReport, NotThisFormat

NAME = "onnx"
VERSION = "1"
# Protobuf's own ceiling: a larger .onnx keeps its weights as external data.
MAX_BYTES = 2 << 30
MAX_NODES = 5_000_000
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training",
                              "com.microsoft"})


def sniff(head: bytes) -> bool:
    """ModelProto as onnx.save writes it: field 1 (ir_version, a small varint) first, then another field
    of the model (producer name, graph, opset imports ...). Other protobufs start alike: scan_path
    confirms by parsing, and raises NotThisFormat when it is not a model."""
    return (len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 0x20
            and head[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0x7A, 0x82))


def scan_path(path: Path) -> ScanResult:
    report = FormatReport(NAME)
    size = path.stat().st_size
    if size > MAX_BYTES:
        report.error("", f"file of {size} bytes is over protobuf's {MAX_BYTES}-byte limit: not examined")
        return report.result(VERSION)
    import onnx
    from google.protobuf.message import DecodeError

    if size == 0:
        raise NotThisFormat("empty file")
    try:
        # What onnx.load(path, load_external_data=False) does (parse the protobuf, open no other file),
        # from a read-only map of the file instead of a copy: the scan's memory limit counts only the
        # parsed model, so a model twice as large fits.
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            model = onnx.ModelProto()
            with memoryview(buf) as view:
                model.ParseFromString(view)
    except (DecodeError, ValueError, RuntimeError, TypeError) as exc:
        raise NotThisFormat(f"not a readable ONNX model: {type(exc).__name__}: {exc}") from None
    if not model.HasField("graph") or not model.opset_import:
        # Other protobufs (a TensorFlow saved_model.pb) parse as a ModelProto of unknown fields.
        raise NotThisFormat("not an ONNX model: no graph or no opset imports")
    _Walk(model, report).run()
    return report.result(VERSION)


class _Walk:
    def __init__(self, model: Any, report: FormatReport) -> None:
        self.model, self.report = model, report
        self.local_domains = {f.domain for f in model.functions}
        self.custom: dict[str, str] = {}  # domain -> first location
        self.external: list[dict[str, Any]] = []
        self.nodes = 0

    def run(self) -> None:
        model = self.model
        for opset in model.opset_import:
            self.domain(opset.domain, "opset_import")
        stack: list[tuple[Any, str]] = [(model.graph, "graph")]
        for i, training in enumerate(model.training_info):
            # Training graphs carry initializers and nodes of their own.
            stack += [(training.initialization, f"training_info[{i}]/initialization"),
                      (training.algorithm, f"training_info[{i}]/algorithm")]
        for function in model.functions:
            for opset in function.opset_import:
                self.domain(opset.domain, f"function {function.domain}.{function.name}")
            stack.append((function, f"function {function.domain}.{function.name}"))
        while stack:
            graph, where = stack.pop()
            for tensor in getattr(graph, "initializer", ()):
                self.tensor(tensor, f"{where}/initializer {tensor.name}")
            for sparse in getattr(graph, "sparse_initializer", ()):
                self.tensor(sparse.values, f"{where}/sparse_initializer {sparse.values.name}")
                self.tensor(sparse.indices, f"{where}/sparse_initializer {sparse.indices.name}")
            for node in graph.node:
                self.nodes += 1
                if self.nodes > MAX_NODES:
                    self.report.error(where, f"more than {MAX_NODES} nodes: not examined whole")
                    return
                at = f"{where}/node {node.name or node.op_type}"
                self.domain(node.domain, at)
                for attr in node.attribute:
                    if attr.HasField("t"):
                        self.tensor(attr.t, f"{at}/{attr.name}")
                    for t in attr.tensors:
                        self.tensor(t, f"{at}/{attr.name}")
                    sparse = [attr.sparse_tensor] if attr.HasField("sparse_tensor") else []
                    for st in [*sparse, *attr.sparse_tensors]:
                        self.tensor(st.values, f"{at}/{attr.name}")
                        self.tensor(st.indices, f"{at}/{attr.name}")
                    if attr.HasField("g"):
                        stack.append((attr.g, f"{at}/{attr.name}"))
                    stack.extend((g, f"{at}/{attr.name}") for g in attr.graphs)
        self.report.info.update(
            irVersion=model.ir_version, producer=model.producer_name[:100],
            opsets={o.domain or "ai.onnx": o.version for o in list(model.opset_import)[:50]},
            nodes=self.nodes, customDomains=sorted(self.custom)[:50], externalData=self.external[:50])
        for domain, where in sorted(self.custom.items()):
            self.report.suspicious(where, f"operator domain {domain!r} is not a standard ONNX or ONNX Runtime "
                                          "domain: loading needs a custom operator library (native code)")

    def domain(self, domain: str, where: str) -> None:
        if domain not in STANDARD_DOMAINS and domain not in self.local_domains and domain not in self.custom:
            self.custom[domain] = where

    def tensor(self, tensor: Any, where: str) -> None:
        from onnx import TensorProto

        if tensor.data_location != TensorProto.EXTERNAL and not tensor.external_data:
            return
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location")
        if len(self.external) < 50:
            self.external.append({"tensor": tensor.name[:200], "location": (location or "")[:500]})
        if not location:
            self.report.suspicious(where, "external data without a location")
            return
        problem = location_problem(location)
        if problem:
            self.report.unsafe(where, f"external data location {location[:200]!r} {problem}")
        for key in ("offset", "length"):
            value = entries.get(key)
            if value is not None and not (value.isascii() and value.isdigit()):
                self.report.suspicious(where, f"external data {key} {value[:40]!r} is not a non-negative integer")


def location_problem(location: str) -> str | None:
    """Why an external-data location reaches outside the model's folder (None: it stays inside)."""
    if "\x00" in location:
        return "contains a NUL byte"
    if posixpath.isabs(location) or ntpath.isabs(location) or ntpath.splitdrive(location)[0]:
        return "is absolute: a loader reads that file from anywhere on the machine"
    if "://" in location or location.lower().startswith("file:"):
        return "is a URL"
    parts = location.replace("\\", "/").split("/")
    depth = 0
    for part in parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return "climbs out of the model's folder ('..')"
        elif part not in ("", "."):
            depth += 1
    return None

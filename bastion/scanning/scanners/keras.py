"""KerasScanner: judges Keras models by their config, never by loading them.

Keras v3 `.keras` archives (config.json in a zip, read with the pickle scanner's bounded zip reader)
and legacy HDF5 models (`model_config`/`training_config` attributes, read with h5py, no dataset is
read). What runs when Keras loads a model is named by its config: Lambda layers (marshalled Python
bytecode, or a function called by name), objects imported from modules outside Keras, and the
known safe_mode-bypass gadgets (CVE-2025-1550, CVE-2025-8747, CVE-2025-9906: enable_unsafe_
deserialization, get_file, load_model reached through a config).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import mmap
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.scanning.results import ImportSafety, ScanResult, Verdict, worst
from bastion.scanning.scanners.pickles import ScanLimits, classify
from bastion.scanning.scanners.pickles.zipread import ZipFormatError, list_members, read_member

SCANNER_NAME = "keras"
# Bump on every change to what is flagged: stored verdicts keyed by an older version are rescanned.
SCANNER_VERSION = "1.0.0"

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
# HDF5 finds its superblock at 0, 512, 1024, 2048, ... (a "user block" may precede it), so the
# magic may be there too: Keras loads such a file like any other.
_HDF5_OFFSETS = tuple([0] + [512 << i for i in range(12)])
_LAMBDA = "Lambda"
_TF_OP_LAMBDAS = frozenset({"TFOpLambda", "SlicingOpLambda"})
# Keras's own packages: objects registered there are Keras built-ins.
_KERAS_OWN = re.compile(r"(keras|keras_hub|keras_nlp|keras_cv|tf_keras|tensorflow\.keras|tensorflow\.python\.keras)"
                        r"(\.|$)")
# Keras functions and layers that, reached from a config, load other files, download, or switch
# safe_mode off: the published safe_mode bypasses use exactly these.
_KERAS_GADGETS = frozenset({
    "enable_unsafe_deserialization", "set_global_attribute", "get_file", "load_model", "load_weights",
    "save_model", "load_img", "TFSMLayer", "deserialize_keras_object", "model_from_json", "model_from_config",
    "model_from_yaml", "func_load", "exec", "eval",
})
# tf.* functions a TFOpLambda layer may call that read or write files, run Python, load libraries,
# or reach outside the graph (any dotted component of the name matching one).
_TF_OP_DANGEROUS = frozenset({
    "io", "gfile", "py_function", "numpy_function", "py_func", "load_library", "load_op_library", "raw_ops",
    "print", "Print", "saved_model", "summary", "debugging", "data", "distribute", "tpu", "lite", "keras",
    "train", "system", "sysconfig",
})
_BASE64 = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")
_MAX_NODES = 1_000_000
_MAX_FINDINGS = 200


@dataclass
class Finding:
    level: Verdict
    location: str  # member or attribute, then the JSON path inside it
    kind: str  # lambda | bytecode | custom-object | gadget | tf-op | safe-mode | structure
    name: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"level": self.level.value, "location": self.location, "kind": self.kind, "name": self.name,
                "reason": self.reason}


def _looks_marshalled(text: str) -> bool:
    """True when `text` is base64 of a marshalled code object (how Keras stores a lambda's bytecode)."""
    if len(text) < 24 or text[0] not in "Y4" or not _BASE64.fullmatch(text[:4096] if len(text) > 4096 else text):
        return False
    try:
        head = base64.b64decode(text[:24], validate=True)
    except (binascii.Error, ValueError):
        return False
    # marshal's TYPE_CODE is "c" (0x63), 0xE3 with the FLAG_REF bit; then argcount and
    # posonlyargcount as little-endian int32s, which are small in any real function.
    return head[0] in (0x63, 0xE3) and head[2:5] == b"\0\0\0" and head[6:9] == b"\0\0\0"


def _object_name(node: dict[str, Any]) -> tuple[str | None, str]:
    """(module, name) a Keras 3 serialized object imports: a function's name is in its "config"."""
    module = node.get("module")
    cls = str(node.get("class_name"))
    config = node.get("config")
    name = config if cls == "function" and isinstance(config, str) else cls
    return (module if isinstance(module, str) else None), name


def _judge_object(module: str | None, name: str, registered: Any) -> tuple[Verdict, str, str] | None:
    """(level, kind, reason) for an object a config imports, or None when it is a Keras built-in."""
    if name in _KERAS_GADGETS or name.rsplit(".", 1)[-1] in _KERAS_GADGETS:
        return (Verdict.UNSAFE, "gadget",
                f"{name} loads files, downloads, or turns safe_mode off when reached from a config "
                "(the published Keras safe_mode bypasses)")
    if module is None:
        if isinstance(registered, str) and ">" in registered and not _KERAS_OWN.match(registered.split(">")[0]):
            return (Verdict.SUSPICIOUS, "custom-object",
                    f"custom object registered as {registered!r}: its code must be imported to load the model")
        return None
    if _KERAS_OWN.match(module):
        return None
    if module == "tensorflow" or module.startswith("tensorflow."):
        # The pickle policy calls any TensorFlow import dangerous; in a Keras config a TensorFlow
        # function is judged like a TFOpLambda's.
        if {*module.split("."), *name.split(".")} & _TF_OP_DANGEROUS:
            return Verdict.UNSAFE, "tf-op", f"{module}.{name} reads or writes files, runs Python or reaches outside"
        return (Verdict.SUSPICIOUS, "custom-object",
                f"TensorFlow object {module}.{name} is imported when the model loads")
    c = classify(module, name)
    if c.safety is ImportSafety.DANGEROUS:
        return Verdict.UNSAFE, "custom-object", f"imports {module}.{name} when the model loads: {c.reason}"
    return (Verdict.SUSPICIOUS, "custom-object",
            f"custom object {module}.{name} (outside Keras) is imported when the model loads")


def _lambda_function(config: Any) -> tuple[Verdict, str, str] | None:
    """How a Lambda layer's function is stored: marshalled bytecode (unsafe), or a name (judged as the
    object it names, by the walk; a bare legacy name is suspicious)."""
    if not isinstance(config, dict):
        return Verdict.UNSAFE, "lambda", "Lambda layer with an unreadable config: it runs Python code"
    fn = config.get("function")
    ftype = config.get("function_type")
    if isinstance(fn, dict) and fn.get("class_name") == "__lambda__":
        return (Verdict.UNSAFE, "lambda", "Lambda layer with marshalled Python bytecode: runs when the model "
                "is loaded with safe_mode off, and always when loaded from HDF5 (CVE-2024-3660, CVE-2025-9905)")
    if ftype == "lambda" or isinstance(fn, list | tuple) or (isinstance(fn, str) and _looks_marshalled(fn)):
        return (Verdict.UNSAFE, "lambda", "Lambda layer with marshalled Python bytecode (legacy format): runs "
                "when the model is loaded (CVE-2024-3660)")
    if isinstance(fn, dict):
        return None  # a serialized function reference: judged as an object by the walk
    if isinstance(fn, str):
        return (Verdict.SUSPICIOUS, "lambda", f"Lambda layer calling the function {fn!r}: it must come from "
                "custom objects or Keras to load")
    return Verdict.UNSAFE, "lambda", "Lambda layer with a function Keras may deserialize as code"


def config_findings(config: Any, where: str) -> list[Finding]:
    """Everything in a Keras config (v3 config.json, legacy model_config/training_config, the
    metadata in a SavedModel's keras_metadata.pb) that imports or runs code when the model loads."""
    found: list[Finding] = []
    stack: list[tuple[Any, str]] = [(config, "")]
    seen = 0
    while stack:
        node, path = stack.pop()
        seen += 1
        if seen > _MAX_NODES:
            found.append(Finding(Verdict.SUSPICIOUS, where, "structure", "config",
                                 f"config has more than {_MAX_NODES} values: not examined to the end"))
            break
        if isinstance(node, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node))
            continue
        if isinstance(node, str):
            if _looks_marshalled(node):
                found.append(Finding(Verdict.UNSAFE, f"{where}:{path}", "bytecode", "marshalled code",
                                     "base64 of a marshalled Python code object"))
            continue
        if not isinstance(node, dict):
            continue
        cls = node.get("class_name")
        for key, value in node.items():
            if key == "safe_mode" and value is False:
                found.append(Finding(Verdict.SUSPICIOUS, f"{where}:{path}", "safe-mode", "safe_mode",
                                     "the config passes safe_mode=False to something it calls"))
            if cls == _LAMBDA and key == "config" and isinstance(value, dict):
                # The function is judged below as a whole (bytecode is reported once, as the Lambda).
                fn = value.get("function")
                rest = {k: v for k, v in value.items() if k != "function"}
                if isinstance(fn, dict) and fn.get("class_name") != "__lambda__":
                    rest["function"] = fn
                stack.append((rest, f"{path}.{key}"))
            elif isinstance(value, str | list | dict):
                stack.append((value, f"{path}.{key}"))
        if not isinstance(cls, str):
            continue
        here = f"{where}:{path or '.'}"
        if cls == _LAMBDA:
            config = node.get("config")
            verdict = _lambda_function(config)
            if verdict is not None:
                name = config.get("name") if isinstance(config, dict) else None
                found.append(Finding(verdict[0], here, verdict[1], str(name or node.get("name") or _LAMBDA),
                                     verdict[2]))
        elif cls in _TF_OP_LAMBDAS:
            config = node.get("config")
            fn = config.get("function") if isinstance(config, dict) else None
            parts = set(re.split(r"[.]", fn)) if isinstance(fn, str) else set()
            if not isinstance(fn, str) or parts & _TF_OP_DANGEROUS:
                found.append(Finding(Verdict.UNSAFE, here, "tf-op", f"tf.{fn}",
                                     f"{cls} layer calling tf.{fn}: reads or writes files, runs Python or "
                                     "reaches outside the model"))
        if cls.startswith("__") and cls.endswith("__"):
            continue  # Keras 3 value markers: __tuple__, __tensor__, __numpy__, __bytes__, __lambda__, ...
        module, name = _object_name(node)
        judged = _judge_object(module, name, node.get("registered_name"))
        if judged is not None:
            full = f"{module}.{name}" if module else name
            found.append(Finding(judged[0], here, judged[1], full, judged[2]))
    return found


class _Scan:
    def __init__(self, limits: ScanLimits, spool_dir: str | None) -> None:
        self.limits = limits
        self.spool_dir = spool_dir
        self.deadline = time.monotonic() + limits.max_seconds
        self.findings: list[Finding] = []
        self.notes: list[str] = []
        self.format = "unknown"
        self.keras_version: str | None = None
        self.configs = 0

    def add(self, found: list[Finding]) -> None:
        for f in found:
            if len(self.findings) < _MAX_FINDINGS:
                self.findings.append(f)
            elif f.level.rank > max(x.level.rank for x in self.findings):
                self.findings[-1] = f  # never lose the worst verdict to the cap

    def problem(self, level: Verdict, where: str, reason: str) -> None:
        self.add([Finding(level, where, "structure", where, reason)])

    def parse_config(self, raw: bytes, where: str) -> Any:
        if len(raw) > self.limits.max_keras_config:
            self.problem(Verdict.SUSPICIOUS, where, f"config of {len(raw)} bytes is over the "
                         f"{self.limits.max_keras_config}-byte limit: not examined")
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:
            self.problem(Verdict.SUSPICIOUS, where, f"config is not JSON: {exc}")
            return None

    # -- .keras --------------------------------------------------------------------------------------
    def keras_zip(self, buf: Any) -> None:
        self.format = "keras"
        try:
            listing = list_members(buf, 0, len(buf), self.limits.max_zip_members)
        except ZipFormatError as exc:
            self.problem(Verdict.SUSPICIOUS, "", f"unreadable zip: {exc}")
            return
        for anomaly in listing.anomalies:
            self.problem(Verdict.SUSPICIOUS, "", f"zip structure: {anomaly}")
        # Every member named config.json is read, hidden ones too: which one a loader picks is its choice.
        for m in listing.members:
            if m.name not in ("config.json", "metadata.json") or m.data_offset < 0:
                continue
            if m.uncompressed_size > self.limits.max_keras_config:
                self.problem(Verdict.SUSPICIOUS, m.name, f"{m.name} of {m.uncompressed_size} bytes is over the "
                             f"{self.limits.max_keras_config}-byte limit: not examined")
                continue
            try:
                out, lo, hi = read_member(buf, m, self.limits.max_keras_config + 1, self.deadline,
                                          max_ratio=self.limits.max_inflate_ratio,
                                          ratio_floor=self.limits.inflate_ratio_floor, spool_dir=self.spool_dir)
            except ZipFormatError as exc:
                self.problem(Verdict.SUSPICIOUS, m.name, f"member cannot be read: {exc}")
                continue
            try:
                if out.bomb or out.problem:
                    self.problem(Verdict.SUSPICIOUS, m.name, f"member {out.bomb or out.problem}")
                parsed = self.parse_config(bytes(out.data[lo:hi]), m.name)
            finally:
                out.close()
            if m.name == "metadata.json":
                if isinstance(parsed, dict) and isinstance(parsed.get("keras_version"), str):
                    self.keras_version = parsed["keras_version"]
                continue
            if parsed is not None:
                self.configs += 1
                self.add(config_findings(parsed, m.name))
        if not any(m.name == "config.json" for m in listing.members):
            self.problem(Verdict.SUSPICIOUS, "", "Keras archive without config.json")

    # -- HDF5 ----------------------------------------------------------------------------------------
    def hdf5(self, source: Any) -> None:
        import h5py  # imported here: only HDF5 files need the HDF5 library

        self.format = "keras-h5"
        try:
            with h5py.File(source, "r") as f:
                attrs = f.attrs
                names = list(attrs.keys())
                version = attrs.get("keras_version") if "keras_version" in names else None
                if isinstance(version, bytes | str):
                    self.keras_version = version.decode() if isinstance(version, bytes) else version
                for key in ("model_config", "training_config"):
                    if key not in names:
                        continue
                    size = attrs.get_id(key).get_storage_size()
                    if size > self.limits.max_keras_config:
                        self.problem(Verdict.SUSPICIOUS, key, f"attribute of {size} bytes is over the "
                                     f"{self.limits.max_keras_config}-byte limit: not examined")
                        continue
                    value = attrs[key]
                    if isinstance(value, str):
                        raw: bytes | None = value.encode()
                    else:
                        raw = bytes(value) if isinstance(value, bytes) else None
                    if raw is None:
                        self.problem(Verdict.SUSPICIOUS, key, f"attribute is not a string ({type(value).__name__})")
                        continue
                    parsed = self.parse_config(raw, key)
                    if parsed is not None:
                        self.configs += 1
                        self.add(config_findings(parsed, key))
                if "model_config" not in names:
                    self.format = "hdf5"
                    self.notes.append("no model_config attribute: weights or data only, nothing Keras runs")
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            self.problem(Verdict.SUSPICIOUS, "", f"unreadable HDF5: {exc}")

    def result(self, name: str) -> ScanResult:
        verdict = worst([f.level for f in self.findings]) if self.findings else Verdict.SAFE
        findings = sorted(self.findings, key=lambda f: -f.level.rank)
        details: dict[str, Any] = {
            "file": name, "format": self.format, "kerasVersion": self.keras_version, "configs": self.configs,
            "findings": [f.as_dict() for f in findings], "notes": self.notes,
        }
        if findings:
            worst_ones = [f.name for f in findings if f.level is verdict]
            summary = f"{verdict.value}: {findings[0].kind} {', '.join(worst_ones[:3])}"
            summary += " …" if len(worst_ones) > 3 else ""
        else:
            summary = f"{verdict.value}: {self.configs} Keras config(s), nothing that runs code"
        return ScanResult(SCANNER_NAME, SCANNER_VERSION, verdict, summary, details)


def _hdf5_at(buf: Any) -> bool:
    return any(buf[o : o + 8] == HDF5_MAGIC for o in _HDF5_OFFSETS if o + 8 <= len(buf))


class KerasScanner:
    """Keras v3 archives and legacy HDF5 models. Entry points never raise: a bug becomes `error`."""

    name = SCANNER_NAME

    def __init__(self, limits: ScanLimits | None = None, spool_dir: str | None = None) -> None:
        self.limits = limits or ScanLimits()
        self.spool_dir = spool_dir

    def version(self) -> str:
        return SCANNER_VERSION

    def scan_bytes(self, data: bytes, name: str = "") -> ScanResult:
        try:
            if len(data) > self.limits.max_file_bytes:
                return _error(f"file larger than the {self.limits.max_file_bytes}-byte limit")
            return self._scan(bytes(data), lambda: io.BytesIO(data), name)
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
                return self._scan(b"", lambda: io.BytesIO(b""), name)
            with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return self._scan(mm, lambda: str(path), name)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - the worker must get a verdict, never a crash
            return _error(f"scanner failure: {type(exc).__name__}: {exc}", traceback.format_exc(limit=5))

    def _scan(self, buf: Any, h5_source: Any, name: str) -> ScanResult:
        scan = _Scan(self.limits, self.spool_dir)
        if buf[:4] in _ZIP_MAGICS:
            scan.keras_zip(buf)
        elif _hdf5_at(buf):
            scan.hdf5(h5_source())
        elif name.endswith((".keras", ".h5", ".hdf5")):
            # Loaders trust the extension; content that is not what the name says is not proven safe.
            scan.problem(Verdict.SUSPICIOUS, name, "named like a Keras model but neither a zip nor HDF5")
        else:
            scan.format = "not-keras"
        return scan.result(name)


def _error(message: str, trace: str = "") -> ScanResult:
    details: dict[str, Any] = {"findings": [], "error": message}
    if trace:
        details["trace"] = trace
    return ScanResult(SCANNER_NAME, SCANNER_VERSION, Verdict.ERROR, f"error: {message}", details)


def scan_source(source: Path | bytes, name: str, spool_dir: str | None = None) -> ScanResult:
    """One scan of a file or of bytes: what an isolated scan process runs (bastion.scanning.isolation)."""
    scanner = KerasScanner(spool_dir=spool_dir)
    if isinstance(source, Path):
        return scanner.scan_path(source, name)
    return scanner.scan_bytes(source, name)

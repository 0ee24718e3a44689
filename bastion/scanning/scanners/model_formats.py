"""The format scanners, one per model file format, behind one scanner (`format`, shown as `formatScan`).

A file is matched to at most one format: by its content first (each format's `sniff` on the file's first
bytes), then by its name's extension (a format without a magic, or a file whose name says what its
content does not show). The chosen scanner's `scan(path) -> ScanResult` runs in the scan process; its
findings become the `formatScan` entry. A file no format matches gets `safe` with `format: null`: there
is nothing of this kind in it to judge (the pickle and malware scanners still judge it).

A file of no format that is an archive (zip, tar, a .nemo, gzip/bz2/xz-compressed) is walked with the
pickle scanner's bounds (bastion.scanning.scanners.format_containers): every member a format sniffs or
names is judged as a file of its own and its findings join the archive's (`format: "zip"`/`"tar"`/`"nemo"`).
A zip that is a format itself (a Keras v3 archive, a .npz) is judged as that format only.

Adding a format is one entry in FORMATS (see `Format`). The scanner's version is the framework's
version joined with every format's own, so changing any format scanner (bump its VERSION) makes the
sweeper rescan stored verdicts.
"""

from __future__ import annotations

import os
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bastion.scanning.results import ScanResult, Verdict
from bastion.scanning.scanners import (
    format_containers,
    gguf_format,
    keras,
    nemo_config,
    numpy_format,
    onnx_format,
    safetensors_format,
    savedmodel,
)
from bastion.scanning.scanners.format_containers import Walk
from bastion.scanning.scanners.format_report import SCANNER_NAME, FormatReport, NotThisFormat, failed
from bastion.scanning.scanners.pickles.scanner import ScanLimits

# 2: archives are walked (format_containers).
FRAMEWORK_VERSION = "2"
HEAD_BYTES = 1 << 16  # what `sniff` sees


@dataclass(frozen=True)
class Format:
    """One format scanner. `scan` reads a file on disk (never loads the model) and returns a ScanResult
    with the format-report shape (`bastion.scanning.scanners.format_report`); it may raise, which makes
    the verdict `error`. `sniff(head)`: True when the first HEAD_BYTES bytes are this format (None:
    matched by extension only). `version`: bump it whenever the scanner's judgement changes."""

    name: str
    version: str
    scan: Callable[[Path], ScanResult]
    extensions: tuple[str, ...] = ()
    sniff: Callable[[bytes], bool] | None = None


def _as_report(fmt: str, result: ScanResult, version: str) -> ScanResult:
    """A Keras or SavedModel scanner's result in the format-report shape (findings: level, location,
    message), its verdict kept: an error or a problem without a finding still counts."""
    details = result.details
    report = FormatReport(fmt)
    for f in details.get("findings", []):
        if "op" in f:  # SavedModel: one finding per flagged op, with where it is used
            where = ", ".join(f.get("locations", [])[:3])
            report.add(Verdict(f["level"]), where, f"op {f['op']} (x{f.get('count', 1)}): {f['reason']}")
        else:  # Keras: one per flagged object
            _keras_finding(report, f)
    for f in details.get("kerasFindings", []):  # SavedModel: its Keras metadata, judged by the Keras walk
        _keras_finding(report, f)
    for p in details.get("problems", []):
        report.add(Verdict(p["level"]), p.get("location", ""), p.get("message", ""))
    if result.verdict.rank > report.verdict.rank:
        report.add(result.verdict, "", details.get("error") or result.summary)
    report.info.update({k: details[k] for k in ("kerasVersion", "configs", "notes", "metaGraphs", "nodes",
                                                "functions", "ops") if k in details})
    report.info["container"] = details.get("format")
    return report.result(version)


def _keras_finding(report: FormatReport, f: dict[str, str]) -> None:
    report.add(Verdict(f["level"]), f.get("location", ""), f"{f.get('kind')} {f.get('name')}: {f.get('reason')}")


def _keras_scan(path: Path) -> ScanResult:
    result = keras.KerasScanner().scan_path(path)
    if result.details.get("format") == "not-keras":
        raise NotThisFormat("neither a Keras zip nor HDF5")
    return _as_report("keras", result, keras.SCANNER_VERSION)


def _keras_sniff(head: bytes) -> bool:
    """HDF5 (with or without a user block), or a zip whose first member is one a Keras v3 archive holds."""
    if any(head[o:o + 8] == keras.HDF5_MAGIC for o in (0, 512, 1024, 2048, 4096, 8192, 16384, 32768)):
        return True
    if head[:4] != b"PK\x03\x04" or len(head) < 30:
        return False
    name_len = int.from_bytes(head[26:28], "little")
    return head[30:30 + name_len] in (b"metadata.json", b"config.json", b"model.weights.h5")


def _savedmodel_scan(path: Path) -> ScanResult:
    return _as_report("savedmodel", savedmodel.SavedModelScanner().scan_path(path), savedmodel.SCANNER_VERSION)


# Checked in this order: the first whose sniff matches wins (a .npz is a zip; ONNX's sniff is the loosest).
FORMATS: tuple[Format, ...] = (
    Format(gguf_format.NAME, gguf_format.VERSION, gguf_format.scan_path, (".gguf",), gguf_format.sniff),
    Format(numpy_format.NAME, numpy_format.VERSION, numpy_format.scan_path, (".npy", ".npz"), numpy_format.sniff),
    Format(safetensors_format.NAME, safetensors_format.VERSION, safetensors_format.scan_path, (".safetensors",),
           safetensors_format.sniff),
    Format("keras", keras.SCANNER_VERSION, _keras_scan, (".keras", ".h5", ".hdf5"), _keras_sniff),
    Format(onnx_format.NAME, onnx_format.VERSION, onnx_format.scan_path, (".onnx",), onnx_format.sniff),
    # No magic: a SavedModel, frozen GraphDef or Keras metadata protobuf is known by its name.
    Format("savedmodel", savedmodel.SCANNER_VERSION, _savedmodel_scan, (".pb", ".pbtxt")),
    # A NeMo config (in a .nemo archive, or unpacked): Hydra targets, known by its name.
    Format(nemo_config.NAME, nemo_config.VERSION, nemo_config.scan_path, (nemo_config.FILE_NAME,)),
)


def scanner_version(formats: tuple[Format, ...] = FORMATS) -> str:
    return FRAMEWORK_VERSION + ":" + ",".join(f"{f.name}-{f.version}" for f in sorted(formats, key=lambda f: f.name))


SCANNER_VERSION = scanner_version()


def choose(head: bytes, name: str, formats: tuple[Format, ...] = FORMATS) -> tuple[Format | None, Format | None]:
    """(the format the content shows, the format the name claims); either may be None."""
    by_content = next((f for f in formats if f.sniff is not None and f.sniff(head)), None)
    lowered = name.lower()
    by_name = next((f for f in formats if f.extensions and lowered.endswith(f.extensions)), None)
    return by_content, by_name


def scan_path(path: Path, name: str | None = None, formats: tuple[Format, ...] = FORMATS,
              limits: ScanLimits | None = None, spool_dir: str | None = None) -> ScanResult:
    """The format verdict on one file; `name` (default: the file's) is its path in the repository.
    `limits` bound the walk through archives (the pickle scanner's), whose members are spooled to
    `spool_dir` (default: the system's temporary folder). Never raises, MemoryError aside (in a scan
    process, that is its memory limit's verdict)."""
    return _scan(path, path.name if name is None else name, formats, Walk.start(limits, spool_dir))


def _scan(path: Path, name: str, formats: tuple[Format, ...], walk: Walk) -> ScanResult:
    version = scanner_version(formats)
    if not path.is_file():
        return failed("unknown", version, f"not a regular file: {name}")
    with path.open("rb") as fh:
        head = fh.read(HEAD_BYTES)
    by_content, by_name = choose(head, name, formats)
    if by_content is None and by_name is None and (kind := format_containers.kind_of(head)) is not None:
        return _archive(path, name, kind, formats, walk, version)
    chosen, result = None, None
    for candidate in dict.fromkeys(f for f in (by_content, by_name) if f is not None):
        chosen = candidate
        try:
            result = candidate.scan(path)
        except NotThisFormat as exc:
            if candidate is not by_name:
                continue  # the content only looked like it; the name may still claim a format
            result = FormatReport(candidate.name).result(version)
            _flag(result, f"the name says {candidate.name} but the content is not: {exc}")
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - the worker must get a verdict, never a crash
            result = failed(candidate.name, version, f"{candidate.name} scanner failure: {type(exc).__name__}: {exc}")
            result.details["trace"] = traceback.format_exc(limit=5)
        break
    if chosen is None or result is None:
        return _no_format(version, name)
    if chosen is by_content and by_name is not None and by_name is not chosen:
        # Loaders go by the name: content of another format under it is a disguise or a broken file.
        _flag(result, f"the name says {by_name.name} but the content is {chosen.name}")
    result.scanner, result.scanner_version = SCANNER_NAME, version
    result.details["scanner"] = f"{chosen.name}-{chosen.version}"
    result.details["file"] = name
    return result


def _archive(path: Path, name: str, kind: str, formats: tuple[Format, ...], walk: Walk, version: str) -> ScanResult:
    def wants(head: bytes, member: str) -> bool:
        return any(choose(head, member, formats)) or format_containers.kind_of(head) is not None

    def scan_member(spooled: Path, member: str, inner: Walk) -> ScanResult:
        return _scan(spooled, member, formats, inner)

    try:
        result = format_containers.scan_archive(path, name, kind, walk, wants, scan_member, version)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - the worker must get a verdict, never a crash
        result = failed(kind, version, f"{kind} walk failure: {type(exc).__name__}: {exc}")
        result.details["trace"] = traceback.format_exc(limit=5)
    result.scanner, result.scanner_version = SCANNER_NAME, version
    result.details.setdefault("scanner", f"archive-{FRAMEWORK_VERSION}")
    result.details["file"] = name
    return result


def _no_format(version: str, name: str) -> ScanResult:
    return ScanResult(SCANNER_NAME, version, Verdict.SAFE, "safe: not a model format the format scanners read",
                      {"format": None, "findings": [], "file": name})


def _flag(result: ScanResult, message: str) -> None:
    if result.verdict.rank < Verdict.SUSPICIOUS.rank:
        result.verdict = Verdict.SUSPICIOUS
        result.summary = f"suspicious: {message}"
    result.details.setdefault("findings", []).append({"level": "suspicious", "location": "", "message": message})


def scan_source(source: Path | bytes, name: str, spool_dir: str | None = None) -> ScanResult:
    """One scan of a file or of bytes: what a scan process runs (bastion.scanning.isolation). Bytes (a git
    blob) are written to a temporary file first: the format parsers read files."""
    if isinstance(source, Path):
        return scan_path(source, name, spool_dir=spool_dir)
    fd, tmp = tempfile.mkstemp(prefix="bastion-format-", dir=spool_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(source)
        return scan_path(Path(tmp), name or "", spool_dir=spool_dir)
    finally:
        os.unlink(tmp)

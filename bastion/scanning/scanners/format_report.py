"""What a format scanner found in one file, and the ScanResult it becomes (the `formatScan` entry).

Every format scanner (safetensors, GGUF, ONNX, NumPy, ...) records findings here, each with a verdict
level, a location inside the file and a reason; the file's verdict is the worst finding's, SAFE only
when the scanner read the whole structure it judges and found nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bastion.scanning.results import ScanResult, Verdict, worst

SCANNER_NAME = "format"
MAX_FINDINGS = 200


@dataclass
class FormatReport:
    """Findings of one format scanner on one file. `info`: what the scanner read (counts, names), shown
    with the verdict so a reader can see what was judged."""

    format: str
    findings: list[dict[str, str]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    levels: list[Verdict] = field(default_factory=list)

    def add(self, level: Verdict, location: str, message: str) -> None:
        self.levels.append(level)
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append({"level": level.value, "location": location, "message": message})

    def unsafe(self, location: str, message: str) -> None:
        self.add(Verdict.UNSAFE, location, message)

    def suspicious(self, location: str, message: str) -> None:
        self.add(Verdict.SUSPICIOUS, location, message)

    def error(self, location: str, message: str) -> None:
        """The scanner could not finish judging (a limit, an unreadable part): never safe."""
        self.add(Verdict.ERROR, location, message)

    @property
    def verdict(self) -> Verdict:
        return worst(self.levels) if self.levels else Verdict.SAFE

    def result(self, version: str) -> ScanResult:
        verdict = self.verdict
        ranked = sorted(self.findings, key=lambda f: -Verdict(f["level"]).rank)
        if ranked:
            first = ranked[0]
            more = f" (+{len(self.levels) - 1} more)" if len(self.levels) > 1 else ""
            summary = f"{verdict.value}: {self.format}: {first['message']}{more}"
        else:
            summary = f"{verdict.value}: valid {self.format} file, nothing found"
        details = {"format": self.format, "formatVersion": version, "findings": ranked, **self.info}
        return ScanResult(SCANNER_NAME, version, verdict, summary, details)


class NotThisFormat(Exception):
    """Raised by a format scanner whose sniff matched content that turns out not to be its format (ONNX
    has no magic number). The file is then judged as no format, unless its name claims this one."""


def failed(fmt: str, version: str, message: str) -> ScanResult:
    """A scan that could not run to the end (a bug or an unexpected exception): error, never safe."""
    report = FormatReport(fmt)
    report.error("", message)
    return report.result(version)

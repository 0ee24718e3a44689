"""Bastion's own pickle scanner: static, never executes or imports anything from the file.

Public API: PickleScanner(limits).scan_path / scan_bytes -> ScanResult, ScanLimits, SCANNER_VERSION;
scan_source(), the entry point of an isolated scan process; scan_embedded(), a pickle inside another format.
"""

from __future__ import annotations

from bastion.scanning.scanners.pickles.policy import classify
from bastion.scanning.scanners.pickles.scanner import (
    SCANNER_NAME,
    SCANNER_VERSION,
    PickleScanner,
    ScanLimits,
    scan_embedded,
    scan_source,
)

__all__ = ["SCANNER_NAME", "SCANNER_VERSION", "PickleScanner", "ScanLimits", "classify", "scan_embedded", "scan_source"]

"""What a scanner says about a file: a verdict from one ordered scale, plus details.

Nothing is safe by default: UNSCANNED/QUEUED until every enabled scanner ran; a scanner that
could not run says ERROR or UNAVAILABLE, which rank above SAFE so they can never hide a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    SAFE = "safe"
    UNSCANNED = "unscanned"
    QUEUED = "queued"
    UNAVAILABLE = "unavailable"
    CAUTION = "caution"
    ERROR = "error"
    SUSPICIOUS = "suspicious"
    UNSAFE = "unsafe"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {v: i for i, v in enumerate(Verdict)}


def worst(verdicts: list[Verdict]) -> Verdict:
    """Overall status: the worst verdict wins; no verdicts at all means UNSCANNED, not SAFE."""
    if not verdicts:
        return Verdict.UNSCANNED
    return max(verdicts, key=lambda v: v.rank)


class ImportSafety(StrEnum):
    """Per-import classification, with the Hub's names (pickleImportScan.imports[].safety)."""

    INNOCUOUS = "innocuous"
    SUSPICIOUS = "suspicious"
    DANGEROUS = "dangerous"


@dataclass
class ScanResult:
    scanner: str  # "pickle" | "av" | "secrets"
    scanner_version: str
    verdict: Verdict
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    # False when running the same scan again cannot change the outcome (e.g. the file is over clamd's
    # size limits): the job ends at once instead of being retried. Not stored with the verdict.
    retryable: bool = True
    # Live Bastion tokens the secrets scanner found (never stored): whoever records the verdict revokes
    # them in the same transaction (bastion.scanning.leaks.revoke_leaked_in).
    leaked: list[str] = field(default_factory=list)

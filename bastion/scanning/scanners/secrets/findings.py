"""SecretFinding: what the secret scanner reports about one leaked credential.

Everything displayable is redacted; the raw secret lives in one field that repr, equality and
`to_dict` leave out, so only verification and revocation code ever reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

VerificationMethod = Literal["checksum", "api", "none"]
# "high": the match alone is strong evidence (a checksum, a distinctive provider format, an AWS key id
# found with its secret key: detectors.HIGH_CONFIDENCE); "low": a pattern that also fits other text.
Confidence = Literal["high", "low"]


@dataclass(frozen=True)
class SecretFinding:
    file: str
    line: int  # 1-based, in the file as stored (the .ipynb line for notebooks, the new-file line in diffs)
    column: int  # 1-based
    provider: str  # e.g. "github"
    secret_type: str  # human name, e.g. "GitHub token"
    detector: str  # detector id, e.g. "github.token"
    preview: str  # redacted: a public prefix and at most 4 characters, never the secret
    # "checksum": an offline integrity check passed (CRC, macaroon, parsed key); "api": a verifier
    # asked the provider; "none": the format matched and nothing more is known.
    verification: VerificationMethod
    # For "checksum" and "api": True when that check says the secret is genuine (for "api": live).
    verified: bool
    end_line: int = 0
    encrypted: bool = False  # private keys that parsed as encrypted: a finding, but less urgent
    note: str = ""
    confidence: Confidence = "low"
    # RAW SECRET — for verifiers and revocation only. Never log, display or store it; it is kept
    # out of repr(), ==, hashing and to_dict() on purpose.
    raw_secret: str = field(default="", repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The CLI / API shape of a finding (`bastion scan --json`)."""
        return {
            "file": self.file,
            "line": self.line,
            "provider": self.provider,
            "verified": self.verified,
            "verification": self.verification,
        }

    def to_details(self) -> dict[str, Any]:
        """A richer, still redacted record for stored scan results and notices."""
        return {
            **self.to_dict(),
            "column": self.column,
            "end_line": self.end_line or self.line,
            "type": self.secret_type,
            "detector": self.detector,
            "preview": self.preview,
            "encrypted": self.encrypted,
            "confidence": self.confidence,
        }

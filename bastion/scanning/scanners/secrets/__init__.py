"""Secret scanning: detectors for 60+ credential formats, context filters, offline checksums, verifiers.

Entry point: ``SecretScanner().scan_bytes(data, path)`` / ``scan_file`` / ``scan_diff(diff)``;
``to_scan_result`` turns findings into the pipeline's ScanResult; ``scan_source`` is what an isolated
scan process runs. Nothing here touches the network unless a
VerifierRegistry with HTTP verifiers is passed in.
"""

from __future__ import annotations

from bastion.scanning.scanners.secrets.detectors import DEFAULT_DETECTORS, PROVIDERS, Detector
from bastion.scanning.scanners.secrets.findings import SecretFinding
from bastion.scanning.scanners.secrets.scanner import (
    SCANNER_NAME,
    SCANNER_VERSION,
    SecretScanner,
    SecretScanReport,
    scan_source,
    to_scan_result,
)
from bastion.scanning.scanners.secrets.verifiers import (
    BASTION_TOKEN_DETECTOR,
    CallableVerifier,
    HttpVerifier,
    VerificationResult,
    Verifier,
    VerifierRegistry,
)

__all__ = [
    "BASTION_TOKEN_DETECTOR",
    "DEFAULT_DETECTORS",
    "PROVIDERS",
    "SCANNER_NAME",
    "SCANNER_VERSION",
    "CallableVerifier",
    "Detector",
    "HttpVerifier",
    "SecretFinding",
    "SecretScanReport",
    "SecretScanner",
    "VerificationResult",
    "Verifier",
    "VerifierRegistry",
    "scan_source",
    "to_scan_result",
]

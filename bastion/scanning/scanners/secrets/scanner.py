"""SecretScanner: runs the detector registry over text, bytes, notebooks and diffs.

The cost model: one literal search per keyword over the whole text (C speed), then each detector's
regex only over the lines where one of its keywords occurred. Text without keywords costs only
the literal searches, which is what keeps ordinary data at hundreds of MB/s of no findings.

Binary content is not skipped: its printable strings (as `strings` prints them) are scanned with the
self-identifying detectors (provider prefixes, keys that parse), so a checksum-valid token is found
anywhere in any file; files too large to hold are streamed through the same extraction.

Over 500 lines on purpose: the cost model above is one loop (prefilter, detector regexes, decoding,
verification), and splitting it would scatter the bounds each step relies on.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from bastion.scanning.results import ScanResult, Verdict
from bastion.scanning.scanners.secrets.detectors import DEFAULT_DETECTORS, Candidate, Detector, self_identifying
from bastion.scanning.scanners.secrets.findings import SecretFinding
from bastion.scanning.scanners.secrets.formats import (
    Segment,
    decode_text,
    diff_segments,
    notebook_segments,
)
from bastion.scanning.scanners.secrets.verifiers import BASTION_TOKEN_DETECTOR, VerificationResult, VerifierRegistry

SCANNER_NAME = "secrets"
# Bump when detectors change in a way that can change results, so stale results get rescanned.
SCANNER_VERSION = "1.3.0"

# A minified line can be megabytes long; a detector only needs the neighbourhood of a keyword.
_MAX_WINDOW = 16_384
# Printable strings of binary content: runs of at least this many printable ASCII characters (tabs
# and line breaks included, so a PEM block keeps its lines); the shortest credential is longer.
STRINGS_MIN_LENGTH = 8
_PRINTABLE_RUN = re.compile(rb"[\t\n\r\x20-\x7e]{%d,}" % STRINGS_MIN_LENGTH)
# Streaming: blocks read at a time, and how much of a printable run cut by a block's end is read
# again with the next block (every credential format is far shorter).
STREAM_BLOCK = 8 << 20
_STREAM_OVERLAP = 4096
# Text streams: the lines re-read with the next block (a PEM key or a JSON credential spans lines).
_TEXT_OVERLAP = 64 << 10
# Findings kept per file: more are not more informative, and each costs a verification. Bastion's
# own tokens have a cap of their own, so padding a file with look-alikes cannot save a live token
# from revocation.
MAX_FINDINGS = 1000
MAX_BASTION_TOKENS = 100_000
# Encodings a secret hides in (scan_text): runs of base64 (standard or URL-safe) that decode to text,
# and JSON string escapes (\uXXXX, \/). Bounded: at most this many runs and decoded characters per
# text, and base64 inside base64 is followed this deep.
_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{20,}={0,2}")
_JSON_ESCAPE = re.compile(r"\\u[0-9a-fA-F]{4}|\\/")
MAX_DECODED_CHARS = 16 << 20
_DECODE_DEPTH = 2
# Decoded base64 counts as text when at least this share of it is printable ASCII (tabs, newlines).
_PRINTABLE_SHARE = 0.9


@dataclass
class SecretScanReport:
    findings: list[SecretFinding] = field(default_factory=list)
    skipped: str | None = None  # why the content was not read (nothing the scanner does today skips)
    binary: bool = False  # the content was binary: its printable strings were scanned
    # Set when only part of the detectors ran (a text file too large to hold): the reason.
    partial: str | None = None


class SecretScanner:
    def __init__(
        self,
        detectors: Iterable[Detector] | None = None,
        verifiers: VerifierRegistry | None = None,
    ) -> None:
        self.detectors: tuple[Detector, ...] = tuple(DEFAULT_DETECTORS if detectors is None else detectors)
        self.verifiers = verifiers if verifiers is not None else VerifierRegistry()
        self._strings_scanner: SecretScanner | None = None  # for binary content, built when first needed
        # The prefilter: keywords grouped by first character, one alternation regex per group,
        # run over the lowercased text. sre skips positions whose character cannot start the
        # group, so ~26 passes replace ~120 literal searches (3-4x faster on ordinary text).
        # A detector may guard its keywords with a lookahead (the generic rule only cares about
        # "token" when an assignment follows), which keeps common words from opening windows.
        by_literal: dict[str, list[int]] = defaultdict(list)
        guards: dict[str, set[str]] = defaultdict(set)
        for index, det in enumerate(self.detectors):
            for kw in det.keywords:
                by_literal[kw.lower()].append(index)
                guards[kw.lower()].add(det.keyword_guard)
        # The longest literal wins at a position, so it also stands for every keyword it
        # contains: a hit on "secret_" must open windows for "secret"'s detectors too.
        self._keyword_detectors: dict[str, tuple[int, ...]] = {
            literal: tuple(sorted({d for lit, ds in by_literal.items() if lit in literal for d in ds}))
            for literal in by_literal
        }
        groups: dict[str, list[str]] = defaultdict(list)
        for literal in sorted(by_literal, key=len, reverse=True):
            # A shared literal is guarded only if every detector using it asks for that guard.
            guard = guards[literal].pop() if len(guards[literal]) == 1 else ""
            groups[literal[0]].append(re.escape(literal) + guard)
        # No capture groups here: they switch off sre's first-character skip (30x slower).
        self._prefilter = [re.compile("|".join(alts)) for alts in groups.values()]

    # --- public API --------------------------------------------------------------------------

    def scan_text(self, text: str, path: str = "") -> list[SecretFinding]:
        """Findings in text, including secrets hidden in base64 runs and JSON escapes (see _decoded)."""
        return self._finish(self._text_findings(text, path, _DECODE_DEPTH))

    def _text_findings(self, text: str, path: str, depth: int) -> list[SecretFinding]:
        found: list[SecretFinding] = []
        if path.endswith(".ipynb"):
            segments = notebook_segments(text, path)
            if segments is not None:
                found = [f for seg in segments for f in self._scan_segment(seg)]
        if not found:
            found = self._scan_segment(Segment(text, path=path))
        if depth > 0:
            seen = {f.raw_secret for f in found}
            found += [f for f in self._decoded(text, path, depth) if f.raw_secret not in seen]
        return found

    def _decoded(self, text: str, path: str, depth: int) -> list[SecretFinding]:
        """Secrets in the encodings text carries them in: JSON escapes are undone in place (line numbers
        kept; an escaped line break becomes a space), and each base64 run that decodes to mostly
        printable text is scanned as text, its findings placed on the run's line."""
        out: list[SecretFinding] = []
        budget = MAX_DECODED_CHARS
        if "\\" in text and _JSON_ESCAPE.search(text):
            unescaped = _JSON_ESCAPE.sub(_unescape, text[:MAX_DECODED_CHARS])
            budget -= len(unescaped)
            out += [replace(f, note=_join_notes(f.note, "JSON-escaped"))
                    for f in self._text_findings(unescaped, path, 0)]
        line, pos = 1, 0
        for m in _B64_RUN.finditer(text):
            if budget <= 0:
                break
            decoded = _b64_text(m.group())
            if decoded is None:
                continue
            budget -= len(decoded)
            line += text.count("\n", pos, m.start())
            pos = m.start()
            column = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
            out += [replace(f, line=line, end_line=line, column=column,
                            note=_join_notes(f.note, "base64-encoded"))
                    for f in self._text_findings(decoded, path, depth - 1)]
        return out

    def scan_bytes(self, data: bytes, path: str = "") -> list[SecretFinding]:
        return self.scan_blob(data, path).findings

    def scan_blob(self, data: bytes, path: str = "") -> SecretScanReport:
        """Like scan_bytes, but says how the content was read (as text, or as binary's strings)."""
        text = decode_text(data)
        if text is None:
            return SecretScanReport(self.scan_strings(data, path), binary=True)
        return SecretScanReport(self.scan_text(text, path))

    def scan_strings(self, data: bytes, path: str = "") -> list[SecretFinding]:
        """The printable strings of binary content, with the self-identifying detectors. Findings
        carry the line and column of their first byte (lines counted by newline bytes)."""
        return self._finish(self._strings_findings(data, path, 0, 1))

    def scan_stream(self, fh: BinaryIO, path: str = "") -> list[SecretFinding]:
        """scan_strings over a file of any size, in blocks: memory stays a few blocks whatever its size."""
        findings: list[SecretFinding] = []
        carry = b""
        offset = 0  # of the first byte of `carry + block` in the file
        lines = 1  # the line that byte is on
        while True:
            block = fh.read(STREAM_BLOCK)
            data = carry + block
            if not block:  # the end: what was carried is all there is
                findings += self._strings_findings(data, path, offset, lines)
                break
            # A printable run cut by the block's end is carried into the next block: a finding that
            # starts in it is taken from there, where it is whole.
            tail = len(data)
            while tail > 0 and len(data) - tail < _STREAM_OVERLAP and _is_printable(data[tail - 1]):
                tail -= 1
            findings += self._strings_findings(data, path, offset, lines, stop=tail)
            findings = _capped(findings)
            carry = data[tail:]
            lines += data.count(b"\n", 0, tail)
            offset += tail
        return self._finish(findings)

    def scan_text_stream(self, fh: BinaryIO, path: str = "") -> list[SecretFinding]:
        """scan_text over UTF-8 text of any size, in blocks cut at line breaks: the last lines of a
        block (at least _TEXT_OVERLAP bytes) are scanned again with the next one, and a finding that
        starts in them is taken from there, so a secret across a block boundary is found whole.
        Memory stays a few blocks whatever the size."""
        findings: list[SecretFinding] = []
        carry = b""
        line = 1  # the file line of carry's first byte
        column = 0  # characters of that line before carry's first byte (a line cut inside)
        while True:
            block = fh.read(STREAM_BLOCK)
            data = carry + block
            if not block:
                findings += self._block_findings(data, path, line, column, len(data))
                break
            cut = data.rfind(b"\n", 0, max(0, len(data) - _TEXT_OVERLAP)) + 1
            if cut == 0:  # one line longer than the overlap: cut inside it
                cut = max(0, len(data) - _TEXT_OVERLAP)
            findings += self._block_findings(data, path, line, column, cut)
            findings = _capped(findings)
            breaks = data.count(b"\n", 0, cut)
            line_start = data.rfind(b"\n", 0, cut) + 1
            column = (column if breaks == 0 else 0) + len(data[line_start:cut].decode("utf-8", "replace"))
            line += breaks
            carry = data[cut:]
        return self._finish(findings)

    def _block_findings(self, data: bytes, path: str, line: int, column: int, stop: int) -> list[SecretFinding]:
        """Findings of one block of a text stream that start before byte `stop`, placed in the file (the
        block starts on file line `line`, after `column` characters of it)."""
        stop_line = data.count(b"\n", 0, stop) + 1
        stop_column = len(data[data.rfind(b"\n", 0, stop) + 1 : stop].decode("utf-8", "replace")) + 1
        out = []
        for f in self._text_findings(data.decode("utf-8", "replace"), path, _DECODE_DEPTH):
            if (f.line, f.column) >= (stop_line, stop_column):
                continue
            out.append(replace(f, line=f.line + line - 1, end_line=(f.end_line or f.line) + line - 1,
                               column=f.column + (column if f.line == 1 else 0)))
        return out

    def scan_file(self, path: Path, name: str, max_in_memory: int) -> SecretScanReport:
        """A file: read whole up to `max_in_memory` bytes, else streamed as printable strings (a text
        file that large is then only partly covered, which the report says)."""
        if path.stat().st_size <= max_in_memory:
            return self.scan_blob(path.read_bytes(), name)
        with path.open("rb") as fh:
            binary = decode_text(fh.read(_SNIFF_BINARY)) is None
            fh.seek(0)
            findings = self.scan_stream(fh, name)
        partial = None if binary else (f"text file over {max_in_memory} bytes: scanned for self-identifying "
                                       "credential formats only")
        return SecretScanReport(findings, binary=binary, partial=partial)

    def verify(self, findings: list[SecretFinding]) -> list[SecretFinding]:
        """Ask the verifiers about findings made without them (by a scan in another process)."""
        return self._finish(findings)

    def scan_diff(self, diff_text: str) -> list[SecretFinding]:
        """Only lines a commit adds: findings carry the new file's path and line numbers."""
        return self._finish([f for seg in diff_segments(diff_text) for f in self._scan_segment(seg)])

    # --- the engine ----------------------------------------------------------------------------

    def _windows(self, text: str) -> dict[int, list[tuple[int, int]]]:
        """Per detector, the spans of text around its keywords' occurrences (one per line)."""
        n = len(text)
        low = text.lower()
        if len(low) != n:  # a few non-ASCII characters lowercase to two; keep offsets aligned
            low = text.translate(_ASCII_LOWER)
        # Hot loop: per hit only the line bounds (once per line) and one list append.
        lines_by_keyword: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for prefilter in self._prefilter:
            lo = hi = -1
            for m in prefilter.finditer(low):
                pos = m.start()
                if pos >= hi:
                    lo = text.rfind("\n", 0, pos) + 1
                    hi = text.find("\n", pos)
                    if hi == -1:
                        hi = n
                    if hi - lo > _MAX_WINDOW:
                        lo, hi = max(lo, pos - _MAX_WINDOW // 2), min(hi, pos + _MAX_WINDOW // 2)
                spans = lines_by_keyword[m.group()]
                if not spans or spans[-1][0] != lo:
                    spans.append((lo, hi))
        windows: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for name, spans in lines_by_keyword.items():
            for d in self._keyword_detectors[name]:
                det = self.detectors[d]
                if det.scope == "file":
                    windows[d] = [(0, n)]
                elif det.window:
                    windows[d].extend(_grow(text, lo, hi, det.window) for lo, hi in spans)
                else:
                    windows[d].extend(spans)
        return windows

    def _candidates(self, text: str) -> list[Candidate]:
        found: list[Candidate] = []
        for d, spans in self._windows(text).items():
            det = self.detectors[d]
            for lo, hi in _merge(spans):
                found.extend(det.candidates(text, lo, hi))
        # Overlaps: the higher-priority, then longer, candidate wins (a service-account JSON over
        # the PEM inside it, a provider format over the generic assignment rule).
        found.sort(key=lambda c: (-c.detector.priority, -(c.end - c.start), c.start))
        kept: list[Candidate] = []
        for c in found:
            if all(c.end <= k.start or c.start >= k.end for k in kept):
                kept.append(c)
        kept.sort(key=lambda c: c.start)
        return kept

    def _scan_segment(self, seg: Segment) -> list[SecretFinding]:
        text = seg.text
        findings: list[SecretFinding] = []
        line, pos = 1, 0
        for c in self._candidates(text):
            line += text.count("\n", pos, c.start)
            pos = c.start
            end_line = line + text.count("\n", c.start, max(c.start, c.end - 1))
            file_line, file_end = seg.file_line(line), seg.file_line(end_line)
            if seg.report is not None and not any(
                seg.file_line(n) in seg.report for n in range(line, end_line + 1)
            ):
                continue
            column = c.start - (text.rfind("\n", 0, c.start) + 1) + 1
            findings.append(_finding(c, seg.path, file_line, column, file_end))
        return findings

    def _strings_findings(self, data: bytes, path: str, offset: int, line: int,
                          stop: int | None = None) -> list[SecretFinding]:
        """Findings in the printable runs of `data`, which starts at byte `offset` (on line `line`) of
        the file, that start before `stop`; positions are the file's."""
        starts: list[int] = []  # where each run starts in the joined text
        where: list[int] = []  # and in data
        runs: list[bytes] = []
        at = 0
        for m in _PRINTABLE_RUN.finditer(data):
            starts.append(at)
            where.append(m.start())
            runs.append(m.group())
            at += m.end() - m.start() + 1
        if not runs:
            return []
        if self._strings_scanner is None:
            self._strings_scanner = SecretScanner(self_identifying(self.detectors))
        findings: list[SecretFinding] = []
        pos = 0
        for c in self._strings_scanner._candidates(b"\n".join(runs).decode("ascii")):
            run = bisect.bisect_right(starts, c.start) - 1
            first = where[run] + c.start - starts[run]
            if stop is not None and first >= stop:
                break
            line += data.count(b"\n", pos, first)
            pos = first
            column = first - (data.rfind(b"\n", 0, first) + 1) + 1
            end_line = line + data.count(b"\n", first, first + c.end - c.start - 1)
            findings.append(replace(_finding(c, path, line, column, end_line), note=_join_notes(
                c.validation.note, f"in binary content, at byte {offset + first}")))
        return findings

    def _finish(self, findings: list[SecretFinding]) -> list[SecretFinding]:
        findings = _capped(findings)
        if len(self.verifiers):
            findings = self._verify(findings)
        return sorted(findings, key=lambda f: (f.file, f.line, f.column))

    def _verify(self, findings: list[SecretFinding]) -> list[SecretFinding]:
        cache: dict[tuple[str, str], VerificationResult] = {}
        out = []
        for f in findings:
            verifier = self.verifiers.find(f.detector, f.provider)
            if verifier is None:
                out.append(f)
                continue
            key = (f.detector, f.raw_secret)
            if key not in cache:
                try:
                    cache[key] = verifier.verify(f.raw_secret)
                except Exception as exc:  # a broken verifier must not lose the finding
                    cache[key] = VerificationResult("unknown", type(exc).__name__)
            result = cache[key]
            if result.status == "unknown":
                out.append(replace(f, note=(f.note + " " if f.note else "") + "verification unavailable"))
            else:
                out.append(replace(f, verification="api", verified=result.status == "live"))
        return out


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_PRINTABLE_BYTES = b"\t\n\r" + bytes(range(0x20, 0x7F))
_PRINTABLE = frozenset(_PRINTABLE_BYTES)
_SNIFF_BINARY = 8192


def _capped(findings: list[SecretFinding]) -> list[SecretFinding]:
    if len(findings) <= MAX_FINDINGS:
        return findings
    ours = [f for f in findings if f.detector == BASTION_TOKEN_DETECTOR][:MAX_BASTION_TOKENS]
    others = [f for f in findings if f.detector != BASTION_TOKEN_DETECTOR]
    return ours + others[: max(0, MAX_FINDINGS - len(ours))]


def _unescape(m: re.Match[str]) -> str:
    if m.group() == "\\/":
        return "/"
    ch = chr(int(m.group()[2:], 16))
    return " " if ch in "\r\n" else ch


def _b64_text(run: str) -> str | None:
    """`run` decoded as base64 (standard or URL-safe, padding optional) when that gives mostly
    printable text; None otherwise (a hash, a word, binary data)."""
    core = run.rstrip("=")
    if len(core) % 4 == 1:
        return None
    padded = core + "=" * (-len(core) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw:
        return None
    if len(raw.translate(None, _PRINTABLE_BYTES)) > (1 - _PRINTABLE_SHARE) * len(raw):
        return None
    return raw.decode("ascii", "replace")


def _is_printable(byte: int) -> bool:
    return byte in _PRINTABLE


def _join_notes(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _finding(c: Candidate, path: str, line: int, column: int, end_line: int) -> SecretFinding:
    v = c.validation
    return SecretFinding(
        file=path,
        line=line,
        column=column,
        provider=c.detector.provider,
        secret_type=c.detector.name + (" (encrypted)" if v.encrypted else ""),
        detector=c.detector.id,
        preview=c.preview,
        verification="checksum" if v.checksum else "none",
        verified=v.checksum,
        end_line=end_line,
        encrypted=v.encrypted,
        note=v.note,
        confidence="high" if c.high_confidence or v.checksum else "low",
        raw_secret=c.secret,
    )


def _grow(text: str, lo: int, hi: int, lines: int) -> tuple[int, int]:
    for _ in range(lines):
        if lo > 0:
            lo = text.rfind("\n", 0, lo - 1) + 1
        nxt = text.find("\n", hi + 1)
        hi = len(text) if nxt == -1 else nxt
    return lo, hi


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    spans.sort()
    merged = [spans[0]]
    for lo, hi in spans[1:]:
        if lo <= merged[-1][1] + 1:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def to_scan_result(findings: list[SecretFinding], skipped: str | None = None, *, binary: bool = False,
                   partial: str | None = None) -> ScanResult:
    """The secrets scanner's verdict for one file, in the pipeline's common shape.

    Verified (API-live or checksum-valid) secrets make a file UNSAFE; format-only matches make it
    SUSPICIOUS; secrets a provider says are revoked leave CAUTION. Content that was not read is
    UNSCANNED, content read only in part with nothing found CAUTION: never SAFE. Details never hold a
    secret.
    """
    if not findings:
        details: dict[str, object] = {"findings": []}
        if skipped:
            details["skipped"] = skipped
            return ScanResult(SCANNER_NAME, SCANNER_VERSION, Verdict.UNSCANNED,
                              f"not scanned for secrets: {skipped} content", details)
        if binary:
            details["content"] = "binary"
        if partial:
            return ScanResult(SCANNER_NAME, SCANNER_VERSION, Verdict.CAUTION, partial, details)
        summary = "no secrets found in the printable strings of binary content" if binary else "no secrets found"
        return ScanResult(SCANNER_NAME, SCANNER_VERSION, Verdict.SAFE, summary, details)
    live = [f for f in findings if f.verified]
    revoked = [f for f in findings if f.verification == "api" and not f.verified]
    if live:
        verdict = Verdict.UNSAFE
    elif len(revoked) == len(findings):
        verdict = Verdict.CAUTION
    else:
        verdict = Verdict.SUSPICIOUS
    types = sorted({f.secret_type for f in findings})
    summary = f"{len(findings)} secret(s), {len(live)} verified: " + ", ".join(types)
    details = {"findings": [f.to_dict() for f in findings], "detail": [f.to_details() for f in findings]}
    if binary:
        details["content"] = "binary"
    return ScanResult(SCANNER_NAME, SCANNER_VERSION, verdict, summary, details)


def scan_source(source: Path | bytes, name: str, max_in_memory: int) -> SecretScanReport:
    """One scan of a file or of bytes, without verifiers: what a scan process runs
    (bastion.scanning.isolation). The server verifies the findings it gets back."""
    scanner = SecretScanner()
    if isinstance(source, Path):
        return scanner.scan_file(source, name, max_in_memory)
    return scanner.scan_blob(source, name)

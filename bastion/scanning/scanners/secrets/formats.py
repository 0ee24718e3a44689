"""How file contents become scannable text: binary and LFS-pointer sniffing, notebooks, diffs.

Each format yields text plus a map from its lines back to lines of the stored file, so a finding
in a notebook cell reports its line in the .ipynb and a finding in a diff its new-file line.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1\n"
_SNIFF = 8192
# Above this share of undecodable bytes the content is not text, whatever its extension says.
MAX_INVALID_UTF8_RATIO = 0.02


def is_lfs_pointer(data: bytes) -> bool:
    return len(data) < 1024 and data.startswith(LFS_POINTER_PREFIX) and b"\noid sha256:" in data


def decode_text(data: bytes) -> str | None:
    """UTF-8 text, or None for binary content (NUL bytes, or too many invalid sequences)."""
    if b"\x00" in data[:_SNIFF]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="replace")
    if text.count("\ufffd") > MAX_INVALID_UTF8_RATIO * max(len(text), 1):
        return None
    return text


@dataclass
class Segment:
    """Text to scan; `lines[i]` is the stored-file line of the segment's line i+1."""

    text: str
    lines: list[int] | None = None  # None: identity
    report: set[int] | None = None  # stored-file lines on which findings count (None: all)
    path: str = ""

    def file_line(self, seg_line: int) -> int:
        if self.lines is None:
            return seg_line
        return self.lines[min(seg_line, len(self.lines)) - 1]


# --- notebooks ---------------------------------------------------------------------------------


class _PosStr(str):
    """A decoded JSON string that remembers the file line its literal starts on."""

    line: int


class _PositionedJSON:
    """A small JSON reader that keeps each string's line: json.loads forgets positions."""

    _WS = re.compile(r"[ \t\n\r]*")
    _NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")

    def __init__(self, text: str) -> None:
        self.text = text
        self.newlines = [m.start() for m in re.finditer("\n", text)]

    def parse(self) -> Any:
        value, end = self._value(self._skip(0))
        if self._skip(end) != len(self.text):
            raise ValueError("trailing data")
        return value

    def _skip(self, i: int) -> int:
        m = self._WS.match(self.text, i)
        return m.end() if m else i

    def _value(self, i: int) -> tuple[Any, int]:
        t = self.text
        if i >= len(t):
            raise ValueError("unexpected end")
        c = t[i]
        if c == '"':
            raw, end = scanstring(t, i + 1)
            s = _PosStr(raw)
            s.line = bisect.bisect_left(self.newlines, i) + 1
            return s, end
        if c == "{":
            obj: dict[str, Any] = {}
            i = self._skip(i + 1)
            if t.startswith("}", i):
                return obj, i + 1
            while True:
                if not t.startswith('"', i):
                    raise ValueError("expected key")
                key, i = scanstring(t, i + 1)
                i = self._skip(i)
                if not t.startswith(":", i):
                    raise ValueError("expected colon")
                obj[key], i = self._value(self._skip(i + 1))
                i = self._skip(i)
                if t.startswith("}", i):
                    return obj, i + 1
                if not t.startswith(",", i):
                    raise ValueError("expected comma")
                i = self._skip(i + 1)
        if c == "[":
            arr: list[Any] = []
            i = self._skip(i + 1)
            if t.startswith("]", i):
                return arr, i + 1
            while True:
                item, i = self._value(i)
                arr.append(item)
                i = self._skip(i)
                if t.startswith("]", i):
                    return arr, i + 1
                if not t.startswith(",", i):
                    raise ValueError("expected comma")
                i = self._skip(i + 1)
        for literal, value in (("true", True), ("false", False), ("null", None)):
            if t.startswith(literal, i):
                return value, i + len(literal)
        m = self._NUMBER.match(t, i)
        if not m:
            raise ValueError(f"unexpected character at {i}")
        return json.loads(m.group(0)), m.end()


# Output MIME types that hold text a human (or a leaked log line) could contain secrets in.
_TEXT_MIME = re.compile(r"^(?:text/|application/(?:json|javascript|x-|vnd\.)).*")


def _segment_from_parts(parts: list[Any], path: str) -> Segment | None:
    pieces: list[str] = []
    lines: list[int] = []
    at_line_start = True
    for part in parts:
        if not isinstance(part, str) or not part:
            continue
        line = getattr(part, "line", 1)
        pieces.append(part)
        # A text line belongs to the literal it starts in; a literal may hold several lines
        # ("a\nb" in one JSON string) and then they all sit on that literal's file line.
        if at_line_start:
            lines.append(line)
        newlines = part.count("\n")
        at_line_start = part.endswith("\n")
        lines.extend([line] * (newlines - 1 if at_line_start else newlines))
    if not pieces:
        return None
    text = "".join(pieces)
    if not text.endswith("\n"):
        text += "\n"
    return Segment(text, lines or [1], path=path)


def _as_parts(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings_in(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings_in(v)


def notebook_segments(text: str, path: str) -> list[Segment] | None:
    """One segment per cell source and per output; None when this is not notebook JSON."""
    try:
        nb = _PositionedJSON(text).parse()
    except (ValueError, IndexError):
        return None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return None
    segments: list[Segment] = []

    def add(parts: list[Any]) -> None:
        seg = _segment_from_parts(parts, path)
        if seg is not None:
            segments.append(seg)

    for cell in nb["cells"]:
        if not isinstance(cell, dict):
            continue
        add(_as_parts(cell.get("source")))
        for output in cell.get("outputs") or []:
            if not isinstance(output, dict):
                continue
            add(_as_parts(output.get("text")))
            add(_as_parts(output.get("traceback")))
            data = output.get("data")
            if isinstance(data, dict):
                for mime, value in data.items():
                    if _TEXT_MIME.match(mime):
                        add(_as_parts(value) or list(_strings_in(value)))
    return segments


# --- unified diffs -----------------------------------------------------------------------------

_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")


@dataclass
class _DiffFile:
    path: str
    text: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    added: set[int] = field(default_factory=set)


def diff_segments(diff: str) -> list[Segment]:
    """Added lines of each file, with context lines kept (for pairs) but never reported."""
    files: list[_DiffFile] = []
    current: _DiffFile | None = None
    new_line = 0
    in_hunk = False
    for raw in diff.splitlines():
        if raw.startswith("diff --git "):
            current, in_hunk = None, False
            continue
        if raw.startswith("+++ ") and not in_hunk:
            target = raw[4:].split("\t", 1)[0].strip()
            path = target[2:] if target.startswith("b/") else target
            current = None if target == "/dev/null" else _DiffFile(path)
            if current is not None:
                files.append(current)
            continue
        if raw.startswith("--- ") and not in_hunk:
            continue
        m = _HUNK.match(raw)
        if m:
            new_line, in_hunk = int(m.group(1)), True
            continue
        if current is None or not in_hunk:
            continue
        if raw.startswith("+"):
            current.text.append(_unescape_notebook_line(raw[1:], current.path))
            current.lines.append(new_line)
            current.added.add(new_line)
            new_line += 1
        elif raw.startswith(" ") or raw == "":
            current.text.append(_unescape_notebook_line(raw[1:], current.path))
            current.lines.append(new_line)
            new_line += 1
        elif raw.startswith("-") or raw.startswith("\\"):
            continue
        else:  # anything else ends the hunk (e.g. the next file's headers in a bare diff)
            in_hunk = False
    return [
        Segment("\n".join(f.text) + "\n", f.lines, f.added, path=f.path) for f in files if f.added
    ]


_JSON_STRING_LINE = re.compile(r'^\s*("(?:[^"\\]|\\.)*")\s*,?\s*$')


def _unescape_notebook_line(line: str, path: str) -> str:
    """In a notebook diff each line is a JSON string literal: scan what it encodes."""
    if not path.endswith(".ipynb"):
        return line
    m = _JSON_STRING_LINE.match(line)
    if not m:
        return line
    try:
        value = json.loads(m.group(1))
    except ValueError:
        return line
    return value.rstrip("\n").replace("\n", " ") if isinstance(value, str) else line

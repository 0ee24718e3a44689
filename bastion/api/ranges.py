"""HTTP `Range: bytes=` requests on downloads (one range; several or malformed ones get the whole file)."""

from __future__ import annotations

import re

from bastion.errors import RangeNotSatisfiable

RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) for one `bytes=` range; None for no/ignored range; 416 if unsatisfiable."""
    if not header:
        return None
    m = RANGE_RE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None  # multiple or malformed ranges: serve the whole file (RFC 9110 allows it)
    if m.group(1):
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else size - 1
    else:
        length = int(m.group(2))
        if length == 0:
            raise RangeNotSatisfiable("Range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
        start, end = max(0, size - length), size - 1
    end = min(end, size - 1)
    if start >= size or start > end:
        raise RangeNotSatisfiable("Range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    return start, end

"""Peak memory of scanning a decompression bomb: a 1 MB torch-style zip whose data.pkl inflates to 1 GiB.

Each scan runs in a fresh process that reports its own peak RSS (getrusage), so nothing else counts.
With --compare-ref REF the same scan is also run on the code at git REF (e.g. the commit before the
fix), for a before/after figure measured in the same run:

    .venv/bin/python -m bench.scan_bounds --compare-ref 9e16716
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
GiB = 1024 * MiB

_SCAN = """
import json, sys, time
from pathlib import Path
from bastion.scanning.scanners.pickles import PickleScanner

def peak_kib():
    # This process's own peak (VmHWM): ru_maxrss would carry over the parent's at fork + exec.
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))

started = time.monotonic()
result = PickleScanner().scan_path(Path(sys.argv[1]))
print(json.dumps({"verdict": str(result.verdict), "summary": result.summary[:160],
                  "seconds": round(time.monotonic() - started, 1),
                  "peak_mib": peak_kib() // 1024}))
"""


def _deflate_zeros_stream(inflated: int) -> tuple[list[tuple[bytes, int]], int]:
    """The raw deflate stream of a pickle `PROTO 4; BINBYTES8 <zeros>; STOP` of `inflated` bytes, as
    (compressed piece, repeat count), and its CRC-32. Built from three compressed 1 MiB blocks: a full
    flush resets the compressor, so every middle block compresses to the same bytes."""
    block = MiB
    head = b"\x80\x04\x8e" + struct.pack("<Q", inflated - 12)
    first = head + bytes(block - len(head))
    middle_count, rest = divmod(inflated - len(first) - 1, block)
    last = bytes(rest) + b"."

    def deflate(data: bytes, mode: int) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush(mode)

    zero_block = bytes(block)
    crc = zlib.crc32(first)
    for _ in range(middle_count):
        crc = zlib.crc32(zero_block, crc)
    crc = zlib.crc32(last, crc)
    pieces = [(deflate(first, zlib.Z_FULL_FLUSH), 1), (deflate(zero_block, zlib.Z_FULL_FLUSH), middle_count),
              (deflate(last, zlib.Z_FINISH), 1)]
    return pieces, crc


def write_bomb(path: Path, inflated: int = GiB) -> None:
    """A torch-style zip (`archive/data.pkl`, `archive/version`) whose data.pkl is a valid pickle of
    `inflated` bytes that deflates to about 1/1000 of that; written piece by piece, never held whole."""
    pieces, crc = _deflate_zeros_stream(inflated)
    members = []
    with path.open("wb") as fh:
        for name, method, data_crc, size, chunks in (
                ("archive/version", 0, zlib.crc32(b"3\n"), 2, [(b"3\n", 1)]),
                ("archive/data.pkl", 8, crc, inflated, pieces)):
            compressed = sum(len(p) * n for p, n in chunks)
            offset = fh.tell()
            raw = name.encode()
            fh.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0x21, data_crc, compressed,
                                 size, len(raw), 0) + raw)
            for piece, count in chunks:
                for _ in range(count):
                    fh.write(piece)
            members.append((raw, method, data_crc, compressed, size, offset))
        directory = fh.tell()
        for raw, method, data_crc, compressed, size, offset in members:
            fh.write(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, data_crc,
                                 compressed, size, len(raw), 0, 0, 0, 0, 0, offset) + raw)
        end = fh.tell()
        fh.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members), end - directory,
                             directory, 0))


def scan_in_fresh_process(code_root: Path, bomb: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", _SCAN, str(bomb)], capture_output=True, text=True, check=True,
                         cwd=code_root, env={"PYTHONPATH": str(code_root), "PATH": "/usr/bin:/bin"}, timeout=1800)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inflated-mib", type=int, default=1024)
    parser.add_argument("--compare-ref", help="also scan with the code at this git ref")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        bomb = Path(tmp) / "model.pt"
        write_bomb(bomb, args.inflated_mib * MiB)
        print(f"bomb: {bomb.stat().st_size / MiB:.2f} MiB on disk, data.pkl inflates to {args.inflated_mib} MiB")
        rows = []
        if args.compare_ref:
            old = Path(tmp) / "old"
            old.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.compare_ref, "bastion"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            rows.append((args.compare_ref, scan_in_fresh_process(old, bomb)))
        rows.append(("this tree", scan_in_fresh_process(ROOT, bomb)))
        for label, row in rows:
            print(f"{label:>12}: peak RSS {row['peak_mib']:>5} MiB, {row['seconds']:>5} s, {row['verdict']}: "
                  f"{row['summary']}")


if __name__ == "__main__":
    main()

"""Secret scanner against its peers, detect-secrets and trufflehog3, in one run: recall, precision, MB/s.

Quality on the labelled corpus (tests/scanning/secrets_corpus/make_corpus.py), overall and on its AWS and
password layouts (issue 22); throughput on the same generated non-secret text as bench/secret_scan.py (a
fixed sample of it for the peers, which are far slower). Everything generated goes to bench/_work/.

    python bench/secrets_vs_peers.py [--mb 20] [--sample-mb 2] [--trufflehog3 PATH]

detect-secrets comes with the `bench` extra. trufflehog3 pins exact old versions of attrs, Jinja2 and
PyYAML, so it is not in the extra (it would downgrade Bastion's own): install it in a venv of its own
(`python -m venv /tmp/th3 && /tmp/th3/bin/pip install trufflehog3`) and pass its CLI with --trufflehog3.
Both peers run in one process (trufflehog3 `-p 1`), as Bastion's scanner does.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "_work" / "secrets_vs_peers"
sys.path.insert(0, str(ROOT))

from bastion.scanning.scanners.secrets import SecretScanner  # noqa: E402
from bench.secret_scan import _load_corpus_module, bastion_report, detect_secrets_report, generate_text  # noqa: E402

LAYOUT_KINDS = ("aws_pair", "aws_secret", "password")


def trufflehog3_report(cli: str, root: Path) -> list[tuple[str, int]]:
    """trufflehog3's findings over a directory (no git history), as (file, line)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        subprocess.run([cli, "--no-history", "-z", "-p", "1", "-f", "json", "-o", str(out), "."], cwd=root,
                       check=True, capture_output=True, timeout=3600)
        issues = json.loads(out.read_text() or "[]")
    return sorted({(i["path"], int(i["line"])) for i in issues if i["path"] != "labels.json"})


def _sample(paths: list[Path], sample_bytes: int) -> Path:
    """The first bytes of each kind of generated text, cut at a line break: the peers' throughput sample."""
    sample_dir = WORK / "sample"
    shutil.rmtree(sample_dir, ignore_errors=True)
    sample_dir.mkdir(parents=True)
    per_kind = sample_bytes // len(paths[:3])
    for path in paths[:3]:
        with path.open("rb") as src:
            chunk = src.read(per_kind)
        (sample_dir / path.name).write_bytes(chunk[: chunk.rfind(b"\n") + 1])
    return sample_dir


def _mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=20, help="MB of non-secret text for Bastion's throughput")
    parser.add_argument("--sample-mb", type=float, default=2, help="MB of that text the peers scan")
    parser.add_argument("--trufflehog3", default=shutil.which("trufflehog3"), help="trufflehog3 CLI")
    args = parser.parse_args()

    mc = _load_corpus_module()
    corpus_dir = WORK / "corpus"
    shutil.rmtree(corpus_dir, ignore_errors=True)
    corpus = mc.write(corpus_dir)
    corpus_bytes = sum((corpus_dir / rel).stat().st_size for rel in corpus.files)
    scanner = SecretScanner()
    layout_labels = [label for label in corpus.labels if label.kind in LAYOUT_KINDS]

    reports: dict[str, tuple[list[tuple[str, int]], float]] = {}
    start = time.perf_counter()
    reported = [r for rel in corpus.files for r in bastion_report(scanner, corpus_dir, rel)]
    reports["bastion"] = (reported, time.perf_counter() - start)
    start = time.perf_counter()
    reported = [r for rel in corpus.files for r in detect_secrets_report(corpus_dir, rel)]
    reports["detect-secrets"] = (reported, time.perf_counter() - start)
    if args.trufflehog3:
        start = time.perf_counter()
        reported = trufflehog3_report(args.trufflehog3, corpus_dir)
        reports["trufflehog3"] = (reported, time.perf_counter() - start)
    else:
        print("trufflehog3: not found (pass --trufflehog3 PATH); left out")

    print(f"corpus: {len(corpus.files)} files, {corpus_bytes / 1e3:.0f} kB, {len(corpus.labels)} labelled secrets "
          f"({len(layout_labels)} of them AWS keys and passwords in their layouts)")
    print(f"  {'scanner':15s} {'recall':>7s} {'precision':>9s} {'AWS+pw recall':>13s}  {'corpus MB/s':>11s}")
    for name, (reported, seconds) in reports.items():
        score = mc.score(corpus.labels, reported, diff_targets=name == "bastion")
        layouts = mc.score(layout_labels, [r for r in reported if any(
            r[0] == label.file for label in layout_labels)])
        print(f"  {name:15s} {score.recall:7.3f} {score.precision:9.3f} {layouts.recall:13.3f}  "
              f"{_mbps(corpus_bytes, seconds):11.2f}")

    paths = generate_text(ROOT / "bench" / "_work" / "secret_scan" / "text", args.mb)
    total = sum(p.stat().st_size for p in paths)
    start = time.perf_counter()
    for p in paths:
        scanner.scan_bytes(p.read_bytes(), p.name)
    bastion_mbps = _mbps(total, time.perf_counter() - start)
    sample_dir = _sample(paths, int(args.sample_mb * 1e6))
    sample = sum(p.stat().st_size for p in sample_dir.iterdir())
    print(f"\nthroughput on non-secret text: Bastion over {total / 1e6:.0f} MB, the peers over a "
          f"{sample / 1e6:.1f} MB sample of it")
    print(f"  bastion         {bastion_mbps:8.2f} MB/s")
    peers: dict[str, float] = {}
    start = time.perf_counter()
    for p in sample_dir.iterdir():
        detect_secrets_report(sample_dir, p.name)
    peers["detect-secrets"] = _mbps(sample, time.perf_counter() - start)
    if args.trufflehog3:
        start = time.perf_counter()
        trufflehog3_report(args.trufflehog3, sample_dir)
        peers["trufflehog3"] = _mbps(sample, time.perf_counter() - start)
    for name, mbps in peers.items():
        print(f"  {name:15s} {mbps:8.2f} MB/s   (Bastion {bastion_mbps / mbps:.0f}x)")
    fastest = max(peers.values())
    ok = bastion_mbps >= 2 * fastest
    print(f"\n  goal: at least 2x the fastest peer's throughput: {'met' if ok else 'NOT MET'} "
          f"({bastion_mbps / fastest:.0f}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

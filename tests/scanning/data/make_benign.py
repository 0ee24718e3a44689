"""Generates the benign scanner fixtures in data/benign/: real torch, numpy, joblib and safetensors files.

Run once with torch, numpy, joblib and safetensors installed; the tests only read the outputs.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import decimal
import io
import pickle
import random
import sys
from pathlib import Path

import joblib
import numpy as np
import torch
from safetensors.torch import save_file

OUT = Path(__file__).parent / "benign"


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 8),
        torch.nn.LayerNorm(8),
        torch.nn.Linear(8, 2),
    )


def _training_state() -> dict:
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=10)
    step = torch.optim.lr_scheduler.StepLR(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), 5)
    x = torch.randn(2, 3, 8, 8)
    model(x).sum().backward()
    opt.step()
    sched.step()
    np.random.seed(0)
    random.seed(0)
    return {
        "epoch": 3,
        "global_step": 1234,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "step_scheduler": step.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
        "best_metric": np.float64(0.875),
        "metrics": collections.OrderedDict(loss=[0.9, 0.5], acc=np.array([0.5, 0.7], dtype=np.float32)),
        "args": argparse.Namespace(lr=1e-3, batch_size=32, output_dir="runs/1"),
        "saved_at": datetime.datetime(2026, 1, 2, 3, 4, 5),
        "total_time": datetime.timedelta(hours=1, minutes=2),
    }


def _python_objects() -> dict:
    return {
        "ordered": collections.OrderedDict([("a", 1), ("b", 2)]),
        "counter": collections.Counter("hello"),
        "default": collections.defaultdict(list, {"x": [1]}),
        "set": {1, 2, 3},
        "frozen": frozenset({"a", "b"}),
        "slice": slice(1, 10, 2),
        "complex": complex(1, 2),
        "bytes": b"\x00\x01binary\xff",
        "bytearray": bytearray(b"abc"),
        "decimal": decimal.Decimal("3.14"),
        "date": datetime.date(2026, 1, 1),
        "rng": random.Random(1).getstate(),
        "nested": [[1, 2.5, None, True], ("t", "u"), {"k": "v"}],
        "big": 2**100,
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    model = _model()
    torch.save(model.state_dict(), OUT / "torch_state_dict.pt")
    torch.save(model.state_dict(), OUT / "torch_state_dict_legacy.pt", _use_new_zipfile_serialization=False)
    torch.save(_training_state(), OUT / "torch_training_state.ckpt")
    torch.save(_training_state(), OUT / "torch_training_state_legacy.bin", _use_new_zipfile_serialization=False)
    torch.save(_training_state(), OUT / "torch_training_state_p4.pth", pickle_protocol=4)
    torch.save(
        {
            "param": torch.nn.Parameter(torch.ones(3)),
            "half": torch.arange(6, dtype=torch.float16).view(2, 3),
            "bf16": torch.zeros(4, dtype=torch.bfloat16),
            "int8": torch.arange(5, dtype=torch.int8),
            "bool": torch.tensor([True, False]),
            "view": torch.arange(10.0)[2:6],
            "sparse": torch.eye(3).to_sparse(),
            "complex": torch.tensor([1 + 2j]),
            "empty": torch.empty(0),
            "size": torch.Size([2, 3]),
            "device": torch.device("cpu"),
            "dtype": torch.float32,
        },
        OUT / "torch_tensor_kinds.pt",
    )
    # An extension-less file: the scanner must find the pickle by content.
    torch.save({"w": torch.ones(2, 2)}, OUT / "weights_no_extension")

    np.save(OUT / "numeric.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    np.save(OUT / "structured.npy", np.zeros(3, dtype=[("x", "<i4"), ("y", "<f8")]))
    np.save(OUT / "object.npy", np.array([{"a": 1}, "text", 3.5, None, [1, 2]], dtype=object), allow_pickle=True)
    np.savez(OUT / "arrays.npz", a=np.ones(4), b=np.array(["x", "y"]))
    np.savez_compressed(OUT / "arrays_compressed.npz", a=np.ones(4), obj=np.array([1, "a"], dtype=object))

    arrays = {
        "weights": np.random.default_rng(0).standard_normal((8, 8)),
        "ints": np.arange(10, dtype=np.int64),
        "strings": np.array(["a", "bb", "ccc"]),
        "objects": np.array([{"k": 1}, "v"], dtype=object),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
        "scalar": np.float32(1.5),
        "rng": np.random.default_rng(1),
        "legacy_rng": np.random.RandomState(2),
    }
    joblib.dump(arrays, OUT / "joblib_plain.joblib")
    joblib.dump(arrays, OUT / "joblib_p2.pkl", protocol=2)
    for compressor in ("zlib", "gzip", "bz2", "xz", "lzma"):
        joblib.dump(arrays, OUT / f"joblib_{compressor}.joblib", compress=(compressor, 3))

    for proto in range(6):
        (OUT / f"python_objects_p{proto}.pkl").write_bytes(pickle.dumps(_python_objects(), protocol=proto))
    buf = io.BytesIO()
    pickle.dump(_training_state()["numpy_rng"], buf, protocol=2)
    pickle.dump({"second": "pickle"}, buf, protocol=2)
    (OUT / "two_pickles.pkl").write_bytes(buf.getvalue())

    save_file({"w": torch.ones(4, 4), "b": torch.zeros(4, dtype=torch.bfloat16)}, OUT / "model.safetensors",
              metadata={"format": "pt"})
    (OUT / "README.md").write_text("# A model card\n\nNothing to unpickle here.\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(list(OUT.iterdir()))} files, {total} bytes, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()

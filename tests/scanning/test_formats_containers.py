"""The format scanners inside archives: zip, tar (compressed too) and .nemo members judged with the pickle
scanner's bounds, and NeMo's Hydra `_target_` values. Every sample is built here, nothing is loaded."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from bastion.scanning.adapters import FormatScannerAdapter
from bastion.scanning.isolation import ProcessLimits
from bastion.scanning.results import Verdict
from bastion.scanning.scanners import model_formats
from bastion.scanning.scanners.pickles import ScanLimits
from tests.scanning.format_samples import MALICIOUS_PICKLE, gguf_file, object_npy, safetensors_file
from tests.scanning.test_keras_scanner import LAMBDA_CODE, dense, keras_archive, obj, sequential

EVIL_TEMPLATE = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"


def onnx_bytes(location: str) -> bytes:
    """An ONNX model whose initializer keeps its data in an external file at `location`."""
    tensor = numpy_helper.from_array(np.ones(2, np.float32), "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "8")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], initializer=[tensor])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def gguf_bytes(tmp_path: Path, template: str) -> bytes:
    return gguf_file(tmp_path / "sample.gguf", template=template).read_bytes()


def safetensors_bytes(tmp_path: Path) -> bytes:
    header = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    return safetensors_file(tmp_path / "sample.safetensors", header, b"\x00" * 8).read_bytes()


def tar_bytes(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def nemo_bytes(target: str) -> bytes:
    config = (f"target: nemo.collections.asr.models.EncDecCTCModel\nsample_rate: 16000\n"
              f"preprocessor:\n  _target_: nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor\n"
              f"encoder:\n  _target_: {target}\n  feat_in: 64\n"
              f"optim:\n  sched:\n    - _target_: torch.optim.lr_scheduler.CosineAnnealingLR\n")
    return tar_bytes({"./model_config.yaml": config.encode(), "./model_weights.ckpt": b"\x00" * 64})


def scan(tmp_path: Path, name: str, data: bytes, **kwargs) -> object:  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_bytes(data)
    return model_formats.scan_path(path, **kwargs)


def locations(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [f["location"] for f in result.details["findings"]]


def test_a_tar_gz_holding_an_onnx_with_escaping_external_data_is_unsafe(tmp_path: Path) -> None:
    data = tar_bytes({"model/model.onnx": onnx_bytes("../../../etc/passwd"), "model/README.md": b"hi"}, "w:gz")
    result = scan(tmp_path, "export.tar.gz", data)
    assert result.verdict is Verdict.UNSAFE
    assert result.details["format"] == "tar" and result.details["compression"] == "gzip"
    assert result.details["members"] == 2 and result.details["file"] == "export.tar.gz"
    assert result.details["judged"] == [{"member": "model/model.onnx", "format": "onnx", "verdict": "unsafe"}]
    [finding] = result.details["findings"]
    assert finding["location"].startswith("model/model.onnx: ") and "../../../etc/passwd" in finding["message"]
    assert result.scanner == "format" and result.scanner_version == model_formats.SCANNER_VERSION


def test_a_zip_holding_a_gguf_with_a_malicious_template_is_unsafe(tmp_path: Path) -> None:
    data = zip_bytes({"llm/model.gguf": gguf_bytes(tmp_path, EVIL_TEMPLATE)})
    result = scan(tmp_path, "bundle.zip", data)
    assert result.verdict is Verdict.UNSAFE and result.details["format"] == "zip"
    assert all(loc.startswith("llm/model.gguf: ") for loc in locations(result))
    assert result.details["judged"][0]["format"] == "gguf"


def test_a_benign_tar_of_safetensors_and_json_is_safe(tmp_path: Path) -> None:
    data = tar_bytes({"m/model.safetensors": safetensors_bytes(tmp_path), "m/config.json": b'{"a": 1}'})
    result = scan(tmp_path, "model.tar", data)
    assert result.verdict is Verdict.SAFE, result.details["findings"]
    assert result.details["format"] == "tar" and result.details["members"] == 2
    assert result.details["judged"] == [{"member": "m/model.safetensors", "format": "safetensors", "verdict": "safe"}]


def test_an_archive_of_no_model_format_is_safe_with_nothing_judged(tmp_path: Path) -> None:
    # A torch-style zip: its pickle is the pickle scanner's to judge, not the format scanners'.
    result = scan(tmp_path, "weights.zip", zip_bytes({"archive/data.pkl": MALICIOUS_PICKLE, "archive/version": b"3"}))
    assert result.verdict is Verdict.SAFE and result.details["judged"] == [] and result.details["members"] == 2


def test_a_zip_in_a_tar_is_walked_within_the_depth_bound(tmp_path: Path) -> None:
    inner = zip_bytes({"model.gguf": gguf_bytes(tmp_path, EVIL_TEMPLATE)})
    data = tar_bytes({"bundle/inner.zip": inner, "bundle/notes.txt": b"x"})
    result = scan(tmp_path, "outer.tar", data)
    assert result.verdict is Verdict.UNSAFE
    assert all(loc.startswith("bundle/inner.zip: model.gguf: ") for loc in locations(result))
    # No nesting allowed (the pickle scanner's depth count): the tar is walked, the zip in it is not,
    # and that is not safe.
    shallow = scan(tmp_path, "outer.tar", data, limits=ScanLimits(max_depth=0))
    assert shallow.verdict is Verdict.SUSPICIOUS
    assert shallow.details["findings"][0]["location"] == "bundle/inner.zip"
    assert "nested deeper than 0 levels" in shallow.details["findings"][0]["message"]
    assert scan(tmp_path, "outer.tar", data, limits=ScanLimits(max_depth=1)).verdict is Verdict.UNSAFE


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_an_archive_over_the_member_bound_is_not_safe(tmp_path: Path, kind: str) -> None:
    members = {f"part{i}.json": b"{}" for i in range(5)}
    data = zip_bytes(members) if kind == "zip" else tar_bytes(members)
    assert scan(tmp_path, f"many.{kind}", data).verdict is Verdict.SAFE
    result = scan(tmp_path, f"many.{kind}", data, limits=ScanLimits(max_zip_members=3))
    assert result.verdict is Verdict.ERROR and "more than 3 members" in result.summary


def test_members_over_the_size_and_ratio_bounds_are_not_safe(tmp_path: Path) -> None:
    data = zip_bytes({"big.onnx": b"\x00" * (1 << 20)})
    small = scan(tmp_path, "big.zip", data, limits=ScanLimits(max_decompressed_bytes=1 << 16))
    assert small.verdict is Verdict.ERROR and "extracted size limit exceeded" in small.summary
    bomb = scan(tmp_path, "big.zip", data, limits=ScanLimits(inflate_ratio_floor=1 << 16, max_inflate_ratio=10))
    assert bomb.verdict is Verdict.SUSPICIOUS and "inflates more than 10 times" in bomb.summary
    stream = scan(tmp_path, "big.tar.gz", tar_bytes({"big.onnx": b"\x00" * (1 << 20)}, "w:gz"),
                  limits=ScanLimits(inflate_ratio_floor=1 << 16, max_inflate_ratio=10))
    assert stream.verdict is Verdict.SUSPICIOUS and stream.details["format"] == "gzip"


def test_a_model_member_that_cannot_be_inflated_is_suspicious(tmp_path: Path) -> None:
    data = bytearray(zip_bytes({"model.onnx": onnx_bytes("w.bin"), "notes.bin": b"x"}, zipfile.ZIP_STORED))
    for sig, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # method 99 in both headers
        pos = -1
        while (pos := data.find(sig, pos + 1)) >= 0:
            data[pos + offset : pos + offset + 2] = (99).to_bytes(2, "little")
    result = scan(tmp_path, "odd.zip", bytes(data))
    assert result.verdict is Verdict.SUSPICIOUS and locations(result) == ["model.onnx"]
    assert "unsupported compression method 99" in result.summary


def test_member_paths_and_links_leaving_the_extraction_folder_are_unsafe(tmp_path: Path) -> None:
    result = scan(tmp_path, "slip.zip", zip_bytes({"../../.bashrc": b"echo hi"}))
    assert result.verdict is Verdict.UNSAFE and locations(result) == ["../../.bashrc"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("model/weights")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../home/user/.ssh/id_rsa"
        tar.addfile(link)
        inside = tarfile.TarInfo("model/alias")
        inside.type, inside.linkname = tarfile.SYMTYPE, "weights"
        tar.addfile(inside)
    result = scan(tmp_path, "link.tar", buf.getvalue())
    assert result.verdict is Verdict.UNSAFE and locations(result) == ["model/weights"]


def test_a_nemo_with_an_os_system_target_is_unsafe(tmp_path: Path) -> None:
    result = scan(tmp_path, "asr.nemo", nemo_bytes("os.system"))
    assert result.verdict is Verdict.UNSAFE and result.details["format"] == "nemo"
    [finding] = result.details["findings"]
    assert finding["location"] == "./model_config.yaml: encoder._target_"
    assert "'os.system'" in finding["message"]


def test_a_nemo_of_nemo_and_torch_targets_is_safe(tmp_path: Path) -> None:
    result = scan(tmp_path, "asr.nemo", nemo_bytes("nemo.collections.asr.models.EncDecCTCModel"))
    assert result.verdict is Verdict.SAFE, result.details["findings"]
    assert result.details["judged"] == [{"member": "./model_config.yaml", "format": "nemo-config", "verdict": "safe"}]


def test_a_nemo_target_from_an_unknown_package_is_suspicious_and_named(tmp_path: Path) -> None:
    result = scan(tmp_path, "asr.nemo", nemo_bytes("acme_speech.encoders.FastEncoder"))
    assert result.verdict is Verdict.SUSPICIOUS
    assert "'acme_speech.encoders.FastEncoder'" in result.details["findings"][0]["message"]


@pytest.mark.parametrize("target", ["nemo.collections.asr.os.system", "builtins.eval", "torch.load",
                                    "subprocess.Popen"])
def test_targets_that_reach_dangerous_code_are_unsafe_even_under_allowed_packages(tmp_path: Path,
                                                                                  target: str) -> None:
    assert scan(tmp_path, "asr.nemo", nemo_bytes(target)).verdict is Verdict.UNSAFE


def test_a_gzipped_nemo_and_an_unpacked_config_are_judged_too(tmp_path: Path) -> None:
    gz = tar_bytes({"model_config.yaml": b"m:\n  _target_: os.system\n", "model_weights.ckpt": b"\x00"}, "w:gz")
    result = scan(tmp_path, "old.nemo", gz)
    assert result.verdict is Verdict.UNSAFE and result.details["format"] == "nemo"
    config = tmp_path / "model_config.yaml"
    config.write_text("a:\n  b: [{_target_: posix.system}]\n")
    unpacked = model_formats.scan_path(config)
    assert unpacked.verdict is Verdict.UNSAFE and locations(unpacked) == ["a.b[0]._target_"]
    config.write_text("a: [unclosed\n")
    assert model_formats.scan_path(config).verdict is Verdict.SUSPICIOUS


def test_a_npz_and_a_keras_archive_keep_their_own_format(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.savez(buf, a=np.arange(3))
    npz = zip_bytes({"a.npy": buf.getvalue(), "evil.npy": object_npy(MALICIOUS_PICKLE)})
    result = scan(tmp_path, "arrays.npz", npz)
    assert result.details["format"] == "npz" and result.verdict is Verdict.UNSAFE
    assert "judged" not in result.details
    layer = obj("keras.layers", "Lambda", {"name": "evil", "function": obj(
        "builtins", "__lambda__", {"code": LAMBDA_CODE, "defaults": None, "closure": None}), "arguments": {}})
    keras = scan(tmp_path, "model.keras", keras_archive(sequential(dense("d", 4), layer)))
    assert keras.details["format"] == "keras" and keras.verdict is Verdict.UNSAFE
    assert "judged" not in keras.details
    # The same archive inside a tar is judged as Keras, its finding located in the member.
    outer = scan(tmp_path, "bundle.tar", tar_bytes({"m/model.keras": keras_archive(sequential(dense("d", 4), layer))}))
    assert outer.verdict is Verdict.UNSAFE and locations(outer)[0].startswith("m/model.keras: ")


def test_bytes_are_scanned_through_the_spool_dir_and_nothing_is_left_there(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    data = tar_bytes({"a/model.onnx": onnx_bytes("/etc/shadow"), "a/cfg.json": json.dumps({}).encode()}, "w:bz2")
    result = model_formats.scan_source(data, "export.tar.bz2", str(spool))
    assert result.verdict is Verdict.UNSAFE and result.details["compression"] == "bz2"
    assert list(spool.iterdir()) == []


def test_an_archive_is_judged_in_a_scan_process_through_the_adapter(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    adapter = FormatScannerAdapter(spool)
    result = adapter.scan_isolated(nemo_bytes("os.system"), "models/asr.nemo",
                                   ProcessLimits(memory_mb=1024, cpu_seconds=60, wall_seconds=60))
    assert result.verdict is Verdict.UNSAFE and result.details["format"] == "nemo"
    assert result.details["file"] == "models/asr.nemo" and list(spool.iterdir()) == []

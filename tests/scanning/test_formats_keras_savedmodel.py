"""Keras and TensorFlow SavedModel files through the format scanner (`formatScan`): chosen by content
or name, their findings in the format-report shape, their verdicts kept."""

from __future__ import annotations

import base64
import marshal
from pathlib import Path

from bastion.scanning.results import Verdict
from bastion.scanning.scanners import model_formats
from tests.scanning.test_keras_scanner import dense, keras_archive, legacy_h5, obj, sequential
from tests.scanning.test_savedmodel_scanner import node, saved_model, serving_graph


def _lambda_archive() -> bytes:
    code = base64.b64encode(marshal.dumps(compile("import os; os.system('id')", "<x>", "exec"))).decode()
    layer = obj("keras.layers", "Lambda", {"name": "l", "function": {"class_name": "__lambda__",
                                                                       "config": {"code": code}}})
    return keras_archive(sequential(dense("d", 4), layer))


def test_a_lambda_keras_archive_is_unsafe_under_any_name(tmp_path: Path) -> None:
    for name in ("model.keras", "weights.bin"):  # by name, and by content (a Keras zip's first member)
        path = tmp_path / name
        path.write_bytes(_lambda_archive())
        result = model_formats.scan_path(path)
        assert result.scanner == "format" and result.details["format"] == "keras"
        assert result.verdict is Verdict.UNSAFE, result.summary
        assert any(f["level"] == "unsafe" and "lambda" in f["message"].lower() for f in result.details["findings"])
        assert result.details["scanner"] == "keras-1.0.0"


def test_a_benign_keras_archive_and_legacy_h5_are_safe(tmp_path: Path) -> None:
    archive = tmp_path / "model.keras"
    archive.write_bytes(keras_archive(sequential(dense("d", 4))))
    h5 = tmp_path / "model.h5"
    h5.write_bytes(legacy_h5(sequential(dense("d", 4))))
    for path in (archive, h5):
        result = model_formats.scan_path(path)
        assert result.details["format"] == "keras" and result.verdict is Verdict.SAFE, result.details


def test_a_zip_named_keras_that_is_not_one_is_suspicious_and_a_plain_zip_is_an_archive(tmp_path: Path) -> None:
    import zipfile
    plain = tmp_path / "data.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("readme.txt", "hello")
    archive = model_formats.scan_path(plain)  # walked (format_containers): no member of a model format
    assert archive.details["format"] == "zip" and archive.details["judged"] == []
    assert archive.verdict is Verdict.SAFE
    named = tmp_path / "model.keras"
    named.write_bytes(b"not a zip at all")
    result = model_formats.scan_path(named)
    assert result.details["format"] == "keras" and result.verdict is Verdict.SUSPICIOUS


def test_a_saved_model_running_python_is_unsafe_and_a_plain_one_safe(tmp_path: Path) -> None:
    bad = tmp_path / "saved_model.pb"
    bad.write_bytes(saved_model(serving_graph([node("py", "PyFunc", "x")])))
    result = model_formats.scan_path(bad)
    assert result.details["format"] == "savedmodel" and result.verdict is Verdict.UNSAFE, result.summary
    assert any("PyFunc" in f["message"] for f in result.details["findings"])
    good = tmp_path / "sub" / "saved_model.pb"
    good.parent.mkdir()
    good.write_bytes(saved_model(serving_graph()))
    result = model_formats.scan_path(good)
    assert result.details["format"] == "savedmodel" and result.verdict is Verdict.SAFE, result.details
    assert result.details["nodes"] > 0 and "ops" in result.details

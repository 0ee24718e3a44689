"""The ONNX format scanner: external data that escapes the model's folder, custom operator domains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bastion.scanning.results import Verdict
from bastion.scanning.scanners import model_formats
from bastion.scanning.scanners.onnx_format import location_problem


def _external(name: str, location: str) -> TensorProto:
    tensor = numpy_helper.from_array(np.ones(2, np.float32), name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "8")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _model(nodes: list, initializers: list | None = None, opsets: tuple = (("", 17),),
           functions: list | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              initializer=initializers or [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets],
                             functions=functions or [], producer_name="bastion-tests")


def _save(tmp_path: Path, model: onnx.ModelProto, name: str = "model.onnx") -> Path:
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _messages(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [f["message"] for f in result.details["findings"]]


def test_a_plain_model_is_safe(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones(2, np.float32), "w")
    result = model_formats.scan_path(_save(tmp_path, _model([helper.make_node("Add", ["x", "w"], ["y"])], [w])))
    assert result.verdict is Verdict.SAFE, result.details
    assert result.details["format"] == "onnx" and result.details["nodes"] == 1
    assert result.details["opsets"] == {"ai.onnx": 17} and result.details["customDomains"] == []


@pytest.mark.parametrize("location", ["weights.bin", "data/w.bin", "./w.bin", "data/../w.bin"])
def test_external_data_inside_the_model_folder_is_safe(tmp_path: Path, location: str) -> None:
    model = _model([helper.make_node("Add", ["x", "w"], ["y"])], [_external("w", location)])
    result = model_formats.scan_path(_save(tmp_path, model))
    assert result.verdict is Verdict.SAFE, result.details
    assert result.details["externalData"] == [{"tensor": "w", "location": location}]


@pytest.mark.parametrize(("location", "why"), [
    ("../../../etc/passwd", "climbs out"),
    ("data/../../secret", "climbs out"),
    ("/etc/passwd", "is absolute"),
    ("C:\\Windows\\win.ini", "is absolute"),
    ("\\\\server\\share\\w.bin", "is absolute"),
    ("..\\..\\w.bin", "climbs out"),
    ("file:///etc/passwd", "is a URL"),
])
def test_external_data_escaping_the_model_folder_is_unsafe(tmp_path: Path, location: str, why: str) -> None:
    model = _model([helper.make_node("Add", ["x", "w"], ["y"])], [_external("w", location)])
    result = model_formats.scan_path(_save(tmp_path, model))
    assert result.verdict is Verdict.UNSAFE, result.details
    assert result.details["findings"][0]["location"] == "graph/initializer w"
    assert why in result.details["findings"][0]["message"]


def test_escaping_external_data_in_a_subgraph_is_found(tmp_path: Path) -> None:
    const = helper.make_node("Constant", [], ["c"], value=_external("c", "../../id_rsa"))
    then = helper.make_graph([const, helper.make_node("Add", ["x", "c"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other, name="branch")
    result = model_formats.scan_path(_save(tmp_path, _model([node], [cond])))
    assert result.verdict is Verdict.UNSAFE, result.details
    assert result.details["findings"][0]["location"].startswith("graph/node branch/then_branch/node ")


def test_escaping_external_data_in_a_local_function_is_found(tmp_path: Path) -> None:
    body = [helper.make_node("Constant", [], ["c"], value=_external("c", "/root/.ssh/id_rsa")),
            helper.make_node("Add", ["a", "c"], ["b"])]
    function = helper.make_function("my.funcs", "AddSecret", ["a"], ["b"], body, [helper.make_opsetid("", 17)])
    model = _model([helper.make_node("AddSecret", ["x"], ["y"], domain="my.funcs")],
                   opsets=(("", 17), ("my.funcs", 1)), functions=[function])
    result = model_formats.scan_path(_save(tmp_path, model))
    assert result.verdict is Verdict.UNSAFE, result.details
    # A domain the model defines as its own functions is not a custom operator library.
    assert result.details["customDomains"] == []


def test_escaping_external_data_in_a_training_graph_is_found(tmp_path: Path) -> None:
    init = helper.make_graph([], "init", [], [helper.make_tensor_value_info("w", TensorProto.FLOAT, [2])],
                             initializer=[_external("w", "../../../../home/user/.aws/credentials")])
    algo = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "algo", [],
                             [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])])
    model = _model([helper.make_node("Identity", ["x"], ["y"])])
    model.training_info.append(helper.make_training_info(algo, [], init, []))
    result = model_formats.scan_path(_save(tmp_path, model))
    assert result.verdict is Verdict.UNSAFE, result.details
    assert result.details["findings"][0]["location"] == "training_info[0]/initialization/initializer w"


def test_a_custom_operator_domain_is_suspicious(tmp_path: Path) -> None:
    model = _model([helper.make_node("Backdoor", ["x"], ["y"], domain="com.attacker.ops")],
                   opsets=(("", 17), ("com.attacker.ops", 1)))
    result = model_formats.scan_path(_save(tmp_path, model))
    assert result.verdict is Verdict.SUSPICIOUS, result.details
    assert result.details["customDomains"] == ["com.attacker.ops"]
    assert "custom operator library" in _messages(result)[0]


def test_a_custom_domain_inside_a_subgraph_is_found(tmp_path: Path) -> None:
    body = helper.make_graph([helper.make_node("Evil", ["x"], ["t"], domain="org.evil")], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node("If", ["cond"], ["y"], then_branch=body, else_branch=other)
    result = model_formats.scan_path(_save(tmp_path, _model([node], [cond])))
    assert result.verdict is Verdict.SUSPICIOUS and result.details["customDomains"] == ["org.evil"]


@pytest.mark.parametrize("domain", ["com.microsoft", "ai.onnx.ml", "ai.onnx"])
def test_standard_and_onnx_runtime_domains_are_known(tmp_path: Path, domain: str) -> None:
    op = "Gelu" if domain == "com.microsoft" else ("Normalizer" if domain == "ai.onnx.ml" else "Relu")
    model = _model([helper.make_node(op, ["x"], ["y"], domain=domain)], opsets=(("", 17), (domain, 1)))
    assert model_formats.scan_path(_save(tmp_path, model)).verdict is Verdict.SAFE


def test_garbage_named_onnx_is_suspicious(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x0e\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
    result = model_formats.scan_path(path)
    assert result.verdict is Verdict.SUSPICIOUS and "not a readable ONNX model" in result.summary


def test_another_protobuf_under_another_name_is_not_judged_as_onnx(tmp_path: Path) -> None:
    # Starts like a ModelProto (a small field 1, then a length-delimited field 2), as a TensorFlow
    # saved_model.pb does; it has no graph, so it is no ONNX model: the SavedModel scanner, which the
    # name calls on, judges it (and finds no SavedModel in it).
    path = tmp_path / "saved_model.pb"
    path.write_bytes(b"\x08\x01\x12\x05hello")
    result = model_formats.scan_path(path)
    assert result.details["format"] == "savedmodel" and result.details["scanner"].startswith("savedmodel-")
    assert result.verdict is Verdict.SUSPICIOUS and "malformed protobuf" in result.summary


def test_location_rules() -> None:
    assert location_problem("w.bin") is None and location_problem("a/b/../c") is None
    assert location_problem("a/../../b") and location_problem("/x") and location_problem("D:w")
    assert location_problem("w\x00.bin")

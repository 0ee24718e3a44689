"""SavedModelScanner: TensorFlow graphs judged by their ops, read from the protobuf without TensorFlow.

Samples are protobuf bytes encoded here by hand, field numbers from TensorFlow's .proto files
(saved_model, meta_graph, graph, function, node_def, attr_value, saved_object_graph) and Keras's
saved_metadata.proto. Nothing here is loaded by TensorFlow.
"""

from __future__ import annotations

import base64
import json
import marshal
from pathlib import Path

import pytest

from bastion.scanning.results import Verdict
from bastion.scanning.scanners.savedmodel import (
    SCANNER_NAME,
    SCANNER_VERSION,
    SavedModelLimits,
    SavedModelScanner,
)

# -- a minimal protobuf encoder ------------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, value: bytes | str | int) -> bytes:
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    raw = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(raw)) + raw


def attr(key: str, s: str) -> bytes:
    """A NodeDef.attr map entry whose AttrValue is the string s (AttrValue.s = 2)."""
    return field(5, field(1, key) + field(2, field(2, s)))


def node(name: str, op: str, *inputs: str, attrs: bytes = b"") -> bytes:
    """NodeDef: name 1, op 2, input 3, device 4, attr 5."""
    return field(1, name) + field(2, op) + b"".join(field(3, i) for i in inputs) + field(4, "/device:CPU:0") + attrs


def function(name: str, *nodes: bytes) -> bytes:
    """FunctionDef: signature (OpDef, name 1) 1, node_def 3."""
    return field(1, field(1, name)) + b"".join(field(3, n) for n in nodes)


def graph_def(nodes: list[bytes], functions: list[bytes] = ()) -> bytes:
    """GraphDef: node 1, library 2 (FunctionDefLibrary: function 1), versions 4."""
    library = b"".join(field(1, f) for f in functions)
    return b"".join(field(1, n) for n in nodes) + (field(2, library) if library else b"") + field(4, field(1, 1087))


def saved_model(graph: bytes, object_graph: bytes = b"", schema_version: int = 1) -> bytes:
    """SavedModel: schema version 1, meta_graphs 2 (MetaGraphDef: meta_info_def 1, graph_def 2,
    saver_def 3, object_graph_def 7)."""
    meta_info = field(4, "serve") + field(5, "2.15.0")
    meta = field(1, meta_info) + field(2, graph) + field(3, field(1, "saver_filename:0"))
    if object_graph:
        meta += field(7, object_graph)
    return (field(1, schema_version) if schema_version else b"") + field(2, meta)


def user_object_graph(metadata: dict) -> bytes:
    """SavedObjectGraph.nodes (1) holding one SavedObject with user_object (4): identifier 1, metadata 3."""
    return field(1, field(4, field(1, "_tf_keras_sequential") + field(3, json.dumps(metadata))))


def keras_metadata(*objects: tuple[str, dict]) -> bytes:
    """SavedMetadata.nodes (1): SavedObject version 1, node_id 2, node_path 3, identifier 4, metadata 5."""
    return b"".join(field(1, field(1, field(1, 2) + field(2, 1)) + (field(2, i) if i else b"") + field(3, path)
                          + field(4, "_tf_keras_layer") + field(5, json.dumps(meta)))
                    for i, (path, meta) in enumerate(objects))


def serving_graph(serving_nodes: list[bytes] = (), graph_nodes: list[bytes] = ()) -> bytes:
    """A TF2 SavedModel graph: variables, a serving function, and the traced save/restore functions."""
    graph = [node("serving_default_x", "Placeholder"), node("saver_filename", "Placeholder"),
             node("dense/kernel", "VarHandleOp"), node("StatefulPartitionedCall", "StatefulPartitionedCall", "x"),
             node("StatefulPartitionedCall_1", "StatefulPartitionedCall", "saver_filename"), *graph_nodes]
    functions = [
        function("__inference_serving_default_123", node("MatMul/ReadVariableOp", "ReadVariableOp", "k"),
                 node("MatMul", "MatMul", "x", "MatMul/ReadVariableOp"), node("Relu", "Relu", "MatMul"),
                 node("print", "PrintV2", "Relu", attrs=attr("output_stream", "stderr")),
                 node("Identity", "Identity", "Relu"), *serving_nodes),
        function("__inference__traced_save_456", node("StaticRegexFullMatch", "StaticRegexFullMatch", "f"),
                 node("StringJoin", "StringJoin", "f"), node("ShardedFilename", "ShardedFilename", "StringJoin"),
                 node("SaveV2", "SaveV2", "ShardedFilename"), node("MergeV2Checkpoints", "MergeV2Checkpoints", "s")),
        function("__inference__traced_restore_789", node("RestoreV2", "RestoreV2", "f"),
                 node("AssignVariableOp", "AssignVariableOp", "RestoreV2")),
        function("__inference_create_vocab_table_11", node("table", "HashTableV2"),
                 node("init", "InitializeTableFromTextFileV2", "table", "assets/vocab.txt")),
    ]
    return graph_def(graph, functions)


def findings(result) -> dict[str, str]:
    return {f["op"]: f["level"] for f in result.details["findings"]}


@pytest.fixture(scope="module")
def scanner() -> SavedModelScanner:
    return SavedModelScanner()


def test_scanner_identity() -> None:
    scanner = SavedModelScanner()
    assert (scanner.name, scanner.version()) == (SCANNER_NAME, SCANNER_VERSION) == ("savedmodel", "1.0.0")


def test_benign_saved_model_is_safe_with_its_ops_listed(scanner: SavedModelScanner) -> None:
    result = scanner.scan_bytes(saved_model(serving_graph()), "saved_model.pb")
    assert result.verdict is Verdict.SAFE, result.details
    d = result.details
    assert d["format"] == "saved-model" and d["metaGraphs"] == 1 and d["functions"] == 4
    assert d["nodes"] == 5 + 5 + 5 + 2 + 2
    assert d["ops"]["SaveV2"] == 1 and d["ops"]["MatMul"] == 1 and d["ops"]["PrintV2"] == 1
    assert d["findings"] == [] and d["problems"] == []
    assert any("saver" in n for n in d["notes"]) and any("InitializeTableFromTextFileV2" in n for n in d["notes"])
    json.dumps(d)


def test_tf1_saver_scope_is_standard(scanner: SavedModelScanner) -> None:
    graph = graph_def([node("x", "Placeholder"), node("save/SaveV2", "SaveV2", "save/Const"),
                       node("save/RestoreV2", "RestoreV2", "save/Const"), node("save_1/SaveV2", "SaveV2", "c")])
    assert scanner.scan_bytes(saved_model(graph), "saved_model.pb").verdict is Verdict.SAFE


@pytest.mark.parametrize("op", ["PyFunc", "PyFuncStateless", "EagerPyFunc", "ReadFile", "WriteFile", "MatchingFiles",
                                "ImmutableConst", "DebugIdentityV2", "DebugIdentityV3", "RpcCall",
                                "DataServiceDatasetV4", "SqlDataset", "DatasetToTFRecord", "CreateSummaryFileWriter"])
def test_ops_that_run_python_or_touch_files_or_network_are_unsafe(scanner: SavedModelScanner, op: str) -> None:
    graph = serving_graph(serving_nodes=[node("leak", op, "path")])
    result = scanner.scan_bytes(saved_model(graph), "saved_model.pb")
    assert result.verdict is Verdict.UNSAFE
    assert findings(result) == {op: "unsafe"}
    [finding] = result.details["findings"]
    assert finding["locations"] == ["meta_graphs[0].library.__inference_serving_default_123:leak"]
    assert finding["reason"]
    assert result.summary == f"unsafe: ops {op}"


def test_unsafe_op_in_the_graph_itself_is_found(scanner: SavedModelScanner) -> None:
    graph = serving_graph(graph_nodes=[node("w", "WriteFile", "fname", "contents")])
    result = scanner.scan_bytes(saved_model(graph), "saved_model.pb")
    assert findings(result) == {"WriteFile": "unsafe"}
    assert result.details["findings"][0]["locations"] == ["meta_graphs[0]:w"]


@pytest.mark.parametrize("op", ["TFRecordDataset", "CSVDatasetV2", "WholeFileReaderV2", "LoadAndRemapMatrix"])
def test_input_pipeline_readers_are_suspicious(scanner: SavedModelScanner, op: str) -> None:
    result = scanner.scan_bytes(saved_model(serving_graph(serving_nodes=[node("r", op, "f")])), "saved_model.pb")
    assert result.verdict is Verdict.SUSPICIOUS
    assert findings(result) == {op: "suspicious"}


def test_checkpoint_io_outside_the_saver_is_suspicious(scanner: SavedModelScanner) -> None:
    graph = serving_graph(serving_nodes=[node("dump", "SaveV2", "c"), node("load", "RestoreV2", "c")])
    result = scanner.scan_bytes(saved_model(graph), "saved_model.pb")
    assert result.verdict is Verdict.SUSPICIOUS
    assert findings(result) == {"SaveV2": "suspicious", "RestoreV2": "suspicious"}


@pytest.mark.parametrize("stream,verdict", [("stderr", Verdict.SAFE), ("log(info)", Verdict.SAFE),
                                            ("file:///root/.ssh/authorized_keys", Verdict.UNSAFE),
                                            ("gs://bucket/x", Verdict.UNSAFE)])
def test_print_is_judged_by_where_it_writes(scanner: SavedModelScanner, stream: str, verdict: Verdict) -> None:
    graph = graph_def([node("p", "PrintV2", "x", attrs=attr("output_stream", stream))])
    assert scanner.scan_bytes(saved_model(graph), "saved_model.pb").verdict is verdict


def test_frozen_graph_def_is_read_as_one(scanner: SavedModelScanner) -> None:
    benign = graph_def([node("x", "Placeholder"), node("c", "Const"), node("y", "MatMul", "x", "c")])
    result = scanner.scan_bytes(benign, "frozen.pb")
    assert (result.verdict, result.details["format"]) == (Verdict.SAFE, "graph-def")
    evil = graph_def([node("x", "Placeholder"), node("f", "ReadFile", "x")])
    assert findings(scanner.scan_bytes(evil, "frozen.pb")) == {"ReadFile": "unsafe"}


def test_saved_model_without_schema_version_is_still_read(scanner: SavedModelScanner) -> None:
    data = saved_model(serving_graph(serving_nodes=[node("f", "ReadFile", "p")]), schema_version=0)
    assert findings(scanner.scan_bytes(data, "saved_model.pb")) == {"ReadFile": "unsafe"}


LAMBDA_CODE = base64.b64encode(marshal.dumps((lambda x: x * 2).__code__)).decode()  # compiled here, never run
LAMBDA_LAYER = {"class_name": "Lambda", "config": {"name": "lambda", "function": [LAMBDA_CODE, None, None],
                                                   "function_type": "lambda"}}


def test_keras_metadata_lambda_is_unsafe_and_benign_is_safe(scanner: SavedModelScanner) -> None:
    benign = keras_metadata(("root", {"class_name": "Sequential", "name": "sequential"}),
                            ("root.layer-0", {"class_name": "Dense", "config": {"units": 4}}))
    result = scanner.scan_bytes(benign, "keras_metadata.pb")
    assert (result.verdict, result.details["format"]) == (Verdict.SAFE, "keras-metadata")
    evil = keras_metadata(("root", {"class_name": "Sequential"}), ("root.layer-0", LAMBDA_LAYER))
    for name in ("keras_metadata.pb", "blob"):  # by name, and by content
        result = scanner.scan_bytes(evil, name)
        assert result.verdict is Verdict.UNSAFE, name
        assert result.details["format"] == "keras-metadata"
        [finding] = result.details["kerasFindings"]
        assert finding["kind"] == "lambda" and finding["location"].startswith("keras_metadata:root.layer-0")


def test_keras_object_metadata_inside_a_saved_model_is_walked(scanner: SavedModelScanner) -> None:
    data = saved_model(serving_graph(), user_object_graph({"class_name": "Sequential", "config": {
        "layers": [LAMBDA_LAYER]}}))
    result = scanner.scan_bytes(data, "saved_model.pb")
    assert result.verdict is Verdict.UNSAFE
    assert result.details["kerasFindings"][0]["kind"] == "lambda"


def test_text_format_graph(scanner: SavedModelScanner) -> None:
    text = 'node {\n  name: "x"\n  op: "Placeholder"\n}\nnode {\n  name: "f"\n  op: "ReadFile"\n  input: "x"\n}\n'
    result = scanner.scan_bytes(text.encode(), "saved_model.pbtxt")
    assert findings(result) == {"ReadFile": "unsafe"}
    assert result.details["findings"][0]["locations"] == ["line 7"]


@pytest.mark.parametrize("cut", [1, 7, 50, -3])
def test_truncated_protobuf_is_suspicious_never_safe(scanner: SavedModelScanner, cut: int) -> None:
    data = saved_model(serving_graph())
    result = scanner.scan_bytes(data[:cut], "saved_model.pb")
    assert result.verdict is Verdict.SUSPICIOUS, result.details
    assert "malformed protobuf" in result.details["problems"][0]["message"]


def test_field_limit_is_an_error_not_a_verdict() -> None:
    result = SavedModelScanner(SavedModelLimits(max_fields=20)).scan_bytes(saved_model(serving_graph()), "s.pb")
    assert result.verdict is Verdict.ERROR
    assert "more than 20 protobuf fields" in result.summary


def test_group_wire_type_is_refused(scanner: SavedModelScanner) -> None:
    result = scanner.scan_bytes(b"\x0b\x0c", "saved_model.pb")  # field 1 start-group, end-group
    assert result.verdict is Verdict.SUSPICIOUS


def test_scan_path_matches_scan_bytes(scanner: SavedModelScanner, tmp_path: Path) -> None:
    data = saved_model(serving_graph(serving_nodes=[node("p", "PyFunc", "x")]))
    path = tmp_path / "saved_model.pb"
    path.write_bytes(data)
    by_path, by_bytes = scanner.scan_path(path), scanner.scan_bytes(data, "saved_model.pb")
    assert by_path.verdict is by_bytes.verdict is Verdict.UNSAFE
    assert by_path.details == by_bytes.details
    empty = tmp_path / "empty.pb"
    empty.write_bytes(b"")
    assert scanner.scan_path(empty).verdict is Verdict.SAFE

"""The format-scanner framework: choosing a scanner per file, versions, isolation, and the API and web entry."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import safetensors.numpy
from huggingface_hub import CommitOperationAdd
from onnx import TensorProto, helper

from bastion.config import Settings
from bastion.scanning.adapters import FormatScannerAdapter, build_scanners
from bastion.scanning.isolation import ProcessLimits
from bastion.scanning.results import Verdict
from bastion.scanning.scanners import model_formats, safetensors_format
from bastion.scanning.scanners.model_formats import FORMATS, Format, scanner_version
from tests.conftest import BastionServer, hf_api, wait_for
from tests.scanning.format_samples import MALICIOUS_PICKLE, gguf_file, object_npy

EVIL_TEMPLATE = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"


def test_the_version_names_every_format_and_changes_with_any_of_them() -> None:
    assert model_formats.SCANNER_VERSION == "2:gguf-1,keras-1.0.0,nemo-config-1,numpy-1,onnx-1,safetensors-1,savedmodel-1.0.0"
    bumped = tuple(Format(f.name, "2", f.scan, f.extensions, f.sniff) if f.name == "onnx" else f for f in FORMATS)
    assert scanner_version(bumped) == "2:gguf-1,keras-1.0.0,nemo-config-1,numpy-1,onnx-2,safetensors-1,savedmodel-1.0.0" \
        != model_formats.SCANNER_VERSION
    assert FormatScannerAdapter().version() == model_formats.SCANNER_VERSION


def test_a_format_is_registered_by_one_entry(tmp_path: Path) -> None:
    # The safetensors scanner registered a second time for an extension of its own, without a magic.
    extra = Format("safetensors-alias", "1", safetensors_format.scan_path, (".sft",))
    path = tmp_path / "weights.sft"
    path.write_bytes(b"\x00" * 4)
    assert model_formats.scan_path(path).details["format"] is None  # not registered: no format
    result = model_formats.scan_path(path, formats=(*FORMATS, extra))
    assert result.verdict is Verdict.SUSPICIOUS and result.details["scanner"] == "safetensors-alias-1"
    assert result.scanner_version == scanner_version((*FORMATS, extra))


def test_a_file_of_no_model_format_is_safe_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_text("# hello\n")
    result = model_formats.scan_path(path)
    assert result.verdict is Verdict.SAFE and result.details["format"] is None
    assert result.summary == "safe: not a model format the format scanners read"


def test_content_is_judged_whatever_the_name_and_a_disguise_is_suspicious(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    np.save(path.with_suffix(".npy"), np.arange(4))
    path.with_suffix(".npy").rename(path)
    result = model_formats.scan_path(path)
    assert result.details["format"] == "npy" and result.verdict is Verdict.SUSPICIOUS
    assert result.details["findings"][-1]["message"] == "the name says gguf but the content is numpy"


def test_what_cannot_be_read_is_never_safe(tmp_path: Path) -> None:
    result = model_formats.scan_path(tmp_path)  # a directory
    assert result.verdict is Verdict.ERROR and "not a regular file" in result.summary


def test_the_format_scanner_is_enabled_by_default() -> None:
    settings = Settings(data_dir=Path("/nonexistent"))
    assert "format" in settings.scanners
    assert isinstance(build_scanners(settings, ["format"])["format"], FormatScannerAdapter)


def test_isolated_scans_of_a_file_and_of_git_blob_bytes(tmp_path: Path) -> None:
    adapter = FormatScannerAdapter(tmp_path)
    limits = ProcessLimits(memory_mb=1024, cpu_seconds=60, wall_seconds=60)
    path = gguf_file(tmp_path / "evil.gguf", EVIL_TEMPLATE)
    from_file = adapter.scan_isolated(path, "models/evil.gguf", limits)
    assert from_file.verdict is Verdict.UNSAFE and from_file.details["file"] == "models/evil.gguf"
    from_bytes = adapter.scan_isolated(path.read_bytes(), "evil.gguf", limits)
    assert from_bytes.verdict is Verdict.UNSAFE and from_bytes.details["findings"] == from_file.details["findings"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.gguf"]  # the blob's temporary file is gone
    npy = adapter.scan_isolated(object_npy(MALICIOUS_PICKLE), "x.npy", limits)
    assert npy.verdict is Verdict.UNSAFE and npy.scanner == "format"


def _onnx_escaping() -> bytes:
    tensor = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 1.0])
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../../../etc/shadow"
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], initializer=[tensor])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_format_verdicts_reach_the_api_and_the_file_page(server: BastionServer, user: tuple[str, str],
                                                         tmp_path: Path) -> None:
    name, token = user
    api = hf_api(server, token)
    repo_id = f"{name}/formats"
    api.create_repo(repo_id)
    benign = io.BytesIO(safetensors.numpy.save({"w": np.ones((4, 4), np.float32)}))
    api.create_commit(repo_id, commit_message="formats", operations=[
        CommitOperationAdd("README.md", b"# formats\n"),
        CommitOperationAdd("model.gguf", gguf_file(tmp_path / "m.gguf", EVIL_TEMPLATE).read_bytes()),
        CommitOperationAdd("model.safetensors", benign),
        CommitOperationAdd("arrays.npy", object_npy(MALICIOUS_PICKLE)),
        CommitOperationAdd("model.onnx", _onnx_escaping()),
    ])
    headers = {"authorization": f"Bearer {token}"}

    def done() -> dict | None:
        scan = httpx.get(f"{server.url}/api/models/{repo_id}/scan", headers=headers).json()
        return scan if scan["scansDone"] else None

    scan = wait_for(done, timeout=120)
    files = {f["path"]: f for f in scan["files"]}
    assert sorted(f["path"] for f in scan["filesWithIssues"]) == ["arrays.npy", "model.gguf", "model.onnx"]
    gguf_scan = files["model.gguf"]["formatScan"]
    assert gguf_scan["status"] == "unsafe" and gguf_scan["format"] == "gguf"
    assert gguf_scan["version"] == model_formats.SCANNER_VERSION
    assert any("'__globals__'" in f["message"] and f["location"] == "tokenizer.chat_template"
               for f in gguf_scan["findings"])
    assert files["model.gguf"]["status"] == "unsafe"
    assert files["model.onnx"]["formatScan"]["status"] == "unsafe"
    assert "climbs out of the model's folder" in files["model.onnx"]["formatScan"]["summary"]
    assert files["arrays.npy"]["formatScan"]["status"] == "unsafe"
    assert files["model.safetensors"]["formatScan"]["status"] == "safe"
    assert files["model.safetensors"]["formatScan"]["format"] == "safetensors"
    assert files["model.safetensors"]["status"] == "safe"
    assert files["README.md"]["formatScan"]["format"] is None and files["README.md"]["status"] == "safe"

    # The huggingface_hub client reads the same statuses (it knows avScan and pickleImportScan by name;
    # the overall status counts the format verdict).
    security = {e.path: e.security for e in api.list_repo_tree(repo_id, expand=True) if hasattr(e, "security")}
    assert security["model.gguf"].status == "unsafe" and security["model.gguf"].safe is False
    assert security["model.gguf"].pickle_import_scan["status"] == "safe"  # only the format scanner sees it
    assert security["model.safetensors"].safe is True

    page = httpx.get(f"{server.url}/{repo_id}/blob/main/model.gguf", headers={"accept": "text/html"}).text
    table = page.split('id="format-findings"')[1].split("</table>")[0]
    assert "tokenizer.chat_template" in table and "finding-unsafe" in table
    assert "&#39;__globals__&#39;" in table  # the finding quotes the template, escaped

"""Tests of Bastion's pickle scanner: real benign files stay safe, every bypass family is flagged.

Malicious samples are assembled in tests/scanning/data/pickle_corpus.py and are never unpickled.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import pickle
import pickletools
import random
import struct
import sys
import zipfile
from pathlib import Path

import pytest

from bastion.scanning.results import ImportSafety, Verdict
from bastion.scanning.scanners.pickles import SCANNER_VERSION, PickleScanner, ScanLimits, classify
from bastion.scanning.scanners.pickles import walker as walker_module

DATA = Path(__file__).parent / "data"
BENIGN = DATA / "benign"


def _load_corpus():
    spec = importlib.util.spec_from_file_location("bastion_pickle_corpus", DATA / "pickle_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


pc = _load_corpus()
CORPUS = pc.corpus()
BENIGN_FILES = sorted(p for p in BENIGN.iterdir() if p.is_file())
OS_SYSTEM = pc.reduce_call("os", "system", protocol=2)


def flagged(result) -> set[tuple[str, str]]:
    return {(i["module"], i["name"]) for i in result.details["imports"] if i["safety"] != "innocuous"}


def imports(result) -> dict[tuple[str, str], str]:
    return {(i["module"], i["name"]): i["safety"] for i in result.details["imports"]}


def carried(result) -> dict[str, set[tuple[str, str]]]:
    """Where nested pickles carried as data lie, and what each would import that is not innocuous."""
    return {c["location"]: {(i["module"], i["name"]) for i in c["imports"] if i["safety"] != "innocuous"}
            for c in result.details["carried"]}


@pytest.fixture(scope="module")
def scanner() -> PickleScanner:
    return PickleScanner()


# -- benign: real files must produce no flag at all -------------------------------------------------


def test_benign_corpus_is_present_and_small() -> None:
    names = {p.name for p in BENIGN_FILES}
    assert {"torch_state_dict.pt", "torch_state_dict_legacy.pt", "torch_training_state.ckpt", "object.npy",
            "joblib_plain.joblib", "joblib_xz.joblib", "model.safetensors"} <= names
    assert sum(p.stat().st_size for p in BENIGN_FILES) < 2_000_000


@pytest.mark.parametrize("path", BENIGN_FILES, ids=lambda p: p.name)
def test_benign_file_is_safe(scanner: PickleScanner, path: Path) -> None:
    result = scanner.scan_path(path)
    assert result.verdict is Verdict.SAFE, (result.summary, result.details["problems"])
    assert flagged(result) == set()
    assert result.details["problems"] == []
    # The same bytes through scan_bytes (no mmap) give the same answer.
    again = scanner.scan_bytes(path.read_bytes(), path.name)
    assert (again.verdict, imports(again)) == (result.verdict, imports(result))


EXPECTED_FORMATS = {
    "torch_state_dict.pt": "torch-zip",
    "weights_no_extension": "torch-zip",
    "torch_state_dict_legacy.pt": "torch-legacy",
    "torch_training_state_legacy.bin": "torch-legacy",
    "joblib_plain.joblib": "pickle",
    "joblib_gzip.joblib": "gzip",
    "joblib_bz2.joblib": "bz2",
    "joblib_xz.joblib": "xz",
    "joblib_lzma.joblib": "lzma",
    "joblib_zlib.joblib": "zlib",
    "numeric.npy": "npy",
    "arrays.npz": "npz",
    "model.safetensors": "safetensors",
    "README.md": "not-pickle",
}


@pytest.mark.parametrize("name,fmt", sorted(EXPECTED_FORMATS.items()))
def test_benign_format_found_by_content(scanner: PickleScanner, name: str, fmt: str) -> None:
    assert scanner.scan_path(BENIGN / name).details["format"] == fmt


def test_torch_state_dict_imports_exactly(scanner: PickleScanner) -> None:
    result = scanner.scan_path(BENIGN / "torch_state_dict.pt")
    assert imports(result) == {
        ("collections", "OrderedDict"): "innocuous",
        ("torch", "FloatStorage"): "innocuous",
        ("torch", "LongStorage"): "innocuous",
        ("torch._utils", "_rebuild_tensor_v2"): "innocuous",
    }
    assert result.details["highestSafetyLevel"] == "innocuous"
    assert result.details["pickles"] == 1


def test_training_state_covers_optimizer_rng_and_numpy(scanner: PickleScanner) -> None:
    found = imports(scanner.scan_path(BENIGN / "torch_training_state.ckpt"))
    for key in [("_codecs", "encode"), ("argparse", "Namespace"), ("numpy", "dtype"), ("torch", "ByteStorage"),
                ("datetime", "timedelta")]:
        assert found[key] == "innocuous"


def test_legacy_torch_reads_exactly_five_pickles(scanner: PickleScanner) -> None:
    result = scanner.scan_path(BENIGN / "torch_state_dict_legacy.pt")
    assert result.details["pickles"] == 5
    assert any("legacy torch storage data" in n for n in result.details["notes"])


def test_joblib_array_payloads_are_stepped_over(scanner: PickleScanner) -> None:
    result = scanner.scan_path(BENIGN / "joblib_plain.joblib")
    payloads = [n for n in result.details["notes"] if "joblib array payload" in n]
    assert len(payloads) == 7  # every non-object array in the fixture
    assert result.details["pickles"] == 2  # the stream plus the nested object-array pickle


# -- the malicious corpus ---------------------------------------------------------------------------------


def test_corpus_pickles_are_well_formed() -> None:
    """Every raw sample is a pickle the stdlib parser reads to STOP (statically), so a miss is ours."""
    raw_families = {"denylist", "unknown-global", "disguised-name", "stack-global-memo", "call-opcodes"}
    checked = 0
    for sample in CORPUS:
        if sample.family in raw_families:
            ops = list(pickletools.genops(sample.data))
            assert ops[-1][0].name == "STOP", sample.name
            checked += 1
    assert checked > 250


@pytest.mark.parametrize("sample", CORPUS, ids=lambda s: f"{s.family}:{s.name}")
def test_malicious_sample_is_flagged(scanner: PickleScanner, sample) -> None:
    result = scanner.scan_bytes(sample.data, sample.name)
    assert result.verdict.value == sample.verdict, (result.summary, result.details.get("problems"))
    assert set(sample.flagged) <= flagged(result)


def test_every_family_is_represented() -> None:
    families = {s.family for s in CORPUS}
    assert families == {"denylist", "unknown-global", "disguised-name", "stack-global-memo", "call-opcodes",
                        "nested", "multi-pickle", "malformed", "zip", "numpy", "joblib", "compressed", "keras",
                        "safetensors", "tar"}


def test_report_has_hub_shape_locations_and_reasons(scanner: PickleScanner) -> None:
    archive = pc.torch_zip(pc.proto(2) + pc.glob("collections", "OrderedDict") + b")R" + b"]"
                           + pc.glob("os", "system") + pc.uni("true") + b"\x85Ra" + b"\x86.")
    result = scanner.scan_bytes(archive, "model.pt")
    assert result.scanner == "pickle" and result.scanner_version == SCANNER_VERSION
    assert result.verdict is Verdict.UNSAFE
    assert result.details["highestSafetyLevel"] == "dangerous"
    entries = {(i["module"], i["name"]): i for i in result.details["imports"]}
    assert entries[("os", "system")]["safety"] == "dangerous"
    assert entries[("os", "system")]["locations"][0].startswith("archive/data.pkl@")
    assert "reason" in entries[("os", "system")] and entries[("os", "system")]["reason"]
    assert entries[("collections", "OrderedDict")]["safety"] == "innocuous"
    assert "reason" not in entries[("collections", "OrderedDict")]
    assert result.details["imports"][0]["module"] == "os"  # worst first
    json.dumps(result.details)  # stored as JSON by the pipeline


def test_stack_global_resolves_memo_not_neighbouring_opcodes(scanner: PickleScanner) -> None:
    # Strings pushed right before STACK_GLOBAL are decoys; the operands come from the memo.
    data = (pc.proto(4) + pc.uni("os") + b"\x94" + pc.uni("system") + b"\x94" + b"00"
            + pc.uni("collections") + pc.uni("OrderedDict") + b"00" + b"h\x00h\x01\x93" + pc.uni("true") + b"\x85R.")
    result = scanner.scan_bytes(data)
    assert imports(result) == {("os", "system"): "dangerous"}


def test_nested_load_from_bytes_is_innocuous_only_when_the_inner_file_is_clean(scanner: PickleScanner) -> None:
    clean_inner = pc.legacy_torch(pc.benign_pickle())
    clean = pc.proto(2) + pc.glob("torch.storage", "_load_from_bytes") + pc.binbytes(clean_inner) + b"\x85R."
    result = scanner.scan_bytes(clean)
    assert result.verdict is Verdict.SAFE
    assert imports(result)[("torch.storage", "_load_from_bytes")] == "innocuous"

    unverifiable = pc.proto(2) + pc.glob("torch.storage", "_load_from_bytes") + b"N\x85R."
    result = scanner.scan_bytes(unverifiable)
    assert result.verdict is Verdict.UNSAFE
    assert imports(result)[("torch.storage", "_load_from_bytes")] == "dangerous"


# -- classification ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module,name,safety", [
    ("torch._utils", "_rebuild_tensor_v2", "innocuous"),
    ("torch._utils", "_rebuild_parameter", "innocuous"),
    ("torch", "BFloat16Storage", "innocuous"),
    ("torch.serialization", "_get_layout", "innocuous"),
    ("numpy.core.multiarray", "_reconstruct", "innocuous"),
    ("numpy._core.multiarray", "scalar", "innocuous"),
    ("__builtin__", "set", "innocuous"),
    ("copy_reg", "_reconstructor", "innocuous"),
    ("_codecs", "encode", "innocuous"),
    ("joblib.numpy_pickle", "NumpyArrayWrapper", "innocuous"),
    ("pathlib", "PosixPath", "innocuous"),
    ("uuid", "UUID", "innocuous"),
    ("os", "system", "dangerous"),
    ("os.path", "join", "dangerous"),
    ("posixpath", "os.system", "dangerous"),
    ("__builtin__", "eval", "dangerous"),
    ("torch.serialization", "load", "dangerous"),
    ("torch", "serialization.load", "dangerous"),
    ("torch._utils", "_rebuild_tensor_v2.__globals__", "dangerous"),
    ("joblib.numpy_pickle_compat", "NDArrayWrapper", "dangerous"),
    ("codecs", "open", "dangerous"),
    ("pathlib", "Path.write_text", "dangerous"),
    ("uuid", "_get_command_stdout", "dangerous"),
    ("ｏｓ", "system", "dangerous"),
    ("os\n", "system", "dangerous"),
    ("ossaudiodev", "open", "suspicious"),
    ("osmodule", "run", "suspicious"),
    ("collections", "OrderedDict.fromkeys", "suspicious"),
    ("sklearn.linear_model", "LogisticRegression", "suspicious"),
    ("оs", "system", "suspicious"),
])
def test_classify(module: str, name: str, safety: str) -> None:
    result = classify(module, name)
    assert result.safety is ImportSafety(safety), result.reason
    assert result.reason


# -- containers and the picklescan bypasses ---------------------------------------------------------------------


def test_zip_members_found_by_content_not_name(scanner: PickleScanner) -> None:
    archive = pc.torch_zip(pc.benign_pickle(), extra={"weird/dir/tensor.bin": OS_SYSTEM, "x/.hidden": b"\x00" * 9})
    result = scanner.scan_bytes(archive)
    assert result.verdict is Verdict.UNSAFE
    assert any(loc.startswith("weird/dir/tensor.bin@") for i in result.details["imports"] for loc in i["locations"])


def test_bypass_zips_are_unreadable_by_zipfile_yet_scanned(scanner: PickleScanner) -> None:
    """The point of the bypass samples: the stdlib (and so picklescan) cannot read them."""
    for build in (pc.zip_bad_crc, pc.zip_flag_bits):
        data = build(OS_SYSTEM)
        with zipfile.ZipFile(io.BytesIO(data)) as zf, pytest.raises((zipfile.BadZipFile, RuntimeError)):
            zf.read("archive/data.pkl")
        assert scanner.scan_bytes(data).verdict is Verdict.UNSAFE
    hidden = pc.zip_hidden_member(OS_SYSTEM)
    with zipfile.ZipFile(io.BytesIO(hidden)) as zf:
        assert "archive/data.pkl" in zf.namelist()
        assert zf.read("archive/data.pkl") == pc.benign_pickle()  # zipfile sees only the clean member
    result = scanner.scan_bytes(hidden)
    assert result.verdict is Verdict.UNSAFE
    assert any("not in the central directory" in p["message"] for p in result.details["problems"])


def test_truncated_zip_is_never_safe(scanner: PickleScanner) -> None:
    data = (BENIGN / "torch_state_dict.pt").read_bytes()
    for cut in (len(data) // 3, len(data) - 30):
        assert scanner.scan_bytes(data[:cut]).verdict is not Verdict.SAFE


def test_truncated_pickles_are_never_safe(scanner: PickleScanner) -> None:
    for name in ("python_objects_p2.pkl", "python_objects_p4.pkl", "object.npy", "torch_state_dict_legacy.pt"):
        data = (BENIGN / name).read_bytes()
        for cut in (len(data) // 2, len(data) - 1):
            assert scanner.scan_bytes(data[:cut]).verdict is Verdict.SUSPICIOUS, (name, cut)


def test_safetensors_header_is_validated_without_reading_data(scanner: PickleScanner, tmp_path: Path) -> None:
    header = {"w": {"dtype": "F32", "shape": [1 << 28], "data_offsets": [0, 1 << 30]}, "__metadata__": {"k": "v"}}
    raw = json.dumps(header).encode()
    path = tmp_path / "big.safetensors"
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + (1 << 30))  # sparse: 1 GiB of tensor data never written
    result = scanner.scan_path(path)
    assert (result.verdict, result.details["format"]) == (Verdict.SAFE, "safetensors")
    with path.open("r+b") as fh:
        fh.truncate(8 + len(raw) + (1 << 30) - 4)  # one tensor now runs past the end
    result = scanner.scan_path(path)
    assert result.verdict is Verdict.SUSPICIOUS


def test_keras_benign_config_is_safe(scanner: PickleScanner) -> None:
    config = {"module": "keras", "class_name": "Sequential", "config": {"layers": [
        {"module": "keras.layers", "class_name": "Dense", "config": {"units": 2}, "registered_name": None}]}}
    result = scanner.scan_bytes(pc.keras_zip(config))
    assert (result.verdict, result.details["format"]) == (Verdict.SAFE, "keras")


# -- limits and robustness -----------------------------------------------------------------------------------


def test_opcode_limit_is_error_not_safe() -> None:
    data = pc.proto(2) + b"]" + b"(" + b"K\x01" * 5000 + b"e."
    assert PickleScanner().scan_bytes(data).verdict is Verdict.SAFE
    result = PickleScanner(ScanLimits(max_opcodes=1000)).scan_bytes(data)
    assert result.verdict is Verdict.ERROR
    assert "opcode limit" in result.summary


def test_memo_limit_is_error_not_safe() -> None:
    data = pc.proto(4) + b"]" + b"(" + b"K\x01\x94" * 500 + b"e."
    assert PickleScanner(ScanLimits(max_memo=100)).scan_bytes(data).verdict is Verdict.ERROR


def test_depth_limit_is_not_safe() -> None:
    data = pc.benign_pickle()
    for _ in range(6):
        data = gzip.compress(data)
    assert PickleScanner().scan_bytes(data).verdict is Verdict.SAFE
    assert PickleScanner(ScanLimits(max_depth=3)).scan_bytes(data).verdict is Verdict.SUSPICIOUS


def test_decompression_bomb_is_bounded() -> None:
    bomb = gzip.compress(pc.proto(2) + b"]" + b"(" + b"N" * (20 << 20) + b"e.")
    result = PickleScanner(ScanLimits(max_decompressed_bytes=1 << 20)).scan_bytes(bomb)
    assert result.verdict in (Verdict.ERROR, Verdict.SUSPICIOUS)
    assert any("decompressed size limit" in p["message"] for p in result.details["problems"])


def _bomb_pickle(head: bytes, zeros: int) -> bytes:
    """`head`, then a BINBYTES8 of `zeros` NULs (compresses about 1000:1), then STOP."""
    return pc.proto(4) + head + b"\x8e" + struct.pack("<Q", zeros) + bytes(zeros) + b"."


def test_a_zip_bomb_member_is_cut_short_and_what_was_inflated_is_examined() -> None:
    payload = _bomb_pickle(pc.glob("os", "system") + pc.uni("true") + b"\x85R0", 8 << 20)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", payload)
    result = PickleScanner(ScanLimits(inflate_ratio_floor=1 << 20)).scan_bytes(buf.getvalue(), "bomb.pt")
    assert result.verdict is Verdict.UNSAFE and ("os", "system") in flagged(result)
    assert any("decompression bomb" in p["message"] for p in result.details["problems"])
    # Under the floor the same member is inflated whole, like any other.
    assert not any("bomb" in p["message"] for p in PickleScanner().scan_bytes(buf.getvalue()).details["problems"])


def test_a_gzip_bomb_is_cut_short() -> None:
    bomb = gzip.compress(_bomb_pickle(b"", 8 << 20))
    result = PickleScanner(ScanLimits(inflate_ratio_floor=1 << 20)).scan_bytes(bomb)
    assert result.verdict is Verdict.SUSPICIOUS and "decompression bomb" in result.summary


def test_large_inflated_members_are_spooled_and_examined_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.scanning.scanners.pickles import formats

    monkeypatch.setattr(formats, "SPOOL_OVER", 64 << 10)
    spooled: list[int] = []
    real = formats._Sink.result

    def result(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        spooled.append(self.file is not None)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(formats._Sink, "result", result)
    # A nested pickle at the start of 1 MiB of bytes held by the member's pickle: found where it lies.
    noise = random.Random(7).randbytes(1 << 20)
    inner = OS_SYSTEM + noise
    payload = pc.proto(4) + b"\x8e" + struct.pack("<Q", len(inner)) + inner + b"."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", payload)
    result = PickleScanner().scan_bytes(buf.getvalue(), "m.pt")
    # Carried as data (nothing hands the bytes to a loader): suspicious, found where it lies.
    assert result.verdict is Verdict.SUSPICIOUS
    assert carried(result) == {"archive/data.pkl@2": {("os", "system")}}
    assert True in spooled


def test_bytes_handed_to_a_loader_are_examined_in_place_whatever_their_size() -> None:
    loader = pc.glob("torch.storage", "_load_from_bytes")
    for inner, verdict in ((pc.benign_pickle() + bytes(2 << 20), Verdict.SAFE),
                           (OS_SYSTEM + bytes(2 << 20), Verdict.UNSAFE)):
        data = pc.proto(4) + loader + b"\x8e" + struct.pack("<Q", len(inner)) + inner + b"\x85R."
        assert PickleScanner().scan_bytes(data).verdict is verdict


def test_long_strings_are_validated_not_kept() -> None:
    assert PickleScanner().scan_bytes(pc.proto(4) + pc.uni("é" * (1 << 20)) + b".").verdict is Verdict.SAFE
    bad = pc.proto(4) + b"X" + struct.pack("<I", 2 << 20) + b"a" * ((2 << 20) - 1) + b"\xff."
    result = PickleScanner().scan_bytes(bad)
    assert result.verdict is Verdict.SUSPICIOUS and "invalid UTF-8" in result.summary
    # A module name megabytes long names no module: a pickle importing it cannot load.
    long_name = pc.proto(4) + pc.uni("a" * (2 << 20)) + pc.uni("system") + b"\x93."
    assert PickleScanner().scan_bytes(long_name).verdict is Verdict.SUSPICIOUS


@pytest.mark.parametrize(("limits", "body", "message"), [
    (ScanLimits(max_stack=1000), b"N" * 10_000, "stack limit"),
    (ScanLimits(max_marks=1000), b"(" * 10_000, "nesting limit"),
    (ScanLimits(max_kept=1000), b"]" + (b"(" + b"N" * 100 + b"e") * 100, "object limit"),
    (ScanLimits(max_held=100_000), (pc.uni("x" * 200) + b"0") * 3000, "string limit"),
    (ScanLimits(max_imports=100), b"".join(pc.glob("m", f"n{i}") + b"0" for i in range(300)), "distinct imports"),
])
def test_the_walker_keeps_bounded_memory(limits: ScanLimits, body: bytes, message: str) -> None:
    data = pc.proto(4) + body + b"N."
    assert PickleScanner().scan_bytes(data).verdict is not Verdict.ERROR  # within the default limits
    result = PickleScanner(limits).scan_bytes(data)
    assert result.verdict is Verdict.ERROR and message in result.summary, result.summary


def test_file_size_and_time_limits(tmp_path: Path) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(pc.benign_pickle())
    assert PickleScanner(ScanLimits(max_file_bytes=4)).scan_path(path).verdict is Verdict.ERROR
    assert PickleScanner(ScanLimits(max_seconds=-1)).scan_path(path).verdict is Verdict.ERROR
    assert PickleScanner().scan_path(tmp_path / "missing.pkl").verdict is Verdict.ERROR
    assert PickleScanner().scan_path(tmp_path).verdict is Verdict.ERROR


def test_internal_failure_becomes_error_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self, op: int, offset: int) -> None:
        raise RuntimeError("injected bug")

    monkeypatch.setattr(walker_module.PickleWalker, "_step", boom)
    result = PickleScanner().scan_bytes(OS_SYSTEM)
    assert result.verdict is Verdict.ERROR
    assert "injected bug" in result.details["error"]


def test_mutated_inputs_never_crash(scanner: PickleScanner) -> None:
    seeds = [(BENIGN / n).read_bytes() for n in ("torch_state_dict.pt", "joblib_plain.joblib", "object.npy")]
    seeds.append(OS_SYSTEM)
    state = 12345
    for seed in seeds:
        for _ in range(60):
            state = (state * 1103515245 + 12345) & 0x7FFFFFFF
            data = bytearray(seed)
            for _ in range(1 + state % 4):
                state = (state * 1103515245 + 12345) & 0x7FFFFFFF
                data[state % len(data)] = state >> 8 & 0xFF
            result = scanner.scan_bytes(bytes(data))
            assert result.verdict in set(Verdict)
            assert result.details["highestSafetyLevel"] in (None, "innocuous", "suspicious", "dangerous")


def test_text_and_empty_files_are_safe_because_fully_examined(scanner: PickleScanner) -> None:
    assert scanner.scan_bytes(b"").verdict is Verdict.SAFE
    result = scanner.scan_bytes(b"hello world, not a pickle\n" * 100)
    assert (result.verdict, result.details["format"]) == (Verdict.SAFE, "not-pickle")
    # ...but text that opens with a pickle is a pickle.
    assert scanner.scan_bytes(OS_SYSTEM + b"trailing text").verdict is Verdict.UNSAFE
    # Prose that happens to parse as a GLOBAL of unknown names and then breaks off imports nothing
    # anyone has; the same shape naming os.system would import os, so it is reported.
    assert scanner.scan_bytes(b"config\nmodel\nmore notes").verdict is Verdict.SAFE
    assert scanner.scan_bytes(b"cos\nsystem\nmore notes").verdict is Verdict.UNSAFE


def test_compressed_numeric_members_are_settled_by_their_prefix(scanner: PickleScanner) -> None:
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(800_000)
    result = scanner.scan_bytes(pc.npz({"big.npy": npy}, compressed=True))
    assert result.verdict is Verdict.SAFE
    assert any("settled from its first" in n for n in result.details["notes"])


def test_safetensors_name_with_other_content_is_not_safe(scanner: PickleScanner) -> None:
    assert scanner.scan_bytes(b"\xff" * 64, "model.safetensors").verdict is Verdict.SUSPICIOUS
    assert scanner.scan_bytes(b"\xff" * 64, "blob.bin").verdict is Verdict.SAFE


def test_prose_in_a_tar_is_not_a_pickle(scanner: PickleScanner) -> None:
    text = b"config\nmodel\nchecks\nare\ncool\n" * 50
    result = scanner.scan_bytes(pc.legacy_tar({"notes.txt": text, "data.pkl": pc.benign_pickle()}))
    assert (result.verdict, result.details["format"]) == (Verdict.SAFE, "tar")
    assert result.details["pickles"] >= 1


def test_tensor_bytes_resembling_other_formats_are_not_flagged(scanner: PickleScanner) -> None:
    lookalikes = {
        "int64 [5, 123]": struct.pack("<qq", 5, 123) + bytes(64),  # a safetensors length and "{"
        "gzip magic": b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4,
        "PROTO 2 then junk": b"\x80\x02" + bytes(range(200, 256)) * 8,
        "PK magic without archive": b"PK\x03\x04" + bytes(300),
    }
    for label, data in lookalikes.items():
        result = scanner.scan_bytes(pc.torch_zip(pc.benign_pickle(), extra={"archive/data/0": data}))
        assert result.verdict is Verdict.SAFE, (label, result.details["problems"])


@pytest.mark.parametrize("data", [
    b"\x8c\x02\xd2(garbage",  # SHORT_BINUNICODE with invalid UTF-8: every unpickler fails the load here
    b"X\x02\x00\x00\x00\xc3(rest",  # BINUNICODE, same
    b"cmod\xff\nname\n)R.",  # GLOBAL names are decoded strict UTF-8 before anything is imported
])
def test_invalid_utf8_string_is_not_a_pickle_rather_than_a_scanner_failure(scanner: PickleScanner,
                                                                           data: bytes) -> None:
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(data)
    result = scanner.scan_bytes(data, "weights.bin")
    assert (result.verdict, result.details["format"]) == (Verdict.SAFE, "not-pickle"), result.summary


def test_random_binary_gets_a_verdict_never_a_scanner_failure(scanner: PickleScanner) -> None:
    # Every first byte, each followed by the same pseudo-random tail: a raw tensor dump named .bin.
    tail = random.Random(7).randbytes(4096)
    verdicts = {b: scanner.scan_bytes(bytes([b]) + tail, "raw.bin").verdict for b in range(256)}
    assert Verdict.ERROR not in verdicts.values()
    # Only a stream that opens with PROTO claims to be a pickle and is flagged when it is not one.
    assert {b for b, v in verdicts.items() if v is not Verdict.SAFE} <= {0x80}

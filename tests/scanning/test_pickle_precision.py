"""Pickle precision: what runs when the file is loaded decides `unsafe`; a pickle merely carried as
bytes (it would run only if some code unpickled it a second time) is `suspicious`, reported apart.

Samples are assembled by hand (tests/scanning/data/pickle_corpus.py helpers) and never unpickled.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from bastion.scanning.results import Verdict
from bastion.scanning.scanners.pickles import SCANNER_VERSION, PickleScanner
from bastion.scanning.scanners.pickles.scanner import CARRIED_REASON

DATA = Path(__file__).parent / "data"


def _load_corpus():
    spec = importlib.util.spec_from_file_location("bastion_pickle_corpus_precision", DATA / "pickle_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


pc = _load_corpus()
OS_SYSTEM = pc.reduce_call("os", "system", protocol=2)


def own_imports(result) -> dict[tuple[str, str], str]:
    return {(i["module"], i["name"]): i["safety"] for i in result.details["imports"]}


def carried(result) -> dict[str, set[tuple[str, str]]]:
    return {c["location"]: {(i["module"], i["name"]) for i in c["imports"] if i["safety"] != "innocuous"}
            for c in result.details["carried"]}


@pytest.fixture(scope="module")
def scanner() -> PickleScanner:
    return PickleScanner()


def test_scanner_version_was_bumped_so_stored_verdicts_are_redone() -> None:
    # 1.2.0 judged carried pickles unsafe; verdicts stored under it are rescanned (bastion.scanning.enqueue).
    assert SCANNER_VERSION == "1.3.0"


def test_malicious_pickle_carried_as_bytes_is_suspicious_with_location_and_reason(scanner: PickleScanner) -> None:
    data = pc.proto(3) + b"]" + pc.binbytes(OS_SYSTEM) + b"a."  # [b"<pickle calling os.system>"]
    result = scanner.scan_bytes(data, "holder.pkl")
    assert result.verdict is Verdict.SUSPICIOUS
    # The file's own imports are what loading it imports: nothing.
    assert own_imports(result) == {}
    assert result.details["highestSafetyLevel"] is None
    # The carried pickle: where it lies (the BINBYTES opcode at offset 3), why it is only suspicious,
    # and what it would import, classified as it would be on its own.
    [entry] = result.details["carried"]
    assert entry["location"] == "@3"
    assert entry["reason"] == CARRIED_REASON == "nested pickle carried as data (would run only if unpickled again)"
    assert {(i["module"], i["name"]): i["safety"] for i in entry["imports"]} == {("os", "system"): "dangerous"}
    assert entry["imports"][0]["locations"] == ["@3!bytes@10"]  # offsets count from the start of the file
    [problem] = result.details["problems"]
    assert problem == {"level": "suspicious", "location": "@3", "message": f"{CARRIED_REASON}: it imports os.system"}
    assert result.summary.startswith("suspicious: nested pickle carried as data")
    json.dumps(result.details)


def test_the_same_payload_at_top_level_is_unsafe(scanner: PickleScanner) -> None:
    result = scanner.scan_bytes(OS_SYSTEM)
    assert result.verdict is Verdict.UNSAFE
    assert own_imports(result) == {("os", "system"): "dangerous"}
    assert result.details["carried"] == []


def test_outer_pickle_calling_pickle_loads_on_the_bytes_is_unsafe(scanner: PickleScanner) -> None:
    data = pc.proto(3) + pc.glob("pickle", "loads") + pc.binbytes(OS_SYSTEM) + b"\x85R."
    result = scanner.scan_bytes(data)
    assert result.verdict is Verdict.UNSAFE
    # pickle.loads runs the inner pickle while the file loads: its imports are the file's own.
    assert own_imports(result) == {("pickle", "loads"): "dangerous", ("os", "system"): "dangerous"}
    assert result.details["carried"] == []


@pytest.mark.parametrize("loader", [("_pickle", "loads"), ("dill", "loads"), ("torch.storage", "_load_from_bytes"),
                                    ("mypkg.io", "restore")])
def test_any_callable_that_is_not_a_data_constructor_makes_the_bytes_run_on_load(scanner: PickleScanner,
                                                                                  loader: tuple[str, str]) -> None:
    inner = pc.legacy_torch(OS_SYSTEM) if loader[1] == "_load_from_bytes" else OS_SYSTEM
    result = scanner.scan_bytes(pc.proto(3) + pc.glob(*loader) + pc.binbytes(inner) + b"\x85R.")
    assert result.verdict is Verdict.UNSAFE
    assert own_imports(result)[("os", "system")] == "dangerous"


def test_bytes_handed_to_a_computed_callable_run_on_load(scanner: PickleScanner) -> None:
    # getattr(OrderedDict, "fromkeys")(b"..."): the callable is computed at load time, not imported,
    # so nothing says it leaves the bytes alone.
    data = (pc.proto(3) + pc.glob("builtins", "getattr") + pc.glob("collections", "OrderedDict")
            + pc.uni("fromkeys") + b"\x86R" + pc.binbytes(OS_SYSTEM) + b"\x85R.")
    result = scanner.scan_bytes(data)
    assert result.verdict is Verdict.UNSAFE
    assert own_imports(result)[("os", "system")] == "dangerous"
    assert result.details["carried"] == []


def test_bytes_given_to_a_data_constructor_stay_data(scanner: PickleScanner) -> None:
    # bytearray(b"...") and OrderedDict's state hold bytes without unpickling them.
    data = (pc.proto(3) + pc.glob("collections", "OrderedDict") + b")R" + b"}" + pc.uni("k")
            + pc.glob("builtins", "bytearray") + pc.binbytes(OS_SYSTEM) + b"\x85R" + b"sb.")
    result = scanner.scan_bytes(data)
    assert result.verdict is Verdict.SUSPICIOUS
    assert set(own_imports(result)) == {("collections", "OrderedDict"), ("builtins", "bytearray")}
    assert list(carried(result).values()) == [{("os", "system")}]


def test_carried_bytes_later_fetched_from_the_memo_and_loaded_are_unsafe(scanner: PickleScanner) -> None:
    data = (pc.proto(3) + b"]" + pc.binbytes(OS_SYSTEM) + b"q\x00a0" + pc.glob("pickle", "loads") + b"h\x00\x85R.")
    result = scanner.scan_bytes(data)
    assert result.verdict is Verdict.UNSAFE
    assert ("os", "system") in own_imports(result)
    assert result.details["carried"] == []


def test_carried_pickle_does_not_lower_an_unsafe_file(scanner: PickleScanner) -> None:
    data = (pc.proto(3) + b"]" + pc.binbytes(OS_SYSTEM) + b"a0" + pc.glob("subprocess", "Popen") + pc.uni("x")
            + b"\x85R.")
    result = scanner.scan_bytes(data)
    assert result.verdict is Verdict.UNSAFE
    assert own_imports(result) == {("subprocess", "Popen"): "dangerous"}
    assert list(carried(result).values()) == [{("os", "system")}]


def test_carried_pickle_in_a_torch_checkpoint_names_the_member_and_offset(scanner: PickleScanner) -> None:
    data_pkl = pc.proto(3) + b"}" + pc.uni("blob") + pc.binbytes(OS_SYSTEM) + b"s."
    archive = pc.torch_zip(data_pkl)
    result = scanner.scan_bytes(archive, "model.pt")
    assert result.verdict is Verdict.SUSPICIOUS
    [(location, found)] = carried(result).items()
    assert found == {("os", "system")}
    member, offset = location.split("@")
    assert member == "archive/data.pkl"
    assert archive[int(offset)] == 0x42  # the BINBYTES opcode holding it, at its offset in the file


@pytest.mark.parametrize("container", ["npy-object", "joblib-object-array", "torch-zip"])
def test_pickles_that_containers_unpickle_on_load_stay_unsafe(scanner: PickleScanner, container: str) -> None:
    data = {"npy-object": pc.npy_object(OS_SYSTEM), "joblib-object-array": pc.joblib_object_array(OS_SYSTEM),
            "torch-zip": pc.torch_zip(OS_SYSTEM)}[container]
    result = scanner.scan_bytes(data)
    assert result.verdict is Verdict.UNSAFE
    assert own_imports(result)[("os", "system")] == "dangerous"
    assert result.details["carried"] == []


def test_benign_pickle_carried_as_bytes_is_safe(scanner: PickleScanner) -> None:
    """Decision: a nested pickle that imports only known data constructors is safe, carried or not.
    Unpickling it again would run nothing (the same allowlist decides a top-level pickle), and real
    files carry such pickles: torch's own _load_from_bytes, sklearn and HF objects that keep pickled
    state. Flagging them would flag benign files without naming any risk."""
    data = pc.proto(3) + b"]" + pc.binbytes(pc.benign_pickle()) + b"a."
    result = scanner.scan_bytes(data)
    assert result.verdict is Verdict.SAFE
    assert result.details["carried"] == [] and result.details["problems"] == []
    assert result.details["pickles"] == 2  # the nested pickle was found and walked


def test_unknown_class_in_a_carried_pickle_is_still_suspicious(scanner: PickleScanner) -> None:
    inner = pc.reduce_call("mypkg.models", "Net", protocol=2)
    result = scanner.scan_bytes(pc.proto(3) + b"]" + pc.binbytes(inner) + b"a.")
    assert result.verdict is Verdict.SUSPICIOUS
    assert carried(result) == {"@3": {("mypkg.models", "Net")}}


def test_many_carried_pickles_are_bounded_and_all_counted(scanner: PickleScanner) -> None:
    item = pc.binbytes(OS_SYSTEM) + b"a"
    result = scanner.scan_bytes(pc.proto(3) + b"]" + item * 1500 + b".")
    assert result.verdict is Verdict.SUSPICIOUS
    assert len(result.details["carried"]) == 50  # listed
    assert len(result.details["problems"]) == 21  # one per carried pickle for the first 20, then a count
    assert result.details["problems"][-1]["message"] == "1480 more nested pickles carried as data"


@pytest.mark.parametrize("sample", [s for s in pc.corpus() if s.family == "nested"], ids=lambda s: s.name)
def test_nested_corpus_names_the_carried_payload(scanner: PickleScanner, sample) -> None:
    result = scanner.scan_bytes(sample.data, sample.name)
    assert result.verdict.value == sample.verdict
    found = set().union(*carried(result).values()) | {k for k, v in own_imports(result).items() if v != "innocuous"}
    assert ("os", "system") in found

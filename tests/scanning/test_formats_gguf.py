"""The GGUF format scanner: header and metadata read with bounds, chat templates checked for injection."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from bastion.scanning.results import Verdict
from bastion.scanning.scanners import jinja_templates, model_formats
from tests.scanning.format_samples import (
    BENIGN_TEMPLATE,
    LLAMA_STYLE_TEMPLATE,
    QWEN_STYLE_TEMPLATE,
    gguf_bytes,
    gguf_file,
    gguf_string,
)

STRING, ARRAY, UINT32 = 8, 9, 4


def _messages(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [f["message"] for f in result.details["findings"]]


@pytest.mark.parametrize("template", [BENIGN_TEMPLATE, LLAMA_STYLE_TEMPLATE, QWEN_STYLE_TEMPLATE])
def test_a_model_with_a_real_world_chat_template_is_safe(tmp_path: Path, template: str) -> None:
    result = model_formats.scan_path(gguf_file(tmp_path / "tiny.gguf", template))
    assert result.verdict is Verdict.SAFE, result.details
    assert result.details["format"] == "gguf" and result.details["version"] == 3
    assert result.details["tensors"] == 2 and result.details["chatTemplates"] == ["tokenizer.chat_template"]


def test_a_big_endian_file_is_read(tmp_path: Path) -> None:
    result = model_formats.scan_path(gguf_file(tmp_path / "be.gguf", big_endian=True))
    assert result.verdict is Verdict.SAFE, result.details
    assert result.details["byteOrder"] == "big"


# Each is a known way out of a Jinja renderer (or a piece of one); none is rendered here.
INJECTIONS = [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "'__class__'"),
    ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", "'__globals__'"),
    ("{{ joiner.__init__.__globals__ }}", "'__init__' of 'joiner'"),
    ("{{ namespace.__init__.__globals__['os'] }}", "'__init__' of 'namespace'"),
    ("{{ lipsum.__globals__['os'].popen('id') }}", "'__globals__' of 'lipsum'"),
    ("{{ self._TemplateReference__context }}", "'_TemplateReference__context'"),
    ("{{ request.application.__globals__ }}", "'__globals__'"),
    ("{{ config.items() }}", "'items' of 'config'"),
    ("{{ messages|attr('__class__') }}", "|attr() to '__class__'"),
    ("{{ messages|attr(name) }}", "|attr() with a name computed"),
    ("{{ ''['__cla' ~ 'ss__'] }}", "subscript to '__class__'"),
    ("{% set a = '__gl' + 'obals__' %}{{ range[a] }}", "subscript to '__globals__'"),
    ("{{ x[('_' * 2) ~ 'class' ~ ('_' * 2)] }}", "subscript to '__class__'"),
    ("{{ x[['__cl', 'ass__']|join] }}", "subscript to '__class__'"),
    ("{{ x['%sclass%s'|format('__', '__')] }}", "subscript to '__class__'"),
    ("{% import 'macros.j2' as m %}{{ m.x() }}", "{% import %}"),
    ("{% from 'macros.j2' import x %}{{ x() }}", "{% import %}"),
    ("{{ x.__subclasses__() }}", "'__subclasses__'"),
    ("{{ f.func_globals }}", "'func_globals'"),
    ("{{ os.system('id') }}", "calls .system()"),
]


@pytest.mark.parametrize(("template", "expected"), INJECTIONS)
def test_template_injection_in_a_chat_template_is_unsafe(tmp_path: Path, template: str, expected: str) -> None:
    result = model_formats.scan_path(gguf_file(tmp_path / "evil.gguf", template))
    assert result.verdict is Verdict.UNSAFE, result.details
    assert any(expected in m for m in _messages(result)), _messages(result)
    assert all(f["location"] == "tokenizer.chat_template" for f in result.details["findings"])


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ x[a ~ b] }}", "key built from string operations"),
    ("{% include 'other.j2' %}", "{% include %}"),
    ("{{ '__' }}", "piece of a dunder name"),
    ("{{ lipsum }}", "names the global 'lipsum'"),
    ("{% for m in messages %}{{ m['content'] }", "not a valid Jinja template"),
])
def test_pieces_of_injections_and_broken_templates_are_suspicious(tmp_path: Path, template: str,
                                                                   expected: str) -> None:
    result = model_formats.scan_path(gguf_file(tmp_path / "odd.gguf", template))
    assert result.verdict is Verdict.SUSPICIOUS, result.details
    assert any(expected in m for m in _messages(result)), _messages(result)


def test_named_chat_templates_are_checked_too(tmp_path: Path) -> None:
    path = gguf_file(tmp_path / "m.gguf", BENIGN_TEMPLATE, named={"tool_use": "{{ x.__class__ }}"})
    result = model_formats.scan_path(path)
    assert result.verdict is Verdict.UNSAFE
    assert result.details["findings"][0]["location"] == "tokenizer.chat_template.tool_use"
    assert sorted(result.details["chatTemplates"]) == ["tokenizer.chat_template", "tokenizer.chat_template.tool_use"]


def test_benign_template_constructs_raise_nothing() -> None:
    # Attribute access on ordinary variables, namespace() calls, loop variables, dict methods.
    template = ("{% set ns = namespace(found=false) %}{% for m in messages %}{% if m.role == 'tool' %}"
                "{% set ns.found = true %}{% endif %}{{ m.content|tojson }}{{ loop.index0 }}"
                "{% for k, v in m.items() %}{{ k }}{% endfor %}{% endfor %}{{ bos_token }}"
                "{{ tools|map(attribute='name')|join(', ') }}{% break %}")
    assert jinja_templates.check_template(template) == []


def test_names_the_template_binds_itself_are_its_own_variables() -> None:
    template = ("{% set config = {'sep': ', '} %}{{ config.sep }}"
                "{% for g in groups %}{{ g.name }}{% endfor %}{% macro m(self) %}{{ self.x }}{% endmacro %}")
    assert jinja_templates.check_template(template) == []
    # ... while the host's globals of those names are probes.
    assert jinja_templates.check_template("{{ g.x }}")[0].unsafe


def _hand_built(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "h.gguf"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("data", "expected"), [
    (b"GGML" + bytes(40), "no GGUF magic"),
    (gguf_bytes([], version=1), "unsupported GGUF version 1"),
    (gguf_bytes([], version=7), "unsupported GGUF version 7"),
    (gguf_bytes([], n_tensors=1 << 60), "tensor count 1152921504606846976 cannot fit"),
    (gguf_bytes([("a", UINT32, struct.pack("<I", 1))], n_kv=1 << 40), "metadata count"),
    (gguf_bytes([("general.name", STRING, struct.pack("<Q", 1 << 50) + b"x")]), "runs past the end"),
    (gguf_bytes([("a", 42, b"\x00" * 16)]), "unknown metadata value type 42"),
    (gguf_bytes([("a", UINT32, struct.pack("<I", 1)), ("a", UINT32, struct.pack("<I", 2))]), "duplicate metadata key"),
    (gguf_bytes([("a", ARRAY, struct.pack("<IQ", UINT32, 1 << 40))]), "array count"),
    (gguf_bytes([("general.alignment", UINT32, struct.pack("<I", 12))]), "general.alignment 12"),
    (gguf_bytes([], n_tensors=1, tensors=gguf_string(b"t") + struct.pack("<I", 99) + bytes(40)),
     "99 dimensions"),
    (gguf_bytes([("tokenizer.chat_template", STRING, gguf_string(b"\xff\xfe{{ x }}"))]), "not UTF-8"),
    (gguf_bytes([("a", UINT32, b"\x01")]), "truncated"),
])
def test_malformed_headers_are_suspicious_with_the_reason(tmp_path: Path, data: bytes, expected: str) -> None:
    result = model_formats.scan_path(_hand_built(tmp_path, data + bytes(max(0, 24 - len(data)))))
    assert result.verdict is Verdict.SUSPICIOUS, result.details
    assert any(expected in m for m in _messages(result)), _messages(result)


def test_tensor_data_past_the_end_is_suspicious(tmp_path: Path) -> None:
    from gguf import GGUFReader

    path = gguf_file(tmp_path / "cut.gguf")
    last = max(GGUFReader(path).tensors, key=lambda t: t.data_offset)
    data = path.read_bytes()
    path.write_bytes(data[: int(last.data_offset) + 4])  # the last tensor's bytes are cut short
    result = model_formats.scan_path(path)
    assert result.verdict is Verdict.SUSPICIOUS, result.details
    assert "runs past the end of the file" in _messages(result)[0]


def _tensor(name: bytes, elements: int, kind: int = 0, offset: int = 0) -> bytes:
    return gguf_string(name) + struct.pack("<IQIQ", 1, elements, kind, offset)


def _with_data(header: bytes, data: bytes) -> bytes:
    return header + bytes(-len(header) % 32) + data


@pytest.mark.parametrize(("tensors", "data", "expected"), [
    ([_tensor(b"a", 4), _tensor(b"b", 4, offset=0)], bytes(16), "data overlaps tensor 'a'"),
    ([_tensor(b"a", 4, kind=99)], bytes(16), "unknown type 99"),
    ([_tensor(b"a", 4)], bytes(8), "runs past the end of the file"),
    ([_tensor(b"a", 4, offset=8)], bytes(32), "not aligned to 32"),
    ([_tensor(b"a", 33, kind=2)], bytes(64), "not whole blocks of 32"),  # Q4_0
])
def test_tensor_data_problems_are_suspicious(tmp_path: Path, tensors: list[bytes], data: bytes,
                                             expected: str) -> None:
    raw = _with_data(gguf_bytes([], n_tensors=len(tensors), tensors=b"".join(tensors)), data)
    result = model_formats.scan_path(_hand_built(tmp_path, raw))
    assert result.verdict is Verdict.SUSPICIOUS, result.details
    assert any(expected in m for m in _messages(result)), _messages(result)


def test_a_template_is_judged_even_when_tensor_data_is_broken(tmp_path: Path) -> None:
    kv = [("tokenizer.chat_template", STRING, gguf_string(b"{{ x.__class__ }}"))]
    raw = _with_data(gguf_bytes(kv, n_tensors=1, tensors=_tensor(b"a", 4)), bytes(4))
    result = model_formats.scan_path(_hand_built(tmp_path, raw))
    assert result.verdict is Verdict.UNSAFE, result.details


def test_hand_built_tensors_in_place_are_valid(tmp_path: Path) -> None:
    raw = _with_data(gguf_bytes([], n_tensors=2, tensors=_tensor(b"a", 4) + _tensor(b"b", 4, offset=32)), bytes(48))
    result = model_formats.scan_path(_hand_built(tmp_path, raw))
    assert result.verdict is Verdict.SAFE, result.details


def test_a_hand_built_header_without_tensors_is_valid(tmp_path: Path) -> None:
    data = gguf_bytes([("general.name", STRING, gguf_string(b"x")),
                       ("tokenizer.chat_template", STRING, gguf_string(b"{{ messages[0]['content'] }}"))])
    result = model_formats.scan_path(_hand_built(tmp_path, data))
    assert result.verdict is Verdict.SAFE, result.details

"""Context tests: notebooks, diffs, binary and LFS content, redaction, results, the corpus."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from bastion.scanning.results import Verdict
from bastion.scanning.scanners.secrets import SCANNER_VERSION, SecretScanner, to_scan_result

_spec = importlib.util.spec_from_file_location(
    "make_corpus", Path(__file__).parent / "secrets_corpus" / "make_corpus.py"
)
assert _spec and _spec.loader
mc = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("make_corpus", mc)
_spec.loader.exec_module(mc)

SCANNER = SecretScanner()
F = mc.Fakes(seed=99)


def _notebook(cells: list[dict[str, object]]) -> str:
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, indent=1) + "\n"


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.split("\n"), 1) if needle in line)


def test_notebook_cell_source_reports_the_ipynb_line() -> None:
    token = F.hf()
    nb = _notebook([
        {"cell_type": "markdown", "metadata": {}, "source": ["# Title\n", "text\n"]},
        {"cell_type": "code", "execution_count": 1, "metadata": {}, "outputs": [],
         "source": ["import os\n", "x = 1\n", f'api = HfApi(token="{token}")\n', "y = 2"]},
    ])
    (finding,) = SCANNER.scan_bytes(nb.encode(), "nb/explore.ipynb")
    assert finding.file == "nb/explore.ipynb"
    assert finding.line == _line_of(nb, token) and finding.line > 10
    assert finding.provider == "huggingface"


def test_notebook_outputs_are_scanned_and_images_are_not() -> None:
    key, groq = F.hexs(32), F.groq()
    nb = _notebook([
        {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": ["!env"],
         "outputs": [
             {"name": "stdout", "output_type": "stream", "text": ["PATH=/usr/bin\n", f"KAGGLE_KEY={key}\n"]},
             {"output_type": "execute_result", "execution_count": 1, "metadata": {},
              "data": {"text/plain": [f"'{groq}'"]}},
             # a base64 PNG is no text: a token-shaped run inside it must not be reported
             {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBOR" + F.github("ghp") + "AAAA"}},
         ]},
    ])
    findings = SCANNER.scan_text(nb, "n.ipynb")
    assert [(f.provider, f.line) for f in findings] == [
        ("kaggle", _line_of(nb, key)),
        ("groq", _line_of(nb, groq)),
    ]


def test_notebook_single_string_sources_and_minified_json() -> None:
    token = F.npm()
    nb = json.dumps({"cells": [{"cell_type": "code", "metadata": {}, "outputs": [],
                                "source": f"a = 1\nNPM_TOKEN = '{token}'\n"}], "nbformat": 4})
    (finding,) = SCANNER.scan_text(nb, "min.ipynb")
    assert finding.line == 1 and finding.provider == "npm"


def test_invalid_notebook_falls_back_to_text() -> None:
    token = F.groq()
    (finding,) = SCANNER.scan_text('{"cells": [ broken\nGROQ = "' + token + '"\n', "broken.ipynb")
    assert finding.line == 2


def test_diff_only_added_lines_with_new_file_line_numbers() -> None:
    removed, context, added = F.hf(), F.github("ghp"), F.groq()
    diff = "\n".join([
        "diff --git a/app.py b/app.py", "index 1111111..2222222 100644", "--- a/app.py", "+++ b/app.py",
        "@@ -20,4 +20,5 @@ def main():",
        f' CONTEXT = "{context}"',
        f'-OLD = "{removed}"',
        "+NEW = os.environ['HF_TOKEN']",
        f'+GROQ = "{added}"',
        "     return 0",
        "diff --git a/new.env b/new.env", "new file mode 100644", "--- /dev/null", "+++ b/new.env",
        "@@ -0,0 +1,2 @@", "+DEBUG=1", f"+NPM_TOKEN={F.npm()}", "",
    ])
    findings = SCANNER.scan_diff(diff)
    assert [(f.file, f.line, f.provider) for f in findings] == [("app.py", 22, "groq"), ("new.env", 2, "npm")]


def test_diff_pair_across_context_and_added_line() -> None:
    # The key id was already in the file; the commit adds the secret next to it: still a leak.
    key_id, secret = F.aws_id(), F.aws_secret()
    diff = "\n".join([
        "--- a/c.ini", "+++ b/c.ini", "@@ -1,2 +1,3 @@", " [default]", f" aws_access_key_id = {key_id}",
        f"+aws_secret_access_key = {secret}", "",
    ])
    (finding,) = SCANNER.scan_diff(diff)
    assert (finding.file, finding.provider) == ("c.ini", "aws") and finding.end_line == 3


def test_diff_of_a_notebook_decodes_json_string_lines() -> None:
    token = F.hf()
    diff = "\n".join([
        "--- a/n.ipynb", "+++ b/n.ipynb", "@@ -5,2 +5,3 @@", '    "source": [',
        f'+     "api = HfApi(token=\\"{token}\\")\\n",', '      "x = 1"', "",
    ])
    (finding,) = SCANNER.scan_diff(diff)
    assert (finding.file, finding.line, finding.provider) == ("n.ipynb", 6, "huggingface")


def test_binary_content_is_read_through_its_printable_strings() -> None:
    token = F.github("ghp").encode()
    # A token glued to other printable characters is no token (the detector's own boundary rule).
    assert SCANNER.scan_bytes(b"\x00\x01PK" + token + b"\x00" * 20, "model.bin") == []
    report = SCANNER.scan_blob(b"\x00" + token, "w.bin")
    assert report.binary and report.skipped is None
    ((finding,),) = [report.findings]
    assert (finding.provider, finding.verified, finding.line, finding.column) == ("github", True, 1, 2)
    assert "at byte 1" in finding.note
    invalid = bytes(range(128, 256)) * 20 + b"\n\n" + token
    (finding,) = SCANNER.scan_blob(invalid, "w.dat").findings
    assert (finding.line, finding.column) == (3, 1)
    # Only self-identifying formats count in binary content: no assignment rule on random strings.
    assert SCANNER.scan_bytes(b"\x00password = 'hunter2-hunter2'\x00", "w.bin") == []
    pointer = (
        b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\nsize 123456\n"
    )
    report = SCANNER.scan_blob(pointer + b"GITHUB_TOKEN=" + token + b"\n", "model.safetensors")
    assert [f.provider for f in report.findings] == ["github"] and not report.binary  # pointer text is text
    # A little mojibake does not make a text file binary.
    text = b"caf\xe9 menu\n" + b"GITHUB_TOKEN=" + token + b"\n" + b"plain text line\n" * 100
    assert [f.provider for f in SCANNER.scan_bytes(text, "notes.txt")] == ["github"]


def test_real_shaped_key_in_client_constructor_is_a_finding() -> None:
    key = F.openai()
    (finding,) = SCANNER.scan_text(f'client = OpenAI(api_key="{key}")', "app.py")
    assert (finding.provider, finding.line, finding.column) == ("openai", 1, 26)


def test_raw_secret_never_leaks_into_displayable_fields() -> None:
    token = F.github("ghp")
    (finding,) = SCANNER.scan_text(f"GITHUB_TOKEN={token}", ".env")
    assert finding.raw_secret == token
    for shown in (repr(finding), str(finding), finding.preview, json.dumps(finding.to_details())):
        assert token not in shown
        assert token[4:20] not in shown
    assert finding.to_dict() == {
        "file": ".env", "line": 1, "provider": "github", "verified": True, "verification": "checksum",
    }
    result = to_scan_result([finding])
    assert token not in json.dumps(result.details) and token not in result.summary


def test_to_scan_result_verdicts() -> None:
    assert to_scan_result([]).verdict == Verdict.SAFE
    # Content not read is never safe; content read only in part, with nothing found, is CAUTION.
    skipped = to_scan_result([], skipped="unreadable")
    assert skipped.verdict == Verdict.UNSCANNED and skipped.details["skipped"] == "unreadable"
    assert to_scan_result([], partial="text file over 1 bytes").verdict == Verdict.CAUTION
    assert to_scan_result([], binary=True).details == {"findings": [], "content": "binary"}
    checksum = SCANNER.scan_text(f"x={F.npm()}", "a")
    format_only = SCANNER.scan_text(f"x={F.groq()}", "a")
    result = to_scan_result(checksum + format_only)
    assert result.verdict == Verdict.UNSAFE
    assert result.scanner == "secrets" and result.scanner_version == SCANNER_VERSION
    assert result.details["findings"] == [f.to_dict() for f in checksum + format_only]
    assert to_scan_result(format_only).verdict == Verdict.SUSPICIOUS


def test_huge_minified_line_stays_fast_and_correct() -> None:
    import time

    token = F.groq()
    blob = ('{"k": "' + "abc def " * 200_000 + f'", "token": "{token}"' + "}") * 3
    start = time.perf_counter()
    findings = SCANNER.scan_text(blob, "big.json")
    assert [f.provider for f in findings] == ["groq"] * 3
    assert time.perf_counter() - start < 5


def test_labelled_corpus_recall_and_precision(tmp_path: Path) -> None:
    corpus = mc.write(tmp_path)
    reported = []
    for rel in corpus.files:
        data = (tmp_path / rel).read_bytes()
        findings = SCANNER.scan_diff(data.decode()) if rel.endswith(".diff") else SCANNER.scan_bytes(data, rel)
        reported += [(f.file, f.line) for f in findings]
    score = mc.score(mc.load_labels(tmp_path), reported, diff_targets=True)
    assert len(corpus.labels) >= 80
    assert score.recall >= 0.97, score.missed
    assert score.precision >= 0.95, score.spurious


def test_streamed_strings_find_a_token_cut_by_a_block_boundary() -> None:
    import io

    from bastion.scanning.scanners.secrets.scanner import STREAM_BLOCK

    token = F.github("ghp").encode()
    data = bytearray(b"\x00" * (STREAM_BLOCK + 4096))
    data[100:102] = b"\n\n"
    at = STREAM_BLOCK - 10  # the token starts 10 bytes before the first block ends
    data[at - 1 : at + len(token) + 1] = b"\n" + token + b"\x00"
    findings = SCANNER.scan_stream(io.BytesIO(bytes(data)), "big.bin")
    assert [(f.provider, f.line, f.column, f.verified) for f in findings] == [("github", 4, 1, True)]
    assert f"at byte {at}" in findings[0].note
    # The same content read whole gives the same finding.
    assert [(f.line, f.column) for f in SCANNER.scan_strings(bytes(data), "big.bin")] == [(4, 1)]

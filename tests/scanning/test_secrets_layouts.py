"""AWS keys and passwords in the layouts real repos hold them in (issue 22): every labelled one is found
(AWS id + secret pairs as one high-confidence finding), and their benign look-alikes are not."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from bastion.scanning.scanners.secrets import DEFAULT_DETECTORS, SecretFinding, SecretScanner
from bastion.scanning.scanners.secrets.detectors import HIGH_CONFIDENCE

_spec = importlib.util.spec_from_file_location(
    "make_corpus", Path(__file__).parent / "secrets_corpus" / "make_corpus.py"
)
assert _spec and _spec.loader
mc = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("make_corpus", mc)
_spec.loader.exec_module(mc)

SCANNER = SecretScanner()
SEED = 22


def _layouts() -> mc.Corpus:
    corpus = mc.Corpus()
    mc.add_aws_and_password_layouts(corpus, mc.Fakes(seed=SEED))
    return corpus


LAYOUTS = _layouts()
FINDINGS: dict[str, list[SecretFinding]] = {path: SCANNER.scan_text(text, path) for path, text in LAYOUTS.files.items()}


def _in_label(label: mc.Label) -> list[SecretFinding]:
    return [f for f in FINDINGS[label.file] if label.line <= f.line <= label.end_line]


@pytest.mark.parametrize("label", LAYOUTS.labels, ids=[f"{lb.file}:{lb.line}" for lb in LAYOUTS.labels])
def test_every_layout_is_found(label: mc.Label) -> None:
    found = _in_label(label)
    assert found, f"nothing found in {label.file} lines {label.line}-{label.end_line}"
    assert {f.provider for f in found} == {label.provider}
    if label.kind == "aws_pair":
        pairs = [f for f in found if f.detector == "aws.access_key" and ":" in f.raw_secret]
        assert pairs and all(f.confidence == "high" for f in pairs), [(f.detector, f.preview) for f in found]
        key_id, secret = pairs[0].raw_secret.split(":", 1)
        assert len(key_id) == 20 and len(secret) == 40 and secret in LAYOUTS.files[label.file].replace(
            "%2F", "/").replace("%2B", "+")
    else:
        assert all(f.confidence == "low" for f in found), [(f.detector, f.confidence) for f in found]


def test_nothing_is_found_outside_the_labels() -> None:
    reported = [(f.file, f.line) for findings in FINDINGS.values() for f in findings]
    score = mc.score(LAYOUTS.labels, reported)
    assert score.spurious == [] and score.missed == []
    # The benign files hold no finding at all.
    for path in ("docs/aws-setup.md", "config/example.env", "docker-compose.yml", "app/auth.py"):
        assert FINDINGS[path] == [], (path, [(f.detector, f.line) for f in FINDINGS[path]])


def test_each_id_pairs_with_its_own_profile() -> None:
    """Three profiles in one credentials file: each id with the secret after it, the third one 7 lines on."""
    text = LAYOUTS.files["aws/credentials"]
    lines = text.split("\n")
    ids = [ln.split("=")[1].strip() for ln in lines if ln.startswith("aws_access_key_id")]
    secrets = [ln.split("=")[1].strip() for ln in lines if ln.startswith("aws_secret_access_key")]
    pairs = [f.raw_secret for f in FINDINGS["aws/credentials"] if f.detector == "aws.access_key"]
    assert pairs == [f"{i}:{s}" for i, s in zip(ids, secrets, strict=True)]


def test_notebook_cells_with_escaped_newlines() -> None:
    nb = json.loads(LAYOUTS.files["aws/s3.ipynb"])
    assert isinstance(nb["cells"][0]["source"], str) and "\n" in nb["cells"][0]["source"]
    pairs = [f for f in FINDINGS["aws/s3.ipynb"] if f.detector == "aws.access_key"]
    assert len(pairs) == 2 and all(f.confidence == "high" for f in pairs)
    # The same cell as raw JSON text (a push protection diff of a changed notebook is not valid JSON).
    raw = SCANNER.scan_text(LAYOUTS.files["aws/s3.ipynb"], "cells.txt")
    assert sum(f.detector == "aws.access_key" and f.confidence == "high" for f in raw) == 2


F = mc.Fakes(seed=SEED + 1)
AWS_ID, AWS_SECRET = F.aws_id(), F.aws_secret()
PASSWORD = F.password()

# (text, detector, confidence) of the one finding each line must give.
ONE_FINDING = [
    (f"AWS_ACCESS_KEY_ID={AWS_ID}\nAWS_SECRET_ACCESS_KEY={AWS_SECRET}", "aws.access_key", "high"),
    (f"secret = '{AWS_SECRET}'\nkey_id = '{AWS_ID}'", "aws.access_key", "high"),
    (f"s3://{AWS_ID}:{AWS_SECRET}@bucket/x", "aws.access_key", "high"),
    (f"key: {AWS_ID}", "aws.access_key", "low"),  # an id alone names the account: a finding, not a pair
    (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", "aws.secret_key", "low"),
    (f"aws:\n  secretAccessKey: {AWS_SECRET}", "aws.secret_key", "low"),
    (f"DATABASE_URL=postgres://app:{PASSWORD}@db:5432/app", "database.url", "low"),
    (f"REDIS_URL=redis://:{PASSWORD}@cache:6379/0", "database.url", "low"),
    (f"jdbc:mysql://db:3306/app?user=root&password={PASSWORD}&useSSL=false", "generic.credential", "low"),
    (f"DB_PASSWORD={PASSWORD}", "generic.credential", "low"),
    (f"GITHUB_TOKEN={F.github('ghp')}", "github.token", "high"),  # checksum
    (f"GROQ_API_KEY={F.groq()}", "groq.api_key", "high"),  # distinctive format, no checksum
    (f"HF_TOKEN={F.hf()}", "huggingface.user_token", "high"),
    (f'client = Mistral(api_key="{F.alnum(32)}")', "mistral.api_key", "low"),  # only the name says Mistral
]


@pytest.mark.parametrize(("text", "detector", "confidence"), ONE_FINDING, ids=[c[1] + str(i) for i, c in
                                                                                enumerate(ONE_FINDING)])
def test_confidence_of_each_kind(text: str, detector: str, confidence: str) -> None:
    assert [(f.detector, f.confidence) for f in SCANNER.scan_text(text, "f.txt")] == [(detector, confidence)]


def test_a_pair_keeps_its_line_range_and_redacts() -> None:
    (finding,) = SCANNER.scan_text(f"a = 1\nAWS_ACCESS_KEY_ID={AWS_ID}\nAWS_SECRET_ACCESS_KEY={AWS_SECRET}\n", "x.env")
    assert (finding.line, finding.end_line) == (2, 3)
    assert AWS_SECRET not in finding.preview and AWS_SECRET not in json.dumps(finding.to_details())
    assert finding.to_details()["confidence"] == "high"


BENIGN = [
    # AWS's documented example pair: published in its docs and countless tutorials, never valid. Not
    # reported at all (an id that spells EXAMPLE cannot be a real, random one), so docs stay quiet.
    "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\nAWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "aws_access_key_id = AKIAI44QH8DHBEXAMPLE\naws_secret_access_key = je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
    "aws_secret_access_key = ${AWS_SECRET_ACCESS_KEY}",
    "aws_secret_access_key = <your-secret-access-key>",
    "AWS_SECRET_ACCESS_KEY=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "AWS_SECRET_ACCESS_KEY=****************************************",
    "secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,",
    "aws_secret_access_key=os.environ['AWS_SECRET_ACCESS_KEY']",
    "aws_secret_access_key: '{{ aws_secret }}'",
    "secret_access_key = YOUR_SECRET_ACCESS_KEY_HERE_PLEASE_CHANGE",
    "DATABASE_URL=postgres://user:password@localhost:5432/app",
    "postgres://USER:PASSWORD@HOST:5432/DB",
    "postgres://app:${DB_PASSWORD}@db/app",
    "mysql://root:@localhost/db",
    "mysql://root:root@localhost/db",
    "mongodb+srv://<user>:<password>@cluster0.mongodb.net/",
    "redis://:${REDIS_PASSWORD}@cache:6379/0",
    "redis://:changeme@cache:6379",
    "amqp://guest:guest@localhost:5672//",
    "jdbc:postgresql://db:5432/app?user=app&password=${DB_PASS}",
    "password: ${DB_PASSWORD}",
    "password: <password>",
    "password: changeme",
    "passwd=xxxxxxxx",
    "DB_PASSWORD=********",
    "DB_PASSWORD=",
    "password = None",
    "password: ''",
    "password = getpass.getpass()",
    "password_hash = '$2b$12$KIXQJQ4u7eG8qC1Fz2m5LuXyZb7VqS3tY6wD0rA9hE1nM4oP2jK8i'",
    "PASSWORD_MIN_LENGTH = 12",
    "password: {{ vault_db_password }}",
    "DB_PASSWORD=your_password_here",
    "DB_PASSWORD=$(cat /run/secrets/db)",
    "spring.datasource.password=${SPRING_DATASOURCE_PASSWORD}",
]


@pytest.mark.parametrize("text", BENIGN)
def test_benign_look_alikes_are_not_findings(text: str) -> None:
    assert SCANNER.scan_text(text, "f.txt") == []


def test_high_confidence_names_real_detectors() -> None:
    ids = {d.id for d in DEFAULT_DETECTORS}
    assert ids >= HIGH_CONFIDENCE
    assert {d.id for d in DEFAULT_DETECTORS if d.high_confidence} == HIGH_CONFIDENCE
    # The rules that also fit other text are never high-confidence by themselves.
    assert not HIGH_CONFIDENCE & {"generic.credential", "database.url", "jwt", "aws.secret_key", "mistral.api_key"}

"""Builds the labelled secret-scanning corpus: realistic ML-repo files with planted fake secrets.

Every planted secret is generated here, from a seeded RNG, in its provider's exact format with a
valid checksum where the format has one; none is a real credential. Nothing generated is committed:
tests and the benchmark write the corpus into a temporary or gitignored directory, because
checksum-valid look-alikes would (rightly) trip other hosts' push protection.

    python tests/scanning/secrets_corpus/make_corpus.py OUT_DIR

Over 500 lines on purpose: one labelled corpus, a builder per kind of file; its length is its list.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
import sys
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
URLSAFE = ALNUM + "_-"


def _b62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(B62[r])
    return "".join(reversed(out))


class Fakes:
    """Format-valid fake credentials, one method per provider format."""

    def __init__(self, seed: int = 8) -> None:
        self.r = random.Random(seed)

    def chars(self, alphabet: str, n: int) -> str:
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def crc_token(self, prefix: str) -> str:
        body = self.chars(ALNUM, 30)
        return prefix + body + _b62(zlib.crc32(body.encode()), 6)

    # -- providers --
    def hf(self) -> str:
        return "hf_" + self.chars(string.ascii_letters, 34)

    def hf_org(self) -> str:
        return "api_org_" + self.chars(string.ascii_letters, 34)

    def bastion(self) -> str:
        from bastion.tokens.format import checksum

        head = "bst_" + self.chars(B62, 30)
        return head + checksum(head)

    def aws_id(self) -> str:
        return self.r.choice(["AKIA", "ASIA"]) + self.chars("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)

    def aws_secret(self) -> str:
        while True:
            s = self.chars(ALNUM + "+/", 40)
            if any(c.isupper() for c in s) and any(c.islower() for c in s):
                return s

    def github(self, kind: str = "ghp") -> str:
        return self.crc_token(kind + "_")

    def github_pat(self) -> str:
        return "github_pat_" + self.chars(ALNUM, 22) + "_" + self.chars(ALNUM, 59)

    def gitlab(self) -> str:
        return "glpat-" + self.chars(URLSAFE, 20)

    def slack_bot(self) -> str:
        return f"xoxb-{self.chars(string.digits, 12)}-{self.chars(string.digits, 13)}-{self.chars(ALNUM, 24)}"

    def slack_user(self) -> str:
        d = string.digits
        return f"xoxp-{self.chars(d, 12)}-{self.chars(d, 12)}-{self.chars(d, 13)}-{self.chars(HEX, 32)}"

    def slack_webhook(self) -> str:
        up = string.ascii_uppercase + string.digits
        return f"https://hooks.slack.com/services/T{self.chars(up, 8)}/B{self.chars(up, 10)}/{self.chars(ALNUM, 24)}"

    def stripe(self) -> str:
        return self.r.choice(["sk_live_", "rk_live_"]) + self.chars(ALNUM, 99)

    def openai(self) -> str:
        return "sk-proj-" + self.chars(URLSAFE, 74) + "T3BlbkFJ" + self.chars(URLSAFE, 74)

    def openai_legacy(self) -> str:
        return "sk-" + self.chars(ALNUM, 20) + "T3BlbkFJ" + self.chars(ALNUM, 20)

    def anthropic(self) -> str:
        return "sk-ant-api03-" + self.chars(URLSAFE, 93) + "AA"

    def google(self) -> str:
        return "AIza" + self.chars(URLSAFE, 35)

    def azure_key(self) -> str:
        return base64.b64encode(self.r.randbytes(64)).decode()

    def twilio(self) -> tuple[str, str]:
        return "AC" + self.chars(HEX, 32), self.chars(HEX, 32)

    def sendgrid(self) -> str:
        return f"SG.{self.chars(URLSAFE, 22)}.{self.chars(URLSAFE, 43)}"

    def npm(self) -> str:
        return self.crc_token("npm_")

    def pypi(self) -> str:
        def field_(tag: int, value: bytes) -> bytes:
            assert len(value) < 128
            return bytes([tag, len(value)]) + value

        ident = uuid.UUID(int=self.r.getrandbits(128)).hex.encode()
        caveat = json.dumps({"version": 1, "permissions": "user"}).encode()
        raw = (
            b"\x02" + field_(1, b"pypi.org") + field_(2, ident) + b"\x00"
            + field_(2, caveat) + b"\x00" + b"\x00" + bytes([6, 32]) + self.r.randbytes(32)
        )
        return "pypi-" + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def wandb(self) -> str:
        return self.chars(HEX, 40)

    def wandb_v1(self) -> str:
        return f"wandb_v1_{self.chars(ALNUM, 27)}_{self.chars(ALNUM, 49)}"

    def alnum(self, n: int) -> str:
        while True:
            s = self.chars(ALNUM, n)
            if any(c.isdigit() for c in s) and any(c.isupper() for c in s):
                return s

    def hexs(self, n: int) -> str:
        return self.chars(HEX, n)

    def replicate(self) -> str:
        return "r8_" + self.alnum(37)

    def databricks(self) -> str:
        return "dapi" + self.chars(HEX, 32)

    def groq(self) -> str:
        return "gsk_" + self.alnum(52)

    def digitalocean(self) -> str:
        return "dop_v1_" + self.chars(HEX, 64)

    def jwt(self) -> str:
        def b64(obj: object) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

        payload = {"sub": f"svc-{self.r.randint(1000, 9999)}", "iat": 1718000000, "exp": 1918000000}
        sig = base64.urlsafe_b64encode(self.r.randbytes(32)).decode().rstrip("=")
        return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(payload)}.{sig}"

    def password(self, n: int = 16) -> str:
        return self.alnum(n - 2) + self.r.choice("!*~") + self.r.choice(string.digits)

    def pinecone(self) -> str:
        return f"pcsk_{self.alnum(6)}_{self.alnum(63)}"

    def langsmith(self) -> str:
        return f"lsv2_pt_{self.chars(HEX, 32)}_{self.chars(HEX, 10)}"

    def together(self) -> str:
        return "tgp_v1_" + self.alnum(43)

    def fireworks(self) -> str:
        return "fw_" + self.alnum(24)

    def perplexity(self) -> str:
        return "pplx-" + self.alnum(48)

    def xai(self) -> str:
        return "xai-" + self.alnum(80)

    def elevenlabs(self) -> str:
        return "sk_" + self.chars(HEX, 48)

    def heroku(self) -> str:
        return "HRKU-AA" + self.alnum(58)

    def shopify(self) -> str:
        return "shpat_" + self.chars(HEX, 32)

    def mailchimp(self) -> str:
        return self.chars(HEX, 32) + "-us" + str(self.r.randint(1, 21))

    def telegram(self) -> str:
        return f"{self.r.randint(10**8, 10**10 - 1)}:AA{self.alnum(33)}"

    def discord_bot(self) -> str:
        uid = str(self.r.randint(10**17, 10**18 - 1)).encode()
        first = base64.urlsafe_b64encode(uid).decode().rstrip("=")
        return f"{first}.{self.alnum(6)}.{self.alnum(38)}"

    def discord_webhook(self) -> str:
        return f"https://discord.com/api/webhooks/{self.r.randint(10**17, 10**18)}/{self.chars(URLSAFE, 68)}"

    def atlassian(self) -> str:
        return "ATATT3xFfGF0" + self.alnum(171) + "=" + self.chars(HEX.upper(), 8)

    def linear(self) -> str:
        return "lin_api_" + self.alnum(40)

    def notion(self) -> str:
        return "ntn_" + self.chars(string.digits, 11) + self.alnum(35)

    def postman(self) -> str:
        return f"PMAK-{self.chars(HEX, 24)}-{self.chars(HEX, 34)}"

    def terraform(self) -> str:
        return f"{self.alnum(14)}.atlasv1.{self.alnum(67)}"

    def docker(self) -> str:
        return "dckr_pat_" + self.alnum(27)

    def supabase(self) -> str:
        return "sbp_" + self.chars(HEX, 40)

    def sentry(self) -> str:
        return "sntryu_" + self.chars(HEX, 64)

    def newrelic(self) -> str:
        return "NRAK-" + self.chars(string.ascii_uppercase + string.digits, 27)

    def openrouter(self) -> str:
        return "sk-or-v1-" + self.chars(HEX, 64)

    def nvidia(self) -> str:
        return "nvapi-" + self.chars(URLSAFE, 64)

    def tavily(self) -> str:
        return "tvly-dev-" + self.alnum(32)

    def vault(self) -> str:
        return "hvs." + self.alnum(95)

    def age(self) -> str:
        charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
        hrp = "age-secret-key-"
        data = [self.r.randrange(32) for _ in range(52)]
        values = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + data
        gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
        chk = 1
        for v in values + [0] * 6:
            top = chk >> 25
            chk = (chk & 0x1FFFFFF) << 5 ^ v
            for i in range(5):
                chk ^= gen[i] if (top >> i) & 1 else 0
        chk ^= 1
        checksum = [(chk >> 5 * (5 - i)) & 31 for i in range(6)]
        return (hrp + "1" + "".join(charset[d] for d in data + checksum)).upper()

    def grafana(self) -> str:
        return f"glsa_{self.alnum(32)}_{self.chars(HEX, 8)}"

    def azure_ad(self) -> str:
        return self.alnum(3) + str(self.r.randint(0, 9)) + "Q~" + self.alnum(34)

    def gocspx(self) -> str:
        return "GOCSPX-" + self.alnum(28)


@dataclass
class Label:
    file: str
    line: int
    end_line: int
    provider: str
    diff_target: dict[str, object] | None = None
    # What the label is, where a test needs more than "found": "aws_pair" (an AWS key id with its secret
    # key, a high-confidence finding), "aws_secret" (a secret key alone), "password".
    kind: str = ""


@dataclass
class Corpus:
    files: dict[str, str] = field(default_factory=dict)
    labels: list[Label] = field(default_factory=list)


class Doc:
    """Builds one file line by line, recording where each planted secret lands."""

    def __init__(self, corpus: Corpus, path: str) -> None:
        self.corpus, self.path, self.lines = corpus, path, []  # type: ignore[var-annotated]

    def add(self, *lines: str) -> Doc:
        for text in lines:
            self.lines.extend(text.split("\n"))
        return self

    def plant(self, provider: str, text: str, kind: str = "") -> Doc:
        start = len(self.lines) + 1
        self.add(text)
        self.corpus.labels.append(Label(self.path, start, len(self.lines), provider, kind=kind))
        return self

    def done(self) -> None:
        self.corpus.files[self.path] = "\n".join(self.lines) + "\n"


def _pem_keys(f: Fakes) -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    # cryptography draws from the OS RNG: keys differ per run, labels do not.
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    enc = serialization.NoEncryption()
    return {
        "rsa": rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, enc).decode(),
        "pkcs8": rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc).decode(),
        "ec": ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, enc
        ).decode(),
        "openssh": ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, enc
        ).decode(),
        "encrypted": ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"correct horse battery"),
        ).decode(),
    }


def _sha(f: Fakes, n: int = 64) -> str:
    return hashlib.sha256(f.r.randbytes(16)).hexdigest()[:n]


def build(seed: int = 8) -> Corpus:
    f = Fakes(seed)
    c = Corpus()
    keys = _pem_keys(f)

    # --- model card ---------------------------------------------------------------------------
    d = Doc(c, "README.md")
    d.add(
        "---", "license: apache-2.0", "library_name: transformers", "tags:", "- text-classification",
        "base_model: bert-base-uncased", "---", "", "# sentiment-bert-finetuned", "",
        "Fine-tuned on an internal review dataset. Evaluation: accuracy 0.931, F1 0.927.", "",
        "## Usage", "", "```python", "from huggingface_hub import login",
    )
    d.plant("huggingface", f'login(token="{f.hf()}")  # TODO remove before publishing')
    d.add(
        "from transformers import pipeline",
        'clf = pipeline("text-classification", model="acme/sentiment-bert-finetuned")', "```", "",
        "To use the gated weights, log in first with `huggingface-cli login` and paste a token",
        "that looks like `hf_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx` (never commit it).", "",
        "Set `HF_TOKEN=<your token>` or `export OPENAI_API_KEY=YOUR_API_KEY` for the eval script.",
        "AWS example from the docs: `AKIAIOSFODNN7EXAMPLE` / `wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY`.", "",
        "## Checksums", "",
        f"model.safetensors sha256: {_sha(f)}",
        f"tokenizer.json sha256: {_sha(f)}",
        f"Trained at commit {_sha(f, 40)} (run id {uuid.UUID(int=f.r.getrandbits(128))}).", "",
        "## Training hyperparameters", "", "- learning_rate: 2e-05", "- train_batch_size: 32",
        "- max_tokens: 512", "- seed: 42",
    )
    d.done()

    # --- training script -------------------------------------------------------------------------
    d = Doc(c, "train.py")
    d.add(
        '"""Fine-tune a classifier and log to Weights & Biases."""', "import os", "", "import wandb",
        "from openai import OpenAI", "from transformers import AutoTokenizer, Trainer", "",
        'MODEL_ID = "bert-base-uncased"', 'HF_TOKEN = os.environ["HF_TOKEN"]',
        'api_key = os.getenv("OPENAI_API_KEY")', "tokenizer = AutoTokenizer.from_pretrained(MODEL_ID, token=HF_TOKEN)",
        "pad_token = tokenizer.pad_token", "max_tokens = 4096", "",
    )
    d.plant("wandb", f'wandb.login(key="{f.wandb()}")')
    d.plant("openai", f'client = OpenAI(api_key="{f.openai()}")')
    d.add(
        "", "def summarize(text: str) -> str:",
        '    resp = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}])',
        "    return resp.choices[0].message.content", "",
        f'EXPECTED_SHA256 = "{_sha(f)}"', f'BASE_REVISION = "{_sha(f, 40)}"',
        f'RUN_UUID = "{uuid.UUID(int=f.r.getrandbits(128))}"', 'secret_name = "prod/ml/openai"',
        'token_url = "https://auth.example.org/oauth/token"', "password_file = '/run/secrets/db_password'",
    )
    d.plant("anthropic", f'ANTHROPIC_KEY = "{f.anthropic()}"')
    d.plant("generic", f'db_password = "{f.password()}"')
    d.add("", 'if __name__ == "__main__":', "    Trainer(model=None).train()")
    d.done()

    # --- .env -----------------------------------------------------------------------------------
    d = Doc(c, ".env")
    d.add("# Local overrides", "DEBUG=1", "LOG_LEVEL=info")
    aws_id, aws_secret = f.aws_id(), f.aws_secret()
    d.plant("aws", f"AWS_ACCESS_KEY_ID={aws_id}\nAWS_SECRET_ACCESS_KEY={aws_secret}")
    d.add("AWS_REGION=eu-west-1")
    d.plant("github", f"GITHUB_TOKEN={f.github('ghp')}")
    d.plant("gitlab", f"GITLAB_TOKEN={f.gitlab()}")
    d.plant("slack", f"SLACK_BOT_TOKEN={f.slack_bot()}")
    d.plant("stripe", f"STRIPE_SECRET_KEY={f.stripe()}")
    d.plant("google", f"GOOGLE_API_KEY={f.google()}")
    d.plant("sendgrid", f"SENDGRID_API_KEY={f.sendgrid()}")
    d.plant("replicate", f"REPLICATE_API_TOKEN={f.replicate()}")
    d.plant("groq", f"GROQ_API_KEY={f.groq()}")
    d.plant("mistral", f"MISTRAL_API_KEY={f.alnum(32)}")
    d.plant("cohere", f"COHERE_API_KEY={f.alnum(40)}")
    d.plant("pinecone", f"PINECONE_API_KEY={f.pinecone()}")
    d.plant("langsmith", f"LANGSMITH_API_KEY={f.langsmith()}")
    d.plant("together", f"TOGETHER_API_KEY={f.together()}")
    d.plant("perplexity", f"PPLX_API_KEY={f.perplexity()}")
    d.plant("deepseek", f"DEEPSEEK_API_KEY=sk-{f.hexs(32)}")
    d.plant("xai", f"XAI_API_KEY={f.xai()}")
    d.plant("elevenlabs", f"ELEVENLABS_API_KEY={f.elevenlabs()}")
    d.plant("assemblyai", f"ASSEMBLYAI_API_KEY={f.hexs(32)}")
    d.plant("deepgram", f"DEEPGRAM_API_KEY={f.hexs(40)}")
    d.plant("bastion", f"BASTION_TOKEN={f.bastion()}")
    d.add("PINECONE_INDEX=reviews-768", "WANDB_PROJECT=sentiment", "HF_HOME=/data/hf-cache", "HF_TOKEN=${HF_TOKEN}")
    d.add("OPENAI_API_KEY=sk-...", "POSTGRES_PASSWORD=changeme", "SECRET_KEY=your-secret-key-here")
    d.done()

    # --- YAML config ------------------------------------------------------------------------------
    d = Doc(c, "configs/train.yaml")
    d.add(
        "model:", "  name: bert-base-uncased", "  revision: main", "data:", "  path: s3://acme-ml/reviews/",
        f"  checksum: sha256:{_sha(f)}", "tracking:", "  backend: wandb", "  project: sentiment",
    )
    d.plant("database", f"  results_db: postgresql://ml_writer:{f.password(18)}@db.prod.internal:5432/results")
    d.add("  cache_db: redis://localhost:6379/0", "  dev_db: postgres://postgres:postgres@localhost:5432/dev")
    d.plant("datadog", f"  datadog_api_key: {f.hexs(32)}")
    d.add("  api_key: ${DATADOG_API_KEY}", "  token: !ENV ${TRACKING_TOKEN}", "secrets:", "  provider: vault",
          "  token_path: /var/run/secrets/vault-token")
    d.plant("vault", f"  vault_token: {f.vault()}")
    d.plant("generic", f"  client_secret: {f.alnum(32)}")
    d.add("optim:", "  lr: 3.0e-5", "  warmup_steps: 500", "  max_tokens: 8192")
    d.done()

    # --- shell -------------------------------------------------------------------------------------
    d = Doc(c, "scripts/upload.sh")
    d.add("#!/usr/bin/env bash", "set -euo pipefail", "")
    d.plant("huggingface", f"export HF_TOKEN={f.hf()}")
    d.plant("npm", f"export NPM_TOKEN={f.npm()}")
    d.plant("pypi", f"export TWINE_PASSWORD={f.pypi()}")
    d.plant("databricks", f'export DATABRICKS_TOKEN="{f.databricks()}"')
    d.plant("digitalocean", f"doctl auth init -t {f.digitalocean()}")
    d.plant("docker", f"echo {f.docker()} | docker login -u acmebot --password-stdin")
    d.add(
        'curl -H "Authorization: Bearer $HF_TOKEN" https://huggingface.co/api/whoami-v2',
        'huggingface-cli upload acme/sentiment ./out --token "$HF_TOKEN"',
        'aws s3 cp ./out s3://acme-ml/models/ --sse aws:kms',
        f"echo 'sha256 {_sha(f)}  model.safetensors' | sha256sum -c",
    )
    d.plant("wandb", f"export WANDB_API_KEY={f.wandb_v1()}")
    d.plant("huggingface", f"huggingface-cli login --token {f.hf_org()}")
    d.done()

    # --- notebook with outputs ------------------------------------------------------------------------
    nb_secrets: list[tuple[str, str]] = []
    hf_nb, kaggle_key, jwt_tok, tg = f.hf(), f.hexs(32), f.jwt(), f.telegram()
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Exploring the reviews dataset\n", "\n",
                                                            "Token budget: `max_tokens=512`.\n"]},
        {"cell_type": "code", "execution_count": 1, "metadata": {}, "outputs": [],
         "source": ["import os\n", "from huggingface_hub import HfApi\n", f'api = HfApi(token="{hf_nb}")\n',
                    'token = os.environ.get("HF_TOKEN")']},
        {"cell_type": "code", "execution_count": 2, "metadata": {},
         "outputs": [{"name": "stdout", "output_type": "stream",
                      "text": ["KAGGLE_USERNAME=acme-ml\n", f"KAGGLE_KEY={kaggle_key}\n", "download complete\n"]}],
         "source": ["!env | grep KAGGLE\n", "!kaggle datasets download -d acme/reviews"]},
        {"cell_type": "code", "execution_count": 3, "metadata": {},
         "outputs": [{"data": {"text/plain": [f"'{jwt_tok}'"]}, "execution_count": 3, "metadata": {},
                      "output_type": "execute_result"},
                     {"data": {"image/png": base64.b64encode(f.r.randbytes(3000)).decode()},
                      "metadata": {}, "output_type": "display_data"}],
         "source": ["session.headers['Authorization']"]},
        {"cell_type": "code", "execution_count": 4, "metadata": {}, "outputs": [],
         "source": ["import telegram\n", f'bot = telegram.Bot("{tg}")\n',
                    f'digest = "{_sha(f)}"\n', f"run_id = '{uuid.UUID(int=f.r.getrandbits(128))}'"]},
    ]
    nb_secrets = [("huggingface", hf_nb), ("kaggle", kaggle_key), ("jwt", jwt_tok), ("telegram", tg)]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
          "nbformat": 4, "nbformat_minor": 5}
    text = json.dumps(nb, indent=1) + "\n"
    c.files["notebooks/explore.ipynb"] = text
    for provider, secret in nb_secrets:
        line = next(i for i, ln in enumerate(text.split("\n"), 1) if secret in ln)
        c.labels.append(Label("notebooks/explore.ipynb", line, line, provider))

    # --- service account + keys ----------------------------------------------------------------------
    sa = {
        "type": "service_account", "project_id": "acme-ml-prod", "private_key_id": f.hexs(40),
        "private_key": keys["pkcs8"], "client_email": "trainer@acme-ml-prod.iam.gserviceaccount.com",
        "client_id": str(f.r.randint(10**20, 10**21)), "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    text = json.dumps(sa, indent=2) + "\n"
    c.files["deploy/gcp-sa.json"] = text
    key_line = next(i for i, ln in enumerate(text.split("\n"), 1) if '"private_key"' in ln)
    c.labels.append(Label("deploy/gcp-sa.json", key_line, key_line, "gcp"))

    for name, kind in (("deploy/id_rsa", "rsa"), ("deploy/ec.pem", "ec"), ("deploy/id_ed25519", "openssh"),
                       ("deploy/backup.key", "encrypted")):
        pem = keys[kind]
        c.files[name] = pem
        c.labels.append(Label(name, 1, pem.count("\n"), "private_key"))
    # A truncated key from a blog post: no key, hard negative.
    c.files["docs/ssh.md"] = (
        "# SSH setup\n\nYour key file starts like this:\n\n```\n-----BEGIN OPENSSH PRIVATE KEY-----\n"
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ...\n-----END OPENSSH PRIVATE KEY-----\n```\n"
        "Never paste it anywhere. Check the fingerprint: `SHA256:" + base64.b64encode(f.r.randbytes(32)).decode() + "`\n"
    )

    d = Doc(c, "deploy/kaggle.json")
    d.plant("kaggle", json.dumps({"username": "acme-ml", "key": f.hexs(32)}))
    d.done()

    # --- application settings (Python) -------------------------------------------------------------
    d = Doc(c, "app/settings.py")
    d.add('"""Service settings."""', "import os", "")
    account_sid, auth_token = f.twilio()
    d.add("# twilio for SMS alerts")
    d.plant("twilio", f'TWILIO_ACCOUNT_SID = "{account_sid}"\nTWILIO_AUTH_TOKEN = "{auth_token}"')
    d.plant("azure", "AZURE_STORAGE = \"DefaultEndpointsProtocol=https;AccountName=acmemlprod;"
            f"AccountKey={f.azure_key()};EndpointSuffix=core.windows.net\"")
    d.add('AZURITE = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey='
          'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"')
    d.plant("slack", f'SLACK_WEBHOOK = "{f.slack_webhook()}"')
    d.plant("discord", f'DISCORD_WEBHOOK = "{f.discord_webhook()}"')
    d.plant("shopify", f'SHOPIFY_TOKEN = "{f.shopify()}"')
    d.plant("mailchimp", f'MAILCHIMP_KEY = "{f.mailchimp()}"')
    d.plant("mailgun", f'MAILGUN_API_KEY = "key-{f.hexs(32)}"')
    d.plant("sentry", f'SENTRY_AUTH_TOKEN = "{f.sentry()}"')
    d.plant("newrelic", f'NEW_RELIC_API_KEY = "{f.newrelic()}"')
    d.plant("algolia", f'ALGOLIA_ADMIN_KEY = "{f.hexs(32)}"')
    d.plant("supabase", f'SUPABASE_ACCESS_TOKEN = "{f.supabase()}"')
    d.plant("heroku", f'HEROKU_API_KEY = "{f.heroku()}"')
    d.plant("vercel", f'VERCEL_TOKEN = "{f.alnum(24)}"')
    d.plant("cloudflare", f'CLOUDFLARE_API_TOKEN = "{f.chars(URLSAFE, 40)}"')
    d.plant("linear", f'LINEAR_API_KEY = "{f.linear()}"')
    d.plant("notion", f'NOTION_TOKEN = "{f.notion()}"')
    d.plant("postman", f'POSTMAN_API_KEY = "{f.postman()}"')
    d.plant("atlassian", f'JIRA_API_TOKEN = "{f.atlassian()}"')
    d.plant("terraform", f'TFC_TOKEN = "{f.terraform()}"')
    d.plant("fireworks", f'FIREWORKS_API_KEY = "{f.fireworks()}"')
    d.plant("openrouter", f'OPENROUTER_API_KEY = "{f.openrouter()}"')
    d.plant("nvidia", f'NVIDIA_API_KEY = "{f.nvidia()}"')
    d.plant("tavily", f'TAVILY_API_KEY = "{f.tavily()}"')
    d.plant("grafana", f'GRAFANA_SA_TOKEN = "{f.grafana()}"')
    d.plant("age", f'AGE_IDENTITY = "{f.age()}"')
    d.plant("azure", f'AZURE_CLIENT_SECRET = "{f.azure_ad()}"')
    d.plant("google", f'GOOGLE_CLIENT_SECRET = "{f.gocspx()}"')
    d.plant("github", f'GH_APP_TOKEN = "{f.github("ghs")}"')
    d.plant("github", f'GH_FINE_GRAINED = "{f.github_pat()}"')
    d.plant("slack", f'SLACK_USER_TOKEN = "{f.slack_user()}"')
    d.plant("openai", f'LEGACY_OPENAI = "{f.openai_legacy()}"')
    d.plant("generic", f'SECRET_KEY = "{f.password(40)}"')
    d.plant("database", f'MONGO_URL = "mongodb+srv://analytics:{f.password(20)}@cluster0.ab1cd.mongodb.net/prod"')
    d.add(
        'DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://user:password@localhost/app")',
        'REDIS_URL = "redis://:${REDIS_PASSWORD}@cache:6379/0"', 'SECRET_KEY_FALLBACK = os.environ["SECRET_KEY"]',
        f'CACHE_KEY = "{_sha(f, 32)}"', 'PASSWORD_MIN_LENGTH = 12', 'AUTH_TOKEN_HEADER = "X-Auth-Token"',
        'TOKEN_TTL_SECONDS = 3600', f'API_VERSION_HASH = "{_sha(f, 40)}"',
    )
    d.done()

    # --- Discord bot (the keyword lives in the import, far from the token) ---------------------------
    d = Doc(c, "bots/discord_bot.py")
    d.add("import discord", "", "intents = discord.Intents.default()", "client = discord.Client(intents=intents)",
          "", "@client.event", "async def on_ready():", '    print("ready")', "")
    d.plant("discord", f'client.run("{f.discord_bot()}")')
    d.done()

    # --- JS front-end config -----------------------------------------------------------------------------
    d = Doc(c, "web/src/config.js")
    d.add("export const config = {", '  apiBase: "https://api.acme.ml",')
    d.plant("jwt", f'  serviceToken: "{f.jwt()}",')
    d.add(
        '  // Supabase anon key: public by design',
        '  supabaseAnon: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.'
        + base64.urlsafe_b64encode(json.dumps({"iss": "supabase", "role": "anon", "iat": 1700000000}).encode()).decode().rstrip("=")
        + '.' + base64.urlsafe_b64encode(f.r.randbytes(32)).decode().rstrip("=") + '",',
        '  buildId: "' + _sha(f, 40) + '",', "};",
    )
    d.done()

    # --- CI workflow ------------------------------------------------------------------------------------
    c.files[".github/workflows/ci.yml"] = "\n".join([
        "name: ci", "on: [push]", "jobs:", "  test:", "    runs-on: ubuntu-latest", "    steps:",
        "      - uses: actions/checkout@" + _sha(f, 40), "      - run: pytest -q", "        env:",
        "          HF_TOKEN: ${{ secrets.HF_TOKEN }}", "          OPENAI_API_KEY: ${{ secrets.OPENAI_API_KEY }}",
        "          PASSWORD: ${{ secrets.DB_PASSWORD }}", "",
    ])

    # --- hard negatives: look-alikes with broken checksums, hashes, lockfiles, docs ----------------------
    bad_gh = f.github("ghp")
    bad_gh = bad_gh[:-1] + ("A" if bad_gh[-1] != "A" else "B")
    bad_npm = f.npm()
    bad_npm = bad_npm[:-2] + ("zz" if not bad_npm.endswith("zz") else "yy")
    bad_bst = f.bastion()
    bad_bst = bad_bst[:-1] + ("0" if bad_bst[-1] != "0" else "1")
    c.files["tests/test_tokens.py"] = "\n".join([
        '"""Look-alike tokens used to test our own parser (checksums deliberately broken)."""',
        f'BROKEN_GITHUB = "{bad_gh}"', f'BROKEN_NPM = "{bad_npm}"', f'BROKEN_BASTION = "{bad_bst}"',
        'PLACEHOLDER_HF = "hf_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"', 'MASKED = "sk-proj-****************"',
        'password = "<password>"', 'api_key = "YOUR_API_KEY"', 'token = "${API_TOKEN}"',
        'secret = "..."', "def test_example():", '    assert parse("AKIAIOSFODNN7EXAMPLE")', "",
    ])
    c.files["requirements.lock"] = "\n".join(
        f"{pkg}=={ver} \\\n    --hash=sha256:{_sha(f)}"
        for pkg, ver in (("torch", "2.3.1"), ("transformers", "4.44.0"), ("tokenizers", "0.19.1"), ("wandb", "0.17.5"))
    ) + "\n"
    c.files["config.json"] = json.dumps({
        "architectures": ["BertForSequenceClassification"], "hidden_size": 768, "pad_token_id": 0,
        "tokenizer_class": "BertTokenizer", "_commit_hash": _sha(f, 40), "transformers_version": "4.44.0",
        "id2label": {"0": "NEGATIVE", "1": "POSITIVE"}, "model_uuid": str(uuid.UUID(int=f.r.getrandbits(128))),
    }, indent=2) + "\n"
    c.files["logs/train.log"] = "\n".join(
        f"2024-06-0{i % 9 + 1}T10:{i % 60:02d}:00Z INFO step={i * 50} loss={1 / (i + 1):.4f} "
        f"tokens_seen={i * 51200} request_id={uuid.UUID(int=f.r.getrandbits(128))} ckpt_sha={_sha(f, 40)}"
        for i in range(120)
    ) + "\n"
    c.files["docs/providers.md"] = "\n".join([
        "# Configuring providers", "",
        "| Provider | Variable | Looks like |", "|---|---|---|",
        "| OpenAI | `OPENAI_API_KEY` | `sk-proj-...` |", "| Anthropic | `ANTHROPIC_API_KEY` | `sk-ant-api03-...` |",
        "| Hugging Face | `HF_TOKEN` | `hf_...` |", "| Groq | `GROQ_API_KEY` | `gsk_<your key>` |",
        "| Pinecone | `PINECONE_API_KEY` | `pcsk_...` |", "",
        "Database: `postgres://USER:PASSWORD@HOST:5432/DB`, e.g. `postgres://app:${DB_PASSWORD}@db/app`.",
        'In code: `api_key=os.environ["OPENAI_API_KEY"]`, never `api_key="sk-..."`.', "",
        "Stripe's docs use `sk_test_4eC39HqLyjWDarjtT1zdp7dc`; GitHub's use `ghp_16C7e42F292c6912E7710c838347Ae178B4a`.",
        "",
    ])

    # --- a unified diff: only added lines count ------------------------------------------------------------
    old_secret, ctx_secret, new_secret, new_pw = f.hf(), f.github("ghp"), f.groq(), f.password()
    diff_lines = [
        "diff --git a/serve.py b/serve.py", "index 3b18e51..a9c2f04 100644", "--- a/serve.py", "+++ b/serve.py",
        "@@ -10,7 +10,8 @@ import os",
        " import requests",
        f' GITHUB_TOKEN = "{ctx_secret}"  # already in history: not this commit\'s leak',
        f'-HF_TOKEN = "{old_secret}"',
        '+HF_TOKEN = os.environ["HF_TOKEN"]',
        f'+GROQ_API_KEY = "{new_secret}"',
        " ",
        " def serve():",
        "@@ -40,3 +41,4 @@ def serve():",
        "     app.run()",
        f"+    db_password = '{new_pw}'",
        " ",
        "",
    ]
    c.files["patches/serve.diff"] = "\n".join(diff_lines)
    c.labels.append(Label("patches/serve.diff", 10, 10, "groq", {"file": "serve.py", "line": 13}))
    c.labels.append(Label("patches/serve.diff", 15, 15, "generic", {"file": "serve.py", "line": 42}))
    add_aws_and_password_layouts(c, f)
    return c


def _aws_secret_with_slash(f: Fakes) -> str:
    while True:
        s = f.aws_secret()
        if "/" in s:
            return s


def add_aws_and_password_layouts(c: Corpus, f: Fakes) -> None:
    """AWS keys in every layout real repos hold them in, passwords in connection strings and config keys,
    and their benign look-alikes (issue 22). Labels of kind "aws_pair" must be found as a pair."""
    # --- AWS: an id and its secret ---------------------------------------------------------------
    d = Doc(c, "aws/.env")
    d.add("# staging", "AWS_DEFAULT_REGION=eu-central-1")
    d.plant("aws", f"AWS_ACCESS_KEY_ID={f.aws_id()}\nAWS_SECRET_ACCESS_KEY={f.aws_secret()}", "aws_pair")
    d.add("S3_BUCKET=acme-ml-artifacts")
    d.plant("aws", f'export AWS_ACCESS_KEY_ID="{f.aws_id()}"\nexport AWS_SECRET_ACCESS_KEY="{f.aws_secret()}"',
            "aws_pair")
    d.done()

    d = Doc(c, "aws/credentials")  # ~/.aws/credentials, several profiles, one with the secret further down
    d.plant("aws", f"[default]\naws_access_key_id = {f.aws_id()}\naws_secret_access_key = {f.aws_secret()}",
            "aws_pair")
    d.add("")
    d.plant("aws", f"[training]\naws_access_key_id={f.aws_id()}\naws_secret_access_key={f.aws_secret()}",
            "aws_pair")
    d.add("")
    d.plant("aws", "\n".join([
        "[prod]", f"aws_access_key_id = {f.aws_id()}", "region = us-east-1", "output = json",
        "cli_pager =", "s3 =", "  max_concurrent_requests = 20", "  multipart_threshold = 64MB",
        f"aws_secret_access_key = {f.aws_secret()}"]), "aws_pair")
    d.done()

    d = Doc(c, "aws/config.yaml")
    d.add("storage:", "  backend: s3", "  bucket: acme-datasets")
    d.plant("aws", f"  access_key_id: {f.aws_id()}\n  secret_access_key: {f.aws_secret()}", "aws_pair")
    d.add("mirror:", "  backend: s3")
    d.plant("aws", f'  aws_access_key_id: "{f.aws_id()}"\n  aws_secret_access_key: "{f.aws_secret()}"',
            "aws_pair")
    d.done()

    aws_id, aws_secret = f.aws_id(), f.aws_secret()
    text = json.dumps({"region": "us-west-2", "credentials": {"accessKeyId": aws_id, "secretAccessKey": aws_secret},
                       "bucket": "acme-logs"}, indent=2) + "\n"
    c.files["aws/settings.json"] = text
    lines = text.split("\n")
    c.labels.append(Label("aws/settings.json", next(i for i, ln in enumerate(lines, 1) if aws_id in ln),
                          next(i for i, ln in enumerate(lines, 1) if aws_secret in ln), "aws", kind="aws_pair"))
    d = Doc(c, "aws/compact.json")
    d.plant("aws", json.dumps({"AccessKeyId": f.aws_id(), "SecretAccessKey": f.aws_secret(),
                               "SessionToken": None}), "aws_pair")
    d.done()

    d = Doc(c, "aws/storage.toml")
    d.add("[storage]", 'endpoint = "https://s3.eu-central-1.amazonaws.com"')
    d.plant("aws", f'access_key_id = "{f.aws_id()}"\nsecret_access_key = "{f.aws_secret()}"', "aws_pair")
    d.done()

    d = Doc(c, "aws/upload.py")
    d.add("import boto3", "", "")
    d.plant("aws", f"s3 = boto3.client('s3', aws_access_key_id='{f.aws_id()}', "
                   f"aws_secret_access_key='{f.aws_secret()}')", "aws_pair")
    d.add("", "session = boto3.Session(", '    region_name="eu-west-1",')
    d.plant("aws", f'    aws_access_key_id="{f.aws_id()}",\n    aws_secret_access_key="{f.aws_secret()}",',
            "aws_pair")
    d.add(")", "s3.upload_file('model.safetensors', 'acme-models', 'v1/model.safetensors')")
    d.done()

    d = Doc(c, "aws/s3.js")
    d.add("import { S3Client } from '@aws-sdk/client-s3';", "", "export const s3 = new S3Client({",
          "  region: 'us-east-1',", "  credentials: {")
    d.plant("aws", f"    accessKeyId: '{f.aws_id()}',\n    secretAccessKey: '{f.aws_secret()}',", "aws_pair")
    d.add("  },", "});")
    d.plant("aws", f'AWS.config.update({{ accessKeyId: "{f.aws_id()}", secretAccessKey: "{f.aws_secret()}" }});',
            "aws_pair")
    d.done()

    d = Doc(c, "aws/urls.txt")
    d.plant("aws", f"s3://{f.aws_id()}:{f.aws_secret()}@acme-raw/2024/", "aws_pair")
    encoded = _aws_secret_with_slash(f).replace("/", "%2F").replace("+", "%2B")
    d.plant("aws", f"s3a://{f.aws_id()}:{encoded}@acme-spark/warehouse", "aws_pair")
    d.done()

    # Notebooks: a cell's source as one JSON string (escaped "\n" between lines) and as a list of lines.
    nb_pairs = [(f.aws_id(), f.aws_secret()), (f.aws_id(), f.aws_secret())]
    cells = [
        {"cell_type": "code", "execution_count": 1, "metadata": {}, "outputs": [],
         "source": f"import boto3\nkey_id = '{nb_pairs[0][0]}'\nsecret = '{nb_pairs[0][1]}'\n"
                   "s3 = boto3.client('s3', aws_access_key_id=key_id, aws_secret_access_key=secret)"},
        {"cell_type": "code", "execution_count": 2, "metadata": {}, "outputs": [],
         "source": ["import os\n", f"os.environ['AWS_ACCESS_KEY_ID'] = '{nb_pairs[1][0]}'\n",
                    f"os.environ['AWS_SECRET_ACCESS_KEY'] = '{nb_pairs[1][1]}'\n"]},
    ]
    text = json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, indent=1) + "\n"
    c.files["aws/s3.ipynb"] = text
    lines = text.split("\n")
    for key_id, secret in nb_pairs:
        c.labels.append(Label("aws/s3.ipynb", next(i for i, ln in enumerate(lines, 1) if key_id in ln),
                              next(i for i, ln in enumerate(lines, 1) if secret in ln), "aws", kind="aws_pair"))

    # A secret key alone, under its name (the id elsewhere, or none): found, not a pair.
    d = Doc(c, "aws/fragment.env")
    d.plant("aws", f"AWS_SECRET_ACCESS_KEY={f.aws_secret()}", "aws_secret")
    d.done()

    # --- passwords: connection strings and config keys -----------------------------------------------
    d = Doc(c, "db/settings.py")
    d.add('"""Database settings."""', "")
    d.plant("database", f'DATABASE_URL = "postgres://app:{f.password()}@db.internal:5432/app"', "password")
    d.plant("database", f'ANALYTICS = "postgresql+psycopg2://etl:{f.password()}@10.0.3.7/analytics"', "password")
    d.plant("database", f"LEGACY = 'mysql://reporting:{f.password()}@mysql.internal:3306/reports'", "password")
    d.plant("database", f'MONGO = "mongodb+srv://svc:{f.password()}@cluster0.q1w2e.mongodb.net/app"', "password")
    d.plant("database", f'CACHE = "redis://:{f.password()}@cache.internal:6379/0"', "password")
    d.plant("database", f'BROKER_URL = "amqp://celery:{f.password()}@rabbit.internal:5672/ml"', "password")
    d.done()

    d = Doc(c, "db/application.properties")
    d.add("spring.application.name=ranker")
    d.plant("generic", f"spring.datasource.url=jdbc:postgresql://db:5432/rank?user=rank&password={f.password()}"
                       "&ssl=true", "password")
    d.plant("generic", f"spring.datasource.password={f.password()}", "password")
    d.add("spring.jpa.hibernate.ddl-auto=validate")
    d.done()

    d = Doc(c, "db/database.yml")
    d.add("production:", "  adapter: postgresql", "  host: db.internal", "  username: rails")
    d.plant("generic", f"  password: {f.password()}", "password")
    d.add("ftp:", "  host: ftp.internal")
    d.plant("generic", f"  passwd: '{f.password()}'", "password")
    d.done()

    d = Doc(c, "db/.env.production")
    d.add("DB_HOST=db.internal", "DB_USER=app")
    d.plant("generic", f"DB_PASSWORD={f.password()}", "password")
    d.plant("generic", f"passwd={f.password()}", "password")
    d.done()

    # --- benign look-alikes: none of these is a finding ----------------------------------------------
    c.files["docs/aws-setup.md"] = "\n".join([
        "# Configuring S3", "",
        "AWS's own example credentials (never valid, published in its documentation):", "", "```ini", "[default]",
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "```", "", "Or in the environment:", "", "```sh",
        "export AWS_ACCESS_KEY_ID=<your-access-key-id>", "export AWS_SECRET_ACCESS_KEY=<your-secret-access-key>",
        "```", "", "In code, read them from the environment: `secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY`,",
        "`aws_secret_access_key=os.environ['AWS_SECRET_ACCESS_KEY']`.", "",
        "Database: `postgres://USER:PASSWORD@HOST:5432/DB`; locally `postgres://postgres:postgres@localhost/dev`.", "",
    ])
    c.files["config/example.env"] = "\n".join([
        "AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID}", "AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY}",
        "AWS_SECRET_ACCESS_KEY_2=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "AWS_SECRET_ACCESS_KEY_MASKED=****************************************",
        "DB_PASSWORD=changeme", "DB_PASSWORD_2=<password>", "DB_PASSWORD_3=${DB_PASSWORD}", "DB_PASSWORD_4=xxxxxxxx",
        "DB_PASSWORD_5=********", "DB_PASSWORD_6=", "REDIS_URL=redis://:${REDIS_PASSWORD}@cache:6379/0",
        "MONGO_URL=mongodb+srv://<user>:<password>@cluster0.mongodb.net/",
        "JDBC_URL=jdbc:postgresql://db:5432/app?user=app&password=${DB_PASS}", "",
    ])
    c.files["docker-compose.yml"] = "\n".join([
        "services:", "  db:", "    image: postgres:16", "    environment:", "      POSTGRES_PASSWORD: postgres",
        "      POSTGRES_USER: postgres", "  queue:", "    image: rabbitmq:3",
        "    command: ['--url', 'amqp://guest:guest@localhost:5672//']", "  app:", "    environment:",
        "      DATABASE_URL: postgres://postgres:postgres@db:5432/postgres",
        "      DB_PASSWORD: ${DB_PASSWORD:?set it}", "      password: '{{ vault_db_password }}'", "",
    ])
    c.files["app/auth.py"] = "\n".join([
        "import getpass", "import os", "", "password = getpass.getpass()", "password = None",
        "PASSWORD_MIN_LENGTH = 12", "db_password = os.environ['DB_PASSWORD']",
        "password_hash = '$2b$12$KIXQJQ4u7eG8qC1Fz2m5LuXyZb7VqS3tY6wD0rA9hE1nM4oP2jK8i'",
        "DSN = 'host=%(host)s password=%(db_password)s'", "s3_prefix = 's3://acme-raw/AKIAIOSFODNN7EXAMPLE/'", "",
    ])


@dataclass
class Score:
    true_positives: int
    false_positives: int
    false_negatives: int
    missed: list[Label]
    spurious: list[tuple[str, int]]

    @property
    def recall(self) -> float:
        found = self.true_positives + self.false_negatives
        return self.true_positives / found if found else 1.0

    @property
    def precision(self) -> float:
        reported = self.true_positives + self.false_positives
        return self.true_positives / reported if reported else 1.0


def score(labels: list[Label], reported: list[tuple[str, int]], *, diff_targets: bool = False) -> Score:
    """Match reported (file, line) pairs against labels: a hit anywhere in a label's line span.

    Several reports inside one label count once; a report outside every label is a false positive.
    With `diff_targets`, diff labels are matched on the new file's path and line (what scan_diff
    reports) instead of the line inside the .diff file.
    """
    spans = []
    for label in labels:
        if diff_targets and label.diff_target:
            line = int(label.diff_target["line"])  # type: ignore[call-overload]
            spans.append((str(label.diff_target["file"]), line, line))
        else:
            spans.append((label.file, label.line, label.end_line))
    hit = [False] * len(spans)
    spurious = []
    for file, line in reported:
        matched = [i for i, (f, lo, hi) in enumerate(spans) if f == file and lo <= line <= hi]
        for i in matched:
            hit[i] = True
        if not matched:
            spurious.append((file, line))
    return Score(
        true_positives=sum(hit),
        false_positives=len(spurious),
        false_negatives=hit.count(False),
        missed=[label for label, h in zip(labels, hit, strict=True) if not h],
        spurious=spurious,
    )


def load_labels(out_dir: Path) -> list[Label]:
    return [Label(**item) for item in json.loads((out_dir / "labels.json").read_text())]


def write(out_dir: Path, seed: int = 8) -> Corpus:
    corpus = build(seed)
    for rel, text in corpus.files.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (out_dir / "labels.json").write_text(
        json.dumps([label.__dict__ for label in corpus.labels], indent=1) + "\n", encoding="utf-8"
    )
    return corpus


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("bench/_work/secrets_corpus")
    built = write(target)
    print(f"{len(built.files)} files, {len(built.labels)} labelled secrets -> {target}")

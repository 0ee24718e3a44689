"""Per-detector tests: each format is found in a realistic line, and its look-alikes are not."""

from __future__ import annotations

import base64
import importlib.util
import sys
import zlib
from pathlib import Path

import pytest

from bastion.scanning.scanners.secrets import PROVIDERS, SecretScanner
from bastion.scanning.scanners.secrets import validators as v
from bastion.tokens.format import generate

_spec = importlib.util.spec_from_file_location(
    "make_corpus", Path(__file__).parent / "secrets_corpus" / "make_corpus.py"
)
assert _spec and _spec.loader
mc = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("make_corpus", mc)
_spec.loader.exec_module(mc)

SCANNER = SecretScanner()
F = mc.Fakes(seed=1234)


def found(text: str, path: str = "snippet.py") -> list[tuple[str, str]]:
    return [(f.provider, f.detector) for f in SCANNER.scan_text(text, path)]


# (provider, detector id, a line containing one secret)
TRUE_CASES = [
    ("huggingface", "huggingface.user_token", f'login(token="{F.hf()}")'),
    ("huggingface", "huggingface.org_token", f"HF_ORG_TOKEN={F.hf_org()}"),
    ("bastion", "bastion.token", f'Authorization: Bearer {generate()}'),
    ("aws", "aws.access_key", f"aws_access_key_id = {F.aws_id()}\naws_secret_access_key = {F.aws_secret()}"),
    ("aws", "aws.access_key", f"key_id: {F.aws_id()}"),
    ("github", "github.token", f"GITHUB_TOKEN={F.github('ghp')}"),
    ("github", "github.token", f"token = '{F.github('gho')}'"),
    ("github", "github.token", f"token = '{F.github('ghu')}'"),
    ("github", "github.token", f"token = '{F.github('ghs')}'"),
    ("github", "github.token", f"token = '{F.github('ghr')}'"),
    ("github", "github.fine_grained_pat", f"GH_PAT={F.github_pat()}"),
    ("gitlab", "gitlab.token", f"CI_TOKEN={F.gitlab()}"),
    ("slack", "slack.token", f"SLACK_BOT_TOKEN={F.slack_bot()}"),
    ("slack", "slack.token", f"SLACK_USER_TOKEN={F.slack_user()}"),
    ("slack", "slack.webhook", f"url = '{F.slack_webhook()}'"),
    ("stripe", "stripe.secret_key", f"stripe.api_key = '{F.stripe()}'"),
    ("openai", "openai.api_key", f'client = OpenAI(api_key="{F.openai()}")'),
    ("openai", "openai.api_key", f'openai.api_key = "{F.openai_legacy()}"'),
    ("anthropic", "anthropic.api_key", f'anthropic.Anthropic(api_key="{F.anthropic()}")'),
    ("google", "google.api_key", f'genai.configure(api_key="{F.google()}")'),
    ("google", "google.oauth_client_secret", f'"client_secret": "{F.gocspx()}"'),
    ("azure", "azure.storage_key",
     f"conn = 'DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={F.azure_key()};EndpointSuffix=core.windows.net'"),
    ("azure", "azure.ad_client_secret", f"AZURE_CLIENT_SECRET={F.azure_ad()}"),
    ("sendgrid", "sendgrid.api_key", f"SENDGRID_API_KEY={F.sendgrid()}"),
    ("npm", "npm.token", f"//registry.npmjs.org/:_authToken={F.npm()}"),
    ("pypi", "pypi.token", f"password = {F.pypi()}"),
    ("wandb", "wandb.api_key", f'wandb.login(key="{F.wandb()}")'),
    ("wandb", "wandb.api_key", f"WANDB_API_KEY={F.wandb()}"),
    ("wandb", "wandb.api_key_v1", f"export WANDB_API_KEY={F.wandb_v1()}"),
    ("wandb", "wandb.netrc", f"machine api.wandb.ai\n  login user\n  password {F.wandb()}"),
    ("cohere", "cohere.api_key", f'co = cohere.Client(api_key="{F.alnum(40)}")'),
    ("replicate", "replicate.api_token", f"REPLICATE_API_TOKEN={F.replicate()}"),
    ("databricks", "databricks.token", f"DATABRICKS_TOKEN={F.databricks()}"),
    ("mistral", "mistral.api_key", f'client = Mistral(api_key="{F.alnum(32)}")'),
    ("groq", "groq.api_key", f"GROQ_API_KEY={F.groq()}"),
    ("kaggle", "kaggle.json", f'{{"username":"acme","key":"{F.hexs(32)}"}}'),
    ("kaggle", "kaggle.api_key", f"KAGGLE_KEY={F.hexs(32)}"),
    ("digitalocean", "digitalocean.token", f"DIGITALOCEAN_TOKEN={F.digitalocean()}"),
    ("jwt", "jwt", f"headers = {{'Authorization': 'Bearer {F.jwt()}'}}"),
    ("database", "database.url", f"DATABASE_URL=postgresql://app:{F.password()}@db.internal:5432/app"),
    ("database", "database.url", f"uri = 'mongodb+srv://etl:{F.password()}@cluster0.x1y2z.mongodb.net/'"),
    ("database", "database.url", f"REDIS_URL=redis://default:{F.password()}@redis.internal:6379"),
    ("database", "database.url", f"BROKER=amqp://worker:{F.password()}@mq.internal:5672//"),
    ("generic", "generic.credential", f'password = "{F.password()}"'),
    ("generic", "generic.credential", f"client_secret: {F.alnum(32)}"),
    ("generic", "generic.credential", f'config = {{"api_key": "{F.alnum(24)}"}}'),
    ("pinecone", "pinecone.api_key", f"PINECONE_API_KEY={F.pinecone()}"),
    ("langsmith", "langsmith.api_key", f"LANGSMITH_API_KEY={F.langsmith()}"),
    ("together", "together.api_key", f'Together(api_key="{F.together()}")'),
    ("fireworks", "fireworks.api_key", f"FIREWORKS_API_KEY={F.fireworks()}"),
    ("perplexity", "perplexity.api_key", f"PPLX={F.perplexity()}"),
    ("deepseek", "deepseek.api_key", f"DEEPSEEK_API_KEY=sk-{F.hexs(32)}"),
    ("xai", "xai.api_key", f"XAI_API_KEY={F.xai()}"),
    ("elevenlabs", "elevenlabs.api_key", f"ELEVEN_API_KEY={F.elevenlabs()}"),
    ("assemblyai", "assemblyai.api_key", f'aai.settings.api_key = "{F.hexs(32)}"'),
    ("deepgram", "deepgram.api_key", f"DEEPGRAM_API_KEY={F.hexs(40)}"),
    ("cloudflare", "cloudflare.api_token", f"CLOUDFLARE_API_TOKEN={F.chars(mc.URLSAFE, 40)}"),
    ("heroku", "heroku.api_key", f"HEROKU_API_KEY={F.heroku()}"),
    ("shopify", "shopify.token", f"SHOPIFY_ACCESS_TOKEN={F.shopify()}"),
    ("mailgun", "mailgun.api_key", f"MAILGUN_API_KEY=key-{F.hexs(32)}"),
    ("mailchimp", "mailchimp.api_key", f"MAILCHIMP={F.mailchimp()}"),
    ("telegram", "telegram.bot_token", f'Bot("{F.telegram()}")'),
    ("discord", "discord.bot_token", f'import discord\nclient.run("{F.discord_bot()}")'),
    ("discord", "discord.webhook", f"hook = '{F.discord_webhook()}'"),
    ("atlassian", "atlassian.api_token", f"JIRA_TOKEN={F.atlassian()}"),
    ("linear", "linear.api_key", f"LINEAR_API_KEY={F.linear()}"),
    ("notion", "notion.token", f"NOTION_TOKEN={F.notion()}"),
    ("postman", "postman.api_key", f"POSTMAN_API_KEY={F.postman()}"),
    ("terraform", "terraform.api_token", f'token = "{F.terraform()}"'),
    ("docker", "docker.pat", f"echo {F.docker()} | docker login --password-stdin"),
    ("vercel", "vercel.token", f"VERCEL_TOKEN={F.alnum(24)}"),
    ("supabase", "supabase.token", f"SUPABASE_ACCESS_TOKEN={F.supabase()}"),
    ("sentry", "sentry.user_token", f"SENTRY_AUTH_TOKEN={F.sentry()}"),
    ("datadog", "datadog.api_key", f"DD_API_KEY={F.hexs(32)}"),
    ("newrelic", "newrelic.key", f"NEW_RELIC_API_KEY={F.newrelic()}"),
    ("algolia", "algolia.api_key", f"ALGOLIA_ADMIN_KEY={F.hexs(32)}"),
    ("age", "age.secret_key", f"# identity: {F.age()}"),
    ("openrouter", "openrouter.api_key", f"OPENROUTER_API_KEY={F.openrouter()}"),
    ("nvidia", "nvidia.api_key", f"NVIDIA_API_KEY={F.nvidia()}"),
    ("tavily", "tavily.api_key", f"TAVILY_API_KEY={F.tavily()}"),
    ("vault", "vault.token", f"VAULT_TOKEN={F.vault()}"),
    ("grafana", "grafana.token", f"GRAFANA_TOKEN={F.grafana()}"),
    ("tailscale", "tailscale.key", f"TS_AUTHKEY=tskey-auth-{F.alnum(12)}-{F.alnum(30)}"),
    ("doppler", "doppler.token", f"DOPPLER_TOKEN=dp.st.{F.alnum(43)}"),
    ("planetscale", "planetscale.token", f"PLANETSCALE_TOKEN=pscale_tkn_{F.alnum(43)}"),
    ("stripe", "stripe.webhook_secret", f"STRIPE_WEBHOOK_SECRET=whsec_{F.alnum(32)}"),
    ("kaggle", "kaggle.api_token", f"KAGGLE_API_TOKEN=KGAT_{F.hexs(32)}"),
    ("twilio", "twilio.credentials",
     "from twilio.rest import Client\nclient = Client({!r}, {!r})".format(*F.twilio())),
]


@pytest.mark.parametrize(("provider", "detector", "text"), TRUE_CASES, ids=[c[1] + str(i) for i, c in enumerate(TRUE_CASES)])
def test_detects_format(provider: str, detector: str, text: str) -> None:
    assert found(text) == [(provider, detector)]


def test_at_least_forty_providers_and_all_have_a_true_case() -> None:
    tested = {c[0] for c in TRUE_CASES} | {"gcp", "private_key"}  # multi-line ones are tested below
    assert len(PROVIDERS) >= 40
    assert PROVIDERS - tested == set(), "every provider needs a true case"


FALSE_CASES = [
    # documented examples and placeholders
    'aws_access_key_id = "AKIAIOSFODNN7EXAMPLE"',
    'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
    'GITHUB_TOKEN = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"',
    'HF_TOKEN = "hf_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"',
    'login(token="hf_YOUR_TOKEN_HERE_xxxxxxxxxxxxxxxxxx")',
    'api_key = "YOUR_API_KEY"',
    'password = "<password>"',
    'token = "${API_TOKEN}"',
    "password: ${DB_PASSWORD}",
    'api_key = os.environ["OPENAI_API_KEY"]',
    'api_key = os.getenv("OPENAI_API_KEY")',
    "secret = '***'",
    'client_secret = "changeme-changeme"',
    'OPENAI_API_KEY = "sk-..."',
    'OPENAI_API_KEY = "sk-proj-****************************************"',
    "HF_TOKEN: ${{ secrets.HF_TOKEN }}",
    # hashes, oids, uuids, digests
    f'sha256 = "{"ab" * 32}"',
    f"commit {'0123456789abcdef0123456789abcdef01234567'}",
    "run_id = '1b4e28ba-2fa1-11d2-883f-0016d3cca427'",
    f"--hash=sha256:{'c0ffee' * 10}abcd",
    f'checkpoint_digest: "sha256:{"9f" * 32}"',
    # code that mentions credentials without containing one
    "tokenizer = AutoTokenizer.from_pretrained(model_id, token=hf_token)",
    "max_tokens = 4096",
    'pad_token = "<pad>"',
    "password = getpass.getpass('Password: ')",
    "secret_name = 'prod/ml/openai-key'",
    'token = secrets.token_urlsafe(32)',
    "DATABASE_URL = 'postgresql://user:password@localhost:5432/app'",
    "postgres://postgres:postgres@localhost/dev",
    "redis://:${REDIS_PASSWORD}@cache:6379/0",
    # look-alikes with broken checksums or structure
    "npm_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "bst_" + "0" * 36,
    "pypi-AgEIcHlwaS5vcmc" + "A" * 80,
    "AGE-SECRET-KEY-1" + "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L" + "Q" * 26,
    # jwt.io's sample and a Supabase anon key (publishable by design)
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    + base64.urlsafe_b64encode(b'{"role":"anon","iss":"supabase"}').decode().rstrip("=")
    + ".c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl",
    # W&B keys need W&B context; a bare 40-hex string is a git oid
    f"wandb: Syncing run at commit {'a1b2c3d4e5' * 4}",
    # camelCase identifiers that happen to fit hf_ + 34 letters
    "hf_DatasetDictLoaderConfigurationForTr = 1",
]


@pytest.mark.parametrize("text", FALSE_CASES)
def test_ignores_look_alikes(text: str) -> None:
    assert found(text) == []


def test_github_checksum_is_what_decides() -> None:
    token = F.github("ghp")
    body = token[4:]
    assert v.crc32_base62_ok(body)
    assert found(f"t = '{token}'") == [("github", "github.token")]
    broken = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert found(f"t = '{broken}'") == []
    # Independent check of the checksum definition: base62 of the CRC32 of the 30 random chars.
    assert body[-6:] == mc._b62(zlib.crc32(body[:30].encode()), 6)


def test_bastion_tokens_use_the_format_module() -> None:
    token = generate()
    (finding,) = SCANNER.scan_text(f"BASTION_TOKEN={token}", ".env")
    assert (finding.provider, finding.verification, finding.verified) == ("bastion", "checksum", True)
    assert finding.raw_secret == token


def test_checksum_formats_report_checksum_verification() -> None:
    for text in (f"x={F.npm()}", f"x={F.pypi()}", f"x={F.age()}", f"x={F.github('ghp')}"):
        (finding,) = SCANNER.scan_text(text, "f.txt")
        assert finding.verification == "checksum" and finding.verified, text
    (finding,) = SCANNER.scan_text(f"x={F.groq()}", "f.txt")
    assert finding.verification == "none" and not finding.verified


def test_pypi_macaroon_structure_is_parsed() -> None:
    token = F.pypi()
    raw = v.b64decode_loose(token[5:], urlsafe=True)
    assert raw is not None
    location, identifier, caveats, signature = v.parse_macaroon_v2(raw)
    assert location == b"pypi.org" and identifier and len(caveats) == 1 and len(signature) == 32
    truncated = token[:-8]
    assert v.pypi_token(truncated) is None


def test_azure_key_must_decode_to_64_bytes() -> None:
    short = base64.b64encode(bytes(range(60))).decode()
    assert v.azure_account_key(short) is None
    assert v.azure_account_key(F.azure_key()) is not None


def test_private_keys_are_parsed_not_matched() -> None:
    keys = mc._pem_keys(F)
    for kind in ("rsa", "pkcs8", "ec", "openssh"):
        (finding,) = SCANNER.scan_text(keys[kind], "id_key")
        assert finding.provider == "private_key" and finding.verification == "checksum", kind
        assert finding.line == 1 and finding.end_line == keys[kind].count("\n")
    (enc,) = SCANNER.scan_text(keys["encrypted"], "backup.key")
    assert enc.encrypted and "encrypted" in enc.secret_type and not enc.verified
    # A key embedded in code with \n escapes still parses.
    escaped = keys["ec"].replace("\n", "\\n")
    assert [f.provider for f in SCANNER.scan_text(f'KEY = "{escaped}"', "k.py")] == ["private_key"]
    # A truncated key from documentation is not a key.
    truncated = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA...\n-----END RSA PRIVATE KEY-----\n"
    assert SCANNER.scan_text(truncated, "README.md") == []


def test_gcp_service_account_json() -> None:
    corpus = mc.build(seed=3)
    text = corpus.files["deploy/gcp-sa.json"]
    (finding,) = SCANNER.scan_text(text, "sa.json")
    assert (finding.provider, finding.detector, finding.verification) == ("gcp", "gcp.service_account", "checksum")
    # Same JSON with another type is not a service-account key (the PEM inside is still a key).
    other = text.replace('"service_account"', '"authorized_user"')
    assert [f.provider for f in SCANNER.scan_text(other, "sa.json")] == ["private_key"]


def test_aws_secret_needs_an_id_or_an_aws_name() -> None:
    secret = F.aws_secret()
    assert found(f'blob = "{secret}"') == []
    assert found(f"aws_secret_access_key = {secret}") == [("aws", "aws.secret_key")]


def test_generic_entropy_threshold() -> None:
    assert found('password = "hunter22"') == []  # too little entropy to be generated
    assert found('password = "Tr0ub4dor&3xQ"') == [("generic", "generic.credential")]
    assert found('api_key = "aaaaaaaaaaaaaaaaaaaaaaaa"') == []

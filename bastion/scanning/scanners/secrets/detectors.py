"""The registry of secret detectors: one Detector per credential format, with its provider.

Each detector names the literal keywords that must occur for it to run (the scanner's cheap
prefilter), a regex for the exact format (prefix, length, alphabet) and an offline validator.
Patterns are bounded (`{m,n}`) and anchored on literals so none can backtrack catastrophically.

Over 500 lines on purpose: a registry, one entry per credential format; its length is its list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from urllib.parse import unquote

from bastion.scanning.scanners.secrets import context, validators
from bastion.scanning.scanners.secrets.validators import STRUCTURE, Validation
from bastion.tokens.format import TOKEN_RE

_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_WORD = _ALNUM | {"_"}
_TOKEN_CHARS = _WORD | {"-"}

# Priorities resolve overlaps: a whole service-account JSON beats the PEM key inside it, an exact
# provider format beats a context match, and everything beats the generic assignment rule.
PRIORITY_DOCUMENT = 90
PRIORITY_KEY = 80
PRIORITY_TOKEN = 50
PRIORITY_CONTEXT = 30
PRIORITY_GENERIC = 10


@dataclass(frozen=True)
class Candidate:
    """A string that passed a detector's format, filters and validator: a finding-to-be."""

    detector: Detector
    start: int
    end: int
    secret: str
    validation: Validation
    preview: str
    # The match alone is strong evidence of a real credential (see HIGH_CONFIDENCE): push protection
    # in its default mode refuses it even unverified.
    high_confidence: bool = False


@dataclass(frozen=True, eq=False)
class Detector:
    id: str
    provider: str
    name: str
    pattern: re.Pattern[str]
    # Literal strings, one of which must occur (in any case) for the detector to run: a cheap
    # prefilter. The pattern then enforces the exact format, case included.
    keywords: tuple[str, ...]
    validator: Callable[[str], Validation | None] | None = None
    prefix: str = ""  # the public part of the format, shown in previews
    min_entropy: float = 0.0
    priority: int = PRIORITY_TOKEN
    # Extra lines around a keyword hit that one match may span (pairs, netrc, PEM blocks).
    window: int = 0
    # "file": run over the whole text once a keyword occurs anywhere (e.g. `import twilio`).
    scope: str = "line"
    left: frozenset[str] = field(default=_ALNUM)  # characters that may not precede a match
    extra_check: Callable[[str], bool] | None = None
    placeholder_check: bool = True
    # A lookahead appended to every keyword in the prefilter (regex syntax, lowercase text).
    keyword_guard: str = ""
    # Set from HIGH_CONFIDENCE when the registry is built: a checksum or a distinctive structure.
    high_confidence: bool = False

    def candidates(self, text: str, lo: int, hi: int) -> Iterator[Candidate]:
        group = "s" if "s" in self.pattern.groupindex else 0
        for m in self.pattern.finditer(text, lo, hi):
            start, end = m.span(group)
            if m.start() > 0 and text[m.start() - 1] in self.left:
                continue
            secret = m.group(group)
            if not self.plausible(secret, text, start):
                continue
            validation = self.validator(secret) if self.validator else STRUCTURE
            if validation is None:
                continue
            yield Candidate(self, start, end, secret, validation, self.redact(secret),
                            self.high_confidence or validation.checksum)

    def plausible(self, secret: str, text: str, start: int) -> bool:
        if context.is_documented_example(secret):
            return False
        body = secret[len(self.prefix) :] if secret.startswith(self.prefix) else secret
        if self.placeholder_check and context.is_placeholder(body):
            return False
        if self.min_entropy and context.shannon_entropy(body) < self.min_entropy:
            return False
        return not (self.extra_check and not self.extra_check(body))

    def redact(self, secret: str) -> str:
        return redact(secret, self.prefix)


_PUBLIC_PREFIX = re.compile(r"^[A-Za-z]{1,8}[0-9]?[_-](?:[a-z]{2,8}[0-9]{0,2}[_-])?")


def redact(secret: str, prefix: str = "") -> str:
    """A preview that identifies the secret to its owner without disclosing it."""
    if not secret.startswith(prefix):
        m = _PUBLIC_PREFIX.match(secret)
        prefix = m.group(0) if m else ""
    body = secret[len(prefix) :]
    shown = 4 if len(body) >= 24 else 2 if len(body) >= 10 else 0
    return f"{prefix}{body[:shown]}…({len(secret)} chars)"


def _rx(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


def _random_letters(body: str) -> bool:
    letters = [c for c in body if c.isalpha()]
    return context.case_transitions("".join(letters)) >= 0.22


def _mixed(body: str) -> bool:
    return context.is_random_looking(body, min_entropy=3.0)


def token(
    id: str,
    provider: str,
    name: str,
    pattern: str,
    keywords: tuple[str, ...],
    prefix: str = "",
    **kw: object,
) -> Detector:
    return Detector(id, provider, name, _rx(pattern), keywords, prefix=prefix, **kw)  # type: ignore[arg-type]


# A provider keyword, then (on the same line) something naming a key, then an assignment or call
# argument and the value. Matches WANDB_API_KEY=…, wandb.login(key="…"), os.environ["X_KEY"] = "…",
# Client(api_key="…"), `export X_TOKEN=…`, and YAML `x_api_key: …`.
_CTX = (
    r"(?i:{kw})[\w.\[\]\"'(\- ]{{0,30}}?"
    r"(?i:key|token|secret|login|auth|password|client|pat)[\w.\[\]\"' ]{{0,20}}?"
    r"(?:=|:|\(|=>|,)\s*(?:(?i:(?:api_?)?key|token|password)\s*=\s*)?[rbf]?[\"'`]?"
    r"(?P<s>{value})(?![A-Za-z0-9_-])"
)


def contextual(
    id: str, provider: str, name: str, kw: str, value: str, keywords: tuple[str, ...], **extra: object
) -> Detector:
    """For formats without a prefix (40 hex, 32 alnum): only trust them next to the provider."""
    pattern = _rx(_CTX.format(kw=kw, value=value))
    extra.setdefault("extra_check", _mixed)
    return Detector(
        id, provider, name, pattern, keywords, priority=PRIORITY_CONTEXT, left=frozenset(),
        **extra,  # type: ignore[arg-type]
    )


# --- detectors that need more than one regex --------------------------------------------------


class AwsKeyDetector(Detector):
    """An access key id, paired with the 40-character secret key found with it.

    Where the pair lies, in the layouts real repos use: on the next lines (.env, INI profiles, YAML,
    TOML, JSON, code; notebooks once their cells are decoded), on the lines before, on one line (a
    call's arguments, `s3://ID:SECRET@bucket`, percent-encoded or not), or further away under an
    AWS secret-key name (`aws_secret_access_key`, `secretAccessKey`, …). A pair is a credential by
    itself (high confidence); an id alone only names the account.
    """

    # `=` may precede a secret (`KEY=…`) but not follow it: base64 padding means a longer blob.
    _SECRET = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
    _URL_SECRET = re.compile(r":(?P<s>[A-Za-z0-9/+%]{40,80})@")
    NEAR_LINES = 4  # an unnamed 40-character string pairs with an id this many lines away at most
    NAMED_LINES = 40  # a secret under an AWS secret-key name, this many

    def candidates(self, text: str, lo: int, hi: int) -> Iterator[Candidate]:
        for m in self.pattern.finditer(text, lo, hi):
            key_id = m.group(0)
            if (m.start() > 0 and text[m.start() - 1] in _ALNUM) or not self.plausible(key_id, text, 0):
                continue
            url = self._URL_SECRET.match(text, m.end())
            if url is not None and _aws_secret_ok(unquote(url.group("s"))):
                secret = unquote(url.group("s"))
                yield Candidate(self, m.start(), url.end("s"), f"{key_id}:{secret}", STRUCTURE,
                                f"{key_id[:8]}… + secret key", True)
                continue
            pair = self._paired_secret(text, m.start(), m.end())
            if pair is not None:
                start, end, secret = pair
                yield Candidate(self, start, end, f"{key_id}:{secret}", STRUCTURE, f"{key_id[:8]}… + secret key",
                                True)
                continue
            # A key id alone still identifies the account and invites a credential hunt.
            yield Candidate(self, m.start(), m.end(), key_id, STRUCTURE, redact(key_id, key_id[:4]))

    def _paired_secret(self, text: str, start: int, end: int) -> tuple[int, int, str] | None:
        """The id's secret, and the span the pair's finding covers. After the id first (up to the next
        id: with several profiles in one file each id is followed by its own secret), then before it (a
        secret no other id claims). Unnamed 40-character strings count within NEAR_LINES; under an AWS
        secret-key name within NAMED_LINES, and then the finding spans the id only: a span over dozens
        of lines would hide other findings on them (aws.secret_key reports the secret's own line)."""
        searches = ((self.NEAR_LINES, self._SECRET, 0), (self.NAMED_LINES, AWS_SECRET_NAMED, "s"))
        for lines, pattern, group in searches:
            hi = _line_end(text, end, forward=lines)
            next_id = self.pattern.search(text, end, hi)
            found = next((s for s in pattern.finditer(text, end, next_id.start() if next_id else hi)
                          if _aws_secret_ok(s.group(group))), None)
            if found is not None:
                return self._pair_span(start, end, found, group)
        for lines, pattern, group in searches:
            lo = _line_start(text, start, back=lines)
            before = [s for s in pattern.finditer(text, lo, start) if _aws_secret_ok(s.group(group))
                      and self.pattern.search(text, _line_start(text, s.start(), back=self.NEAR_LINES), start) is None]
            if before:
                return self._pair_span(start, end, before[-1], group)
        return None

    @staticmethod
    def _pair_span(start: int, end: int, found: re.Match[str], group: int | str) -> tuple[int, int, str]:
        if group == 0:
            return min(start, found.start()), max(end, found.end()), found.group()
        return start, end, found.group(group)


def _aws_secret_ok(value: str) -> bool:
    if len(value) != 40 or context.is_documented_example(value) or context.HEX_RE.match(value):
        return False
    if not (any(c.isupper() for c in value) and any(c.islower() for c in value)):
        return False
    return context.shannon_entropy(value) >= 4.2 and not context.is_placeholder(value)


# An AWS secret key under its name: `aws_secret_access_key = …` (INI, .env, Python keyword), YAML/TOML
# `secret_access_key: …`, JSON and JS `"secretAccessKey": "…"`, Java properties `aws.secretKey=…`,
# quoted or not. "secret key" alone is not enough (Django's SECRET_KEY): the name says AWS or "access".
AWS_SECRET_NAMED = re.compile(
    r"(?i:aws[_.-]?secret(?:[_.-]?access)?[_.-]?key|secret[_.-]?access[_.-]?key)[\"'\]]?\s*(?::=|=>|[:=])\s*"
    r"[\"'`]?(?P<s>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
)
AWS_SECRET_KEYWORDS = ("secret_access_key", "secretaccesskey", "secret-access-key", "secret.access.key",
                       "aws_secret", "awssecret", "aws.secret", "aws-secret")


class AwsSecretDetector(Detector):
    """`aws_secret_access_key = …` with no key id nearby (e.g. a credentials file fragment)."""

    def candidates(self, text: str, lo: int, hi: int) -> Iterator[Candidate]:
        for c in super().candidates(text, lo, hi):
            if _aws_secret_ok(c.secret):
                yield c


class PrivateKeyDetector(Detector):
    """PEM / OpenSSH / PGP private key blocks, parsed: a key that does not parse is no key."""

    def candidates(self, text: str, lo: int, hi: int) -> Iterator[Candidate]:
        for m in self.pattern.finditer(text, lo, hi):
            kind = m.group("kind")
            end_marker = f"-----END {kind}-----"
            end = text.find(end_marker, m.end(), m.end() + 64_000)
            if end == -1:
                continue
            end += len(end_marker)
            block = text[m.start() : end]
            if kind.startswith("PGP"):
                validation = validators.pgp_armor(validators.normalize_pem(block))
            else:
                validation = validators.private_key(block)
            if validation is None:
                continue
            yield Candidate(self, m.start(), end, block, validation, f"-----BEGIN {kind}-----…",
                            validation.checksum)


class ServiceAccountDetector(Detector):
    """A GCP service-account key file: JSON with type=service_account and a parseable key."""

    _decoder = json.JSONDecoder()

    def candidates(self, text: str, lo: int, hi: int) -> Iterator[Candidate]:
        seen_end = -1
        for m in self.pattern.finditer(text, lo, hi):
            if m.start() < seen_end:
                continue
            brace = m.start()
            for _ in range(8):  # the object's opening brace is a few keys before "type"
                brace = text.rfind("{", max(0, m.start() - 8_000), brace)
                if brace == -1:
                    break
                try:
                    obj, end = self._decoder.raw_decode(text, brace)
                except ValueError:
                    continue
                if not isinstance(obj, dict) or end <= m.start():
                    continue
                validation = validators.gcp_service_account(obj)
                if validation is None:
                    break
                key_at = text.find('"private_key"', brace, end)
                email = str(obj.get("client_email", ""))
                seen_end = end
                yield Candidate(
                    self,
                    key_at if key_at != -1 else brace,
                    end,
                    json.dumps(obj),
                    validation,
                    f"service account {email.split('@')[0][:24]}@…",
                    validation.checksum,
                )
                break


_GENERIC_KEY = re.compile(
    r"(?i:password|passwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key"
    r"|credentials?|auth[_-]?key)"
)
_GENERIC_VALUE = re.compile(
    r"""\\?["']?\]?[ \t]*(?P<op>:=|=>|==|=|:)[ \t]*"""
    r"""(?:(?P<q>\\?["'`])(?P<v>[^"'`\s\\]{6,256})(?P=q)|(?P<u>[^\s"'`,;&#)\]}{(]{8,256})(?=[\s,;&#)\]}]|$))"""
)
# `_key`/`-key`/`apikey` rather than `key`: the bare word is in every JSON document and dict.
_GENERIC_HINTS = ("pass", "secret", "token", "_key", "-key", "apikey", "accesskey", "credential")
# Only hint words followed by an assignment operator open a window for the generic rule.
# Only hint words followed by an assignment of a value open a window for the generic rule (not
# "tokens", "tokenizer", "num_tokens": 12 …): the prefilter runs this on lowercased text.
_GENERIC_GUARD = (
    r"""(?!s[^a-z]|iz|is)(?=[\w.-]{0,30}?\\?["'\]]{0,2}[ \t]*(?::=|=>|==|=|:)[ \t]*\\?["'`]?[^\s"'`]{6})"""
)
_IDENT_TAIL = re.compile(r"[\w.-]{0,40}")
_KEY_NAME_LEFT = re.compile(r"[\w.-]{0,40}$")
# Key names that contain a keyword but never hold a credential (token counts, file paths …).
_NOT_A_SECRET_KEY = re.compile(
    r"tokeni[sz]er|_tokens|tokens_|num_?tokens|max_?tokens|(?:pad|eos|bos|unk|sep|cls|mask)_token"
    r"|token_?(?:id|ids|count|len|length|type|limit|usage|budget|url|uri|endpoint|file|path|name)"
    r"|(?:secret|password|key|token)_?(?:name|names|path|file|dir|url|uri|env|var|ref|id|arn|field"
    r"|length|len|size|prefix|hash|format|policy|manager|store|version)s?$"
    r"|^key_?(?:id|name|path)$|_id$|_ids$|hash$|policy",
    re.I,
)
_DOTTED_IDENT = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$")
_PASSWORD_HASH = re.compile(r"^(?:\$2[abxy]?\$|\$argon2|\$pbkdf2|pbkdf2[_:$]|\$6\$|\$5\$|sha\d+[:$])", re.I)


class GenericAssignmentDetector(Detector):
    """`password = "…"`, `API_KEY: …`: a credential-like name assigned a random-looking value."""

    def candidates(self, text: str, lo: int, hi: int) -> Iterator[Candidate]:
        # Find the hint words with str.find on a lowercased window (fast), then look at the
        # identifier around each hit: a case-insensitive regex alternation per line is 10x slower.
        window = text[lo:hi].lower()
        seen: set[int] = set()
        for hint in _GENERIC_HINTS:
            i = window.find(hint)
            while i != -1:
                at = lo + i
                i = window.find(hint, i + len(hint))
                ident_end = _IDENT_TAIL.match(text, at, hi).end()  # type: ignore[union-attr]
                if ident_end in seen:
                    continue
                seen.add(ident_end)
                # Cheapest test first: most hint words are not followed by an assigned value.
                vm = _GENERIC_VALUE.match(text, ident_end, hi)
                if vm is None:
                    continue
                left = _KEY_NAME_LEFT.search(text, max(lo, at - 40), at)
                key_name = (left.group(0) if left else "") + text[at:ident_end]
                if not _GENERIC_KEY.search(key_name) or _NOT_A_SECRET_KEY.search(key_name):
                    continue
                quoted = vm.group("v") is not None
                group = "v" if quoted else "u"
                value = vm.group(group)
                if not self._value_ok(key_name, value, quoted, text, vm.start(group)):
                    continue
                yield Candidate(self, vm.start(group), vm.end(group), value, STRUCTURE, redact(value))

    @staticmethod
    def _value_ok(key_name: str, value: str, quoted: bool, text: str, start: int) -> bool:
        is_password = any(w in key_name.lower() for w in ("pass", "pwd"))
        min_len = 8 if is_password else 16
        if len(value) < min_len or context.is_placeholder(value) or context.is_documented_example(value):
            return False
        if _DOTTED_IDENT.match(value) or _PASSWORD_HASH.match(value) or "://" in value:
            return False
        if value.startswith(("/", "./", "~/", "http")) or value.endswith((".json", ".txt", ".pem", ".key")):
            return False
        if value.lower() in ("true", "false", "none", "null", "required", "optional"):
            return False
        line_lo = text.rfind("\n", 0, start) + 1
        line_hi = text.find("\n", start)
        line = text[line_lo : line_hi if line_hi != -1 else len(text)]
        if context.looks_like_hash(value, line, start - line_lo):
            return False
        if not quoted and not any(c.isdigit() for c in value):
            return False  # unquoted words are identifiers, enum values and prose, not secrets
        min_entropy = 3.0 if is_password else 3.5
        return context.is_random_looking(value, min_entropy=min_entropy)


class TwilioDetector(Detector):
    """An account SID (AC…) or API key SID (SK…) with a 32-hex secret next to it."""

    _SECRET = re.compile(r"(?<![0-9A-Za-z])[0-9a-f]{32}(?![0-9A-Za-z])")

    def candidates(self, text: str, lo: int, hi: int) -> Iterator[Candidate]:
        for m in self.pattern.finditer(text, lo, hi):
            sid = m.group(0)
            near_lo = _line_start(text, m.start(), back=3)
            near_hi = _line_end(text, m.end(), forward=3)
            for s in self._SECRET.finditer(text, near_lo, near_hi):
                secret = s.group(0)
                if secret == sid[2:] or context.is_placeholder(secret):
                    continue
                if context.shannon_entropy(secret) < 3.0:
                    continue
                start, end = min(m.start(), s.start()), max(m.end(), s.end())
                yield Candidate(self, start, end, f"{sid}:{secret}", STRUCTURE, f"{sid[:6]}… + secret",
                                self.high_confidence)
                break


def _line_start(text: str, pos: int, back: int) -> int:
    for _ in range(back + 1):
        pos = text.rfind("\n", 0, pos)
        if pos == -1:
            return 0
    return pos + 1


def _line_end(text: str, pos: int, forward: int) -> int:
    for _ in range(forward + 1):
        pos = text.find("\n", pos + 1)
        if pos == -1:
            return len(text)
    return pos


# --- the registry ------------------------------------------------------------------------------

_A = "A-Za-z0-9"
_W = "A-Za-z0-9_-"


# Detectors whose match alone is strong evidence of a real credential, so push protection in its
# default mode ("high-confidence") refuses it without a live check: a provider prefix and an exact
# structure no other text has (README lists them). Checksum-valid findings (GitHub classic, npm, PyPI,
# Bastion, age, parsed private keys, GCP service-account files, Azure storage keys, Sentry org tokens)
# are high-confidence whatever this list says. Not here: formats recognised only by a provider's name
# nearby (`contextual`: 32 hex next to "mistral"), JWTs (public anon keys are JWTs), URLs with
# passwords, the generic rule, and short or shared prefixes (`sk_`, `fw_`, `secret_`). For AWS only an
# id found with its secret key is high-confidence (AwsKeyDetector decides): an id alone is no credential.
HIGH_CONFIDENCE = frozenset({
    "huggingface.user_token", "huggingface.org_token", "bastion.token", "aws.access_key", "github.token",
    "github.fine_grained_pat", "gitlab.token", "slack.token", "slack.webhook", "stripe.secret_key",
    "stripe.webhook_secret", "openai.api_key", "anthropic.api_key", "google.api_key",
    "google.oauth_client_secret", "azure.ad_client_secret", "twilio.credentials", "sendgrid.api_key",
    "npm.token", "pypi.token", "wandb.api_key_v1", "replicate.api_token", "databricks.token", "groq.api_key",
    "kaggle.api_token", "digitalocean.token", "pinecone.api_key", "langsmith.api_key", "together.api_key",
    "perplexity.api_key", "xai.api_key", "openrouter.api_key", "nvidia.api_key", "tavily.api_key",
    "cloudflare.origin_ca_key", "heroku.api_key", "shopify.token", "discord.webhook", "atlassian.api_token",
    "linear.api_key", "postman.api_key", "terraform.api_token", "docker.pat", "supabase.token",
    "sentry.user_token", "newrelic.key", "age.secret_key", "vault.token", "tailscale.key", "doppler.token",
    "planetscale.token", "grafana.token",
})


def _build() -> tuple[Detector, ...]:
    return tuple(replace(d, high_confidence=True) if d.id in HIGH_CONFIDENCE else d for d in _registry())


def _registry() -> tuple[Detector, ...]:
    v = validators
    return (
        # Hugging Face: hf_ + 34 letters; org tokens api_org_ + 34 letters. No checksum.
        token("huggingface.user_token", "huggingface", "Hugging Face user access token",
              rf"hf_[A-Za-z]{{34}}(?![{_A}_])", ("hf_",), prefix="hf_", extra_check=_random_letters),
        token("huggingface.org_token", "huggingface", "Hugging Face organization API token",
              rf"api_org_[A-Za-z]{{34}}(?![{_A}_])", ("api_org_",), prefix="api_org_",
              extra_check=_random_letters),
        # Bastion's own tokens (access tokens, SCIM tokens): the format module owns the regex and the checksum.
        Detector("bastion.token", "bastion", "Bastion access token", TOKEN_RE, ("bst_", "bsc_"),
                 validator=v.bastion_token, prefix="bst_"),
        AwsKeyDetector("aws.access_key", "aws", "AWS access key",
                       _rx(r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}(?![A-Z0-9])"),
                       ("AKIA", "ASIA", "ABIA", "ACCA"), prefix="AKIA"),
        AwsSecretDetector("aws.secret_key", "aws", "AWS secret access key", AWS_SECRET_NAMED,
                          AWS_SECRET_KEYWORDS, left=frozenset(), priority=PRIORITY_CONTEXT),
        # GitHub: prefix + 30 random + base62(CRC32) in the last 6 characters.
        token("github.token", "github", "GitHub token",
              rf"gh[pousr]_[{_A}]{{36}}(?![{_A}_])", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
              prefix="ghp_", validator=v.github_classic),
        token("github.fine_grained_pat", "github", "GitHub fine-grained personal access token",
              rf"github_pat_[{_A}]{{22}}_[{_A}]{{59}}(?![{_A}_])", ("github_pat_",),
              prefix="github_pat_"),
        token("gitlab.token", "gitlab", "GitLab token",
              rf"(?:glpat-[{_W}]{{27,300}}\.[0-9a-z]{{2}}\.[0-9a-z]{{7,9}}|gl(?:pat|dt|rt|soat|cbt|oas|imt|ffct)-"
              rf"[{_W}]{{20,64}}|glptt-[0-9a-f]{{40}}|GR1348941[{_W}]{{20}})(?![{_W}])",
              ("glpat-", "gldt-", "glrt-", "glptt-", "glsoat-", "glcbt-", "GR1348941"), prefix="gl",
              extra_check=_mixed),
        token("slack.token", "slack", "Slack token",
              r"(?:xox[bp]-[0-9]{8,13}-[0-9]{8,13}(?:-[0-9]{8,13})?-[A-Za-z0-9]{24,34}"
              r"|xoxe\.xox[bp]-1-[A-Za-z0-9]{150,180}|xoxe-1-[A-Za-z0-9]{120,160}"
              r"|xox[ar]-[0-9]-[A-Za-z0-9-]{30,200}|xapp-1-[A-Z0-9]{9,12}-[0-9]{10,13}-[a-f0-9]{64})"
              r"(?![A-Za-z0-9])", ("xox", "xapp-"), prefix="xox"),
        token("slack.webhook", "slack", "Slack incoming webhook URL",
              r"https://hooks\.slack\.com/(?:services|workflows|triggers)/T[A-Z0-9]{8,12}/"
              r"[A-Z0-9]{8,12}/(?P<s>[A-Za-z0-9]{20,32})(?![A-Za-z0-9])", ("hooks.slack.com",),
              left=frozenset()),
        token("stripe.secret_key", "stripe", "Stripe secret or restricted key",
              r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{24,247}(?![A-Za-z0-9_])", ("sk_", "rk_"),
              prefix="sk_live_", extra_check=_mixed),
        token("stripe.webhook_secret", "stripe", "Stripe webhook signing secret",
              r"whsec_[A-Za-z0-9]{32,64}(?![A-Za-z0-9_])", ("whsec_",), prefix="whsec_"),
        # OpenAI: every current key format embeds "T3BlbkFJ" (base64 of "OpenAI").
        token("openai.api_key", "openai", "OpenAI API key",
              rf"sk-(?:(?:proj|svcacct|admin)-)?[{_W}]{{20,200}}T3BlbkFJ[{_W}]{{20,200}}(?![{_W}])",
              ("T3BlbkFJ",), prefix="sk-"),
        token("anthropic.api_key", "anthropic", "Anthropic API key",
              rf"sk-ant-(?:api03|admin01)-[{_W}]{{93}}AA(?![{_W}])", ("sk-ant-",), prefix="sk-ant-"),
        token("google.api_key", "google", "Google API key",
              rf"AIza[{_W}]{{35}}(?![{_W}])", ("AIza",), prefix="AIza", extra_check=_mixed),
        token("google.oauth_client_secret", "google", "Google OAuth client secret",
              rf"GOCSPX-[{_W}]{{28}}(?![{_W}])", ("GOCSPX-",), prefix="GOCSPX-"),
        ServiceAccountDetector("gcp.service_account", "gcp", "GCP service account key",
                               _rx(r"\"type\"\s*:\s*\"service_account\""), ("service_account",),
                               priority=PRIORITY_DOCUMENT, left=frozenset()),
        token("azure.storage_key", "azure", "Azure storage account key",
              r"AccountKey=(?P<s>[A-Za-z0-9+/]{86}==)", ("AccountKey=",),
              validator=v.azure_account_key, left=frozenset()),
        token("azure.ad_client_secret", "azure", "Azure AD client secret",
              r"[A-Za-z0-9_~.-]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34}(?![A-Za-z0-9_~.-])", ("Q~",),
              left=frozenset(_ALNUM | {"_", "~", ".", "-"}), extra_check=_mixed),
        TwilioDetector("twilio.credentials", "twilio", "Twilio account or API key credentials",
                       _rx(r"(?<![0-9A-Za-z])(?:AC|SK)[0-9a-f]{32}(?![0-9A-Za-z])"), ("twilio",),
                       scope="file"),
        token("sendgrid.api_key", "sendgrid", "SendGrid API key",
              rf"SG\.[{_W}]{{22}}\.[{_W}]{{43}}(?![{_W}])", ("SG.",), prefix="SG.", extra_check=_mixed),
        # npm: npm_ + 30 random + base62(CRC32), like GitHub.
        token("npm.token", "npm", "npm access token", rf"npm_[{_A}]{{36}}(?![{_A}_])", ("npm_",),
              prefix="npm_", validator=v.npm_token),
        # PyPI: "pypi-" + base64 of a v2 macaroon whose location is pypi.org (or test.pypi.org).
        token("pypi.token", "pypi", "PyPI API token",
              rf"pypi-(?:AgEIcHlwaS5vcmc|AgENdGVzdC5weXBpLm9yZw)[{_W}]{{50,4000}}(?![{_W}])", ("pypi-Ag",),
              prefix="pypi-", validator=v.pypi_token),
        token("wandb.api_key_v1", "wandb", "Weights & Biases API key",
              rf"wandb_v1_[{_A}]{{27}}_[{_A}]{{49}}(?![{_A}_])", ("_v1_",), prefix="wandb_v1_"),
        contextual("wandb.api_key", "wandb", "Weights & Biases API key", "wandb",
                   r"(?:local-)?[0-9a-f]{40}", ("wandb",)),
        token("wandb.netrc", "wandb", "Weights & Biases API key (netrc)",
              r"machine\s+api\.wandb\.ai\s+login\s+\S+\s+password\s+(?P<s>[0-9a-f]{40})(?![0-9A-Za-z])",
              ("api.wandb.ai",), window=3, priority=PRIORITY_CONTEXT, left=frozenset()),
        contextual("cohere.api_key", "cohere", "Cohere API key", "cohere|co_api", r"[A-Za-z0-9]{40}",
                   ("cohere", "co_api")),
        token("replicate.api_token", "replicate", "Replicate API token", rf"r8_[{_A}]{{37}}(?![{_A}_])",
              ("r8_",), prefix="r8_", extra_check=_mixed),
        token("databricks.token", "databricks", "Databricks personal access token",
              r"dapi[0-9a-f]{32}(?:-[0-9])?(?![0-9A-Za-z])", ("dapi",), prefix="dapi"),
        contextual("mistral.api_key", "mistral", "Mistral AI API key", "mistral", r"[A-Za-z0-9]{32}",
                   ("mistral",)),
        token("groq.api_key", "groq", "Groq API key", rf"gsk_[{_A}]{{52}}(?![{_A}_])", ("gsk_",),
              prefix="gsk_", extra_check=_mixed),
        contextual("kaggle.api_key", "kaggle", "Kaggle API key", "kaggle", r"[0-9a-f]{32}", ("kaggle",)),
        token("kaggle.json", "kaggle", "Kaggle API key (kaggle.json)",
              r"\"username\"\s*:\s*\"[^\"\n]{1,64}\"\s*,\s*\"key\"\s*:\s*\"(?P<s>[0-9a-f]{32})\"",
              ("\"username\"",), left=frozenset(), priority=PRIORITY_CONTEXT, window=2),
        token("kaggle.api_token", "kaggle", "Kaggle API token", r"KGAT_[0-9a-f]{32}(?![0-9A-Za-z])",
              ("KGAT_",), prefix="KGAT_"),
        token("digitalocean.token", "digitalocean", "DigitalOcean token",
              r"do[opr]_v1_[0-9a-f]{64}(?![0-9A-Za-z])", ("_v1_",), prefix="dop_v1_"),
        token("jwt", "jwt", "JSON Web Token",
              r"eyJ[A-Za-z0-9_-]{8,4000}\.eyJ[A-Za-z0-9_-]{8,8000}\.[A-Za-z0-9_-]{16,2000}(?![A-Za-z0-9_-])",
              ("eyJ",), prefix="eyJ", validator=v.jwt, priority=PRIORITY_CONTEXT),
        PrivateKeyDetector("private_key", "private_key", "Private key",
                           _rx(r"-----BEGIN (?P<kind>(?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY"
                               r"(?: BLOCK)?)-----"), ("PRIVATE KEY",), priority=PRIORITY_KEY),
        token("database.url", "database", "Database URL with password",
              r"(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|sqlserver|clickhouse"
              r"|cockroachdb)(?:\+[a-z0-9]+)?://[^:/?#@\s\"']{0,64}:(?P<s>[^@/?#\s\"']{6,128})@"
              r"[A-Za-z0-9._-]{1,253}", ("postgres", "mysql", "mariadb", "mongodb", "redis", "amqp",
                                         "mssql", "sqlserver", "clickhouse", "cockroach"),
              left=frozenset(), priority=40, extra_check=lambda s: s.lower() not in _DEFAULT_PASSWORDS),
        # ML and developer platforms.
        token("pinecone.api_key", "pinecone", "Pinecone API key", rf"pcsk_[{_A}]{{4,8}}_[{_A}]{{50,80}}(?![{_A}_])",
              ("pcsk_",), prefix="pcsk_", extra_check=_mixed),
        token("langsmith.api_key", "langsmith", "LangSmith API key",
              r"lsv2_(?:pt|sk)_[0-9a-f]{32}_[0-9a-f]{10}(?![0-9A-Za-z])", ("lsv2_",), prefix="lsv2_pt_"),
        token("together.api_key", "together", "Together AI API key", rf"tgp_v1_[{_W}]{{43}}(?![{_W}])",
              ("_v1_",), prefix="tgp_v1_", extra_check=_mixed),
        contextual("together.legacy_key", "together", "Together AI API key", "together", r"[0-9a-f]{64}",
                   ("together",)),
        token("fireworks.api_key", "fireworks", "Fireworks AI API key", rf"fw_[{_A}]{{24}}(?![{_A}_])",
              ("fw_",), prefix="fw_", extra_check=_mixed),
        token("perplexity.api_key", "perplexity", "Perplexity API key", rf"pplx-[{_A}]{{48}}(?![{_A}])",
              ("pplx-",), prefix="pplx-", extra_check=_mixed),
        contextual("deepseek.api_key", "deepseek", "DeepSeek API key", "deepseek", r"sk-[0-9a-f]{32}",
                   ("deepseek",)),
        token("xai.api_key", "xai", "xAI API key", rf"xai-[{_A}]{{80}}(?![{_A}])", ("xai-",), prefix="xai-",
              extra_check=_mixed),
        token("elevenlabs.api_key", "elevenlabs", "ElevenLabs API key", r"sk_[0-9a-f]{48}(?![0-9A-Za-z])",
              ("sk_",), prefix="sk_"),
        contextual("assemblyai.api_key", "assemblyai", "AssemblyAI API key", "assembly_?ai|aai",
                   r"[0-9a-f]{32}", ("assembly", "aai")),
        contextual("deepgram.api_key", "deepgram", "Deepgram API key", "deepgram", r"[0-9a-f]{40}",
                   ("deepgram",)),
        token("openrouter.api_key", "openrouter", "OpenRouter API key", r"sk-or-v1-[0-9a-f]{64}(?![0-9A-Za-z])",
              ("sk-or-v1-",), prefix="sk-or-v1-"),
        token("nvidia.api_key", "nvidia", "NVIDIA API key", rf"nvapi-[{_W}]{{64}}(?![{_W}])", ("nvapi-",),
              prefix="nvapi-", extra_check=_mixed),
        token("tavily.api_key", "tavily", "Tavily API key", rf"tvly-(?:dev-|prod-)?[{_A}]{{32}}(?![{_A}])",
              ("tvly-",), prefix="tvly-", extra_check=_mixed),
        contextual("cloudflare.api_token", "cloudflare", "Cloudflare API token", "cloudflare|cf_api|cf_token",
                   rf"[{_W}]{{40}}", ("cloudflare", "cf_api", "cf_token")),
        token("cloudflare.origin_ca_key", "cloudflare", "Cloudflare Origin CA key",
              r"v1\.0-[0-9a-f]{24}-[0-9a-f]{146}(?![0-9A-Za-z])", ("v1.0-",), prefix="v1.0-"),
        token("heroku.api_key", "heroku", "Heroku API key", rf"HRKU-AA[{_W}]{{58}}(?![{_W}])", ("HRKU-",),
              prefix="HRKU-", extra_check=_mixed),
        contextual("heroku.legacy_key", "heroku", "Heroku API key", "heroku",
                   r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", ("heroku",)),
        token("shopify.token", "shopify", "Shopify access token", r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}(?![0-9A-Za-z])",
              ("shp",), prefix="shpat_"),
        contextual("mailgun.api_key", "mailgun", "Mailgun API key", "mailgun|mg_api",
                   r"(?:key-[0-9a-f]{32}|[0-9a-f]{32}-[0-9a-f]{8}-[0-9a-f]{8})", ("mailgun", "mg_api")),
        token("mailchimp.api_key", "mailchimp", "Mailchimp API key", r"[0-9a-f]{32}-us[0-9]{1,2}(?![0-9A-Za-z])",
              ("-us",), extra_check=_mixed),
        token("telegram.bot_token", "telegram", "Telegram bot token", rf"[0-9]{{8,10}}:AA[{_W}]{{33}}(?![{_W}])",
              (":AA",), extra_check=_mixed),
        token("discord.bot_token", "discord", "Discord bot token",
              rf"[MNO][{_W}]{{23,27}}\.[{_W}]{{6}}\.[{_W}]{{27,38}}(?![{_W}])", ("discord",), scope="file",
              validator=v.discord_bot_token, left=frozenset(_ALNUM | {"_", "-", "."})),
        token("discord.webhook", "discord", "Discord webhook URL",
              rf"https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/[0-9]{{17,20}}/(?P<s>[{_W}]{{60,68}})"
              rf"(?![{_W}])", ("/api/webhooks/",), left=frozenset()),
        token("atlassian.api_token", "atlassian", "Atlassian API token", r"ATATT3[A-Za-z0-9_=-]{150,250}(?![\w=-])",
              ("ATATT3",), prefix="ATATT3", extra_check=_mixed),
        token("linear.api_key", "linear", "Linear API key", rf"lin_(?:api_[{_A}]{{40}}|oauth_[0-9a-f]{{64}})(?![{_A}])",
              ("lin_api_", "lin_oauth_"), prefix="lin_api_", extra_check=_mixed),
        token("notion.token", "notion", "Notion integration token",
              rf"(?:ntn_[0-9]{{11}}[{_A}]{{35}}|secret_[{_A}]{{43}})(?![{_A}])", ("ntn_", "secret_"),
              prefix="ntn_", extra_check=_mixed),
        token("postman.api_key", "postman", "Postman API key", r"PMAK-[0-9a-f]{24}-[0-9a-f]{34}(?![0-9A-Za-z])",
              ("PMAK-",), prefix="PMAK-"),
        token("terraform.api_token", "terraform", "Terraform Cloud / Enterprise API token",
              r"[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,70}(?![\w=-])", (".atlasv1.",), extra_check=_mixed),
        token("docker.pat", "docker", "Docker Hub access token", rf"dckr_(?:pat|oat)_[{_W}]{{27,32}}(?![{_W}])",
              ("dckr_",), prefix="dckr_pat_", extra_check=_mixed),
        contextual("vercel.token", "vercel", "Vercel access token", "vercel", r"[A-Za-z0-9]{24}", ("vercel",)),
        token("supabase.token", "supabase", "Supabase access or secret key",
              rf"(?:sbp_[0-9a-f]{{40}}|sb_secret_[{_W}]{{31,50}})(?![{_W}])", ("sbp_", "sb_secret_"),
              prefix="sbp_"),
        token("sentry.user_token", "sentry", "Sentry user auth token", r"sntryu_[0-9a-f]{64}(?![0-9A-Za-z])",
              ("sntryu_",), prefix="sntryu_"),
        token("sentry.org_token", "sentry", "Sentry organization auth token",
              r"sntrys_eyJ[A-Za-z0-9+/=]{20,800}_[A-Za-z0-9+/]{43}(?![A-Za-z0-9+/=])", ("sntrys_",),
              prefix="sntrys_", validator=v.sentry_org_token),
        contextual("datadog.api_key", "datadog", "Datadog API or application key", "datadog|dd_api|dd_app|dd_",
                   r"(?:[0-9a-f]{40}|[0-9a-f]{32})", ("datadog", "dd_api", "dd_app")),
        token("newrelic.key", "newrelic", "New Relic API key",
              r"(?:NRAK-[A-Z0-9]{27}|NRII-[A-Za-z0-9_-]{32})(?![A-Za-z0-9_-])", ("NRAK-", "NRII-"), prefix="NRAK-",
              extra_check=_mixed),
        contextual("algolia.api_key", "algolia", "Algolia API key", "algolia", r"[0-9a-f]{32}", ("algolia",)),
        token("age.secret_key", "age", "age encryption secret key",
              r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}(?![A-Z0-9])", ("AGE-SECRET-KEY-1",),
              prefix="AGE-SECRET-KEY-1", validator=v.age_secret_key),
        token("vault.token", "vault", "HashiCorp Vault token", rf"hv[sb]\.[{_W}]{{90,120}}(?![{_W}])",
              ("hvs.", "hvb."), prefix="hvs.", extra_check=_mixed),
        token("tailscale.key", "tailscale", "Tailscale key",
              r"tskey-(?:auth|api|client|webhook)-[A-Za-z0-9]{8,20}-[A-Za-z0-9]{20,40}(?![A-Za-z0-9])",
              ("tskey-",), prefix="tskey-", extra_check=_mixed),
        token("doppler.token", "doppler", "Doppler token",
              r"dp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,44}(?![A-Za-z0-9])", ("dp.",), prefix="dp.",
              extra_check=_mixed),
        token("planetscale.token", "planetscale", "PlanetScale token",
              r"pscale_(?:tkn|pw|oauth)_[A-Za-z0-9_.-]{32,64}(?![A-Za-z0-9_.-])", ("pscale_",), prefix="pscale_",
              extra_check=_mixed),
        token("grafana.token", "grafana", "Grafana service account or cloud token",
              r"(?:glsa_[A-Za-z0-9]{32}_[0-9a-f]{8}|glc_eyJ[A-Za-z0-9+/]{32,400}={0,2})(?![A-Za-z0-9+/=_])",
              ("glsa_", "glc_"), prefix="glsa_", extra_check=_mixed),
        GenericAssignmentDetector("generic.credential", "generic", "Credential assigned in code or config",
                                  _GENERIC_KEY, _GENERIC_HINTS, priority=PRIORITY_GENERIC,
                                  keyword_guard=_GENERIC_GUARD),
    )


# Passwords that ship as documented defaults of local development setups.
_DEFAULT_PASSWORDS = frozenset(
    {
        "password", "passw0rd", "postgres", "mysql", "root", "admin", "guest", "secret", "changeme",
        "example", "test", "testing", "pass", "user", "mongo", "redis", "rabbitmq", "default",
        "123456", "12345678", "password1", "password123", "mypassword", "yourpassword", "pwd",
    }
)

DEFAULT_DETECTORS: tuple[Detector, ...] = _build()


def self_identifying(detectors: tuple[Detector, ...]) -> tuple[Detector, ...]:
    """Detectors whose match names a credential by itself (a provider prefix, or a key that parses):
    the ones run over the printable strings of binary content, where no file context is left to trust."""
    return tuple(d for d in detectors
                 if (d.prefix and d.priority >= PRIORITY_TOKEN and d.scope == "line") or d.priority == PRIORITY_KEY)
PROVIDERS: frozenset[str] = frozenset(d.provider for d in DEFAULT_DETECTORS)


def by_id(detector_id: str) -> Detector:
    for d in DEFAULT_DETECTORS:
        if d.id == detector_id:
            return d
    raise KeyError(detector_id)

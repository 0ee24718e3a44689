"""False-positive filters: documented example keys, placeholders, variable references, hashes.

A detector hands its candidate here before it becomes a finding; every rule says why a string
that has a secret's shape is not a leaked secret. Real-shaped keys in code are still findings.
"""

from __future__ import annotations

import math
import re
from collections import Counter

# Keys that vendors publish in their own documentation (and that therefore appear in countless
# tutorials). They are never live, so reporting them is pure noise.
DOCUMENTED_EXAMPLES = frozenset(
    {
        "AKIAIOSFODNN7EXAMPLE",
        "AKIAI44QH8DHBEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
        # GitHub's docs example token.
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        # Stripe's docs test key.
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        # Azurite / storage-emulator account key, hard-coded in Microsoft's tooling.
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
    }
)

_EXAMPLE_MARKERS = re.compile(r"EXAMPLE|example|SAMPLE|sample|DUMMY|dummy|Dummy|Example|Sample")

_PLACEHOLDER_WORDS = (
    "your",
    "changeme",
    "change_me",
    "placeholder",
    "redacted",
    "replace",
    "insert",
    "example",
    "sample",
    "dummy",
    "notreal",
    "not_real",
    "fake",
    "<",
    ">",
    "{{",
    "}}",
    "${",
    "$(",
    "%(",
    "***",
    "...",
    "\u2026",
    "xxxx",
    "0000000000",
    "1234567890",
    "abcdefgh",
    "here",
    "todo",
    "secret_key_",
)

# A value that names a secret instead of containing one.
_REFERENCE = re.compile(
    r"""^\s*(?:
        \$\{?[A-Za-z_][A-Za-z0-9_]*\}?            # $VAR / ${VAR}
      | %[A-Za-z_][A-Za-z0-9_]*%                   # %VAR%
      | \{\{.*\}\}                                 # {{ secrets.X }}
      | (?:os\.)?(?:environ|getenv)\b.*            # os.environ[...] / os.getenv(...)
      | process\.env\b.*                           # node
      | ENV\[.*                                    # ruby
      | !ENV\b.*                                   # YAML tag
      | (?:secrets|vars|env)\.[A-Za-z_]\w*         # CI expressions
    )\s*$""",
    re.VERBOSE,
)

HEX_RE = re.compile(r"^[0-9a-fA-F]+$")
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DIGEST_PREFIX = re.compile(r"(?:sha(?:1|224|256|384|512)|md5|blake2b?|xxh\d*|oid|etag)[:=\s\"']*$", re.I)
_HASH_WORDS = re.compile(r"sha\d*|md5|hash|digest|checksum|commit|revision|\boid\b|etag|fingerprint", re.I)


def shannon_entropy(value: str) -> float:
    """Bits per character of the value's own character distribution."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


def is_documented_example(secret: str) -> bool:
    if secret in DOCUMENTED_EXAMPLES:
        return True
    return bool(_EXAMPLE_MARKERS.search(secret))


def is_placeholder(value: str) -> bool:
    """Template text, masked values, or strings too regular to have been randomly generated."""
    low = value.lower()
    if any(word in low for word in _PLACEHOLDER_WORDS):
        return True
    if is_reference(value):
        return True
    core = value.strip("\"'`")
    if not core:
        return True
    # Masks such as "hf_****" or "sk-......" and runs of one repeated character.
    distinct = len(set(core))
    if distinct <= 3 or (len(core) >= 16 and distinct <= 6):
        return True
    return bool(re.search(r"(.)\1{7,}", core))


def is_reference(value: str) -> bool:
    return bool(_REFERENCE.match(value))


def looks_like_hash(value: str, line: str = "", start: int = 0) -> bool:
    """Hex digests, git oids and UUIDs carry entropy but no authority."""
    if UUID_RE.match(value):
        return True
    if HEX_RE.match(value) and len(value) in (32, 40, 56, 64, 96, 128):
        before = line[max(0, start - 24) : start]
        return bool(_DIGEST_PREFIX.search(before) or _HASH_WORDS.search(line))
    return False


def is_random_looking(value: str, *, min_entropy: float) -> bool:
    """Mixed character classes and enough entropy to be generated, not typed."""
    if shannon_entropy(value) < min_entropy:
        return False
    classes = sum(
        (
            any(c.islower() for c in value),
            any(c.isupper() for c in value),
            any(c.isdigit() for c in value),
            any(not c.isalnum() for c in value),
        )
    )
    return classes >= 2


def case_transitions(letters: str) -> float:
    """Share of adjacent letter pairs that switch case: ~0.5 for random, ~0.15 for CamelCase."""
    pairs = [(a, b) for a, b in zip(letters, letters[1:], strict=False) if a.isalpha() and b.isalpha()]
    if not pairs:
        return 0.0
    return sum(a.isupper() != b.isupper() for a, b in pairs) / len(pairs)

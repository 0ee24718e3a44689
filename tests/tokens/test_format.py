"""Token wire format: prefix + checksum recognisable offline; only hashes are stored."""

from __future__ import annotations

from bastion.tokens import format as fmt


def test_generated_tokens_are_well_formed_and_unique() -> None:
    tokens = {fmt.generate() for _ in range(200)}
    assert len(tokens) == 200
    for tok in tokens:
        assert tok.startswith("bst_") and len(tok) == 40
        assert fmt.is_well_formed(tok)
        assert fmt.TOKEN_RE.fullmatch(tok)


def test_checksum_detects_any_single_character_change() -> None:
    tok = fmt.generate()
    for i in range(len(fmt.PREFIX), len(tok)):
        for c in "0aZ":
            if tok[i] != c:
                assert not fmt.is_well_formed(tok[:i] + c + tok[i + 1:])


def test_malformed_tokens() -> None:
    tok = fmt.generate()
    bad_tokens = ["", "bst_", tok[:-1], tok + "a", "hf_" + tok[4:], tok.replace("bst_", "BST_"), tok[:10] + "-" + tok[11:]]
    for bad in bad_tokens:
        assert not fmt.is_well_formed(bad)


def test_hash_is_not_the_token() -> None:
    tok = fmt.generate()
    assert fmt.hash_token(tok) != tok and len(fmt.hash_token(tok)) == 64
    assert fmt.hash_token(tok) == fmt.hash_token(tok)

"""Protected refs: branch and tag name patterns (repo settings `protectedBranches`, `protectedTags`).

A protected branch cannot be deleted and its history cannot be rewritten (no force-push, no
super-squash); a protected tag cannot be deleted or moved. A new branch or tag may not differ only
in case from a protected name or from an existing ref of its kind. The same rules hold for git
pushes (gitserver) and API calls (refs, commit), asked here.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from bastion.errors import BadRequest
from bastion.repos.models import Repo

# API name (PUT …/settings) → key in repos.settings (the same string).
SETTINGS = {"branch": "protectedBranches", "tag": "protectedTags"}
MAX_PATTERNS = 50


def normalize_patterns(value: object, field: str) -> list[str]:
    """A settings value: ref name patterns ("main", "release/*"), without duplicates."""
    if (isinstance(value, list) and len(value) <= MAX_PATTERNS
            and all(isinstance(p, str) and 0 < len(p) <= 200 and p.strip() == p for p in value)):
        return list(dict.fromkeys(value))
    raise BadRequest(f"'{field}' must be a list of at most {MAX_PATTERNS} ref name patterns, e.g. [\"main\", "
                     "\"release/*\"]")


def patterns(repo: Repo, kind: str) -> list[str]:
    value = (repo.settings or {}).get(SETTINGS[kind]) or []
    return [p for p in value if isinstance(p, str)] if isinstance(value, list) else []


def is_protected(repo: Repo, kind: str, name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns(repo, kind))


def deletion_refused(repo: Repo, kind: str, name: str) -> str | None:
    if is_protected(repo, kind, name):
        return f"{kind} {name!r} is protected: it cannot be deleted"
    return None


def rewrite_refused(repo: Repo, kind: str, name: str, how: str) -> str | None:
    """Why `name` may not be moved other than forward (`how`: "force-pushes (non-fast-forward)", ...)."""
    if not is_protected(repo, kind, name):
        return None
    if kind == "tag":
        return f"tag {name!r} is protected: it cannot be moved"
    return f"branch {name!r} is protected: {how} are not allowed"


class RefNames:
    """The names of one kind of ref (branches or tags), indexed by every leading part, lower-cased.

    On a case-insensitive file system (a client on Windows or macOS) `Feature` and `feature`, or
    `Dev/x` and `dev`, are one loose ref file or directory: fetching both fails, or one silently
    reads as the other.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self._by_folded: dict[str, set[str]] = {}
        for name in names:
            for prefix in _prefixes(name):
                self._by_folded.setdefault(prefix.lower(), set()).add(prefix)

    def case_twin(self, name: str) -> tuple[str, str] | None:
        """(a leading part of `name`, the known name part it differs from only in case), or None."""
        for prefix in _prefixes(name):
            for other in sorted(self._by_folded.get(prefix.lower(), ())):
                if other != prefix:
                    return prefix, other
        return None


def _prefixes(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def creation_refused(repo: Repo, kind: str, name: str, existing: RefNames) -> str | None:
    """Why a new `kind` ("branch" or "tag") called `name` may not be created next to `existing`, or None.

    Its name must be valid on its own too (GitRepo.validate_ref_name).
    """
    if not is_protected(repo, kind, name):
        folded = name.lower()
        for pattern in patterns(repo, kind):
            if fnmatch.fnmatchcase(folded, pattern.lower()):
                return f"{kind} {name!r} differs only in case from the protected {kind} {pattern!r}"
    if twin := existing.case_twin(name):
        mine, other = twin
        return (f"{kind} {name!r}: {mine!r} differs only in case from {other!r}, already used by a {kind}; "
                "the two would collide on case-insensitive file systems")
    return None

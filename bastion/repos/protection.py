"""Protected refs: branch and tag name patterns (repo settings `protectedBranches`, `protectedTags`).

A protected branch cannot be deleted and its history cannot be rewritten (no force-push, no
super-squash); a protected tag cannot be deleted or moved. The same rules hold for git pushes
(gitserver) and API calls (refs, commit), asked here.
"""

from __future__ import annotations

import fnmatch

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

"""Storage regions: where a repository's bytes live. Each region has its own object store (LFS objects,
Xet xorbs, shards and records), its own git root and its own staging folder (upload staging, scan spool
files); a repository lives in exactly one region, named in its storage key (`eu/<hex>`; a key without
a region lives in `default`).

Configured by a JSON map in BASTION_REGIONS, or a JSON or TOML file named by BASTION_REGIONS_FILE:

    {"default": {},
     "eu": {"store": {"type": "s3", "bucket": "bastion-eu", "endpoint_url": "https://s3.eu.example",
                      "region_name": "eu-west-1", "access_key_id": "...", "secret_access_key": "...",
                      "sse": "aws:kms", "sse_kms_key_id": "...", "addressing_style": "path"},
            "git_root": "/srv/eu/git", "staging_dir": "/srv/eu/staging"}}

A store is `{"type": "local", "path": ...}` (the default) or `{"type": "s3", ...}`
(bastion.storage.s3.S3Config's fields). Unset folders: the data dir for `default` (lfs/, xet/,
repos/, tmp/ as before regions), `regions/<name>/` in the data dir for another region. The region
`default` always exists.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from bastion.errors import BadRequest
from bastion.storage.s3_config import S3Config

DEFAULT_REGION = "default"
# In a storage key ("eu/<32 hex>", at most 64 characters) and in URLs and forms.
REGION_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,23}\Z")


class RegionConfigError(ValueError):
    """BASTION_REGIONS / BASTION_REGIONS_FILE is malformed or asks for something not built."""


@dataclass(frozen=True)
class Region:
    name: str
    s3: S3Config | None = None  # None: local disk
    local_path: Path | None = None  # local store root; None: the data dir
    git_root: Path | None = None  # None: the data dir's repos/ (default) or regions/<name>/repos
    staging_dir: Path | None = None  # None: the data dir's tmp/ (default) or regions/<name>/tmp


def _store(name: str, raw: Any) -> tuple[S3Config | None, Path | None]:
    if raw is None:
        return None, None
    if not isinstance(raw, dict):
        raise RegionConfigError(f"region {name!r}: 'store' must be an object")
    kind = raw.get("type", "local")
    rest = {k: v for k, v in raw.items() if k != "type"}
    if kind == "local":
        unknown = set(rest) - {"path"}
        if unknown:
            raise RegionConfigError(f"region {name!r}: unknown local store settings {sorted(unknown)}")
        return None, Path(rest["path"]).expanduser() if rest.get("path") else None
    if kind == "s3":
        known = {f.name for f in fields(S3Config)}
        unknown = set(rest) - known
        if unknown:
            raise RegionConfigError(f"region {name!r}: unknown S3 settings {sorted(unknown)} "
                                    f"(known: {', '.join(sorted(known))})")
        try:
            return S3Config(**rest), None
        except (TypeError, ValueError) as exc:
            raise RegionConfigError(f"region {name!r}: {exc}") from None
    raise RegionConfigError(f"region {name!r}: store type must be 'local' or 's3', not {kind!r}")


def parse_regions(raw: dict[str, Any]) -> dict[str, Region]:
    if not isinstance(raw, dict):
        raise RegionConfigError("the regions configuration must map region names to settings")
    out: dict[str, Region] = {}
    for name, spec in raw.items():
        if not isinstance(name, str) or not REGION_NAME_RE.match(name):
            raise RegionConfigError(f"region {name!r}: a region name is 2-24 characters of a-z, 0-9 and '-', "
                                    "starting with a letter")
        if not isinstance(spec, dict):
            raise RegionConfigError(f"region {name!r}: settings must be an object")
        unknown = set(spec) - {"store", "git_root", "staging_dir"}
        if unknown:
            raise RegionConfigError(f"region {name!r}: unknown settings {sorted(unknown)} "
                                    "(known: store, git_root, staging_dir)")
        s3, local = _store(name, spec.get("store"))
        git_root = Path(spec["git_root"]).expanduser() if spec.get("git_root") else None
        staging = Path(spec["staging_dir"]).expanduser() if spec.get("staging_dir") else None
        out[name] = Region(name, s3, local, git_root, staging)
    out.setdefault(DEFAULT_REGION, Region(DEFAULT_REGION))
    return out


def load_regions(env: dict[str, str] | None = None) -> dict[str, Region]:
    """The configured regions (BASTION_REGIONS, else BASTION_REGIONS_FILE, else the default on the data dir)."""
    env = dict(os.environ) if env is None else env
    text, source = env.get("BASTION_REGIONS"), "BASTION_REGIONS"
    path = env.get("BASTION_REGIONS_FILE")
    if text and path:
        raise RegionConfigError("set BASTION_REGIONS or BASTION_REGIONS_FILE, not both")
    try:
        if text:
            raw = json.loads(text)
        elif path:
            source = path
            data = Path(path).expanduser().read_bytes()
            raw = tomllib.loads(data.decode()) if path.endswith(".toml") else json.loads(data)
        else:
            return {DEFAULT_REGION: Region(DEFAULT_REGION)}
    except (OSError, ValueError) as exc:
        raise RegionConfigError(f"cannot read the regions configuration from {source}: {exc}") from None
    return parse_regions(raw)


def check_region(value: object, regions: Iterable[str]) -> str | None:
    """The region a new repository asks for (absent or null: None, the owner's default), if this instance
    has it; otherwise a 400 naming the regions there are."""
    if value is None:
        return None
    names = sorted(regions)
    if isinstance(value, str) and value in names:
        return value
    there = (f"this instance has {'one region' if len(names) == 1 else 'the regions'}: "
             f"{', '.join(repr(r) for r in names)}")
    if not isinstance(value, str):
        raise BadRequest(f"'region' must be the name of a storage region: {there}")
    raise BadRequest(f"Unknown storage region {value[:80]!r}: {there}")


def region_of_key(storage_key: str) -> str:
    """The region a repository's storage key names ("eu/<hex>"; a bare key: the default region)."""
    region, sep, _ = storage_key.rpartition("/")
    return region if sep else DEFAULT_REGION


def storage_key_in(region: str, key: str) -> str:
    return key if region == DEFAULT_REGION else f"{region}/{key}"

"""Storage regions: where a region's bytes live (its object store and its git root).

Configured by a JSON map in BASTION_REGIONS, or a JSON or TOML file named by BASTION_REGIONS_FILE:

    {"default": {"store": {"type": "s3", "bucket": "bastion-objects", "endpoint_url": "https://s3.example",
                           "region_name": "eu-west-1", "access_key_id": "...", "secret_access_key": "...",
                           "sse": "aws:kms", "sse_kms_key_id": "...", "addressing_style": "path"},
                 "git_root": "/srv/bastion/git"}}

A store is `{"type": "local", "path": ...}` (the default: the data dir's lfs/ and xet/ folders) or
`{"type": "s3", ...}` (bastion.storage.s3.S3Config's fields). Unset: the one region `default` on the
data dir. This instance has one region, `default`: per-region stores for several regions (with
deduplication kept inside each region) are not built yet, so a map naming another region is refused
at start-up and a repository asking for one is refused (400), never stored and ignored.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from bastion.errors import BadRequest
from bastion.storage.s3 import S3Config

DEFAULT_REGION = "default"
REGIONS = (DEFAULT_REGION,)


class RegionConfigError(ValueError):
    """BASTION_REGIONS / BASTION_REGIONS_FILE is malformed or asks for something not built."""


@dataclass(frozen=True)
class Region:
    name: str
    s3: S3Config | None = None  # None: local disk
    local_path: Path | None = None  # local store root; None: the data dir
    git_root: Path | None = None  # None: the data dir's repos/


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
        if name not in REGIONS:
            raise RegionConfigError(
                f"region {name!r}: this instance has one storage region, {DEFAULT_REGION!r}; storage in "
                "several regions is not built yet, so no other region can be configured")
        if not isinstance(spec, dict):
            raise RegionConfigError(f"region {name!r}: settings must be an object")
        unknown = set(spec) - {"store", "git_root"}
        if unknown:
            raise RegionConfigError(f"region {name!r}: unknown settings {sorted(unknown)} (known: store, git_root)")
        s3, local = _store(name, spec.get("store"))
        git_root = Path(spec["git_root"]).expanduser() if spec.get("git_root") else None
        out[name] = Region(name, s3, local, git_root)
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


def check_region(value: object) -> str:
    """The region a new repository asks for (absent or null: the default), if this instance has it."""
    if value is None or value == DEFAULT_REGION:
        return DEFAULT_REGION
    there = (f"this instance has {'one region' if len(REGIONS) == 1 else 'the regions'}: "
             f"{', '.join(repr(r) for r in REGIONS)} (storage regions are not built yet)")
    if not isinstance(value, str):
        raise BadRequest(f"'region' must be the name of a storage region: {there}")
    raise BadRequest(f"Unknown storage region {value[:80]!r}: {there}")

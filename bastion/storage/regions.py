"""Storage regions this instance has. Until per-region stores are built (docs/architecture.md), one:
`default`, where every byte lives. A request for another region is refused, never stored and ignored."""

from __future__ import annotations

from bastion.errors import BadRequest

DEFAULT_REGION = "default"
REGIONS = (DEFAULT_REGION,)


def check_region(value: object) -> str:
    """The region a new repository asks for (absent or null: the default), if this instance has it."""
    if value is None or value == DEFAULT_REGION:
        return DEFAULT_REGION
    there = (f"this instance has {'one region' if len(REGIONS) == 1 else 'the regions'}: "
             f"{', '.join(repr(r) for r in REGIONS)} (storage regions are not built yet)")
    if not isinstance(value, str):
        raise BadRequest(f"'region' must be the name of a storage region: {there}")
    raise BadRequest(f"Unknown storage region {value[:80]!r}: {there}")

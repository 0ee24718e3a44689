"""Errors of the Xet format layer: a rejected xorb, shard, hash or byte range says exactly why.

They subclass Bastion's domain errors so the CAS routes render them with the status the Xet CAS
API specifies (api.md "Error Cases": 400 for an invalid xorb/shard, 416 for a bad range).
"""

from __future__ import annotations

from bastion.errors import BadRequest, RangeNotSatisfiable


class XetFormatError(BadRequest):
    """Bytes that do not follow the Xet specification, or whose hashes do not recompute."""

    code = "XetFormatError"


class InvalidHash(XetFormatError):
    """A hash string that is not 64 hex characters (api.md: 400 for a malformed hash in a path)."""

    code = "InvalidXetHash"


class XorbFormatError(XetFormatError):
    """An uploaded xorb is malformed, corrupt, mislabelled or over a limit (xorb.md, api.md §3)."""

    code = "InvalidXorb"


class ShardFormatError(XetFormatError):
    """An uploaded shard is malformed or its contents fail verification (shard.md, api.md §4)."""

    code = "InvalidShard"


class XetRangeNotSatisfiable(RangeNotSatisfiable):
    """A reconstruction Range starts at or after the end of the file (api.md §1, 416)."""

    code = "RangeNotSatisfiable"

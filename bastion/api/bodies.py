"""The one JSON body reader for routes: size-limited, nesting-limited, a JSON object, or a clear 400/413."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from bastion.errors import BadRequest, PayloadTooLarge

# No body Bastion reads nests deeper than a few levels. json.loads recurses, and past Python's
# recursion limit (~1000) it raises RecursionError, which is no answer for a client.
MAX_JSON_DEPTH = 64


def parse_json(data: bytes | str, what: str) -> Any:
    """`data` as JSON; a 400 naming `what` if it is not valid JSON, nests deeper than MAX_JSON_DEPTH, or has a
    string that is not Unicode text: JSON may escape a lone surrogate ("\\ud800"), which no UTF-8 encoder
    (the database's, a template's, git's) accepts, so it would fail wherever it is first written."""
    too_deep = BadRequest(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(data)
    except RecursionError:
        raise too_deep from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest(f"{what} is not valid JSON") from None
    level: list[Any] = [value]
    for depth in range(MAX_JSON_DEPTH + 1):
        if any(not _is_text(s) for s in _strings(level)):
            raise BadRequest(f"{what} has a string that is not Unicode text (a lone surrogate such as \\ud800)")
        level = [child for node in level if isinstance(node, (dict, list))
                 for child in (node.values() if isinstance(node, dict) else node)]
        if not level:
            return value
        if depth == MAX_JSON_DEPTH - 1 and any(isinstance(node, (dict, list)) for node in level):
            raise too_deep
    return value


def _strings(level: list[Any]) -> list[str]:
    """The strings of one level of a JSON value: its string values and the keys of its objects."""
    return [s for node in level for s in ((node,) if isinstance(node, str) else node if isinstance(node, dict)
                                          else ())]


def _is_text(s: str) -> bool:
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def json_object(request: Request, limit: int = 1 << 20, *, json_content_type: bool = False) -> dict[str, Any]:
    """The request body as a JSON object.

    `json_content_type` insists on `Content-Type: application/json`, which a cross-site HTML form
    cannot send. (The CSRF defence for everything a session cookie authorizes is the cross-site check
    in bastion.api.auth.refuse_cross_site; this is a second one.)
    """
    if json_content_type and not request.headers.get("content-type", "").startswith("application/json"):
        raise BadRequest("Send a JSON body (Content-Type: application/json)")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body larger than {limit} bytes")
    body = await request.body()
    if len(body) > limit:
        raise PayloadTooLarge(f"Request body larger than {limit} bytes")
    data = parse_json(body or b"{}", "Request body")
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object")
    return data

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
    """`data` as JSON; a 400 naming `what` if it is not valid JSON or nests deeper than MAX_JSON_DEPTH."""
    too_deep = BadRequest(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(data)
    except RecursionError:
        raise too_deep from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest(f"{what} is not valid JSON") from None
    level: list[Any] = [value]
    for _ in range(MAX_JSON_DEPTH):
        level = [child for node in level if isinstance(node, (dict, list))
                 for child in (node.values() if isinstance(node, dict) else node)]
        if not level:
            return value
    if any(isinstance(node, (dict, list)) for node in level):
        raise too_deep
    return value


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

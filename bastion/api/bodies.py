"""The one JSON body reader for routes: size-limited, a JSON object, or a clear 400/413."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from bastion.errors import BadRequest, PayloadTooLarge


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
    try:
        data = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("Request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object")
    return data

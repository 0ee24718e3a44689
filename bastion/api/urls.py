"""Absolute URLs on the endpoint host (the client rejects others) and Link-header pagination."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request

from bastion.errors import BadRequest

# The path before a repo id on the web and resolve URLs, per repo type (the Hub's).
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def base_url(request: Request) -> str:
    configured = request.app.state.hub.settings.public_url
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/")


def repo_url(request: Request, repo_type: str, repo_id: str) -> str:
    return f"{base_url(request)}/{URL_PREFIX[repo_type]}{repo_id}"


def next_link(request: Request, **overrides: object) -> str:
    """`Link: <absolute URL>; rel="next"` carrying every original query parameter plus `overrides`."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in overrides]
    params += [(k, str(v)) for k, v in overrides.items()]
    url = f"{base_url(request)}{request.url.path}?{urlencode(params)}"
    return f'<{url}>; rel="next"'


def int_param(request: Request, key: str, default: int, lo: int, hi: int) -> int:
    """The integer query parameter `key`, `default` when absent; 400 outside [lo, hi]."""
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"'{key}' must be an integer") from None
    if not lo <= value <= hi:
        raise BadRequest(f"'{key}' must be between {lo} and {hi}")
    return value

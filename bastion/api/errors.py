"""The one HTTP error helper: domain errors rendered in the Hugging Face Hub's format.

The huggingface_hub client dispatches on X-Error-Code and shows X-Error-Message plus the
JSON body's "error", so both are always sent.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bastion.errors import BastionError, GatedRepo, RepoMoved, RepoNotFound

log = logging.getLogger("bastion.api")


def _header_safe(text: str) -> str:
    return " ".join(text.encode("latin-1", "replace").decode("latin-1").split())[:1000]


def error_response(status: int, code: str | None, message: str, headers: dict[str, str] | None = None,
                   extra: dict[str, object] | None = None) -> JSONResponse:
    hdrs = dict(headers or {})
    if code:
        hdrs["X-Error-Code"] = code
    hdrs["X-Error-Message"] = _header_safe(message)
    return JSONResponse({**(extra or {}), "error": message}, status_code=status, headers=hdrs)


async def _bastion_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BastionError)
    message = exc.message
    if isinstance(exc, RepoMoved):
        return _moved(request, exc)
    if isinstance(exc, GatedRepo):
        from bastion.api.urls import base_url

        message = exc.text(base_url(request))  # names the repo's page, where access is asked for
    extra = exc.extra
    if "/info/lfs/" in request.url.path:  # the git-lfs client shows an error's "message" (the LFS API's format)
        extra = {**(extra or {}), "message": message}
    return error_response(exc.status, exc.code, message, exc.headers, extra)


def _moved(request: Request, exc: RepoMoved) -> JSONResponse:
    """307 to the same path with the repo's current id in place of the old one (a relative Location,
    as the Hub sends, so the client follows it on the same host), query string kept."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if raw else request.url.path
    old = re.compile(r"/" + re.escape(exc.old_id) + r"(?=/|$)", re.IGNORECASE)
    location = old.sub(lambda _: f"/{exc.new_id}", path.split("?", 1)[0], count=1)
    if request.url.query:
        location += f"?{request.url.query}"
    return error_response(307, None, exc.message, {"Location": location})


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return error_response(400, "BadRequest", "Invalid request: " + "; ".join(parts))


# Every repo lives under a user or an org, so a repo id without a namespace (`gpt2`) matches no route.
# The Hub answers such an id as a missing repo (404 RepoNotFound): the client decides `repo_exists`,
# `file_exists` and `revision_exists` on that code, and a bare 404 makes them raise instead. Such a path can
# also read as another route's `{ns}/{name}` with a method it lacks (DELETE /api/models/gpt2/like): that 405
# is the same missing repo.
_REPO_VERBS = ("revision|tree|commits|commit|refs|paths-info|preupload|branch|tag|settings|super-squash|auth-check|"
               "lfs-files|discussions|scan|xet-read-token|xet-write-token|resource-group|user-access-request|treesize|"
               "like|likers|duplicate")
_NAMESPACELESS_REPO = re.compile(
    rf"^/api/(?:models|datasets|spaces)/[^/]+(?:/(?:{_REPO_VERBS})(?:/.*)?)?$"
    r"|^/(?:(?:datasets|spaces)/)?[^/]+/(?:resolve|blob|raw|tree|commit)/.*$")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in (404, 405) and _NAMESPACELESS_REPO.match(request.url.path):
        missing = RepoNotFound()
        return error_response(missing.status, missing.code, missing.message)
    return error_response(exc.status_code, None, str(exc.detail), dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "InternalError", "Internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(BastionError, _bastion_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

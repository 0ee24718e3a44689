"""The strict-authz guard: a successful response without exactly one authz check is refused."""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from bastion.app import create_app
from bastion.authz import Permission, Principal, permission, require
from bastion.config import Settings


def test_route_without_check_or_with_two_checks_fails_in_strict_mode(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, strict_authz=True))

    @app.get("/unchecked")
    @permission(Permission.PUBLIC)
    def unchecked() -> JSONResponse:
        return JSONResponse({"leak": True})

    @app.get("/twice")
    @permission(Permission.PUBLIC)
    def twice() -> JSONResponse:
        require(Principal.anonymous(), Permission.PUBLIC)
        require(Principal.anonymous(), Permission.PUBLIC)
        return JSONResponse({"ok": True})

    @app.get("/undeclared")
    @permission(Permission.PUBLIC)
    def undeclared() -> JSONResponse:
        require(Principal.anonymous(), Permission.REPO_LIST)  # allowed, but not the declared check
        return JSONResponse({"leak": True})

    @app.get("/either/{which}")
    @permission(Permission.PUBLIC, Permission.REPO_LIST)
    def either(which: str) -> JSONResponse:
        require(Principal.anonymous(), Permission.PUBLIC if which == "a" else Permission.REPO_LIST)
        return JSONResponse({"ok": True})

    # Put the probes first: the web UI's catch-all pages would otherwise answer these paths.
    for _ in range(4):
        app.router.routes.insert(0, app.router.routes.pop())

    with TestClient(app) as client:
        assert client.get("/api/health").status_code == 200
        bad = client.get("/unchecked")
        assert bad.status_code == 500 and b"leak" not in bad.content
        assert client.get("/twice").status_code == 500
        bad = client.get("/undeclared")
        assert bad.status_code == 500 and b"leak" not in bad.content and b"repo.list not declared" in bad.content
        assert client.get("/either/a").status_code == 200 and client.get("/either/b").status_code == 200

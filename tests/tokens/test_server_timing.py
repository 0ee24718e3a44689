"""`BASTION_SERVER_TIMING`: the time spent in authentication and authorization, in a Server-Timing header."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from bastion.accounts import service as accounts
from bastion.app import create_app
from bastion.config import Settings
from bastion.db import transaction
from bastion.tokens import service as tokens


def _app_with_token(tmp_path: Path, server_timing: bool) -> tuple[TestClient, str]:
    app = create_app(Settings(data_dir=tmp_path, scanners=[], strict_authz=True, server_timing=server_timing))
    with transaction(app.state.hub.sessions) as s:
        user = accounts.create_user(s, "timed", "timed@example.com")
        secret = tokens.create_token(s, user, "t", role="write").secret
    return TestClient(app), secret


def _figures(header: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"(\w+);dur=([0-9.]+)", header)}


def test_server_timing_reports_auth_and_authz_durations(tmp_path: Path) -> None:
    client, secret = _app_with_token(tmp_path, server_timing=True)
    with client:
        r = client.get("/api/whoami-v2", headers={"authorization": f"Bearer {secret}"})
        assert r.status_code == 200
        figures = _figures(r.headers["server-timing"])
        assert set(figures) == {"auth", "authz"}
        assert all(0 < ms < 10_000 for ms in figures.values()), figures
        # A bad token is timed too: the cost of turning it away is part of authentication.
        bad = client.get("/api/whoami-v2", headers={"authorization": "Bearer bst_" + "x" * 36})
        assert bad.status_code == 401 and "auth" in _figures(bad.headers["server-timing"])


def test_server_timing_is_off_by_default(tmp_path: Path) -> None:
    client, secret = _app_with_token(tmp_path, server_timing=False)
    with client:
        r = client.get("/api/whoami-v2", headers={"authorization": f"Bearer {secret}"})
        assert r.status_code == 200 and "server-timing" not in r.headers

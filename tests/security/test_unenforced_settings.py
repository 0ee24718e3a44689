"""Finding 12, the region part (issue 14): a control Bastion does not enforce is refused, never accepted.

`region` on repo creation was accepted and silently dropped. This test server has one storage region,
`default` (no BASTION_REGIONS): naming another is a 400 that names the regions there are (and creates nothing);
naming `default`, or none, is fine (tests/storage cover instances with several regions). The same call's other fields Bastion cannot honour (a Space's hardware, secrets, variables…) are refused
the same way, and the Space's `sdk`, which it can keep, is kept.
"""

from __future__ import annotations

import secrets

import httpx
import pytest
from huggingface_hub.errors import HfHubHTTPError

from tests.conftest import BastionServer, hf_api


def test_an_unknown_region_is_refused_and_creates_nothing(server: BastionServer) -> None:
    name, token = server.create_user()
    api = hf_api(server, token)
    for region in ("eu", "us"):
        with pytest.raises(HfHubHTTPError) as refused:
            api.create_repo(f"{name}/in-{region}", region=region)  # type: ignore[arg-type]
        response = refused.value.response
        assert response.status_code == 400, response.text
        assert response.headers["x-error-message"] == (
            f"Unknown storage region '{region}': this instance has one region: 'default'")
        assert not api.repo_exists(f"{name}/in-{region}")
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=60) as client:
        odd = client.post("/api/repos/create", json={"name": "odd", "region": ["eu"]})
        assert odd.status_code == 400 and "must be the name of a storage region" in odd.headers["x-error-message"]
        for region in (None, "default"):
            repo = f"r{secrets.token_hex(3)}"
            assert client.post("/api/repos/create", json={"name": repo, "region": region}).status_code == 200
    assert api.create_repo(f"{name}/plain") == f"{server.url}/{name}/plain"


def test_space_settings_bastion_cannot_run_are_refused_and_its_sdk_is_kept(server: BastionServer) -> None:
    name, token = server.create_user()
    api = hf_api(server, token)
    for extra in ({"space_hardware": "cpu-basic"}, {"space_secrets": [{"key": "API_KEY", "value": "s3cr3t"}]},
                  {"space_variables": [{"key": "MODE", "value": "x"}]}, {"space_sleep_time": 300}):
        with pytest.raises(HfHubHTTPError) as refused:
            api.create_repo(f"{name}/space", repo_type="space", space_sdk="gradio", **extra)  # type: ignore[arg-type]
        assert refused.value.response.status_code == 400
        assert "Bastion stores Spaces but does not run them" in refused.value.response.headers["x-error-message"]
        assert not api.repo_exists(f"{name}/space", repo_type="space")
    api.create_repo(f"{name}/space", repo_type="space", space_sdk="gradio")
    assert api.space_info(f"{name}/space").sdk == "gradio"
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=60) as client:
        resp = client.post("/api/repos/create", json={"name": "m", "type": "model", "sdk": "gradio"})
        assert resp.status_code == 400 and resp.headers["x-error-message"] == "'sdk' applies only to Spaces"
        resp = client.post("/api/repos/create", json={"name": "s", "type": "space", "sdk": "flash"})
        assert resp.status_code == 400 and "Invalid 'sdk'" in resp.headers["x-error-message"]

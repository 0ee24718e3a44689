"""Organization scanning policy: block unsafe files in every org repo; org admins hear of findings."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from huggingface_hub.errors import HfHubHTTPError

from tests.accounts.fixtures import MailSink
from tests.conftest import BastionServer, ClamdServer, hf_api
from tests.scanning.test_pipeline import BENIGN_PICKLE, MALICIOUS_PICKLE


@pytest.fixture(scope="module")
def org_server(tmp_path_factory: pytest.TempPathFactory, clamd: ClamdServer,
               mail_sink: MailSink) -> Iterator[BastionServer]:
    server = BastionServer(tmp_path_factory.mktemp("orgscan"), env={
        "BASTION_CLAMD_ADDRESS": clamd.address, "BASTION_SMTP_URL": f"smtp://127.0.0.1:{mail_sink.port}"}).start()
    yield server
    server.stop()


def test_org_admins_are_told_and_org_policy_blocks(org_server: BastionServer, mail_sink: MailSink) -> None:
    server = org_server
    admin, admin_token = server.create_user()
    writer, writer_token = server.create_user()
    org = f"org{admin[1:]}"
    server.admin("create-org", org, "--owner", admin, "--fullname", "Scan Org")
    server.admin("add-member", org, writer, "--role", "write")
    api = hf_api(server, writer_token)
    api.create_repo(f"{org}/model")
    api.upload_file(path_or_fileobj=MALICIOUS_PICKLE, path_in_repo="model.pkl", repo_id=f"{org}/model")
    mail = mail_sink.wait_for(f"{admin}@example.com", f"Unsafe file in {org}/model")
    assert "model.pkl" in str(mail)

    settings = f"{server.url}/api/organizations/{org}/settings"
    denied = httpx.put(settings, json={"blockUnsafeFiles": True}, headers={"authorization": f"Bearer {writer_token}"})
    assert denied.status_code == 403  # only org admins change security settings
    resp = httpx.put(settings, json={"blockUnsafeFiles": True}, headers={"authorization": f"Bearer {admin_token}"})
    assert resp.status_code == 200 and resp.json()["blockUnsafeFiles"] is True
    api.create_repo(f"{org}/other")
    head = api.model_info(f"{org}/other").sha
    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_file(path_or_fileobj=MALICIOUS_PICKLE, path_in_repo="evil.pkl", repo_id=f"{org}/other")
    assert exc.value.response.status_code == 403 and "evil.pkl is unsafe" in exc.value.response.headers[
        "x-error-message"]
    assert api.model_info(f"{org}/other").sha == head
    api.upload_file(path_or_fileobj=BENIGN_PICKLE, path_in_repo="ok.pkl", repo_id=f"{org}/other")
    # The policy is the org's: the writer's own namespace is not affected.
    api.create_repo(f"{writer}/mine")
    api.upload_file(path_or_fileobj=MALICIOUS_PICKLE, path_in_repo="evil.pkl", repo_id=f"{writer}/mine")

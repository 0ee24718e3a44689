"""Accounts over HTTP against a real server: no enumeration, lockout that spares tokens, the CLI's
--password-stdin, sign-up modes, the session principal in authz, and the repository pages.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path

import httpx

from tests.accounts.fixtures import PASSWORD, MailSink, create_password_user, csrf_of, http_login, link_in
from tests.conftest import BastionServer, hf_api

HTML = {"accept": "text/html"}


def _login_attempt(server: BastionServer, login: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, headers=HTML, timeout=30) as client:
        token = csrf_of(client.get("/login").text)
        return client.post("/login", data={"csrf_token": token, "login": login, "password": password})


def _normalised(resp: httpx.Response, login: str) -> str:
    text = re.sub(r'name="csrf_token" value="[^"]+"', "", resp.text)
    return text.replace(login, "LOGIN")


def test_unknown_user_and_wrong_password_get_the_same_answer(web_server: BastionServer) -> None:
    name, _ = create_password_user(web_server)
    unknown = f"ghost{secrets.token_hex(3)}"
    wrong = _login_attempt(web_server, name, "wrong-password-123")
    missing = _login_attempt(web_server, unknown, "wrong-password-123")
    assert wrong.status_code == missing.status_code == 400
    assert _normalised(wrong, name) == _normalised(missing, unknown)
    assert "Incorrect username or password." in wrong.text


def test_lockout_blocks_web_sign_in_but_not_api_tokens(web_server: BastionServer) -> None:
    name, token = create_password_user(web_server)
    for _ in range(10):
        assert _login_attempt(web_server, name, "wrong-password-123").status_code == 400
    locked = _login_attempt(web_server, name, PASSWORD)
    assert locked.status_code == 429
    assert re.search(r"Too many attempts\. Try again in 1[45] minutes\.", locked.text)
    # The attacker locked the browser door only: the owner's token keeps working.
    who = httpx.get(f"{web_server.url}/api/whoami-v2", headers={"authorization": f"Bearer {token}"})
    assert who.status_code == 200 and who.json()["name"] == name


def test_cli_password_stdin_makes_a_verified_account_that_can_sign_in(web_server: BastionServer) -> None:
    name, _ = create_password_user(web_server)
    client = http_login(web_server, name)
    who = client.get("/api/whoami-v2").json()  # a browser session is a principal for read APIs too
    assert who["name"] == name and who["emailVerified"] is True
    # A session cannot do what only tokens may: create repositories through the API.
    denied = client.post("/api/repos/create", json={"name": "nope"})
    assert denied.status_code == 403 and "session authentication cannot grant" in denied.headers["x-error-message"]
    # Weak passwords are refused by the CLI too.
    weak = subprocess.run([sys.executable, "-m", "bastion.cli", "admin", "create-user", "weakling", "--email",
                           "w@example.com", "--password-stdin"], env=web_server.env, input="password123\n",
                          capture_output=True, text=True, timeout=120)
    assert weak.returncode != 0 and "commonly used" in weak.stderr


def test_signup_closed_by_default(tmp_path: Path) -> None:
    server = BastionServer(tmp_path).start()
    try:
        with httpx.Client(base_url=server.url, headers=HTML) as client:
            page = client.get("/join")
            assert "Sign-up is closed" in page.text
            resp = client.post("/join", data={"csrf_token": csrf_of(client.get("/login").text), "name": "eve",
                                              "email": "eve@example.com", "password": PASSWORD,
                                              "password_confirm": PASSWORD})
            assert resp.status_code == 403 and "Sign-up is closed" in resp.text
    finally:
        server.stop()


def test_password_reset_by_mail(web_server: BastionServer, mail_sink: MailSink) -> None:
    name, _ = create_password_user(web_server)
    email = f"{name}@example.com"
    before = mail_sink.count()
    with httpx.Client(base_url=web_server.url, headers=HTML, timeout=30) as client:
        for address in (email, f"nobody-{name}@example.com"):
            resp = client.post("/login/forgot", data={"csrf_token": csrf_of(client.get("/login/forgot").text),
                                                      "email": address})
            assert resp.status_code == 200 and 'id="reset-sent"' in resp.text
        link = link_in(mail_sink.wait_for(email, "Reset your password", after=before))
        page = client.get(link)
        assert page.status_code == 200
        resp = client.post("/login/reset", data={"csrf_token": csrf_of(page.text), "token": link.split("token=")[1],
                                                 "password": "a-fresh-password-9", "password_confirm":
                                                 "a-fresh-password-9"})
        assert resp.status_code == 303 and resp.headers["location"] == "/login?m=password-reset"
        assert client.get(link).status_code == 403  # the link died with the old password
    assert mail_sink.subjects_to(f"nobody-{name}@example.com") == []
    mail_sink.wait_for(email, "Your password was reset")
    http_login(web_server, name, "a-fresh-password-9")


def test_repository_pages_and_private_means_invisible(web_server: BastionServer) -> None:
    owner, token = create_password_user(web_server)
    api = hf_api(web_server, token)
    api.create_repo(f"{owner}/public-model")
    readme = b"---\nlicense: mit\n---\n# Hello <script>alert(1)</script>\n\n[x](javascript:alert(1)) **bold**\n"
    api.upload_file(path_or_fileobj=readme, path_in_repo="README.md", repo_id=f"{owner}/public-model")
    api.upload_file(path_or_fileobj=b"a" * 2048, path_in_repo="data/blob.txt", repo_id=f"{owner}/public-model")
    api.create_branch(f"{owner}/public-model", branch="dev")
    api.create_repo(f"{owner}/hidden", private=True)

    anon = httpx.Client(base_url=web_server.url, headers=HTML, timeout=30)
    page = anon.get(f"/{owner}/public-model")
    assert page.status_code == 200
    readme_html = page.text.split('id="readme">')[1].split("</section>")[0]
    assert "<strong>bold</strong>" in readme_html and "<script" not in readme_html
    assert "href=\"javascript:" not in readme_html and "license: mit" not in readme_html
    assert ">data/</a>" in page.text and "dev" in page.text
    assert "Content-Security-Policy" in page.headers or "content-security-policy" in page.headers
    tree = anon.get(f"/{owner}/public-model/tree/main/data")
    assert "2.0 kB" in tree.text
    blob = anon.get(f"/{owner}/public-model/blob/main/data/blob.txt")
    assert blob.status_code == 200 and "a" * 100 in blob.text
    commits = anon.get(f"/{owner}/public-model/commits/dev")
    assert commits.status_code == 200 and commits.text.count("<li>") >= 3

    # Private: the same 404 page as a repository that does not exist, for anonymous and other users.
    missing = anon.get(f"/{owner}/does-not-exist")
    other_name, _ = create_password_user(web_server)
    other = http_login(web_server, other_name)
    for client in (anon, other):
        for path in ("", "/tree/main", "/commits/main", "/blob/main/.gitattributes"):
            resp = client.get(f"/{owner}/hidden{path}")
            assert resp.status_code == 404 and "Repository not found" in resp.text
    assert missing.status_code == 404
    hidden = anon.get(f"/{owner}/hidden")
    assert _normalised(hidden, "hidden") == _normalised(missing, "does-not-exist")
    assert "hidden" not in anon.get(f"/{owner}").text
    # The owner's browser session sees it, like the owner's token does.
    me = http_login(web_server, owner)
    assert me.get(f"/{owner}/hidden").status_code == 200
    assert "hidden" in me.get(f"/{owner}").text
    # Not a browser: git and API clients get no HTML from the page routes.
    assert httpx.get(f"{web_server.url}/{owner}/public-model").status_code == 404


def test_additional_email_is_verified_separately_then_made_primary(web_server: BastionServer,
                                                                    mail_sink: MailSink) -> None:
    name, token = create_password_user(web_server)
    old, new = f"{name}@example.com", f"{name}.work@example.com"
    web = http_login(web_server, name)
    page = web.get("/settings/emails").text
    resp = web.post("/settings/emails", data={"csrf_token": csrf_of(page), "email": new})
    assert resp.status_code == 303
    page = web.get("/settings/emails").text
    row = page.split(new)[1].split("</tr>")[0]
    assert "unverified" in row and "/primary" not in row  # an unverified address cannot become primary
    new_id = re.search(r"/settings/emails/(\d+)/", row).group(1)  # type: ignore[union-attr]
    forged = web.post(f"/settings/emails/{new_id}/primary", data={"csrf_token": csrf_of(page)})
    assert forged.status_code == 400
    link = link_in(mail_sink.wait_for(new, "Verify"))
    assert web.get(link).status_code in (200, 303)
    page = web.get("/settings/emails").text
    assert "unverified" not in page.split(new)[1].split("</tr>")[0]
    assert web.post(f"/settings/emails/{new_id}/primary", data={"csrf_token": csrf_of(page)}).status_code == 303
    mail_sink.wait_for(old, "primary e-mail address changed")
    assert hf_api(web_server, token).whoami()["email"] == new
    page = web.get("/settings/emails").text
    old_id = re.search(r"/settings/emails/(\d+)/delete", page.split(old)[1]).group(1)  # type: ignore[union-attr]
    assert web.post(f"/settings/emails/{old_id}/delete", data={"csrf_token": csrf_of(page)}).status_code == 303
    assert old not in web.get("/settings/emails").text

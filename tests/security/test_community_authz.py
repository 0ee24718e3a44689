"""The Community tab's authorization, driven from outside: a private repo's discussions are invisible (every
route answers like a missing repo), only writers merge, only a pull request's author (or a writer) commits
to it, only authors and writers moderate, hidden comments' text is never returned, a gated repo's diff needs
its gate, and org policies (2FA, token policy) bind commenting like any other write."""

from __future__ import annotations

import re
import secrets
from typing import Any

import httpx
import pytest
from huggingface_hub import CommitOperationAdd
from huggingface_hub.errors import HfHubHTTPError

from tests.conftest import BastionServer, hf_api

NDJSON = (b'{"key": "header", "value": {"summary": "x"}}\n'
          b'{"key": "file", "value": {"path": "a.txt", "content": "eA==", "encoding": "base64"}}\n')


def _routes(repo: str) -> list[tuple[str, str, dict[str, Any]]]:
    api, html = f"/api/models/{repo}/discussions", {"headers": {"accept": "text/html"}}
    out: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", api, {}), ("POST", api, {"json": {"title": "Hello there"}}),
        ("POST", api, {"json": {"title": "A pull request", "pullRequest": True}}),
        ("GET", f"/{repo}/discussions", html),
        ("POST", f"/api/models/{repo}/commit/main?create_pr=1",
         {"content": NDJSON, "headers": {"content-type": "application/x-ndjson"}}),
        ("POST", f"/api/models/{repo}/commit/refs%2Fpr%2F2",
         {"content": NDJSON, "headers": {"content-type": "application/x-ndjson"}})]
    for num in (1, 2, 99):
        out += [
            ("GET", f"{api}/{num}", {}), ("GET", f"{api}/{num}?diff=1", {}),
            ("POST", f"{api}/{num}/comment", {"json": {"comment": "hi"}}),
            ("POST", f"{api}/{num}/status", {"json": {"status": "closed"}}),
            ("POST", f"{api}/{num}/title", {"json": {"title": "Renamed"}}),
            ("POST", f"{api}/{num}/merge", {}),
            ("POST", f"{api}/{num}/comment/{'0' * 23}1/edit", {"json": {"content": "x"}}),
            ("POST", f"{api}/{num}/comment/{'0' * 23}1/hide", {}),
            ("GET", f"/{repo}/discussions/{num}", html),
            ("POST", f"/{repo}/discussions/{num}/comment", {"data": {"comment": "hi"}, **html})]
    return out


def _answer(resp: httpx.Response) -> tuple[int, str | None, str | None, str]:
    body = re.sub(r"[0-9a-f]{64}", "…", resp.text)
    return resp.status_code, resp.headers.get("x-error-code"), resp.headers.get("x-error-message"), body


def test_private_repo_discussions_answer_like_a_missing_repo(server: BastionServer) -> None:
    owner, token = server.create_user()
    _outsider, outsider_token = server.create_user()
    _reader, read_only = server.create_user(role="read")
    api = hf_api(server, token)
    api.create_repo(f"{owner}/secret", private=True)
    d = api.create_discussion(f"{owner}/secret", "Internal matters", description="the launch date is friday")
    pr = api.create_commit(f"{owner}/secret", [CommitOperationAdd("plan.txt", b"friday\n")], commit_message="Plan",
                           create_pr=True)
    assert (d.num, pr.pr_num) == (1, 2)
    hidden, missing = _routes(f"{owner}/secret"), _routes(f"{owner}/missing-{secrets.token_hex(3)}")
    differences = []
    for who, tok in (("anonymous", None), ("outsider", outsider_token), ("outsider's read token", read_only)):
        headers = {"authorization": f"Bearer {tok}"} if tok else {}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            for (method, path, kwargs), (_, other, other_kwargs) in zip(hidden, missing, strict=True):
                seen = _answer(client.request(method, path, **kwargs))
                expected = _answer(client.request(method, other, **other_kwargs))
                assert seen[0] in (401, 404), (who, method, path, seen[:3])
                if seen[:3] != expected[:3] or (seen[3] != expected[3] and "html" in str(kwargs)):
                    differences.append((who, method, path, seen[:3], expected[:3]))
                assert "friday" not in seen[3] and "Internal matters" not in seen[3]
    assert differences == []
    details = api.get_discussion_details(f"{owner}/secret", 1)
    assert [e.type for e in details.events] == ["comment"]  # nothing above was written


def test_only_writers_merge_and_only_authors_push_to_their_pull_request(server: BastionServer) -> None:
    owner, token = server.create_user()
    author, author_token = server.create_user()
    other, other_token = server.create_user()
    repo = f"{owner}/public"
    hf_api(server, token).create_repo(repo)
    pr = hf_api(server, author_token).create_commit(repo, [CommitOperationAdd("a.txt", b"a\n")],
                                                    commit_message="Add a", create_pr=True)
    stranger = hf_api(server, other_token)
    refusals = {
        "merge": lambda: stranger.merge_pull_request(repo, pr.pr_num),
        "author merges": lambda: hf_api(server, author_token).merge_pull_request(repo, pr.pr_num),
        "push to another's PR": lambda: stranger.upload_file(path_or_fileobj=b"evil\n", path_in_repo="a.txt",
                                                             repo_id=repo, revision=f"refs/pr/{pr.pr_num}"),
        "close another's PR": lambda: stranger.change_discussion_status(repo, pr.pr_num, "closed"),
        "rename another's PR": lambda: stranger.rename_discussion(repo, pr.pr_num, "Hijacked"),
        "edit another's comment": lambda: stranger.edit_discussion_comment(
            repo, pr.pr_num, hf_api(server, token).get_discussion_details(repo, pr.pr_num).events[0].id, "x"),
        "push to main": lambda: stranger.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id=repo),
    }
    for what, attempt in refusals.items():
        with pytest.raises(HfHubHTTPError) as exc:
            attempt()
        assert exc.value.response.status_code == 403, what
    r = httpx.post(f"{server.url}/api/models/{repo}/commit/refs%2Fpr%2F77", content=NDJSON,  # a ref nobody owns
                   headers={"authorization": f"Bearer {other_token}", "content-type": "application/x-ndjson"})
    assert r.status_code == 403
    # A read-only token opens nothing, even on a public repo.
    _, read_only = server.create_user(role="read")
    r = httpx.post(f"{server.url}/api/models/{repo}/discussions", json={"title": "From a read token"},
                   headers={"authorization": f"Bearer {read_only}"})
    assert r.status_code == 403
    details = hf_api(server, token).get_discussion_details(repo, pr.pr_num)
    assert details.status == "open" and details.title == "Add a" and len(details.events) == 2  # comment, commit
    assert "evil" not in (details.diff or "")
    # The owner merges; the author may close their own discussion.
    hf_api(server, token).merge_pull_request(repo, pr.pr_num)
    own = hf_api(server, author_token).create_discussion(repo, "My question")
    assert hf_api(server, author_token).change_discussion_status(repo, own.num, "closed").new_status == "closed"
    assert other != author


def test_hidden_comments_content_is_never_returned(server: BastionServer) -> None:
    owner, token = server.create_user()
    _author, author_token = server.create_user()
    repo = f"{owner}/hide"
    hf_api(server, token).create_repo(repo)
    d = hf_api(server, author_token).create_discussion(repo, "Leaked by accident")
    leaked = "my password is hunter2-" + secrets.token_hex(4)
    c = hf_api(server, author_token).comment_discussion(repo, d.num, leaked)
    hf_api(server, author_token).edit_discussion_comment(repo, d.num, c.id, leaked + " (edited)")
    with pytest.warns(UserWarning):
        hf_api(server, token).hide_discussion_comment(repo, d.num, c.id)
    for url in (f"/api/models/{repo}/discussions/{d.num}", f"/api/models/{repo}/discussions",
                f"/{repo}/discussions/{d.num}"):
        for tok in (None, token, author_token):
            headers = {"authorization": f"Bearer {tok}"} if tok else {}
            text = httpx.get(f"{server.url}{url}", headers={**headers, "accept": "text/html" if url[1] != "a"
                                                            else "application/json"}).text
            assert "hunter2" not in text, url
    event = [e for e in hf_api(server, token).get_discussion_details(repo, d.num).events if e.id == c.id][0]
    assert event.hidden and event.edit_history == [] and "hunter2" not in event.content
    with pytest.raises(HfHubHTTPError):  # hiding is final: it cannot be edited back in
        hf_api(server, author_token).edit_discussion_comment(repo, d.num, c.id, "restored")


def test_gated_repo_diff_needs_the_gate(server: BastionServer) -> None:
    owner, token = server.create_user()
    reader, reader_token = server.create_user()
    repo = f"{owner}/gated"
    api = hf_api(server, token)
    api.create_repo(repo)
    api.update_repo_settings(repo, gated="manual")
    pr = api.create_commit(repo, [CommitOperationAdd("weights.txt", b"gated contents 42\n")],
                           commit_message="Weights", create_pr=True)
    mine = api.get_discussion_details(repo, pr.pr_num)
    assert "gated contents 42" in (mine.diff or "")
    theirs = hf_api(server, reader_token).get_discussion_details(repo, pr.pr_num)
    assert theirs.diff is None and theirs.is_pull_request
    page = httpx.get(f"{server.url}/{repo}/discussions/{pr.pr_num}", headers={"accept": "text/html"})
    assert page.status_code == 200 and "gated contents 42" not in page.text and "weights.txt" in page.text
    assert reader


def test_org_policies_bind_commenting_and_pull_requests(server: BastionServer) -> None:
    admin, admin_token = server.create_user()
    member, member_token = server.create_user()
    outsider, outsider_token = server.create_user()
    org = f"org{secrets.token_hex(3)}"
    server.admin("create-org", org, "--owner", admin)
    server.admin("add-member", org, member, "--role", "read")
    repo = f"{org}/open"
    hf_api(server, admin_token).create_repo(repo)
    d = hf_api(server, admin_token).create_discussion(repo, "Feedback wanted")
    # Under "fine-grained tokens only", a classic token comments nowhere in the org; a discussion.write one does.
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {admin_token}"}, timeout=30) as c:
        assert c.put(f"/api/organizations/{org}/settings", json={"tokenPolicy": "fine_grained"}).status_code == 200
    with pytest.raises(HfHubHTTPError) as exc:
        hf_api(server, outsider_token).comment_discussion(repo, d.num, "classic token")
    assert exc.value.response.status_code == 403 and "fine-grained" in str(exc.value)
    fine = server.admin("create-token", outsider, "--name", "fg", "--role", "fineGrained", "--scope",
                      f"model:{repo}=discussion.write").stdout.strip()
    hf_api(server, fine).comment_discussion(repo, d.num, "fine-grained token")
    with pytest.raises(HfHubHTTPError) as exc:  # discussion.write does not write branches
        hf_api(server, fine).upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id=repo)
    assert exc.value.response.status_code == 403
    # A member without a second factor is held to the org's 2FA rule, told why; an outsider is not a member.
    admin_fg = server.admin("create-token", admin, "--name", "afg", "--role", "fineGrained", "--scope",
                          f"org:{org}=org.write").stdout.strip()
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {admin_fg}"}, timeout=30) as c:
        assert c.put(f"/api/organizations/{org}/settings", json={"tokenPolicy": "allow",
                                                                 "require2fa": True}).status_code == 200
    with pytest.raises(HfHubHTTPError) as exc:
        hf_api(server, member_token).comment_discussion(repo, d.num, "from a member")
    assert exc.value.response.status_code == 403 and "two-factor" in str(exc.value)
    with pytest.raises(HfHubHTTPError) as exc:
        hf_api(server, member_token).create_commit(repo, [CommitOperationAdd("m.txt", b"m\n")],
                                                   commit_message="m", create_pr=True)
    assert exc.value.response.status_code == 403
    hf_api(server, outsider_token).comment_discussion(repo, d.num, "from outside")
    events = hf_api(server, fine).get_discussion_details(repo, d.num).events
    assert [e.content for e in events if e.type == "comment"][1:] == ["fine-grained token", "from outside"]

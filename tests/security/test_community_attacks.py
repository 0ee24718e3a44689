"""The Community tab attacked from outside: writes in a thread that were free of any budget (edits piling up
a comment's history, renames, status flips), text that is not Unicode or carries control characters (500s,
NUL on PostgreSQL, a title that silently drops the owner's mail), comment ids past the id column, mail about
a private repo to someone who can no longer read it, and a pull request's diff whose cost grew with the pull
request. (tests/security/test_community_authz.py has the authorization walk.)"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from huggingface_hub import CommitOperationAdd

from tests.accounts import fixtures
from tests.accounts.fixtures import MailSink, create_password_user, csrf_of, http_login
from tests.conftest import BastionServer, hf_api

mail_sink, web_server = fixtures.mail_sink, fixtures.web_server  # the session's SMTP sink and its server

JSON = {"content-type": "application/json"}


def _client(server: BastionServer, token: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def test_every_write_in_a_thread_counts_against_the_comment_budget(server: BastionServer) -> None:
    """Editing one's comment, renaming and closing/reopening one's discussion were unlimited: each edit kept
    the previous 64 KiB text in the comment's history, so one user on any public repo could grow a single
    comment (and every reader's copy of the thread) without bound. They now share the per-user comment
    budget (120 an hour) and a comment keeps at most MAX_EDITS versions."""
    owner, owner_token = server.create_user()
    _attacker, token = server.create_user()
    repo = f"{owner}/thread"
    hf_api(server, owner_token).create_repo(repo)
    api = f"/api/models/{repo}/discussions"
    with _client(server, token) as c:
        num = c.post(api, json={"title": "Flood", "description": "first"}).json()["num"]
        first = c.get(f"{api}/{num}").json()["events"][0]["id"]
        text = "x" * 60_000
        answers = []
        for i in range(60):
            r = c.post(f"{api}/{num}/comment/{first}/edit", json={"content": f"{text}{i}"})
            answers.append(r.status_code)
            if r.status_code != 200:
                break
        # A comment has a bounded number of versions, whatever the budget left.
        assert answers[:50] == [200] * 50 and answers[50] == 400, answers
        assert "edited" in r.headers["x-error-message"]
        details = c.get(f"{api}/{num}")
        assert details.status_code == 200 and len(details.content) < 50 * 2 * 61_000
        # Renames and status flips spend the same budget as comments: 120 an hour with the 50 edits.
        spent, refused = 50, None
        for i in range(200):
            if i % 2:
                r = c.post(f"{api}/{num}/status", json={"status": "closed" if i % 4 == 1 else "open"})
            else:
                r = c.post(f"{api}/{num}/title", json={"title": f"Flood {i:03d}"})
            if r.status_code != 200:
                refused = r
                break
            spent += 1
        assert refused is not None and refused.status_code == 429, refused and refused.text
        assert spent == 120 and int(refused.headers["retry-after"]) > 0
        r = c.post(f"{api}/{num}/comment", json={"comment": "one more"})
        assert r.status_code == 429
    with _client(server, owner_token) as c:  # the budget is the user's own
        assert c.post(f"{api}/{num}/comment", json={"comment": "the owner still comments"}).status_code == 200


def test_text_that_is_not_unicode_or_has_control_characters_is_a_400(any_server: BastionServer) -> None:
    server = any_server
    owner, token = server.create_user()
    repo = f"{owner}/text"
    hf_api(server, token).create_repo(repo)
    api = f"/api/models/{repo}/discussions"
    with _client(server, token) as c:
        num = c.post(api, json={"title": "Plain title", "description": "tabs\tand\nnew lines\r\nare text"}).json()["num"]
        first = c.get(f"{api}/{num}").json()["events"][0]
        assert first["data"]["latest"]["raw"] == "tabs\tand\nnew lines\r\nare text"
        lone = b"\\ud800"  # a lone surrogate: valid JSON, not Unicode text (it cannot be stored)
        bad_bodies = [
            ("POST", api, b'{"title": "bad ' + lone + b' title"}'),
            ("POST", api, b'{"title": "good title", "description": "bad ' + lone + b'"}'),
            ("POST", f"{api}/{num}/comment", b'{"comment": "bad ' + lone + b'"}'),
            ("POST", f"{api}/{num}/title", b'{"title": "bad ' + lone + b' title"}'),
            ("POST", f"{api}/{num}/comment/{first['id']}/edit", b'{"content": "bad ' + lone + b'"}'),
            ("POST", f"{api}/{num}/status", b'{"status": "closed", "comment": "bad ' + lone + b'"}'),
            ("POST", f"/api/models/{repo}/commit/main",
             b'{"key": "header", "value": {"summary": "bad ' + lone + b'"}}\n'),
        ]
        for title in ("line\r\nBcc: someone@example.com", "nul\x00byte", "escape \x1b[31m red", "del\x7f",
                      "next\x85line", "sep\u2028arator"):
            bad_bodies += [("POST", api, {"title": title}), ("POST", f"{api}/{num}/title", {"title": title})]
        for text in ("nul\x00byte", "bell\x07", "escape \x1b]0;title\x07"):
            bad_bodies += [("POST", f"{api}/{num}/comment", {"comment": text}),
                           ("POST", api, {"title": "good title", "description": text}),
                           ("POST", f"{api}/{num}/comment/{first['id']}/edit", {"content": text})]
        for method, path, payload in bad_bodies:
            kwargs = {"json": payload} if isinstance(payload, dict) else {"content": payload, "headers": JSON}
            r = c.request(method, path, **kwargs)
            assert r.status_code == 400 and r.headers.get("x-error-message"), (path, payload, r.status_code, r.text)
        # Comment ids are 24 hex digits; those past the id column are missing comments, not errors.
        for comment_id in ("f" * 24, "7" * 24, "80000000", "1" + "0" * 16):
            for verb, kwargs in (("edit", {"json": {"content": "x"}}), ("hide", {})):
                r = c.post(f"{api}/{num}/comment/{comment_id}/{verb}", **kwargs)
                assert r.status_code == 404 and r.headers["x-error-code"] == "NotFound", (comment_id, r.text)
        details = c.get(f"{api}/{num}").json()
        # A create_pr commit's summary becomes the title: its control characters become spaces.
        header = {"key": "header", "value": {"summary": "Fix\x1b[2J all\u2028of it", "description": "a\x00b\nc"}}
        line = {"key": "file", "value": {"path": "fix.txt", "content": "Zml4", "encoding": "base64"}}
        r = c.post(f"/api/models/{repo}/commit/main?create_pr=1", content="\n".join(map(json.dumps, (header, line))),
                   headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 200, r.text
        pr = c.get(f"{api}/{r.json()['pullRequestUrl'].rsplit('/', 1)[1]}").json()
    assert details["title"] == "Plain title" and [e["type"] for e in details["events"]] == ["comment"]
    assert pr["title"] == "Fix [2J all of it" and pr["events"][0]["data"]["latest"]["raw"] == "a b\nc"


def test_mail_about_a_private_repo_goes_only_to_those_who_may_read_it(web_server: BastionServer,
                                                                      mail_sink: MailSink) -> None:
    """Everyone who once wrote in a thread was mailed about it for good: a member removed from the org kept
    receiving the private repo's discussion titles (renamed after they left) and who did what."""
    server = web_server
    admin, admin_token = server.create_user()
    leaver, leaver_token = server.create_user()
    stayer, stayer_token = server.create_user()
    org = f"org{secrets.token_hex(3)}"
    server.admin("create-org", org, "--owner", admin)
    for member in (leaver, stayer):
        server.admin("add-member", org, member, "--role", "write")
    repo = f"{org}/internal"
    hf_api(server, admin_token).create_repo(repo, private=True)
    d = hf_api(server, leaver_token).create_discussion(repo, "Quarterly numbers")
    start = mail_sink.count()
    hf_api(server, stayer_token).comment_discussion(repo, d.num, "I have a question")
    # Mail goes out after the request, from a sender thread: the leaver (a member still) hears of this comment
    # before anything below is counted.
    mail_sink.wait_for(f"{leaver}@example.com", f"New comment on {repo}", after=start)
    with _client(server, admin_token) as c:
        assert c.delete(f"/api/organizations/{org}/members/{leaver}").status_code == 200
    mark = mail_sink.count()
    secret_title = f"Acquisition of ACME {secrets.token_hex(3)}"
    hf_api(server, admin_token).rename_discussion(repo, d.num, secret_title)
    hf_api(server, admin_token).comment_discussion(repo, d.num, "Not for outsiders")
    got = mail_sink.wait_for(f"{stayer}@example.com", f"New comment on {repo}", after=mark)
    assert secret_title in str(got.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    # One sender thread sends the transaction's mail in order, the leaver's (the discussion's author) first.
    assert not [m for m in mail_sink.messages[mark:] if leaver in str(m["To"])]


# ---- a pull request's diff ----------------------------------------------------------------------

def _peak_rss(server: BastionServer) -> int:
    """The peak resident memory of the server's worker process (`bastion serve` runs it as its child)."""
    assert server.proc is not None
    pids = [server.proc.pid, *map(int, Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
                                  .read_text().split())]
    peak = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) * 1024)
    return peak


@pytest.fixture(scope="module")
def diff_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionServer]:
    """A server of its own, so that its peak memory is what this test made it."""
    server = BastionServer(tmp_path_factory.mktemp("bastion-diff")).start()
    yield server
    server.stop()


def test_a_pull_requests_diff_costs_bounded_memory_whatever_its_size(diff_server: BastionServer) -> None:
    """The details' `diff=1` and the pull request's page built the whole patch (every changed file's text)
    before cutting it at 2 MiB: anyone could make each anonymous view of their pull request cost memory in
    proportion to what they pushed to it (unlimited: commits to refs/pr/N are free). The patch is now built
    file by file within its budget, and every changed file is still named."""
    server = diff_server
    owner, owner_token = server.create_user()
    _author, author_token = server.create_user()
    repo = f"{owner}/diffs"
    hf_api(server, owner_token).create_repo(repo)
    line = b"".join(bytes([97 + (i * 7 + j) % 26]) for i, j in enumerate(range(99))) + b"\n"
    big = line * (9 * 1024 * 1024 // len(line))  # 9 MiB of text per file: each under the 10 MiB rule
    author = hf_api(server, author_token)
    # One file per commit: pushing costs little memory at a time; the pull request grows to 108 MiB of changes.
    pr = author.create_commit(repo, [CommitOperationAdd("part00.txt", big + b"0")], commit_message="Big",
                              create_pr=True)
    for i in range(1, 12):
        author.create_commit(repo, [CommitOperationAdd(f"part{i:02d}.txt", big + bytes([48 + i]))],
                             commit_message=f"Big {i}", revision=f"refs/pr/{pr.pr_num}")
    author.create_commit(repo, [CommitOperationAdd("small.txt", b"small change\n")], commit_message="Small",
                         revision=f"refs/pr/{pr.pr_num}")
    before = _peak_rss(server)
    url = f"/api/models/{repo}/discussions/{pr.pr_num}?diff=1"
    with httpx.Client(base_url=server.url, timeout=120) as c:
        for _ in range(2):
            r = c.get(url)
            assert r.status_code == 200
            page = c.get(f"/{repo}/discussions/{pr.pr_num}", headers={"accept": "text/html"})
            assert page.status_code == 200
    grown = _peak_rss(server) - before
    diff = r.json()["diff"]
    assert len(diff.encode()) <= 2 * 1024 * 1024 + 64 * 1024
    names = [f"part{i:02d}.txt" for i in range(12)] + ["small.txt"]
    assert all(f"b/{name}" in diff for name in names), [n for n in names if f"b/{n}" not in diff]
    assert "+small change" in diff and "too large to show" in diff
    # The whole patch (and its copies) used to be built for each view: hundreds of MiB here.
    assert grown < 64 * 1024 * 1024, grown


def test_a_merge_from_the_page_merges_what_the_page_showed(web_server: BastionServer) -> None:
    """A reviewer reads a pull request's page and presses Merge; meanwhile its author pushes one more commit to
    refs/pr/N. The merge form named no commit, so the unreviewed commit was merged. It now carries the head the
    page showed, and a pull request that moved since is refused (412) until the page is read again."""
    server = web_server
    owner, owner_token = create_password_user(server)
    _author, author_token = server.create_user()
    repo = f"{owner}/reviewed"
    hf_api(server, owner_token).create_repo(repo)
    author = hf_api(server, author_token)
    pr = author.create_commit(repo, [CommitOperationAdd("model.txt", b"reviewed weights\n")],
                              commit_message="Reviewed change", create_pr=True)
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        assert anonymous.get(f"/{repo}/discussions/{pr.pr_num}").status_code == 200
    with closing(http_login(server, owner)) as browser:
        page = browser.get(f"/{repo}/discussions/{pr.pr_num}")
        assert "reviewed weights" in page.text and "evil" not in page.text
        form = re.search(r'<form[^>]*id="merge-form".*?</form>', page.text, re.S)
        assert form is not None
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(0)))
        assert fields["csrf_token"] == csrf_of(page.text)
        author.create_commit(repo, [CommitOperationAdd("run.py", b"import os; os.system('evil')\n")],
                             commit_message="One more thing", revision=f"refs/pr/{pr.pr_num}")
        refused = browser.post(f"/{repo}/discussions/{pr.pr_num}/merge", data=fields)
        assert refused.status_code == 412 and "refresh" in refused.text.lower(), refused.text[:300]
        assert not hf_api(server, owner_token).file_exists(repo, "run.py")
        assert hf_api(server, owner_token).get_discussion_details(repo, pr.pr_num).status == "open"
        page = browser.get(f"/{repo}/discussions/{pr.pr_num}")  # read again: the page shows the new commit
        assert "evil" in page.text
        form = re.search(r'<form[^>]*id="merge-form".*?</form>', page.text, re.S)
        assert form is not None
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(0)))
        assert browser.post(f"/{repo}/discussions/{pr.pr_num}/merge", data=fields).status_code == 303
    assert hf_api(server, owner_token).file_exists(repo, "run.py")

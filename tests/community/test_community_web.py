"""The Community tab's pages: the discussions list, a pull request with its files, scan results and diff, and
the CSRF-protected forms (comment, close, reopen, merge); mail to the repo's owner and the participants."""

from __future__ import annotations

import json
import re
from contextlib import closing

import httpx
import sqlalchemy as sa
from huggingface_hub import CommitOperationAdd

from tests.accounts.fixtures import MailSink, body, create_password_user, csrf_of, http_login, session_db
from tests.conftest import BastionServer, hf_api


def test_pull_request_pages_forms_and_mail(web_server: BastionServer, mail_sink: MailSink) -> None:
    owner, owner_token = create_password_user(web_server)
    contrib, contrib_token = create_password_user(web_server)
    repo_id = f"{owner}/webpr"
    hf_api(web_server, owner_token).create_repo(repo_id)
    mark = mail_sink.count()
    info = hf_api(web_server, contrib_token).create_commit(
        repo_id, [CommitOperationAdd("data/table.csv", b"a,b\n1,2\n")], commit_message="Add a table",
        commit_description="A small table", create_pr=True)
    num = info.pr_num
    opened = mail_sink.wait_for(f"{owner}@example.com", f"New pull request #{num}", after=mark)
    assert f"{web_server.url}/{repo_id}/discussions/{num}" in body(opened)

    with closing(http_login(web_server, owner)) as browser:
        listing = browser.get(f"/{repo_id}/discussions")
        assert listing.status_code == 200 and "Add a table" in listing.text and f'data-num="{num}"' in listing.text
        page = browser.get(f"/{repo_id}/discussions/{num}")
        assert page.status_code == 200
        assert 'data-path="data/table.csv"' in page.text and 'class="scan scan-' in page.text
        assert "+1,2" in page.text and 'id="merge-form"' in page.text and "A small table" in page.text
        token = csrf_of(page.text)
        # A post without the page's CSRF token is refused, and changes nothing.
        refused = browser.post(f"/{repo_id}/discussions/{num}/comment", data={"comment": "forged"})
        assert refused.status_code == 403
        mark = mail_sink.count()
        sent = browser.post(f"/{repo_id}/discussions/{num}/comment", data={"csrf_token": token,
                                                                          "comment": "Looks <b>good</b>"})
        assert sent.status_code == 303 and sent.headers["location"] == f"/{repo_id}/discussions/{num}"
        mail_sink.wait_for(f"{contrib}@example.com", f"New comment on {repo_id} #{num}", after=mark)
        page = browser.get(f"/{repo_id}/discussions/{num}")
        assert "Looks &lt;b&gt;good&lt;/b&gt;" in page.text and "<b>good</b>" not in page.text
        for status in ("closed", "open"):
            r = browser.post(f"/{repo_id}/discussions/{num}/status", data={"csrf_token": token, "status": status})
            assert r.status_code == 303
        merged = browser.post(f"/{repo_id}/discussions/{num}/merge", data={"csrf_token": token})
        assert merged.status_code == 303
        page = browser.get(f"/{repo_id}/discussions/{num}")
        assert re.search(r'id="discussion-status">merged<', page.text) and 'id="merge-form"' not in page.text
    assert hf_api(web_server, owner_token).file_exists(repo_id, "data/table.csv")
    with session_db(web_server).connect() as conn:
        rows = conn.execute(sa.text("SELECT action, actor_name, via, details FROM audit_events WHERE target_id = :t "
                                    "ORDER BY id"), {"t": f"model/{repo_id}"}).all()
    community = [(a, who) for a, who, _via, _d in rows if a.startswith(("repo.discussion", "repo.pr_"))]
    assert community == [("repo.pr_create", contrib), ("repo.discussion.create", contrib),
                         ("repo.discussion.comment", owner), ("repo.discussion.status_change", owner),
                         ("repo.discussion.status_change", owner), ("repo.pr_merge", owner),
                         ("repo.discussion.status_change", owner)]
    assert [json.loads(d) if isinstance(d, str) else d for a, _w, _v, d in rows if a == "repo.pr_merge"][0][
        "number"] == num

    with closing(http_login(web_server, contrib)) as browser:  # the author: no merge button, and a merge post is refused
        page = browser.get(f"/{repo_id}/discussions")
        d = browser.post(f"/{repo_id}/discussions", data={"csrf_token": csrf_of(page.text), "title": "A question",
                                                          "description": "Why?"})
        assert d.status_code == 303
        new = browser.get(d.headers["location"])
        assert "A question" in new.text and 'id="merge-form"' not in new.text and 'id="status-form"' in new.text
        num2 = int(d.headers["location"].rsplit("/", 1)[1])
        r = browser.post(f"/{repo_id}/discussions/{num2}/merge", data={"csrf_token": csrf_of(new.text)})
        assert r.status_code == 403


def test_anonymous_reads_public_discussions_but_cannot_post(web_server: BastionServer) -> None:
    owner, owner_token = create_password_user(web_server)
    hf_api(web_server, owner_token).create_repo(f"{owner}/open")
    d = hf_api(web_server, owner_token).create_discussion(f"{owner}/open", "Welcome everyone")
    with httpx.Client(base_url=web_server.url, headers={"accept": "text/html"}, timeout=30) as anon:
        page = anon.get(f"/{owner}/open/discussions/{d.num}")
        assert page.status_code == 200 and "Welcome everyone" in page.text and 'id="comment-form"' not in page.text
        token = csrf_of(anon.get("/login").text)  # a real token of this browser: the refusal is authz's
        r = anon.post(f"/{owner}/open/discussions/{d.num}/comment", data={"csrf_token": token, "comment": "hi"})
        assert r.status_code == 401, r.text[:300]
    assert len(hf_api(web_server, owner_token).get_discussion_details(f"{owner}/open", d.num).events) == 1

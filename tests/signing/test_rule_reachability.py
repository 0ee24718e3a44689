"""The "require signed commits" rule judges what a move brings INTO a covered ref: every commit
reachable from the new tip and not from the ref's old value nor from another covered ref, whether or
not an uncovered branch already holds it. Real `git` pushes over smart HTTP, real SSH signatures.
"""

from __future__ import annotations

import pytest
from huggingface_hub.errors import HfHubHTTPError

from tests.conftest import BastionServer, hf_api
from tests.signing.conftest import SshKey, Work, signature_of
from tests.signing.test_rules_and_instance import head_of, require_signed
from tests.signing.test_verification import add_ssh


def _push_ref(work: Work, src: str, ref: str, check: bool = True):  # type: ignore[no-untyped-def]
    return work.git("push", "origin", f"{src}:refs/heads/{ref}", cwd=work.path, check=check)


def test_unsigned_commit_from_uncovered_branch_cannot_reach_covered_branch(
        server: BastionServer, work: Work, ssh_key: SshKey) -> None:
    require_signed(server, work.repo, True, ["main"])
    add_ssh(server, work.repo.token, ssh_key.public)
    work.use_ssh(ssh_key)
    before = head_of(server, work.repo)

    # dev is not covered: an unsigned commit is accepted there.
    unsigned = work.commit("unsigned.txt", sign=False)
    work.push("dev")
    assert head_of(server, work.repo, "dev") == unsigned

    # A verified commit on top, then the whole of dev onto main: the unsigned commit is already in
    # the repository (dev reaches it) but new to main, so it is refused, by name and with the reason.
    signed = work.commit("signed.txt")
    pushed = work.push("main", check=False)
    assert pushed.returncode != 0, pushed.stderr
    assert f"refs/heads/main: commit {unsigned[:12]} is unsigned" in pushed.stderr
    assert "requires signed commits" in pushed.stderr
    assert signed[:12] not in pushed.stderr  # the verified tip is not blamed
    assert head_of(server, work.repo) == before

    # Same when the commits are all on the server already: dev's tip pushed to main, no new objects.
    work.push("dev")
    pushed = _push_ref(work, signed, "main", check=False)
    assert pushed.returncode != 0 and f"commit {unsigned[:12]} is unsigned" in pushed.stderr
    assert head_of(server, work.repo) == before
    # dev stays open to anything.
    assert head_of(server, work.repo, "dev") == signed


def test_new_covered_branch_from_uncovered_history_is_refused(server: BastionServer, work: Work,
                                                              ssh_key: SshKey) -> None:
    require_signed(server, work.repo, True, ["release/*"])
    add_ssh(server, work.repo.token, ssh_key.public)
    work.use_ssh(ssh_key)
    unsigned = work.commit("unsigned.txt", sign=False)
    work.push("main")  # main is not covered here
    work.commit("signed.txt")
    pushed = work.push("release/1.0", check=False)
    assert pushed.returncode != 0
    assert f"refs/heads/release/1.0: commit {unsigned[:12]} is unsigned" in pushed.stderr
    pushed = _push_ref(work, unsigned, "release/1.1", check=False)
    assert pushed.returncode != 0 and f"commit {unsigned[:12]} is unsigned" in pushed.stderr
    # Nor through the API: a covered branch created at that history is refused, and not created.
    api = hf_api(server, work.repo.token)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_branch(work.repo.repo_id, branch="release/1.2", revision="main")
    assert exc.value.response.status_code == 403 and "is unsigned" in exc.value.response.headers["x-error-message"]
    assert [b.name for b in api.list_repo_refs(work.repo.repo_id).branches] == ["main"]
    api.create_branch(work.repo.repo_id, branch="feature", revision="main")  # not covered: allowed


def test_verified_commits_from_other_branches_are_accepted(server: BastionServer, work: Work,
                                                           ssh_key: SshKey) -> None:
    require_signed(server, work.repo, True, ["main"])
    add_ssh(server, work.repo.token, ssh_key.public)
    work.use_ssh(ssh_key)
    first = work.commit("a.txt")
    second = work.commit("b.txt")
    work.push("dev")
    # Their verdicts were stored when they reached dev; main takes them (a fast-forward).
    work.push("main")
    assert head_of(server, work.repo) == second
    assert signature_of(server, work.repo, first)["status"] == "verified"


def test_history_older_than_the_rule_does_not_block_new_commits(server: BastionServer, work: Work,
                                                                ssh_key: SshKey) -> None:
    # An unsigned commit lands on main before the rule exists.
    old = work.commit("old.txt", sign=False)
    work.push("main")
    require_signed(server, work.repo, True, ["main"])
    add_ssh(server, work.repo.token, ssh_key.public)
    work.use_ssh(ssh_key)
    # Only what a move brings into main is judged: the old commit stays, new verified work is accepted,
    # by push and by API commit (signed by the instance key).
    signed = work.commit("new.txt")
    work.push("main")
    assert head_of(server, work.repo) == signed
    info = hf_api(server, work.repo.token).upload_file(path_or_fileobj=b"x\n", path_in_repo="x.txt",
                                                       repo_id=work.repo.repo_id)
    assert head_of(server, work.repo) == info.oid
    assert signature_of(server, work.repo, old)["status"] == "unsigned"
    # main's old history is held by a covered ref: new covered refs may start from it (rule on every ref).
    require_signed(server, work.repo, True, [])
    api = hf_api(server, work.repo.token)
    api.create_branch(work.repo.repo_id, branch="feature", revision="main")
    api.create_tag(work.repo.repo_id, tag="v1", revision="main")
    work.push("topic")
    assert head_of(server, work.repo, "topic") == signed  # unsigned old history, reached from main: fine

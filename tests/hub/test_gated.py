"""Gated repos in the policy itself: who passes the gate, what each denial says, the token flag, the
Xet tokens bound to their holder and the restriction's stored form. Expected answers are written from the rules in
docs/architecture.md ("Gated repositories"), not derived from the code."""

from __future__ import annotations

import dataclasses

import pytest

from bastion.authz import Permission, Principal, RepoRef, authorize, require
from bastion.authz.policy import BoundCapability, GateFacts, GroupFacts, OrgFacts
from bastion.errors import GatedRepo, RepoNotFound
from bastion.tokens.restrictions import DenyAll, OrgTokenPolicy, ReadOnly, Scoped, load, parse_scope

OWNER, OTHER, ROOT = 1, 2, 3


def _token(uid: int, *restrictions: object, admin: bool = False) -> Principal:
    return Principal(method="token", user_id=uid, username=f"u{uid}", is_admin=admin, token_id=uid * 10,
                     token_role="write", restrictions=tuple(restrictions))  # type: ignore[arg-type]


def _repo(gate: GateFacts | None, private: bool = False, **kw: object) -> RepoRef:
    return RepoRef(id=7, namespace="alice", owner_user_id=OWNER, private=private, type="model", name="m", gate=gate,
                   **kw)  # type: ignore[arg-type]


def _gate(status: str | None = None, uid: int = OTHER, members: bool = False) -> GateFacts:
    return GateFacts("manual", members, {uid: status} if status else {})


ANON = Principal.anonymous()


@pytest.mark.parametrize(("status", "allowed", "state"), [
    (None, False, "none"), ("pending", False, "pending"), ("rejected", False, "rejected"), ("accepted", True, ""),
])
def test_a_user_needs_an_accepted_request_for_the_files_not_for_the_metadata(status: str | None, allowed: bool,
                                                                              state: str) -> None:
    repo = _repo(_gate(status))
    other = _token(OTHER)
    decision = authorize(other, Permission.REPO_READ, repo)
    assert bool(decision) is allowed and decision.gated == state
    assert authorize(other, Permission.REPO_METADATA_READ, repo)
    assert authorize(other, Permission.REPO_ACCESS_REQUEST, repo)
    assert not authorize(other, Permission.REPO_ACCESS_READ, repo)  # reviewing is for those who manage it
    assert not authorize(other, Permission.REPO_ACCESS_WRITE, repo)


def test_who_passes_a_user_repos_gate() -> None:
    repo = _repo(_gate())
    assert authorize(_token(OWNER), Permission.REPO_READ, repo)
    assert authorize(_token(ROOT, admin=True), Permission.REPO_READ, repo)
    assert authorize(_token(OWNER), Permission.REPO_ACCESS_WRITE, repo)
    denied = authorize(ANON, Permission.REPO_READ, repo)
    assert not denied and denied.gated == "anonymous"
    assert authorize(ANON, Permission.REPO_METADATA_READ, repo)
    assert not authorize(ANON, Permission.REPO_ACCESS_REQUEST, repo)
    # not gated: nothing changes
    assert authorize(ANON, Permission.REPO_READ, _repo(None))


def test_require_answers_with_the_hubs_gate_errors_and_keeps_private_repos_invisible() -> None:
    with pytest.raises(GatedRepo) as anon:
        require(ANON, Permission.REPO_READ, _repo(_gate()))
    assert anon.value.status == 401 and anon.value.code == "GatedRepo" and "Please log in" in anon.value.message
    with pytest.raises(GatedRepo) as other:
        require(_token(OTHER), Permission.REPO_READ, _repo(_gate()))
    assert other.value.status == 403
    assert other.value.text("https://hub.example") == (
        "Access to model alice/m is restricted and you are not in the authorized list. Visit "
        "https://hub.example/alice/m to ask for access.")
    dataset = dataclasses.replace(_repo(_gate("pending")), type="dataset")
    with pytest.raises(GatedRepo) as pending:
        require(_token(OTHER), Permission.REPO_READ, dataset)
    assert pending.value.message == "Your request to access dataset alice/m is awaiting a review from the repo authors."
    # a private gated repo the caller cannot see is still a plain 404, never a gate message
    for who in (ANON, _token(OTHER)):
        with pytest.raises(RepoNotFound):
            require(who, Permission.REPO_READ, _repo(_gate(), private=True))


def test_a_ref_loaded_without_the_callers_status_fails_closed() -> None:
    accepted_for_someone_else = _repo(GateFacts("auto", False, {OWNER + 10: "accepted"}))
    assert not authorize(_token(OTHER), Permission.REPO_READ, accepted_for_someone_else)


def test_token_restrictions_and_can_read_gated_repos() -> None:
    accepted = _repo(_gate("accepted"))
    assert authorize(_token(OTHER, ReadOnly()), Permission.REPO_READ, accepted)  # read tokens: the owner's access
    plain = Scoped((parse_scope("user", "u2", ["repo.write"]),))
    denied = authorize(_token(OTHER, plain), Permission.REPO_READ, accepted)
    assert not denied and denied.gated == "token"
    assert authorize(_token(OTHER, plain), Permission.REPO_METADATA_READ, accepted)  # public metadata
    assert authorize(_token(OTHER, plain), Permission.REPO_READ, _repo(None))  # public, not gated
    flagged = Scoped((), can_read_gated=True)
    assert authorize(_token(OTHER, flagged), Permission.REPO_READ, accepted)
    assert not authorize(_token(OTHER, flagged), Permission.REPO_READ, _repo(_gate()))  # only what the user may
    named = Scoped((parse_scope("model", "alice/m", ["repo.content.read"]),))  # a scope naming the repo grants it
    assert authorize(_token(OTHER, named), Permission.REPO_READ, accepted)
    reviewer = Scoped((parse_scope("model", "alice/m", ["repo.access.read"]),))
    assert authorize(_token(OWNER, reviewer), Permission.REPO_ACCESS_READ, accepted)
    assert not authorize(_token(OWNER, reviewer), Permission.REPO_ACCESS_WRITE, accepted)
    assert not authorize(_token(OWNER, ReadOnly()), Permission.REPO_ACCESS_READ, accepted)  # the Hub: no read tokens


def test_the_flag_is_stored_and_old_rows_load_without_it() -> None:
    flagged = Scoped((parse_scope("user", "u2", ["repo.content.read"]),), can_read_gated=True)
    assert load(flagged.to_json()) == flagged
    old = flagged.to_json()
    del old["canReadGatedRepos"]
    assert load(old) == dataclasses.replace(flagged, can_read_gated=False)
    assert isinstance(load({**flagged.to_json(), "canReadGatedRepos": "yes"}), DenyAll)


ADMIN, READER, WRITER, CREATOR, GROUP_ADMIN, GROUP_READER, NO_2FA = range(10, 17)
ORG = OrgFacts(id=1, name="acme", roles={ADMIN: "admin", READER: "read", WRITER: "write", CREATOR: "contributor",
                                         GROUP_ADMIN: "read", GROUP_READER: "read", NO_2FA: "read"})
GROUP = GroupFacts(id=5, org_id=1, name="team", roles={GROUP_ADMIN: "admin", GROUP_READER: "read",
                                                       CREATOR: "contributor"})


def _org_repo(members_gated: bool, group: GroupFacts | None = None, org: OrgFacts = ORG) -> RepoRef:
    return RepoRef(id=8, namespace="acme", owner_user_id=None, private=False, type="model", name="m", org=org,
                   group=group, creator_user_id=CREATOR, gate=GateFacts("manual", members_gated, {}))


@pytest.mark.parametrize(("members_gated", "group", "passes"), [
    (False, None, {ADMIN, READER, WRITER, CREATOR, GROUP_ADMIN, GROUP_READER, NO_2FA}),
    (True, None, {ADMIN, CREATOR}),
    (False, GROUP, {ADMIN, CREATOR, GROUP_ADMIN, GROUP_READER}),  # at the root they read; in the group: the group
    (True, GROUP, {ADMIN, CREATOR, GROUP_ADMIN}),
])
def test_org_bypass_rules(members_gated: bool, group: GroupFacts | None, passes: set[int]) -> None:
    repo = _org_repo(members_gated, group)
    everyone = {ADMIN, READER, WRITER, CREATOR, GROUP_ADMIN, GROUP_READER, NO_2FA, OTHER}
    assert {u for u in everyone if authorize(_token(u), Permission.REPO_READ, repo)} == passes
    assert authorize(_token(ROOT, admin=True), Permission.REPO_READ, repo)


def test_membership_passes_the_gate_only_with_the_orgs_second_factor() -> None:
    strict = dataclasses.replace(ORG, require_2fa=True, two_factor=frozenset({ADMIN, READER}))
    repo = _org_repo(False, org=strict)
    assert authorize(_token(READER), Permission.REPO_READ, repo)
    assert not authorize(_token(NO_2FA), Permission.REPO_READ, repo)
    assert not authorize(_token(CREATOR), Permission.REPO_READ, repo)  # creator, but no second factor
    # the public metadata stays public
    assert authorize(_token(NO_2FA), Permission.REPO_METADATA_READ, repo)


def test_org_token_policy_leaves_the_gate_to_the_user_rule() -> None:
    policy = OrgTokenPolicy(WRITER, fine_grained=False, states={})
    approval = dataclasses.replace(ORG, token_policy="approval")
    repo = _org_repo(True, org=approval)
    denied = authorize(_token(WRITER, policy), Permission.REPO_READ, repo)
    assert not denied and denied.gated == "none"


def test_xet_tokens_read_contents_only_while_their_holder_may() -> None:
    """A CAS token is bound to who obtained it: reconstructions (contents) need that holder to pass the
    gate now, whatever the token's scope; uploads and dedupe of a write token need write access only."""
    def cas(holder: Principal, repo: RepoRef, scope: str) -> Principal:
        return Principal(method="capability", capability={"p": "xet-cas", "repo_id": repo.id, "scope": scope,
                                                          "user_id": holder.user_id})

    def asked(holder: Principal, repo: RepoRef, content: bool) -> BoundCapability:
        return BoundCapability("xet-cas", {"repo_id": repo.id, "content": content}, holder, repo)

    owner, other = _token(OWNER), _token(OTHER)
    gated, accepted = _repo(_gate()), _repo(_gate("accepted"))
    assert authorize(cas(owner, gated, "read"), Permission.XET_CAS_READ, asked(owner, gated, True))
    assert not authorize(cas(other, gated, "read"), Permission.XET_CAS_READ, asked(other, gated, True))
    assert authorize(cas(other, accepted, "read"), Permission.XET_CAS_READ, asked(other, accepted, True))
    # An org write member of a repo that gates its members too uploads and dedupes, but reads no contents.
    writer, members_gated = _token(WRITER), _org_repo(True)
    assert not authorize(cas(writer, members_gated, "write"), Permission.XET_CAS_READ,
                         asked(writer, members_gated, True))
    assert authorize(cas(writer, members_gated, "write"), Permission.XET_CAS_READ, asked(writer, members_gated, False))
    assert authorize(cas(writer, members_gated, "write"), Permission.XET_CAS_WRITE,
                     asked(writer, members_gated, False))
    # A token minted for someone else never vouches for this holder.
    assert not authorize(cas(owner, accepted, "read"), Permission.XET_CAS_READ, asked(other, accepted, True))

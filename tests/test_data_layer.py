"""Services on a real database, SQLite and PostgreSQL: migrations, writers and their audit events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bastion.accounts import service as accounts
from bastion.audit.context import AuditContext, bind_context
from bastion.audit.models import AuditEvent
from bastion.audit.service import verify_chain
from bastion.authz import Principal
from bastion.config import Settings
from bastion.db import transaction
from bastion.errors import BadRequest, Conflict, InvalidCredentials, PreconditionFailed
from bastion.hub import Hub
from bastion.repos import commit, service
from bastion.tokens import service as tokens
from bastion.tokens.models import AccessToken
from tests.conftest import create_pg_database, drop_pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request: pytest.FixtureRequest, tmp_path: Path, pg_admin_url: str) -> Iterator[Hub]:
    dbname = None
    url = None
    if request.param == "postgresql":
        dbname, url = create_pg_database(pg_admin_url)
    h = Hub.open(Settings(data_dir=tmp_path, database_url=url))
    yield h
    h.close()
    if dbname:
        drop_pg_database(pg_admin_url, dbname)


def _actions(hub: Hub) -> list[str]:
    with transaction(hub.sessions) as s:
        return list(s.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id)))


def test_migrations_create_every_table(hub: Hub) -> None:
    names = set(sa.inspect(hub.engine).get_table_names())
    assert {"users", "access_tokens", "repos", "lfs_objects", "repo_lfs_objects", "audit_events",
            "alembic_version"} <= names


def test_migrations_build_exactly_the_schema_the_models_describe(hub: Hub) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from bastion.models import metadata

    with hub.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diffs == []


def test_users_tokens_and_their_audit_trail(hub: Hub) -> None:
    with bind_context(AuditContext(ip="192.0.2.7", user_agent="pytest", via="cli")), transaction(hub.sessions) as s:
        user = accounts.create_user(s, "erin", "erin@example.com", "Erin E")
        issued = tokens.create_token(s, user, "laptop", "write")
    with transaction(hub.sessions) as s:
        stored = s.scalar(sa.select(AccessToken))
        assert stored.secret_hash != issued.secret and issued.secret not in str(stored.__dict__)
        assert tokens.authenticate(s, issued.secret, "192.0.2.8", "ua").user.name == "erin"
        with pytest.raises(InvalidCredentials):
            tokens.authenticate(s, issued.secret[:-1] + ("A" if issued.secret[-1] != "A" else "B"), None, None)
    with transaction(hub.sessions) as s:
        ev = s.scalars(sa.select(AuditEvent).order_by(AuditEvent.id)).all()
        assert [e.action for e in ev] == ["user.create", "token.create"]
        assert ev[1].ip == "192.0.2.7" and ev[1].user_agent == "pytest" and ev[1].via == "cli"
        assert ev[1].details == {"name": "laptop", "role": "write", "user": "erin", "scopes": [], "expires": None}
        assert verify_chain(s) is None
    with transaction(hub.sessions) as s, pytest.raises(Conflict):
        accounts.create_user(s, "ERIN", "e2@example.com")
    with transaction(hub.sessions) as s, pytest.raises(BadRequest):
        tokens.create_token(s, accounts.get_user_by_name(s, "erin"), "x", "admin")


def test_audit_chain_detects_tampering(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        accounts.create_user(s, "frank", "frank@example.com")
        accounts.create_user(s, "grace", "grace@example.com")
    with transaction(hub.sessions) as s:
        first = s.scalar(sa.select(AuditEvent).order_by(AuditEvent.id))
        first.details = {"email": "attacker@example.com", "admin": True}
    with transaction(hub.sessions) as s:
        assert verify_chain(s) == first.id


def test_commit_is_all_or_nothing(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        user = accounts.create_user(s, "heidi", "heidi@example.com")
        repo = service.create_repo(hub, s, user, service.namespace_ref(s, "heidi"), "m", "model", False)
    git = hub.git(repo.storage_key)
    head = git.branch_head("main")
    bad_ops = [commit.AddFile("ok.txt", b"ok"), commit.AddLfsFile("w.bin", "a" * 64, 10)]
    with pytest.raises(BadRequest), transaction(hub.sessions) as s:
        commit.create_commit(hub, s, s.get(type(repo), repo.id), user, "main", bad_ops, "bad")
    assert git.branch_head("main") == head
    with pytest.raises(PreconditionFailed), transaction(hub.sessions) as s:
        commit.create_commit(hub, s, s.get(type(repo), repo.id), user, "main", [commit.AddFile("a", b"a")], "x",
                             parent_commit="0" * 40)
    assert git.branch_head("main") == head
    with transaction(hub.sessions) as s:
        res = commit.create_commit(hub, s, s.get(type(repo), repo.id), user, "main", [commit.AddFile("a", b"a")],
                                   "good")
    assert str(git.branch_head("main")) == res.commit_oid
    assert _actions(hub)[-1] == "repo.commit"
    assert _actions(hub).count("repo.commit") == 1  # the failed attempts left no audit rows


def test_read_only_transaction_refuses_writes(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        accounts.create_user(s, "ivan", "ivan@example.com")
    for _ in range(3):  # the same pooled connection serves read-only and writing transactions in turn
        with pytest.raises(sa.exc.DBAPIError, match="(?i)read.?only"), \
                transaction(hub.sessions, readonly=True) as s:
            assert accounts.get_user_by_name(s, "ivan").name == "ivan"  # reading works
            s.execute(sa.text("UPDATE users SET fullname = 'changed' WHERE name = 'ivan'"))
        with transaction(hub.sessions) as s:
            s.execute(sa.text("UPDATE users SET fullname = 'ok' WHERE name = 'ivan'"))
    with transaction(hub.sessions, readonly=True) as s:
        assert s.scalar(sa.text("SELECT fullname FROM users WHERE name = 'ivan'")) == "ok"


def test_listing_respects_visibility(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        ivan = accounts.create_user(s, "ivan", "ivan@example.com")
        judy = accounts.create_user(s, "judy", "judy@example.com")
        service.create_repo(hub, s, ivan, service.namespace_ref(s, "ivan"), "pub", "model", False)
        service.create_repo(hub, s, ivan, service.namespace_ref(s, "ivan"), "priv", "model", True)
    with transaction(hub.sessions) as s:
        def ids(p: Principal) -> list[str]:
            return sorted(r.repo_id for r in service.list_repos(s, p, "model", author="ivan", search=[], sort=None,
                                                                 direction=-1, limit=50, offset=0).repos)
        assert ids(Principal.anonymous()) == ["ivan/pub"]
        assert ids(Principal("token", user_id=judy.id, token_role="write")) == ["ivan/pub"]
        assert ids(Principal("token", user_id=ivan.id, token_role="read")) == ["ivan/priv", "ivan/pub"]

"""Test gap (issue 15): the GPG rule that the committer e-mail must be one of the key's user IDs.

No test failed when the rule was removed. Here the committer e-mail is a verified address of the key's
owner, but not one the key names: the commit must be `unverified`, with the reason; with the address
added to the key (and the key re-added), the same kind of commit is verified.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bastion.accounts.models import User, UserEmail
from bastion.db import utcnow
from tests.conftest import BastionServer
from tests.signing.conftest import GpgHome, Work, api, git, gpg_home, keys_api, repo, signature_of, work  # noqa: F401
from tests.signing.test_verification import add_gpg


def add_verified_email(server: BastionServer, user: str, email: str) -> None:
    """A second address the user confirmed (what the e-mails settings page leaves after the link is followed)."""
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    try:
        with Session(engine) as session, session.begin():
            uid = session.scalar(sa.select(User.id).where(User.name == user))
            session.add(UserEmail(user_id=uid, email=email, email_lower=email.lower(), primary=False,
                                  verified_at=utcnow(), created_at=utcnow()))
    finally:
        engine.dispose()


def test_gpg_committer_email_must_be_one_of_the_keys_user_ids(server: BastionServer, work: Work,  # noqa: F811
                                                              gpg_home: GpgHome) -> None:  # noqa: F811
    owner = work.repo.owner
    other = f"{owner}-work@example.com"
    add_verified_email(server, owner, other)  # verified, but not in the key
    fpr = gpg_home.generate(f"Owner <{owner}@example.com>")
    key = add_gpg(server, work.repo.token, gpg_home.export(fpr))
    assert key["emails"] == [f"{owner}@example.com"]
    work.use_gpg(gpg_home, fpr)
    work.identity(other)
    sha = work.commit("a.txt")
    work.push()
    sig = signature_of(server, work.repo, sha)
    assert sig["status"] == "unverified" and sig["signer"] == owner and sig["type"] == "gpg", sig
    assert sig["reason"] == (f"committer e-mail {other} is not a verified e-mail of the key's owner listed in the "
                             "key's user IDs")

    # The key names the address now: the same kind of commit verifies.
    gpg_home.add_uid(fpr, f"Owner <{other}>")
    assert keys_api(server, work.repo.token, "DELETE", f"/api/settings/gpg-keys/{key['id']}").status_code == 200
    add_gpg(server, work.repo.token, gpg_home.export(fpr))
    sha = work.commit("b.txt")
    work.push()
    assert signature_of(server, work.repo, sha)["status"] == "verified"

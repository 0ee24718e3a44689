"""Numbers in URLs, read one way (bastion.api.params.decimal): `str.isdigit()` accepted '²' (which int()
refuses) and '٣' (another spelling of 3), and ids of any length reached the database — anonymous 500s on
the discussion routes and pages and on the Git LFS locks API, before."""

from __future__ import annotations

import httpx

from tests.conftest import BastionServer, hf_api

SUPERSCRIPT_TWO, ARABIC_THREE = "%C2%B2", "%D9%A3"
HUGE = "9" * 12  # past a 32-bit id column (PostgreSQL's integer)
HUGER = "9" * 30  # past any integer column


def test_numbers_in_urls_are_ascii_decimal_and_in_range(any_server: BastionServer) -> None:
    server = any_server
    owner, token = server.create_user()
    repo = f"{owner}/numbers"
    hf_api(server, token).create_repo(repo)
    api = hf_api(server, token)
    for title in ("First one", "Second one", "Third one"):
        api.create_discussion(repo, title)
    answers = {}
    with httpx.Client(base_url=server.url, timeout=30) as anonymous, \
            httpx.Client(base_url=server.url, timeout=30, headers={"authorization": f"Bearer {token}"}) as owner_c:
        for client, who in ((anonymous, "anonymous"), (owner_c, "owner")):
            for num in (SUPERSCRIPT_TWO, ARABIC_THREE, HUGE, HUGER):
                for method, path in (("GET", f"/api/models/{repo}/discussions/{num}"),
                                     ("GET", f"/{repo}/discussions/{num}"),
                                     ("POST", f"/api/models/{repo}/discussions/{num}/comment"),
                                     ("GET", f"/api/models/{repo}/discussions?p={num}"),
                                     ("GET", f"/{repo}/discussions?p={num}"),
                                     ("GET", f"/{repo}.git/info/lfs/locks?id={num}"),
                                     ("GET", f"/{repo}.git/info/lfs/locks?cursor={num}"),
                                     ("GET", f"/{repo}.git/info/lfs/locks?limit={num}"),
                                     ("POST", f"/{repo}.git/info/lfs/locks/{num}/unlock")):
                    kwargs = {"json": {"comment": "hi"}} if path.endswith("comment") else \
                        {"json": {}} if path.endswith("unlock") else {}
                    r = client.request(method, path, **kwargs)
                    answers[(who, method, path)] = r.status_code
                    assert r.status_code < 500, (who, method, path, r.status_code, r.text[:200])
        # '٣' is not 3: discussion #3 exists, and is not reached by another script's digit.
        assert answers[("owner", "GET", f"/api/models/{repo}/discussions/{ARABIC_THREE}")] == 400
        assert answers[("owner", "GET", f"/{repo}/discussions/{ARABIC_THREE}")] == 404
        assert owner_c.get(f"/api/models/{repo}/discussions/3").json()["title"] == "Third one"
        # What was a page index or a lock listing before still is.
        assert owner_c.get(f"/api/models/{repo}/discussions?p=0").json()["count"] == 3
        assert owner_c.get(f"/{repo}.git/info/lfs/locks?limit=5").status_code == 200
        assert owner_c.get(f"/{repo}.git/info/lfs/locks?id=1").json() == {"locks": []}

"""Listings: list_datasets filters and sorts; Link-header pagination yields every entry once."""

from __future__ import annotations

import httpx
from huggingface_hub import CommitOperationAdd

from tests.conftest import BastionServer, hf_api


def test_list_datasets_author_search_and_sort(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    api = hf_api(server, token)
    other, other_token = server.create_user()
    # Created in an order that is not alphabetical, so no other key gives the same order.
    for repo in ("gamma-set", "alpha-set", "zeta-other", "beta-set"):
        api.create_repo(f"{name}/{repo}", repo_type="dataset")
    api.create_repo(f"{name}/beta-model")  # a model: never in list_datasets
    hf_api(server, other_token).create_repo(f"{other}/beta-set", repo_type="dataset")  # another author
    # Modified after creation: gamma, the oldest created, is now the most recently modified.
    api.upload_file(path_or_fileobj=b"g", path_in_repo="g.txt", repo_id=f"{name}/gamma-set", repo_type="dataset")

    def ids(**kwargs: object) -> list[str]:
        return [d.id for d in api.list_datasets(author=name, **kwargs)]

    created_desc = [f"{name}/beta-set", f"{name}/zeta-other", f"{name}/alpha-set", f"{name}/gamma-set"]
    assert ids(sort="created_at") == created_desc
    assert ids(sort="last_modified") == [f"{name}/gamma-set", f"{name}/beta-set", f"{name}/zeta-other",
                                         f"{name}/alpha-set"]
    assert ids(sort="created_at", search="-set") == [i for i in created_desc if i.endswith("-set")]
    assert ids(search="beta") == [f"{name}/beta-set"]
    assert ids(search="nothing-like-this") == []
    assert sorted(d.id for d in api.list_datasets(search="beta-set") if d.id.endswith("/beta-set")) == \
        sorted([f"{name}/beta-set", f"{other}/beta-set"])
    # The client's items carry the dates they were sorted by.
    listed = list(api.list_datasets(author=name, sort="last_modified"))
    assert [d.last_modified for d in listed] == sorted((d.last_modified for d in listed), reverse=True)
    # direction=1 reverses the order (the client no longer sends it; the Hub API accepts it).
    resp = httpx.get(f"{server.url}/api/datasets", params={"author": name, "sort": "createdAt", "direction": 1})
    assert [d["id"] for d in resp.json()] == created_desc[::-1]
    resp = httpx.get(f"{server.url}/api/datasets", params={"author": name, "sort": "lastModified", "direction": 1})
    assert [d["id"] for d in resp.json()] == [f"{name}/alpha-set", f"{name}/zeta-other", f"{name}/beta-set",
                                              f"{name}/gamma-set"]


def test_list_datasets_unknown_sort_is_a_bad_request(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    hf_api(server, token).create_repo(f"{name}/some-set", repo_type="dataset")
    resp = httpx.get(f"{server.url}/api/datasets", params={"author": name, "sort": "no-such-key"})
    assert resp.status_code == 400
    assert resp.headers["x-error-code"] == "BadRequest"


def test_tree_pagination_returns_every_entry_once(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    api = hf_api(server, token)
    repo_id = f"{name}/many-files"
    api.create_repo(repo_id)
    paths = [f"d{i % 3}/f{i:03d}.txt" for i in range(250)]
    api.create_commit(repo_id, commit_message="many", operations=[
        CommitOperationAdd(p, p.encode()) for p in paths])
    expected = sorted(paths + [".gitattributes", "d0", "d1", "d2"])

    # An expanded listing is paged by 100: the first page says there is more.
    first = httpx.get(f"{server.url}/api/models/{repo_id}/tree/main", params={"recursive": "true", "expand": "true"})
    assert len(first.json()) == 100 and 'rel="next"' in first.headers["link"]

    entries = list(api.list_repo_tree(repo_id, recursive=True, expand=True))
    got = [e.path for e in entries]
    assert len(got) == len(expected) and sorted(got) == expected
    assert all(e.last_commit is not None for e in entries)
    # With an explicit small page, cursor after cursor, the same entries once each.
    seen: list[str] = []
    url: str | None = f"{server.url}/api/models/{repo_id}/tree/main?recursive=true&limit=37"
    pages = 0
    while url:
        resp = httpx.get(url)
        seen += [e["path"] for e in resp.json()]
        url = resp.links.get("next", {}).get("url")
        pages += 1
    assert pages == -(-len(expected) // 37) and seen == got


def test_commit_pagination_returns_every_commit_once(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    api = hf_api(server, token)
    repo_id = f"{name}/many-commits"
    api.create_repo(repo_id)
    oids = [api.create_commit(repo_id, commit_message=f"c{i}",
                              operations=[CommitOperationAdd("n.txt", f"{i}\n".encode())]).oid
            for i in range(60)]  # more than one 50-commit page
    first = httpx.get(f"{server.url}/api/models/{repo_id}/commits/main")
    assert len(first.json()) == 50 and 'rel="next"' in first.headers["link"]
    commits = api.list_repo_commits(repo_id)
    assert [c.commit_id for c in commits[:-1]] == oids[::-1]
    assert [c.title for c in commits] == [f"c{i}" for i in range(59, -1, -1)] + ["initial commit"]
    assert len({c.commit_id for c in commits}) == 61

"""SCIM filters are SQL (bastion.scim.filters), on SQLite and PostgreSQL: for each filter the server's answer
must be exactly what scim2-models' own `ScimFilter.match` says of the resources as served (the in-memory
semantics the SQL replaced), paged with startIndex/count in a stable order; an attribute the SQL cannot
express is a 400 invalidFilter, never a slow scan or a 500."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest
from scim2_models import Context, Group, ScimFilter, User

from tests.scim.conftest import GROUP_SCHEMA, PATCH_SCHEMA, USER_SCHEMA, ScimWorld, new_user

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


def listed(client: httpx.Client, path: str, flt: str | None, page: int = 200) -> tuple[list[str], int]:
    """Every id `path` lists for `flt`, page after page, and the totalResults the first page gave."""
    ids: list[str] = []
    total, start = None, 1
    while True:
        params: dict[str, Any] = {"startIndex": start, "count": page}
        if flt is not None:
            params["filter"] = flt
        r = client.get(path, params=params)
        assert r.status_code == 200, (flt, r.text)
        body = r.json()
        total = body["totalResults"] if total is None else total
        assert body["totalResults"] == total and body["startIndex"] == start, (flt, body)
        got = [item["id"] for item in body.get("Resources", [])]
        assert body["itemsPerPage"] == len(got)
        ids += got
        if len(got) < page:
            return ids, total
        start += page


def served(client: httpx.Client, path: str, model: type[Any]) -> list[Any]:
    """Every resource as the server serves it (no filter), in the order it lists them."""
    out = []
    r = client.get(path, params={"count": 200})
    assert r.status_code == 200 and r.json()["totalResults"] <= 200, r.text  # one page: the module's world is small
    for item in r.json()["Resources"]:
        out.append(model.model_validate(item, scim_ctx=Context.RESOURCE_QUERY_RESPONSE))
    return out


def patch(client: httpx.Client, path: str, *ops: dict[str, Any]) -> httpx.Response:
    return client.patch(path, json={"schemas": [PATCH_SCHEMA], "Operations": list(ops)})


@pytest.fixture(scope="module")
def people(world: ScimWorld) -> dict[str, Any]:
    """In the org: users its SCIM created (with and without externalId, displayName, addresses; one inactive),
    a member it linked but did not create, a former member it did not create (shown without personal data),
    and groups with members."""
    tag = secrets.token_hex(3)
    server = world.server
    out: dict[str, Any] = {"tag": tag}
    with world.org_scim as c:
        out["a"] = new_user(c, f"q{tag}a", externalId=f"Ext-{tag}-A", displayName=f"Alice {tag}",
                            emails=[{"value": f"alice.{tag}@corp.example", "primary": True, "type": "work"},
                                    {"value": f"ALICE.{tag}@Home.Example", "type": "home"}])
        out["b"] = new_user(c, f"q{tag}b", externalId=f"ext-{tag}-b")
        r = c.post("/Users", json={"schemas": [USER_SCHEMA], "userName": f"q{tag}c", "active": False})
        assert r.status_code == 201, r.text  # no address: NAME@scim.invalid, never served
        out["c"] = r.json()
        linked, _ = server.create_user(f"q{tag}linked")
        former, _ = server.create_user(f"q{tag}former")
        for name in (linked, former):
            server.admin("add-member", world.org, name, "--role", "read")
            r = c.post("/Users", json={"schemas": [USER_SCHEMA], "userName": name})
            assert r.status_code == 201, r.text
            out[name.removeprefix(f"q{tag}")] = r.json()
        r = patch(c, f"/Users/{out['former']['id']}", {"op": "replace", "path": "active", "value": False})
        assert r.status_code == 200 and "emails" not in r.json(), r.text
        for name, members in (("one", ["a", "b"]), ("two", ["b"]), ("three", [])):
            r = c.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": f"G{tag} {name}",
                                        "externalId": f"gx-{tag}-{name}" if members else None,
                                        "members": [{"value": out[m]["id"]} for m in members]})
            assert r.status_code == 201, r.text
            out[f"g-{name}"] = r.json()
    return out


def user_filters(p: dict[str, Any]) -> list[str]:
    tag, a, b = p["tag"], p["a"], p["b"]
    return [
        f'userName eq "Q{tag}A"', f'userName co "{tag}"', f'userName sw "q{tag}l"', 'userName ew "ED"',
        f'userName gt "q{tag}b"', f'userName le "q{tag}c"', f'userName ne "q{tag}a"',
        f'externalId eq "Ext-{tag}-A"', f'externalId eq "ext-{tag}-a"',  # caseExact: only the first matches
        "externalId pr", "not (externalId pr)", f'externalId ne "ext-{tag}-b"', f'externalId sw "ext-{tag}"',
        f'emails.value eq "alice.{tag}@home.example"', f'emails co "{tag}@corp"', 'emails[value ew "example"]',
        'emails[value sw "alice" and not (value co "home")]', f'emails.value eq "q{tag}former@example.com"',
        f'emails.value eq "q{tag}linked@example.com"', f'emails ew "{tag}c@scim.invalid"', "emails pr",
        f'emails ne "alice.{tag}@corp.example"',
        "active eq true", "active eq false", "active ne true",
        f'displayName eq "alice {tag}"', "displayName pr",
        f'meta.lastModified gt "{b["meta"]["lastModified"]}"', f'meta.lastModified le "{b["meta"]["lastModified"]}"',
        f'meta.created ge "{a["meta"]["created"]}"', f'meta.created lt "{a["meta"]["created"]}"',
        f'groups.value eq "{p["g-two"]["id"]}"', "groups pr", f'groups[value eq "{p["g-one"]["id"]}"]',
        f'id eq "{a["id"]}"', f'id ne "{a["id"]}"', 'id eq "nothex"',
        f'(userName sw "q{tag}l" or externalId pr) and not (active eq false)',
        f'userName eq "q{tag}a" or (emails pr and not (displayName pr))',
        'nosuchattribute eq "x"',  # an attribute Users do not have matches nothing (RFC 7644 §3.4.2.1)
        # Edges, answered as match() answers them:
        'meta.lastModified gt "2020-01-01T00:00:00"', 'meta.lastModified ne "2020-01-01T00:00:00"',
        "externalId eq null", "externalId ne null", "emails eq null", "id eq null", "userName gt null",
        'active eq "true"', 'displayName co ""', 'userName sw ""', 'userName ew ""', 'userName eq ""',
        'meta.created co "20"', "members eq null",
    ]


def group_filters(p: dict[str, Any]) -> list[str]:
    tag, a, b = p["tag"], p["a"], p["b"]
    return [f'displayName eq "g{tag} ONE"', f'displayName sw "G{tag}"', 'displayName co "tw"',
            f'externalId eq "gx-{tag}-one"', "externalId pr", "not (externalId pr)",
            f'members.value eq "{b["id"]}"', f'members eq "{a["id"]}"', f'members[value eq "{a["id"]}"]',
            f'members ne "{a["id"]}"', "members pr", "not (members pr)",
            f'id eq "{p["g-two"]["id"]}"', f'meta.created ge "{p["g-two"]["meta"]["created"]}"',
            f'displayName sw "G{tag}" and (members pr or externalId pr)', f'displayName eq "G{tag} four"']


@pytest.mark.parametrize("endpoint", ["org", "instance"])
def test_user_filters_answer_what_scim2_models_match_says(world: ScimWorld, people: dict[str, Any],
                                                         endpoint: str) -> None:
    tag = people["tag"]
    with (world.org_scim if endpoint == "org" else world.instance) as c:
        everyone = [u for u in served(c, "/Users", User) if tag in (u.user_name or "")] if endpoint == "org" else []
        if endpoint == "instance":  # the instance sees every account: the filter keeps to this test's
            everyone = [User.model_validate(item, scim_ctx=Context.RESOURCE_QUERY_RESPONSE) for item in
                        c.get("/Users", params={"filter": f'userName co "{tag}"', "count": 200}).json()["Resources"]]
        assert len(everyone) == 5
        sizes = set()
        for flt in user_filters(people):
            expected = [u.id for u in everyone if ScimFilter[User](flt).match(u)]
            got, total = listed(c, "/Users", f'({flt}) and userName co "{tag}"', page=2)
            assert (got, total) == (expected, len(expected)), flt
            sizes.add(len(expected))
        assert sizes >= {0, 1, 2, 3, 4}, sizes  # the filters tell the users apart, not all or nothing


def test_group_filters_and_search_across_types(world: ScimWorld, people: dict[str, Any]) -> None:
    tag = people["tag"]
    with world.org_scim as c:
        groups = [g for g in served(c, "/Groups", Group) if (g.display_name or "").startswith(f"G{tag}")]
        assert len(groups) == 3
        sizes = set()
        for flt in group_filters(people):
            expected = [g.id for g in groups if ScimFilter[Group](flt).match(g)]
            got, total = listed(c, "/Groups", f'({flt}) and displayName sw "G{tag}"', page=2)
            assert (got, total) == (expected, len(expected)), flt
            sizes.add(len(expected))
        assert sizes >= {0, 1, 2}, sizes
        # POST /.search: Users then Groups, paged across both; an attribute only one type has is false for the other.
        flt = f'userName sw "q{tag}" or displayName sw "G{tag}"'
        users = listed(c, "/Users", f'userName sw "q{tag}"')[0]
        pages = []
        for start in (1, 3, 5, 7, 9):
            r = c.post("/.search", json={"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                                         "filter": flt, "startIndex": start, "count": 2})
            assert r.status_code == 200 and r.json()["totalResults"] == len(users) + 3, r.text
            pages += [item["id"] for item in r.json().get("Resources", [])]
        assert pages == users + [people[f"g-{n}"]["id"] for n in ("one", "two", "three")]
        r = c.post("/Users/.search", json={"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                                           "filter": f'emails.value eq "ALICE.{tag}@corp.example"'})
        assert [u["id"] for u in r.json()["Resources"]] == [people["a"]["id"]], r.text


@pytest.mark.parametrize(("path", "flt", "named"), [
    ("/Users", 'name.givenName eq "Sam"', "name.givenName"),
    ("/Users", 'emails.type eq "work"', "emails.type"),
    ("/Users", 'emails[type eq "work"]', "value"),
    ("/Users", 'userName eq "x" or name.familyName pr', "name.familyName"),
    ("/Users", 'id co "00"', "id"),
    ("/Groups", 'members.display eq "x"', "members.display"),
    ("/Groups", 'members co "00"', "members.value"),
])
def test_a_filter_sql_cannot_express_is_invalid_filter(world: ScimWorld, path: str, flt: str, named: str) -> None:
    with world.org_scim as c:
        r = c.get(path, params={"filter": flt})
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["schemas"] == [ERROR_SCHEMA] and body["scimType"] == "invalidFilter", body
        assert named in body["detail"], body
        r = c.post(f"{path}/.search", json={"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                                             "filter": flt})
        assert r.status_code == 400 and r.json()["scimType"] == "invalidFilter", r.text

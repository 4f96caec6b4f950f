"""The node over HTTP against real PostgreSQL: the Handle.Net-shaped API, auth, concurrency."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import psycopg
import pytest

import identifiers

NodeFactory = Callable[..., AbstractAsyncContextManager[identifiers.Node]]


H = "88.709.911/dev.kiln.01"


def v(index: int, type_: str, value: Any, fmt: str = "string", ttl: int = 86400) -> dict[str, Any]:
    return {"index": index, "type": type_, "data": {"format": fmt, "value": value}, "ttl": ttl}


RECORD = [
    v(1, "URL", "https://evidence.example.org/d/1"),
    v(2, "GT_MODEL", "S7-1200 窑炉"),
    v(300, "HS_PUBKEY", "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq8s=", "base64"),
    v(5, "GT_RAW", "0a0b", "hex"),
]


@pytest.fixture
async def http(node: identifiers.Node) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=node.url) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_create_resolve_and_admin_values_stay_private(
    http: httpx.AsyncClient, token: str
) -> None:
    # as Handle.Net: 201 for a create that may not overwrite, 200 for one that may
    created = await http.put(
        f"/api/handles/{H}?overwrite=false", json={"values": RECORD}, headers=bearer(token)
    )
    assert created.status_code == 201
    assert created.json() == {"responseCode": 1, "handle": H, "status": "created"}

    public = await http.get(f"/api/handles/{H}")
    assert public.status_code == 200
    body = public.json()
    assert body["responseCode"] == 1
    assert body["handle"] == H
    assert [(x["index"], x["type"]) for x in body["values"]] == [
        (1, "URL"), (2, "GT_MODEL"), (5, "GT_RAW"), (300, "HS_PUBKEY"),
    ]  # fmt: skip
    assert body["values"][1]["data"] == {"format": "string", "value": "S7-1200 窑炉"}
    assert all(x["timestamp"].endswith("Z") for x in body["values"])

    assert public.headers["cache-control"] == "public, max-age=86400"

    # the owner sees the HS_ADMIN value the node added; nobody else does
    owner = (await http.get(f"/api/handles/{H}", headers=bearer(token))).json()
    admin = [x for x in owner["values"] if x["type"] == "HS_ADMIN"]
    assert admin == [
        {**v(100, "HS_ADMIN", {"handle": "0.NA/88.709.911", "index": 200,
                               "permissions": "011111110011"}, "admin"),
         "timestamp": admin[0]["timestamp"]}
    ]  # fmt: skip

    # the same record again changes nothing, not even timestamps
    again = await http.put(f"/api/handles/{H}", json={"values": RECORD}, headers=bearer(token))
    assert again.status_code == 200
    assert again.json()["status"] == "unchanged"
    assert (await http.get(f"/api/handles/{H}")).json() == body

    # a record whose only values are admin values has nothing public: values not found
    admin_only = [v(100, "HS_ADMIN", {"handle": "0.NA/88.709.911", "index": 300}, "admin")]
    put = await http.put(
        f"/api/handles/{H}.adm", json={"values": admin_only}, headers=bearer(token)
    )
    assert (put.status_code, put.json()["status"]) == (200, "created")
    hidden = await http.get(f"/api/handles/{H}.adm")
    assert (hidden.status_code, hidden.json()) == (
        200, {"responseCode": 200, "handle": f"{H}.adm", "values": []},
    )  # fmt: skip
    seen = (await http.get(f"/api/handles/{H}.adm", headers=bearer(token))).json()
    assert [x["data"]["value"]["index"] for x in seen["values"]] == [300]

    # a prefix typed in upper case and a percent-encoded slash name the same handle
    same = await http.get("/api/handles/88.709.911%2Fdev.kiln.01")
    assert same.json() == body
    upper = await http.get("/api/handles/88.709.911/DEV.kiln.01")
    assert upper.status_code == 404
    assert upper.json()["responseCode"] == 100


async def test_type_and_index_filters(http: httpx.AsyncClient, token: str) -> None:
    await http.put(f"/api/handles/{H}", json={"values": RECORD}, headers=bearer(token))

    async def indexes(query: str) -> tuple[int, int, list[int]]:
        r = await http.get(f"/api/handles/{H}?{query}")
        return r.status_code, r.json()["responseCode"], [x["index"] for x in r.json()["values"]]

    assert await indexes("type=URL") == (200, 1, [1])
    assert await indexes("index=300&index=2") == (200, 1, [2, 300])
    assert await indexes("type=GT_RAW&index=1") == (200, 1, [1, 5])  # union, as Handle.Net
    assert await indexes("type=HS_ADMIN") == (200, 200, [])  # not public: values not found
    assert await indexes("index=100") == (200, 200, [])
    assert await indexes("index=999") == (200, 200, [])


async def test_overwrite_semantics_and_value_merge(http: httpx.AsyncClient, token: str) -> None:
    auth = bearer(token)
    await http.put(f"/api/handles/{H}", json={"values": RECORD}, headers=auth)

    refused = await http.put(
        f"/api/handles/{H}?overwrite=false", json={"values": [v(1, "URL", "x")]}, headers=auth
    )
    assert refused.status_code == 409
    assert refused.json()["responseCode"] == 101
    assert len((await http.get(f"/api/handles/{H}")).json()["values"]) == 4

    replaced = await http.put(
        f"/api/handles/{H}", json={"values": [v(1, "URL", "https://new")]}, headers=auth
    )
    assert replaced.status_code == 200
    assert replaced.json()["status"] == "updated"
    values = (await http.get(f"/api/handles/{H}")).json()["values"]
    assert [(x["index"], x["data"]["value"]) for x in values] == [(1, "https://new")]

    # PUT ?index= adds or replaces single values and keeps the rest
    merged = await http.put(
        f"/api/handles/{H}?index=various",
        json={"values": [v(7, "GT_SERIAL", "K1-42"), v(1, "URL", "https://newer")]},
        headers=auth,
    )
    assert merged.status_code == 200
    assert merged.json()["status"] == "updated"
    values = (await http.get(f"/api/handles/{H}")).json()["values"]
    assert [(x["index"], x["data"]["value"]) for x in values] == [
        (1, "https://newer"), (7, "K1-42"),
    ]  # fmt: skip
    clash = await http.put(
        f"/api/handles/{H}?index=various&overwrite=false",
        json={"values": [v(7, "GT_SERIAL", "other")]},
        headers=auth,
    )
    assert clash.status_code == 409
    assert clash.json()["responseCode"] == 201
    added = await http.put(
        f"/api/handles/{H}?index=various&overwrite=false",
        json={"values": [v(8, "GT_LOCATION", "2号车间")]},
        headers=auth,
    )
    assert (added.status_code, added.json()["status"]) == (201, "updated")  # as Handle.Net
    missing = await http.put(
        "/api/handles/88.709.911/none?index=various", json={"values": [v(1, "URL", "x")]},
        headers=auth,
    )  # fmt: skip
    assert missing.status_code == 404
    assert missing.json()["responseCode"] == 100


async def test_value_merges_cannot_grow_a_record_past_the_limit(make_node: NodeFactory) -> None:
    async with make_node(["88.709"], limits={"values_per_handle": 3}) as node:
        _, token = await node.registry.create_token("88.709.911", days=1)
        async with httpx.AsyncClient(base_url=node.url, headers=bearer(token)) as http:
            # two values plus the admin value the node adds: the record is full
            full = await http.put(f"/api/handles/{H}", json={"values": RECORD[:2]})
            assert full.json()["status"] == "created"
            before = (await http.get(f"/api/handles/{H}")).json()
            more = await http.put(
                f"/api/handles/{H}?index=various", json={"values": [v(7, "GT_SERIAL", "K")]}
            )
            assert (more.status_code, more.json()["responseCode"]) == (400, 202)
            assert "more than 3 values" in more.json()["message"]
            assert (await http.get(f"/api/handles/{H}")).json() == before
            # replacing a value in place keeps the count and is allowed
            same_count = await http.put(
                f"/api/handles/{H}?index=various", json={"values": [v(1, "URL", "https://b")]}
            )
            assert same_count.json()["status"] == "updated"


async def test_delete_values_and_records(http: httpx.AsyncClient, token: str) -> None:
    auth = bearer(token)
    await http.put(f"/api/handles/{H}", json={"values": RECORD}, headers=auth)
    assert (await http.delete(f"/api/handles/{H}")).status_code == 401  # no token, no delete

    dropped = await http.delete(f"/api/handles/{H}?index=5", headers=auth)
    assert dropped.status_code == 200
    assert dropped.json() == {"responseCode": 1, "handle": H}
    assert 5 not in [x["index"] for x in (await http.get(f"/api/handles/{H}")).json()["values"]]
    none = await http.delete(f"/api/handles/{H}?index=5", headers=auth)
    assert none.status_code == 400
    assert none.json()["responseCode"] == 200

    assert (await http.delete(f"/api/handles/{H}", headers=auth)).status_code == 200
    gone = await http.get(f"/api/handles/{H}")
    assert gone.status_code == 404
    assert gone.json() == {"responseCode": 100, "handle": H, "message": "handle not found"}
    again = await http.delete(f"/api/handles/{H}", headers=auth)
    assert again.status_code == 404
    assert again.json()["responseCode"] == 100


async def test_batch_of_2000_is_one_transaction(http: httpx.AsyncClient, token: str) -> None:
    auth = bearer(token)
    records = [
        {"handle": f"88.709.911/dev.{i:05d}", "values": [v(1, "GT_SERIAL", f"S{i}")]}
        for i in range(2000)
    ]
    done = await http.post("/api/batch", json={"records": records}, headers=auth, timeout=60)
    assert done.status_code == 201, done.text
    assert done.json()["created"] == 2000
    assert done.json()["updated"] == 0
    assert done.json()["results"][1999] == {"handle": "88.709.911/dev.01999", "status": "created"}

    listed = await http.get("/api/handles?prefix=88.709.911&pageSize=500&page=3", headers=auth)
    assert listed.json()["totalCount"] == 2000
    assert listed.json()["handles"][0] == "88.709.911/dev.01500"
    assert len(listed.json()["handles"]) == 500
    assert (await http.get("/api/handles?prefix=88.709.911")).status_code == 401

    # 2,001 new, valid records: refused whole, before anything is written
    too_many = [{"handle": f"88.709.911/over.{i}", "values": [v(1, "URL", "x")]}
                for i in range(2001)]  # fmt: skip
    over = await http.post("/api/batch", json={"records": too_many}, headers=auth)
    assert over.status_code == 400
    assert over.json()["responseCode"] == 202
    assert "more than 2000 records" in over.json()["message"]
    assert (await http.get("/api/handles/88.709.911/over.0")).status_code == 404

    # one bad record at the end: nothing of the batch is written
    fresh = [{"handle": f"88.709.911/new.{i}", "values": [v(1, "URL", "x")]} for i in range(10)]
    bad = [*fresh, {"handle": "88.709.911/new.bad", "values": [v(1, "URL", 5)]}]
    refused = await http.post("/api/batch", json={"records": bad}, headers=auth)
    assert refused.status_code == 400
    assert refused.json()["responseCode"] == 202
    assert refused.json()["handle"] == "88.709.911/new.bad"
    assert (await http.get("/api/handles/88.709.911/new.0")).status_code == 404

    # an existing handle without overwrite fails the batch (101), again writing nothing
    clash = [*fresh, records[7]]
    conflict = await http.post("/api/batch", json={"records": clash}, headers=auth)
    assert conflict.status_code == 409
    assert conflict.json()["responseCode"] == 101
    assert conflict.json()["handle"] == "88.709.911/dev.00007"
    assert (await http.get("/api/handles/88.709.911/new.0")).status_code == 404

    # with overwrite: created, updated and unchanged in one call
    changed = {"handle": records[8]["handle"], "values": [v(1, "GT_SERIAL", "changed")]}
    mixed = [*fresh, records[7], changed]
    ok = await http.post("/api/batch", json={"records": mixed, "overwrite": True}, headers=auth)
    assert ok.status_code == 200
    assert (ok.json()["created"], ok.json()["updated"], ok.json()["unchanged"]) == (10, 1, 1)


async def test_token_scope_expiry_and_hashing(
    node: identifiers.Node, http: httpx.AsyncClient, token: str, pg_dsn: str
) -> None:
    body = {"values": [v(1, "URL", "x")]}
    anonymous = await http.put(f"/api/handles/{H}", json=body)
    assert anonymous.status_code == 401
    assert anonymous.json()["responseCode"] == 402
    assert anonymous.headers["www-authenticate"] == "Bearer"

    for bad in ("nonsense", "gti.abc.def", token[:-1] + ("A" if token[-1] != "A" else "B")):
        wrong = await http.put(f"/api/handles/{H}", json=body, headers=bearer(bad))
        assert (wrong.status_code, wrong.json()["responseCode"]) == (403, 403), bad
    basic = await http.put(f"/api/handles/{H}", json=body, headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 403

    other_firm = await http.put("/api/handles/88.709.912/dev.1", json=body, headers=bearer(token))
    assert other_firm.status_code == 403
    assert other_firm.json()["responseCode"] == 401
    batch = {"records": [{"handle": H, **body}, {"handle": "88.709.912/x", **body}]}
    mixed = await http.post("/api/batch", json=batch, headers=bearer(token))
    assert mixed.status_code == 403
    assert mixed.json()["responseCode"] == 401
    assert (await http.get(f"/api/handles/{H}")).status_code == 404  # nothing written

    # another firm's token reads only what is public, and may not list this firm's handles
    await http.put(f"/api/handles/{H}", json=body, headers=bearer(token))
    _, other = await node.registry.create_token("88.709.912", days=1)
    seen = (await http.get(f"/api/handles/{H}", headers=bearer(other))).json()
    assert [x["type"] for x in seen["values"]] == ["URL"]
    owner = (await http.get(f"/api/handles/{H}", headers=bearer(token))).json()
    assert [x["type"] for x in owner["values"]] == ["URL", "HS_ADMIN"]
    listing = await http.get("/api/handles?prefix=88.709.911", headers=bearer(other))
    assert (listing.status_code, listing.json()["responseCode"]) == (403, 401)
    assert (await http.delete(f"/api/handles/{H}", headers=bearer(other))).status_code == 403
    assert (await http.delete(f"/api/handles/{H}", headers=bearer(token))).status_code == 200

    # a sub-prefix of the firm is the firm's
    sub = await http.put("/api/handles/88.709.911.2/dev.1", json=body, headers=bearer(token))
    assert sub.json()["status"] == "created"

    # the node operator's token covers every firm under the node
    _, operator = await node.registry.create_token("88.709", days=1)
    ok = await http.put("/api/handles/88.709.912/dev.1", json=body, headers=bearer(operator))
    assert ok.json()["status"] == "created"

    short, expiring = await node.registry.create_token("88.709.911", days=0.00002)  # ~2 s
    renewed = await http.put(f"/api/handles/{H}", json=body, headers=bearer(expiring))
    assert renewed.json()["status"] == "created"
    await asyncio.sleep(2.1)
    expired = await http.put(f"/api/handles/{H}", json=body, headers=bearer(expiring))
    assert expired.status_code == 403
    assert expired.json()["responseCode"] == 403

    assert await node.registry.revoke_token(operator.split(".")[1])
    revoked = await http.put("/api/handles/88.709.912/dev.2", json=body, headers=bearer(operator))
    assert revoked.status_code == 403

    # only the SHA-256 of the secret is stored
    secret = token.split(".")[2]
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute("SELECT id, sha256, prefix FROM identifiers.tokens")
        rows = await cur.fetchall()
        dump = json.dumps([[r[0], r[1].hex(), r[2]] for r in rows])
    assert secret not in dump
    assert hashlib.sha256(secret.encode()).hexdigest() in dump
    assert {t.prefix for t in await node.registry.tokens()} == {
        "88.709.911",
        "88.709",
        "88.709.912",
    }
    assert short.prefix == "88.709.911"


async def test_referrals_for_prefixes_served_elsewhere(make_node: NodeFactory) -> None:
    referrals = [{"prefix": "88.710", "url": "http://127.0.0.1:9/"}]
    async with (
        make_node(["88.709"], referrals=referrals) as node,
        httpx.AsyncClient(base_url=node.url) as http,
    ):
        # a service referral is 302, which Handle.Net answers with HTTP 300 Multiple Choices
        referred = await http.get("/api/handles/88.710.5/dev.1")
        assert referred.status_code == 300
        assert referred.json()["responseCode"] == 302
        assert referred.json()["referral"] == {"prefix": "88.710", "url": "http://127.0.0.1:9"}
        unknown = await http.get("/api/handles/88.999.5/dev.1")
        assert unknown.status_code == 400
        assert unknown.json()["responseCode"] == 301
        assert "referral" not in unknown.json()
        _, token = await node.registry.create_token("88.710", days=1)
        write = await http.put(
            "/api/handles/88.710.5/dev.1", json={"values": [v(1, "URL", "x")]},
            headers=bearer(token),
        )  # fmt: skip
        assert write.status_code == 300
        assert write.json()["responseCode"] == 302
        with pytest.raises(identifiers.HandleNotFound):
            await node.registry.get("88.710.5/dev.1")
        info = (await http.get("/api")).json()
        assert info["authoritative"] == ["88.709"]


async def test_concurrent_creation_exactly_one_wins(node: identifiers.Node, token: str) -> None:
    async with httpx.AsyncClient(base_url=node.url, headers=bearer(token)) as http:

        async def create(i: int) -> httpx.Response:
            body = {"values": [v(1, "GT_SERIAL", f"writer-{i}")]}
            return await http.put(f"/api/handles/{H}?overwrite=false", json=body)

        answers = await asyncio.gather(*(create(i) for i in range(16)))
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [201] + [409] * 15
        assert {r.json()["responseCode"] for r in answers if r.status_code == 409} == {101}
        winner = next(i for i, r in enumerate(answers) if r.status_code == 201)
        stored = (await http.get(f"/api/handles/{H}?type=GT_SERIAL")).json()["values"]
        assert stored[0]["data"]["value"] == f"writer-{winner}"

        # with overwrite every writer succeeds, one creating and the rest replacing
        async def upsert(i: int) -> httpx.Response:
            body = {"values": [v(1, "GT_SERIAL", f"upsert-{i}")]}
            return await http.put("/api/handles/88.709.911/upsert", json=body)

        upserts = await asyncio.gather(*(upsert(i) for i in range(8)))
        assert [r.status_code for r in upserts] == [200] * 8
        assert sorted(r.json()["status"] for r in upserts)[0:2] == ["created", "updated"]

        # overlapping batches: one commits, the other fails whole with 101
        def batch(tag: str) -> dict[str, Any]:
            records = [{"handle": f"88.709.911/b.{i}", "values": [v(1, "URL", tag)]}
                       for i in range(200)]  # fmt: skip
            return {"records": records}

        first, second = await asyncio.gather(
            http.post("/api/batch", json=batch("one")), http.post("/api/batch", json=batch("two"))
        )
        assert sorted([first.status_code, second.status_code]) == [201, 409]
        loser = first if first.status_code == 409 else second
        assert loser.json()["responseCode"] == 101
        tag = "one" if first.status_code == 201 else "two"
        values = {
            (await http.get(f"/api/handles/88.709.911/b.{i}")).json()["values"][0]["data"]["value"]
            for i in (0, 99, 199)
        }
        assert values == {tag}


async def test_openapi_spec_is_served(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths["/api/handles/{handle}"]) == {"get", "put", "delete"}
    batch_body = paths["/api/batch"]["post"]["requestBody"]["content"]["application/json"]
    assert batch_body["schema"]["properties"]["records"]["maxItems"] == 2000
    assert "get" in paths["/api/handles"]
    put_body = paths["/api/handles/{handle}"]["put"]["requestBody"]
    assert "values" in put_body["content"]["application/json"]["schema"]["properties"]

"""An adversary with the wrong credentials, against the evidence API and the identifier node.

Evidence API: the store of the evidence tests (two firms filled through the real pipeline)
served over HTTP; every data endpoint is asked for firm A's data without a token, with an
expired, an unknown and a revoked-by-expiry token, and with firm B's token. A leak is an
answer that is anything but ``{"error": …}``, or a listing that names another firm.

Identifier node: writes (PUT, DELETE, batch) outside the writer's prefix, or without a valid
token. A leak is a record of the registry that changed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import evidence
import identifiers

pytestmark = pytest.mark.attack

FIRM_A, FIRM_B = "88.709.911", "88.709.912"  # the evidence plant's HEALTHY and FAULTY firms
SECRETS = {name: evidence.new_token()[0] for name in ("a", "b", "expired")}


def tokens() -> list[dict[str, Any]]:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    scoped = {"a": ("evaluator", f"{FIRM_A}/firm", None),
              "b": ("provider", f"{FIRM_B}/firm", None),
              "expired": ("evaluator", f"{FIRM_A}/firm", past)}  # fmt: skip
    return [
        {"name": name, "role": role, "firms": [firm], "expires": expires,
         "sha256": evidence.digest(SECRETS[name])}
        for name, (role, firm, expires) in scoped.items()
    ]  # fmt: skip


@pytest.fixture(scope="module")
def api(plant: Any, served: type, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with served(plant.dsn, tmp_path_factory.mktemp("attack-api"), tokens()) as service:
        yield service


def firm_a_endpoints(plant: Any) -> list[tuple[str, dict[str, str]]]:
    window = {"start": plant.at(0).isoformat(), "end": plant.at(180).isoformat()}
    firm, kiln = f"{FIRM_A}/firm", f"{FIRM_A}/dev.kiln"
    return [
        ("/api/v1/devices", {"firm": firm}),
        ("/api/v1/live", {"firm": firm, "device": kiln}),
        ("/api/v1/series", {"firm": firm, "device": kiln, "tag": "temp", **window}),
        ("/api/v1/evidence", {"firm": firm, **window}),
    ]


#: how each attacker authenticates: headers and extra query parameters
CREDENTIALS: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    "none": ("API call without a token", {}, {}),
    "expired": ("API call with an expired token",
                {"Authorization": f"Bearer {SECRETS['expired']}"}, {}),
    "unknown": ("API call with a made-up token",
                {"Authorization": f"Bearer {evidence.new_token()[0]}"}, {}),
    "basic": ("API call with Basic credentials",
              {"Authorization": "Basic YWRtaW46YWRtaW4="}, {}),
    "query": ("API call with the token in the query string", {}, {"token": SECRETS["a"],
              "access_token": SECRETS["a"]}),
    "other-firm": ("API call with another firm's token",
                   {"Authorization": f"Bearer {SECRETS['b']}"}, {}),
}  # fmt: skip


def leaked(answer: httpx.Response) -> int:
    """1 if the answer carries anything but an error."""
    try:
        body = answer.json()
    except ValueError:
        return 1
    return int(answer.is_success or not isinstance(body, dict) or set(body) != {"error"})


@pytest.mark.parametrize("who", list(CREDENTIALS))
def test_firm_data_without_the_right_token_is_refused(
    who: str, api: Any, plant: Any, verdict: Any
) -> None:
    title, headers, extra = CREDENTIALS[who]
    expected = 403 if who == "other-firm" else 401
    statuses, leaks = set(), 0
    for path, params in firm_a_endpoints(plant):
        answer = httpx.get(
            f"{api.url}{path}", params={**params, **extra}, headers=headers, timeout=30
        )
        statuses.add(answer.status_code)
        leaks += leaked(answer)
    endpoints = len(firm_a_endpoints(plant))
    row = verdict(
        f"{title} (×{endpoints} endpoints)",
        f"HTTP {expected}",
        "HTTP " + "/".join(str(s) for s in sorted(statuses)),
        leaks,
    )
    assert row.held, (statuses, leaks)


def test_another_firms_token_lists_its_own_firm_only(api: Any, verdict: Any) -> None:
    headers = {"Authorization": f"Bearer {SECRETS['b']}"}
    answer = httpx.get(f"{api.url}/api/v1/firms", headers=headers, timeout=30)
    listed = [f["identifier"] for f in answer.json()]
    foreign = sum(f != f"{FIRM_B}/firm" for f in listed)
    row = verdict(
        "firm list with one firm's token",
        "HTTP 200, its own firm only",
        f"HTTP {answer.status_code}, {len(listed)} firm(s)",
        foreign,
        as_expected=answer.status_code == 200 and listed == [f"{FIRM_B}/firm"],
    )
    assert row.held, listed


def test_the_leak_check_sees_firm_data_when_the_token_is_right(api: Any, plant: Any) -> None:
    """The control of the tests above: with firm A's own token every endpoint answers data,
    and ``leaked`` counts it."""
    headers = {"Authorization": f"Bearer {SECRETS['a']}"}
    answers = [
        httpx.get(f"{api.url}{path}", params=params, headers=headers, timeout=30)
        for path, params in firm_a_endpoints(plant)
    ]
    assert [a.status_code for a in answers] == [200] * len(answers)
    assert sum(leaked(a) for a in answers) == len(answers)


# --- the identifier node --------------------------------------------------------------------


def gateway_values(enterprise: str) -> list[dict[str, Any]]:
    record = identifiers.GatewayRecord(enterprise=enterprise, public_key=bytes(range(32)))
    return [v.model_dump(mode="json") for v in record.to_values()]


def snapshot(kit: SimpleNamespace, dsn: str) -> dict[str, str]:
    rows = kit.fetch(dsn, "SELECT handle, vals::text FROM identifiers.handles")
    return dict(rows)


#: attack → (title, method, target, body, token name, expected HTTP status and Handle code)
WRITES: dict[str, tuple[str, str, str, Any, str | None, tuple[int, int]]] = {
    "no-token": ("identifier write without a token", "PUT", f"/api/handles/{FIRM_A}/gw.new",
                 {"values": gateway_values(f"{FIRM_A}/firm")}, None, (401, 402)),
    "expired": ("identifier write with an expired token", "PUT",
                f"/api/handles/{FIRM_A}/gw.new", {"values": gateway_values(f"{FIRM_A}/firm")},
                "expired", (403, 403)),
    "made-up": ("identifier write with a made-up token", "PUT",
                f"/api/handles/{FIRM_A}/gw.new", {"values": gateway_values(f"{FIRM_A}/firm")},
                "made-up", (403, 403)),
    "overwrite": ("identifier write outside the prefix: another firm's gateway key", "PUT",
                  f"/api/handles/{FIRM_B}/gw.b", {"values": gateway_values(f"{FIRM_A}/firm")},
                  "a", (403, 401)),
    "delete": ("identifier delete outside the prefix", "DELETE", f"/api/handles/{FIRM_B}/gw.b",
               None, "a", (403, 401)),
    "batch": ("identifier batch with one record outside the prefix", "POST", "/api/batch",
              {"overwrite": True, "records": [
                  {"handle": f"{FIRM_A}/gw.new", "values": gateway_values(f"{FIRM_A}/firm")},
                  {"handle": f"{FIRM_B}/gw.b", "values": gateway_values(f"{FIRM_A}/firm")}]},
              "a", (403, 401)),
    "longer-prefix": ("identifier write under a prefix extending the token's", "PUT",
                      f"/api/handles/{FIRM_A}0/gw.x",
                      {"values": gateway_values(f"{FIRM_A}0/firm")}, "a", (403, 401)),
    "list": ("identifier listing of another firm's prefix", "GET",
             f"/api/handles?prefix={FIRM_B}", None, "a", (403, 401)),
}  # fmt: skip


async def attempt(
    node: identifiers.Node,
    kit: SimpleNamespace,
    dsn: str,
    *,
    method: str,
    target: str,
    body: Any,
    secret: str | None,
) -> tuple[httpx.Response, int]:
    """The node's answer to one request, and how many records of the registry it changed."""
    before = await asyncio.to_thread(snapshot, kit, dsn)
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as http:
        answer = await http.request(method, target, json=body, headers=headers)
    after = await asyncio.to_thread(snapshot, kit, dsn)
    return answer, sum(before.get(h) != after.get(h) for h in before.keys() | after.keys())


async def firm_secrets(
    node: identifiers.Node, register: Any, kit: SimpleNamespace
) -> dict[str, str]:
    """Firm B's gateway registered; firm A's token, an expired one and a made-up one."""
    await register(kit.Chain(f"{FIRM_B}/gw.b"), [f"{FIRM_B}/dev.press"],
                   enterprise=f"{FIRM_B}/firm")  # fmt: skip
    _, valid = await node.registry.create_token(FIRM_A, days=1, label="firm A")
    _, expired = await node.registry.create_token(FIRM_A, days=-1, label="expired")
    made_up = valid[:-4] + ("AAAA" if not valid.endswith("AAAA") else "BBBB")  # wrong secret
    return {"a": valid, "expired": expired, "made-up": made_up}


@pytest.mark.parametrize("name", list(WRITES))
async def test_identifier_writes_outside_the_tokens_prefix_change_nothing(
    *, name: str, pg_dsn: str, node: identifiers.Node, register: Any, kit: SimpleNamespace,
    verdict: Any,
) -> None:  # fmt: skip
    title, method, target, body, who, (status, code) = WRITES[name]
    secrets = await firm_secrets(node, register, kit)
    secret = secrets[who] if who else None
    answer, changed = await attempt(
        node, kit, pg_dsn, method=method, target=target, body=body, secret=secret
    )
    listed = len(answer.json().get("handles", []))
    got = (answer.status_code, answer.json().get("responseCode"))
    row = verdict(
        title, f"HTTP {status}, code {code}", f"HTTP {got[0]}, code {got[1]}", changed + listed
    )
    assert row.held, answer.json()


async def test_the_change_check_sees_a_write_within_the_prefix(
    pg_dsn: str, node: identifiers.Node, register: Any, kit: SimpleNamespace
) -> None:
    """The control of the test above: firm A's token writes under firm A, and it counts."""
    secrets = await firm_secrets(node, register, kit)
    values = {"values": gateway_values(f"{FIRM_A}/firm")}
    answer, changed = await attempt(
        node, kit, pg_dsn, method="PUT", target=f"/api/handles/{FIRM_A}/gw.new", body=values,
        secret=secrets["a"],
    )  # fmt: skip
    assert (answer.status_code, changed) == (200, 1), answer.json()

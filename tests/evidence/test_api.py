"""The evidence API over the plant of conftest.py: every endpoint refuses a missing, unknown or
expired token (401) and a firm outside the token's scope (403), and answers the right token
with exactly what the store and the identifier records hold."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import TypeAdapter

import evidence
import gateway.protocol as wire
import identifiers
from common import load_key

HEALTHY, FAULTY = "88.709.911", "88.709.912"
SECRETS = {name: evidence.new_token()[0] for name in ("admin", "healthy", "faulty", "expired")}
H_FIRM, F_FIRM = f"{HEALTHY}/firm", f"{FAULTY}/firm"
KILN = f"{HEALTHY}/dev.kiln"


def tokens() -> list[dict[str, Any]]:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    scoped = {"healthy": ("evaluator", [H_FIRM], None), "faulty": ("provider", [F_FIRM], None),
              "expired": ("evaluator", [H_FIRM], past), "admin": ("admin", [], None)}  # fmt: skip
    return [
        {"name": name, "role": role, "firms": firms, "expires": expires,
         "sha256": evidence.digest(SECRETS[name])}
        for name, (role, firms, expires) in scoped.items()
    ]  # fmt: skip


@pytest.fixture(scope="module")
def api(plant: Any, kit: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # the plant's parameters, so that answers can be compared with collect's
    metrics = {"fresh_within": 60, "outage_after": 30}
    tmp = tmp_path_factory.mktemp("api")
    with kit.Served(plant.dsn, tmp, tokens(), metrics=metrics) as served:
        yield served


def get(api: Any, path: str, who: str | None, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {SECRETS[who]}"} if who else {}
    return httpx.get(f"{api.url}{path}", params=params, headers=headers, timeout=30)


def iso(t: dt.datetime) -> str:
    return t.isoformat()


def firm_endpoints(plant: Any) -> list[tuple[str, dict[str, Any]]]:
    window = {"start": iso(plant.at(0)), "end": iso(plant.at(180))}
    return [
        ("/api/v1/devices", {"firm": H_FIRM}),
        ("/api/v1/live", {"firm": H_FIRM, "device": KILN}),
        ("/api/v1/series", {"firm": H_FIRM, "device": KILN, "tag": "temp", **window}),
        ("/api/v1/evidence", {"firm": H_FIRM, **window}),
        ("/api/v1/report", {"firm": H_FIRM, **window}),
    ]


ALL_FIRMS = [("/api/v1/me", {}), ("/api/v1/firms", {}), ("/openapi.json", {})]


def test_every_endpoint_but_health_and_the_page_needs_a_valid_token(api: Any, plant: Any) -> None:
    for path, params in [*ALL_FIRMS, *firm_endpoints(plant)]:
        for who in (None, "expired"):
            answer = get(api, path, who, **params)
            assert answer.status_code == 401, (path, who, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
        answer = httpx.get(f"{api.url}{path}", params=params, timeout=30,
                           headers={"Authorization": "Bearer not-a-token"})  # fmt: skip
        assert (answer.status_code, answer.json()) == (401, {"error": "unknown token"})
    assert (
        get(api, "/api/v1/me", "expired").json()["error"].startswith("token 'expired' expired at ")
    )
    assert get(api, "/healthz", None).json() == {"status": "ok"}
    page = get(api, "/", None)
    assert page.status_code == 200
    assert "贯通" in page.text
    assert "'self'" in page.headers["content-security-policy"]


def test_a_firm_outside_the_scope_is_403_whether_it_exists_or_not(api: Any, plant: Any) -> None:
    for path, params in firm_endpoints(plant):
        answer = get(api, path, "faulty", **params)
        assert answer.status_code == 403, (path, answer.text)
        assert answer.json() == {"error": f"firm {H_FIRM} is not in the scope of token 'faulty'"}
    unknown = get(api, "/api/v1/devices", "faulty", firm="88.709.999/firm")
    assert unknown.status_code == 403
    # the right token, the right firm, but a device of another firm: not in this firm
    other = get(api, "/api/v1/live", "faulty", firm=F_FIRM, device=KILN)
    assert other.status_code == 404
    assert other.json() == {"error": f"device {KILN} of firm {F_FIRM} is not in the store"}


def test_me_and_firms_follow_the_scope(api: Any, plant: Any) -> None:
    assert get(api, "/api/v1/me", "healthy").json() == {
        "name": "healthy", "role": "evaluator", "firms": [H_FIRM], "expires": None,
    }  # fmt: skip
    assert get(api, "/api/v1/me", "admin").json()["firms"] is None
    admin = get(api, "/api/v1/firms", "admin").json()
    assert [(f["identifier"], f["gateways"], f["devices"]) for f in admin] == [
        (H_FIRM, 2, 4), (F_FIRM, 2, 4),  # the spare never sent: the store has not seen it
    ]  # fmt: skip
    seen = dict(plant.fetch("SELECT identifier, first_seen FROM enterprise"))
    assert [dt.datetime.fromisoformat(f["first_seen"]) for f in admin] == [
        seen[H_FIRM],
        seen[F_FIRM],
    ]
    assert get(api, "/api/v1/firms", "faulty").json() == [
        f for f in admin if f["identifier"] == F_FIRM
    ]


def test_devices_merge_the_records_and_the_store_with_live_status(
    api: Any, plant: Any, kit: Any
) -> None:
    answer = get(api, "/api/v1/devices", "healthy", firm=H_FIRM).json()
    assert answer["firm"] == H_FIRM
    assert answer["fresh_within"] == 60
    assert plant.stored_before < dt.datetime.fromisoformat(answer["records_read"])
    got = {d["identifier"].split("/")[1]: d for d in answer["devices"]}
    assert set(got) == set(kit.PLANT)
    for name, (gw, key, stages, tags) in kit.PLANT.items():
        dev = got[name]
        assert (dev["name"], dev["gateway"], dev["registered"], dev["key_equipment"]) == (
            name, f"{HEALTHY}/{gw}", True, key,
        )  # fmt: skip
        assert dev["stages"] == list(stages)
        assert dev["tag_stages"] == {}
        if name == "dev.spare":
            assert (dev["tags"], dev["last_sample"], dev["status"]) == (0, None, "silent")
            continue
        assert dev["tags"] == len(tags)
        # the plant's data is minutes old: older than fresh_within
        assert dt.datetime.fromisoformat(dev["last_sample"]) == plant.at(179)
        assert dev["status"] == "stale"
        assert dev["age"] > 60


def test_live_values_are_the_newest_sample_of_each_tag(api: Any, plant: Any) -> None:
    answer = get(api, "/api/v1/live", "admin", firm=H_FIRM, device=KILN).json()
    assert (answer["firm"], answer["device"]) == (H_FIRM, KILN)
    newest = iso(plant.at(179)).replace("+00:00", "Z")
    assert answer["values"] == [
        {"tag": "power", "ts": newest, "value": 179.0, "text_value": None, "quality": 0},
        {"tag": "temp", "ts": newest, "value": 179.0, "text_value": None, "quality": 0},
    ]
    fan = get(api, "/api/v1/live", "admin", firm=F_FIRM, device=f"{FAULTY}/dev.fan").json()
    assert [v["quality"] for v in fan["values"]] == [2]  # sent with quality BAD


def test_series_are_raw_for_short_steps_and_from_the_rollup_for_minutes(
    api: Any, plant: Any
) -> None:
    window = {"start": iso(plant.at(0)), "end": iso(plant.at(180))}
    raw = get(api, "/api/v1/series", "healthy", firm=H_FIRM, device=KILN, tag="temp",
              points=180, **window).json()  # fmt: skip
    assert (raw["source"], raw["step"]) == ("sample", 1.0)
    assert [dt.datetime.fromisoformat(t) for t in raw["t"]] == [plant.at(i) for i in range(180)]
    assert raw["avg"] == raw["min"] == raw["max"] == [float(i) for i in range(180)]
    assert raw["samples"] == [1] * 180
    coarse = get(api, "/api/v1/series", "healthy", firm=H_FIRM, device=KILN, tag="temp",
                 points=3, **window).json()  # fmt: skip
    assert (coarse["source"], coarse["step"]) == ("sample_1m", 60.0)
    assert [dt.datetime.fromisoformat(t) for t in coarse["t"]] == [
        plant.at(i) for i in (0, 60, 120)
    ]
    assert coarse["avg"] == [29.5, 89.5, 149.5]
    assert (coarse["min"], coarse["max"]) == ([0.0, 60.0, 120.0], [59.0, 119.0, 179.0])
    assert coarse["samples"] == [60, 60, 60]
    # 10 s steps from the raw samples; the faulty press stopped at 90 s: the gap stays a gap
    press = get(api, "/api/v1/series", "admin", firm=F_FIRM, device=f"{FAULTY}/dev.press",
                tag="force", points=18, **window).json()  # fmt: skip
    assert (press["source"], press["step"]) == ("sample", 10.0)
    assert press["samples"] == [10] * 9
    assert press["avg"] == [4.5 + 10 * i for i in range(9)]
    missing = get(api, "/api/v1/series", "healthy", firm=H_FIRM, device=KILN, tag="nope")
    assert (missing.status_code, missing.json()) == (
        404, {"error": f"device {KILN} has no tag 'nope'"},
    )  # fmt: skip
    too_many = get(api, "/api/v1/series", "healthy", firm=H_FIRM, device=KILN, tag="temp",
                   points=5000)  # fmt: skip
    assert too_many.status_code == 422
    naive = get(api, "/api/v1/series", "healthy", firm=H_FIRM, device=KILN, tag="temp",
                start="2026-01-01T00:00:00")  # fmt: skip
    assert naive.status_code == 422
    assert naive.json()["error"].startswith("query.start:")


@pytest.mark.parametrize("firm", [HEALTHY, FAULTY])
def test_evidence_is_collect_and_assess_for_the_window(api: Any, plant: Any, firm: str) -> None:
    window = {"start": iso(plant.at(0)), "end": iso(plant.at(180))}
    answer = get(api, "/api/v1/evidence", "admin", firm=f"{firm}/firm", **window)
    assert answer.status_code == 200, answer.text
    ev = plant.collect(firm)
    got = answer.json()
    read = dt.datetime.fromisoformat(got.pop("records_read"))
    assert plant.stored_before < read < dt.datetime.now(dt.UTC)
    coverage = got["evidence"]["identifier_coverage"]
    assert (coverage["delivering"], coverage["matched"], coverage["unmatched"]) == (4, 4, [])
    assert got == {
        "evidence": TypeAdapter(evidence.FirmEvidence).dump_python(ev, mode="json"),
        "assessment": TypeAdapter(evidence.Assessment).dump_python(
            evidence.assess(ev), mode="json"
        ),
    }


def test_a_reversed_window_or_a_bad_identifier_is_422(api: Any, plant: Any) -> None:
    reversed_ = get(api, "/api/v1/evidence", "admin", firm=H_FIRM, start=iso(plant.at(180)),
                    end=iso(plant.at(0)))  # fmt: skip
    assert reversed_.status_code == 422
    assert "is not after its start" in reversed_.json()["error"]
    bad = get(api, "/api/v1/devices", "admin", firm="not an identifier")
    assert bad.status_code == 422
    assert bad.json()["error"].startswith("firm 'not an identifier' is not an identifier")


def test_the_openapi_spec_lists_every_endpoint(api: Any) -> None:
    spec = get(api, "/openapi.json", "healthy").json()
    assert set(spec["paths"]) == {
        "/healthz", "/api/v1/me", "/api/v1/firms", "/api/v1/devices", "/api/v1/live",
        "/api/v1/series", "/api/v1/evidence", "/api/v1/report",
    }  # fmt: skip
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_the_service_cannot_write_to_the_store(api: Any) -> None:
    def delete(conn: psycopg.Connection) -> None:
        conn.execute("DELETE FROM sample")

    async def work(service: evidence.Service) -> None:
        await service.query(delete)

    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        api.call(work)


def test_while_the_identifier_node_is_away_the_records_read_last_are_used(
    plant: Any, kit: Any, tmp_path: Any
) -> None:
    with kit.Served(plant.dsn, tmp_path, tokens(), cache_seconds=0.001) as served:
        first = get(served, "/api/v1/devices", "admin", firm=H_FIRM).json()

        async def stop_node(service: evidence.Service) -> None:
            served.node.stop()
            await served.node.wait()

        served.call(stop_node)
        again = get(served, "/api/v1/devices", "admin", firm=H_FIRM).json()
        assert again["records_read"] == first["records_read"]
        assert again["devices"][0]["registered"]
        window = {"start": iso(plant.at(0)), "end": iso(plant.at(180))}
        ev = get(served, "/api/v1/evidence", "admin", firm=H_FIRM, **window).json()
        assert ev["records_read"] == first["records_read"]
        assert ev["evidence"]["networking"]["key_registered"] == 4
        never = get(served, "/api/v1/devices", "admin", firm=F_FIRM)
        assert never.status_code == 502
        assert never.json()["error"].startswith(f"{F_FIRM}: identifier node unavailable")


def test_a_service_without_a_report_key_exports_no_report(api: Any, plant: Any) -> None:
    answer = get(api, "/api/v1/report", "healthy", firm=H_FIRM)
    assert answer.status_code == 404
    assert "report_key" in answer.json()["error"]


def test_the_report_export_is_signed_by_the_platform_key_and_verifies(
    plant: Any, kit: Any, tmp_path: Path
) -> None:
    window = {"start": iso(plant.at(0)), "end": iso(plant.at(180))}

    async def gateway_keys(node: str, report: evidence.Report) -> dict[str, bytes | str]:
        async with identifiers.Client(node) as client:
            return await evidence.gateway_keys(client, report)

    with kit.Served(plant.dsn, tmp_path, tokens(), report_key="platform.key") as served:
        answer = get(served, "/api/v1/report", "healthy", firm=H_FIRM, **window)
        html = get(served, "/api/v1/report", "healthy", firm=H_FIRM, format="html", **window)
        other = get(served, "/api/v1/report", "faulty", firm=H_FIRM, **window)
        assert answer.status_code == 200, answer.text
        report = evidence.Report.from_json(answer.content)
        assert served.node is not None
        keys = asyncio.run(gateway_keys(served.node.url, report))
    assert answer.headers["content-type"] == "application/json"
    assert other.status_code == 403
    # the key was made on first use, owner-only, and it signed the report
    key = tmp_path / "platform.key"
    assert key.stat().st_mode & 0o077 == 0
    fingerprint = wire.fingerprint(wire.public_key_bytes(load_key(key)))
    assert report.report["firm"] == H_FIRM
    shown = {k: dt.datetime.fromisoformat(v) for k, v in report.report["window"].items()}
    assert shown == {"from": plant.at(0), "to": plant.at(180)}
    counts = {(t["device"], t["tag"]): t["samples"] for t in report.report["facts"]["tags"]}
    assert counts == {(t.device, t.tag): t.samples for t in plant.collect(HEALTHY).tags}
    result = evidence.verify_report(report, keys, platform_key=fingerprint)
    assert result.ok, result.table()
    assert ("platform signature", "ok") in {(f.check, f.status) for f in result.findings}
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")
    assert H_FIRM in html.text
    assert fingerprint in html.text

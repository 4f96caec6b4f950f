"""The caching client against real nodes: referrals across nodes, TTLs, stale answers."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

import identifiers
from identifiers import string_value

NodeFactory = Callable[..., AbstractAsyncContextManager[identifiers.Node]]


class Clock:
    """Time the test moves by hand, so TTLs of minutes and days take no time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def writer(node: identifiers.Node, prefix: str) -> identifiers.Client:
    _, token = await node.registry.create_token(prefix, days=1)
    return identifiers.Client(node.url, token=token)


async def test_referral_across_two_nodes_then_direct(make_node: NodeFactory) -> None:
    async with make_node(["88.710"]) as city_b:
        referrals = [{"prefix": "88.710", "url": city_b.url}]
        async with make_node(["88.709"], referrals=referrals) as city_a:
            async with await writer(city_b, "88.710.5") as w:
                await w.put("88.710.5/dev.1", [string_value(1, "GT_SERIAL", "B-1")])
                await w.put("88.710.5/dev.2", [string_value(1, "GT_SERIAL", "B-2")])
            async with await writer(city_a, "88.709.911") as w:
                await w.put("88.709.911/dev.1", [string_value(1, "GT_SERIAL", "A-1")])
            # a write sent to the wrong node says where to send it
            async with await writer(city_a, "88.710.5") as w:
                with pytest.raises(identifiers.ServiceReferral) as elsewhere:
                    await w.put("88.710.5/dev.3", [string_value(1, "GT_SERIAL", "B-3")])
            assert elsewhere.value.code == 302
            assert elsewhere.value.referral is not None
            assert (elsewhere.value.referral.prefix, elsewhere.value.referral.url) == (
                "88.710", city_b.url,
            )  # fmt: skip

            async with identifiers.Client(city_a.url) as client:
                record = await client.resolve("88.710.5/dev.1")
                assert record.first("GT_SERIAL").text == "B-1"  # type: ignore[union-attr]
                assert client.stats.referrals == 1
                # the referral is remembered: the next handle under 88.710 goes straight to B
                await client.resolve("88.710.5/dev.2")
                assert client.stats.referrals == 1
                assert (await client.resolve("88.709.911/dev.1")).values[0].text == "A-1"
                assert client.stats.misses == 3
                await client.resolve("88.710.5/dev.1")
                assert client.stats.hits == 1
                with pytest.raises(identifiers.HandleNotFound):
                    await client.resolve("88.710.5/missing")
                with pytest.raises(identifiers.NotResponsible) as nobody:
                    await client.resolve("88.999.1/x")
                assert nobody.value.code == 301

            # the token goes to the home node only: node B (sharing the token table here, so it
            # would honour it) shows the admin value to its holder but not through a referral
            _, token_b = await city_b.registry.create_token("88.710.5", days=1)
            async with identifiers.Client(city_b.url, token=token_b) as at_b:
                assert (await at_b.resolve("88.710.5/dev.1")).first("HS_ADMIN") is not None
            async with identifiers.Client(city_a.url, token=token_b) as via_a:
                referred = await via_a.resolve("88.710.5/dev.1")
                assert via_a.stats.referrals == 1
                assert referred.first("GT_SERIAL") is not None
                assert referred.first("HS_ADMIN") is None


async def test_referral_loop_is_an_error(make_node: NodeFactory) -> None:
    port_a = free_port()
    url_a = f"http://127.0.0.1:{port_a}"
    async with make_node(["88.711"], referrals=[{"prefix": "88", "url": url_a}]) as node_b:
        referrals = [{"prefix": "88.710", "url": node_b.url}]
        node_a = make_node(["88.709"], referrals=referrals, listen={"port": port_a})
        async with node_a, identifiers.Client(url_a) as client:
            with pytest.raises(identifiers.ReferralError, match="referrals loop"):
                await client.resolve("88.710.1/x")


async def test_cache_follows_ttl_capped_at_two_days(node: identifiers.Node) -> None:
    clock = Clock()
    async with (
        await writer(node, "88.709.911") as w,
        identifiers.Client(node.url, clock=clock) as client,
    ):
        await w.put("88.709.911/short", [string_value(1, "URL", "v1", ttl=60)])
        await w.put("88.709.911/long", [string_value(1, "URL", "v1", ttl=10 * 86400)])
        assert (await client.resolve("88.709.911/short")).values[0].text == "v1"
        assert (await client.resolve("88.709.911/long")).values[0].text == "v1"
        await w.put("88.709.911/short", [string_value(1, "URL", "v2", ttl=60)])
        await w.put("88.709.911/long", [string_value(1, "URL", "v2", ttl=10 * 86400)])

        clock.now += 59
        assert (await client.resolve("88.709.911/short")).values[0].text == "v1"  # cached
        clock.now += 2
        assert (await client.resolve("88.709.911/short")).values[0].text == "v2"  # expired

        clock.now = 1000 + 172800 - 1
        assert (await client.resolve("88.709.911/long")).values[0].text == "v1"
        clock.now = 1000 + 172800 + 1  # ten days asked for, two days kept
        assert (await client.resolve("88.709.911/long")).values[0].text == "v2"

        # without a cache every resolution asks the node
        async with identifiers.Client(node.url, cache=False) as uncached:
            await uncached.resolve("88.709.911/short")
            await uncached.resolve("88.709.911/short")
            assert (uncached.stats.misses, uncached.stats.hits) == (2, 0)


async def test_not_found_is_cached_briefly(node: identifiers.Node) -> None:
    clock = Clock()
    async with (
        await writer(node, "88.709.911") as w,
        identifiers.Client(node.url, clock=clock, negative_ttl=30) as client,
    ):
        with pytest.raises(identifiers.HandleNotFound):
            await client.resolve("88.709.911/late")
        await w.put("88.709.911/late", [string_value(1, "URL", "here")])
        clock.now += 29
        with pytest.raises(identifiers.HandleNotFound):
            await client.resolve("88.709.911/late")
        assert client.stats.negative_hits == 1
        clock.now += 2
        assert (await client.resolve("88.709.911/late")).values[0].text == "here"


async def test_filters_and_fresh(node: identifiers.Node) -> None:
    async with await writer(node, "88.709.911") as w, identifiers.Client(node.url) as client:
        values = [string_value(1, "URL", "u"), string_value(2, "GT_MODEL", "m")]
        await w.put("88.709.911/f", values)
        assert [v.index for v in (await client.resolve("88.709.911/f", types=["URL"])).values] == [
            1
        ]
        assert [v.index for v in (await client.resolve("88.709.911/f", indexes=[2])).values] == [2]
        assert (await client.resolve("88.709.911/f", types=["NONE"])).values == ()
        await w.put("88.709.911/f", [string_value(1, "URL", "u2")])
        assert (await client.resolve("88.709.911/f")).values[0].text == "u"
        assert (await client.resolve("88.709.911/f", fresh=True)).values[0].text == "u2"
        # the writer's own cache is dropped on write, and it sees the admin value
        assert (await w.resolve("88.709.911/f")).first("HS_ADMIN") is not None
        assert (await client.resolve("88.709.911/f")).first("HS_ADMIN") is None


async def test_stale_answer_when_upstream_node_is_down(
    make_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    upstream = make_node(["88.710"])
    node_b = await upstream.__aenter__()
    running = True
    try:
        async with await writer(node_b, "88.710.5") as w:
            await w.put("88.710.5/gw.1", [string_value(300, "HS_PUBKEY", "k", ttl=60)])
        referrals = [{"prefix": "88.710", "url": node_b.url}]
        async with (
            make_node(["88.709"], referrals=referrals) as node_a,
            identifiers.Client(node_a.url, clock=clock) as client,
        ):
            assert (await client.resolve("88.710.5/gw.1")).values[0].text == "k"

            await upstream.__aexit__(None, None, None)  # the upstream node stops
            running = False
            clock.now += 120  # the answer has expired
            with caplog.at_level(logging.WARNING, logger="identifiers"):
                stale = await client.resolve("88.710.5/gw.1")
                again = await client.resolve("88.710.5/gw.1", types=["HS_PUBKEY"])
            assert stale.values[0].text == "k"
            assert again.values[0].text == "k"
            assert client.stats.stale == 2
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1  # a state change is logged once, not every time
            assert "stale record of 88.710.5/gw.1" in warnings[0].getMessage()

            # nothing cached and the node down: that is an error, not a guess
            with pytest.raises(identifiers.NodeUnavailable):
                await client.resolve("88.710.5/gw.2")
            # beyond max_stale the old answer is not served either
            clock.now += 8 * 86400
            with pytest.raises(identifiers.NodeUnavailable):
                await client.resolve("88.710.5/gw.1")
    finally:
        if running:
            await upstream.__aexit__(None, None, None)


async def test_stale_answer_when_the_home_node_is_down(
    make_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    home = make_node(["88.709"])
    node = await home.__aenter__()
    running = True
    try:
        async with await writer(node, "88.709.911") as w:
            await w.put("88.709.911/gw.1", [string_value(300, "HS_PUBKEY", "k", ttl=60)])
        client = identifiers.Client(node.url, clock=clock, timeout=2)
        async with client:
            assert (await client.resolve("88.709.911/gw.1")).values[0].text == "k"
            await home.__aexit__(None, None, None)  # the home node stops
            running = False
            clock.now += 61  # the answer has expired
            with caplog.at_level(logging.WARNING, logger="identifiers"):
                assert (await client.resolve("88.709.911/gw.1")).values[0].text == "k"
            assert client.stats.stale == 1
            assert "stale record of 88.709.911/gw.1" in caplog.text
    finally:
        if running:
            await home.__aexit__(None, None, None)


async def test_home_node_down_is_node_unavailable() -> None:
    async with identifiers.Client(f"http://127.0.0.1:{free_port()}", timeout=2) as client:
        with pytest.raises(identifiers.NodeUnavailable) as down:
            await client.resolve("88.709.911/x")
        assert down.value.handle == "88.709.911/x"
        with pytest.raises(identifiers.IdentifierError):
            await client.resolve("not an identifier")


async def test_client_writes_and_errors(node: identifiers.Node) -> None:
    async with await writer(node, "88.709.911") as w, identifiers.Client(node.url) as anonymous:
        records: list[tuple[str, Any]] = [
            (f"88.709.911/m.{i}", [string_value(1, "URL", str(i))]) for i in range(2500)
        ]
        results = await w.register(records)  # two calls: 2000 + 500
        assert [s for _, s in results] == ["created"] * 2500
        assert [s for _, s in await w.register(records)] == ["unchanged"] * 2500
        assert len(await w.list("88.709.911")) == 2500
        with pytest.raises(identifiers.HandleExists):
            await w.put("88.709.911/m.1", [string_value(1, "URL", "x")], overwrite=False)
        with pytest.raises(identifiers.AuthenticationNeeded):
            await anonymous.put("88.709.911/m.1", [string_value(1, "URL", "x")])
        with pytest.raises(identifiers.InsufficientPermissions):
            await w.put("88.709.912/m.1", [string_value(1, "URL", "x")])
        await w.delete("88.709.911/m.1")
        with pytest.raises(identifiers.HandleNotFound):
            await anonymous.resolve("88.709.911/m.1")


async def test_concurrent_misses_share_one_request(node: identifiers.Node) -> None:
    async with await writer(node, "88.709.911") as w, identifiers.Client(node.url) as client:
        await w.put("88.709.911/gw.1", [string_value(300, "HS_PUBKEY", "k")])
        records = await asyncio.gather(*(client.resolve("88.709.911/gw.1") for _ in range(20)))
        assert {r.values[0].text for r in records} == {"k"}
        assert (client.stats.misses, client.stats.coalesced) == (1, 19)
        missing = await asyncio.gather(
            *(client.resolve("88.709.911/none") for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(m, identifiers.HandleNotFound) for m in missing)
        assert client.stats.misses == 2

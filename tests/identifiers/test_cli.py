"""``guantong identifiers …`` as a technician runs it: real processes against a real node."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import httpx
import psycopg
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import identifiers


async def guantong(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "guantong", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_parse_prints_parts_or_the_reason() -> None:
    code, out, _ = await guantong("identifiers", "parse", "88.709.ABC/Kiln/01")
    assert code == 0
    assert json.loads(out) | {"utf8_bytes": 0} == {
        "valid": True, "handle": "88.709.abc/Kiln/01", "prefix": "88.709.abc",
        "suffix": "Kiln/01", "root": "88", "node": "709", "enterprise": "abc",
        "prefix_segments": ["88", "709", "abc"], "utf8_bytes": 0,
    }  # fmt: skip
    code, out, err = await guantong("identifiers", "parse", "88.7x9.911/a")
    assert code == 1
    assert json.loads(out) == {
        "valid": False, "input": "88.7x9.911/a", "part": "prefix.node",
        "reason": "'7x9' is not a numeric node code",
    }  # fmt: skip
    assert "prefix.node" in err


def write_gateway(tmp_path: Path, *, location: str) -> tuple[Path, bytes]:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    (tmp_path / "gateway.key").write_bytes(pem)
    tag = {"name": "t", "address": "hr:0", "type": "uint16"}
    group = {"name": "g", "interval": "1s", "tags": [tag]}
    config = {
        "kind": "gateway",
        "gateway": {"id": "88.709.911/gw.1", "enterprise": "88.709.911/firm",
                    "key_file": "gateway.key"},
        "devices": [
            {"name": "kiln-1", "id": "88.709.911/dev.kiln.01",
             "connection": {"protocol": "modbus-tcp", "host": "127.0.0.1", "port": 502},
             "info": {"manufacturer": "Siemens", "model": "S7-1200", "serial": "K1",
                      "location": location, "key_equipment": True,
                      "stages": ["设备管理", "energy"]},
             "groups": [group]},
            {"name": "meter-1", "id": "88.709.911/dev.meter.01",
             "connection": {"protocol": "modbus-tcp", "host": "127.0.0.1", "port": 502},
             "info": {"manufacturer": "Acrel", "key_equipment": False},
             "groups": [{"name": "g", "interval": "1s", "tags": [
                 tag,
                 {**tag, "name": "kwh", "address": "hr:1", "stages": ["能耗管理"]},
                 {**tag, "name": "power", "address": "hr:2", "stages": ["energy", "设备管理"]},
             ]}]},
        ],
    }  # fmt: skip
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return path, raw


async def test_register_gateway_is_idempotent(
    node: identifiers.Node, token: str, tmp_path: Path, pg_dsn: str
) -> None:
    config, public_key = write_gateway(tmp_path, location="workshop 2")
    (tmp_path / "token").write_text(token + "\n")
    args = ["identifiers", "register", "-c", str(config), "--node", node.url,
            "--token-file", str(tmp_path / "token"),
            "--evidence-url", "https://evidence.example.org/devices/{id}"]  # fmt: skip

    code, out, err = await guantong(*args)
    assert code == 0, err
    assert out.splitlines() == [
        "created\t88.709.911/gw.1",
        "created\t88.709.911/dev.kiln.01",
        "created\t88.709.911/dev.meter.01",
    ]
    assert "3 created, 0 unchanged" in err

    async with identifiers.Client(node.url) as client:
        gateway = identifiers.GatewayRecord.from_record(await client.resolve("88.709.911/gw.1"))
        kiln = identifiers.DeviceRecord.from_record(await client.resolve("88.709.911/dev.kiln.01"))
        meter = identifiers.DeviceRecord.from_record(
            await client.resolve("88.709.911/dev.meter.01")
        )
    assert gateway.public_key == public_key
    assert gateway.enterprise == "88.709.911/firm"
    assert kiln.stages == ("设备管理", "能耗管理")
    assert (kiln.tag_stages, meter.stages) == ({}, ())
    assert meter.tag_stages == {"能耗管理": ("kwh", "power"), "设备管理": ("power",)}
    assert (kiln.gateway, kiln.location, kiln.key_equipment) == (
        "88.709.911/gw.1",
        "workshop 2",
        True,
    )
    assert kiln.url == "https://evidence.example.org/devices/88.709.911/dev.kiln.01"

    async def stored() -> list[object]:
        """Every record with its values, and when the database row last changed."""
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            cur = await conn.execute(
                "SELECT handle, vals, created, updated FROM identifiers.handles ORDER BY handle"
            )
            return list(await cur.fetchall())

    first = await stored()
    assert [row[0] for row in first] == [
        "88.709.911/dev.kiln.01", "88.709.911/dev.meter.01", "88.709.911/gw.1",
    ]  # fmt: skip
    code, out, err = await guantong(*args)
    assert code == 0, err
    assert set(out.split()[::2]) == {"unchanged"}
    assert "nothing changed: all 3 records already registered" in err
    assert await stored() == first  # not one row written again

    # a changed location updates that one record only; the token can come from the environment
    write_gateway(tmp_path, location="workshop 3")
    env_args = [a for a in args if a not in ("--token-file", str(tmp_path / "token"))]
    code, out, err = await guantong(*env_args, env={"GUANTONG_IDENTIFIERS_TOKEN": token})
    assert code == 0, err
    statuses = dict(line.split("\t")[::-1] for line in out.splitlines())
    assert statuses["88.709.911/dev.kiln.01"] == "updated"
    assert statuses["88.709.911/dev.meter.01"] == "unchanged"
    assert statuses["88.709.911/gw.1"] == "updated"  # a new key was generated

    code, _, err = await guantong(*env_args)
    assert code == 1
    assert "write token is needed" in err


async def test_resolve_prints_the_record_and_exit_codes(node: identifiers.Node, token: str) -> None:
    async with identifiers.Client(node.url, token=token) as client:
        await client.put("88.709.911/dev.1", [identifiers.string_value(1, "URL", "https://x")])
    code, out, _ = await guantong("identifiers", "resolve", "88.709.911/dev.1", "--node", node.url)
    assert code == 0
    record = json.loads(out)
    assert record["handle"] == "88.709.911/dev.1"
    assert [v["type"] for v in record["values"]] == ["URL"]  # HS_ADMIN is not public

    code, _, err = await guantong("identifiers", "resolve", "88.709.911/none", "--node", node.url)
    assert (code, "Handle code 100" in err) == (1, True)
    code, _, err = await guantong("identifiers", "resolve", "88.709/none", "--node", node.url)
    assert code == 1
    code, _, err = await guantong(
        "identifiers", "resolve", "88.709.911/dev.1", "--node", "http://127.0.0.1:9"
    )
    assert code == 3
    assert "unavailable" in err


async def test_serve_migrate_and_tokens(pg_dsn: str, tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(
        "kind: identifiers\nlisten: {host: 127.0.0.1, port: 0}\n"
        f"database: {{dsn: '{pg_dsn}'}}\nauthoritative: ['88.709']\n"
    )
    down = tmp_path / "down.yaml"
    down.write_text(
        "kind: identifiers\ndatabase: {dsn: 'postgresql://postgres@127.0.0.1:9/x'}\n"
        "authoritative: ['88.709']\n"
    )
    code, _, err = await guantong("identifiers", "migrate", "-c", str(down))
    assert (code, "Connection refused" in err) == (3, True)
    code, _, err = await guantong("identifiers", "serve", "-c", str(tmp_path / "missing.yaml"))
    assert code == 1
    assert "cannot read" in err

    code, out, _ = await guantong("identifiers", "migrate", "-c", str(config))
    assert (code, out) == (0, "applied migrations [1]\n")
    code, out, _ = await guantong("identifiers", "migrate", "-c", str(config))
    assert (code, out) == (0, "schema up to date\n")

    code, secret, err = await guantong(
        "identifiers", "token", "create", "-c", str(config), "--prefix", "88.709.911",
        "--days", "30", "--label", "firm 911",
    )  # fmt: skip
    assert code == 0, err
    secret = secret.strip()
    token_id = secret.split(".")[1]
    assert f"token {token_id} for 88.709.911" in err
    code, _, err = await guantong(
        "identifiers", "token", "create", "-c", str(config), "--prefix", "88.7x9", "--days", "1"
    )
    assert code == 1

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "guantong", "identifiers", "serve", "-c", str(config),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert line.startswith("serving 88.709 on http://127.0.0.1:"), line
        url = line.split()[-1]
        async with identifiers.Client(url, token=secret) as client:
            assert await client.put("88.709.911/x", [identifiers.string_value(1, "URL", "u")])
            assert (await client.resolve("88.709.911/x")).values[0].text == "u"
        async with httpx.AsyncClient() as http:
            assert (await http.get(url + "/openapi.json")).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    code, out, _ = await guantong("identifiers", "token", "list", "-c", str(config))
    assert out.split("\t")[:2] == [token_id, "88.709.911"]
    assert "\tvalid\tfirm 911" in out
    code, out, _ = await guantong("identifiers", "token", "revoke", "-c", str(config), token_id)
    assert (code, out) == (0, f"revoked {token_id}\n")
    code, out, _ = await guantong("identifiers", "token", "list", "-c", str(config))
    assert "\trevoked\t" in out
    code, _, err = await guantong("identifiers", "token", "revoke", "-c", str(config), token_id)
    assert code == 1


async def test_register_enterprise_and_delete(node: identifiers.Node, token: str) -> None:
    usci = "91410100MA44XXXX1" + identifiers.usci_check_char("91410100MA44XXXX1")
    args = ["identifiers", "register-enterprise", "88.709.911/firm",
            "--name", "郑州某耐材有限公司", "--usci", usci,
            "--industry", "耐火材料", "--city", "郑州", "--node", node.url]  # fmt: skip
    env = {"GUANTONG_IDENTIFIERS_TOKEN": token}
    assert await guantong(*args, env=env) == (0, "created\t88.709.911/firm\n", "")
    assert (await guantong(*args, env=env))[1] == "unchanged\t88.709.911/firm\n"
    async with identifiers.Client(node.url) as client:
        firm = identifiers.EnterpriseRecord.from_record(await client.resolve("88.709.911/firm"))
    assert (firm.name, firm.usci, firm.city) == ("郑州某耐材有限公司", usci, "郑州")

    bad = [*args[:6], usci[:-1] + ("0" if usci[-1] != "0" else "1"), *args[7:]]
    code, _, err = await guantong(*bad, env=env)
    assert code == 1
    assert "check character" in err

    delete = ["identifiers", "delete", "88.709.911/firm", "--node", node.url]
    code, _, err = await guantong(*delete)
    assert (code, "Handle code 402" in err) == (1, True)
    assert await guantong(*delete, env=env) == (0, "deleted\t88.709.911/firm\n", "")


async def test_gateway_init_creates_the_key_and_registers_it(
    node: identifiers.Node, token: str, tmp_path: Path
) -> None:
    config, _ = write_gateway(tmp_path, location="workshop 2")
    (tmp_path / "gateway.key").unlink()  # init makes the key
    (tmp_path / "token").write_text(token + "\n")
    code, out, err = await guantong(
        "gateway", "init", "-c", str(config), "--node", node.url,
        "--token-file", str(tmp_path / "token"),
    )  # fmt: skip
    assert code == 0, err
    printed = json.loads(out.splitlines()[0])
    assert out.splitlines()[1:] == [
        "created\t88.709.911/gw.1",
        "created\t88.709.911/dev.kiln.01",
        "created\t88.709.911/dev.meter.01",
    ]
    async with identifiers.Client(node.url) as client:
        gateway = identifiers.GatewayRecord.from_record(await client.resolve("88.709.911/gw.1"))
    assert gateway.public_key.hex() == printed["public_key"]

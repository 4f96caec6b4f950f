"""Basic256Sha256 Sign and SignAndEncrypt with a username, and the client certificate the
driver makes on first use next to the config and keeps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from edge import Batch, ConnectivityEvent, Quality
from edge.drivers.opcua import OpcUaDriver
from edge.drivers.opcua.certs import uri_of
from simulators import OpcUaEndpoint

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def secure(sim: Any) -> AsyncIterator[OpcUaEndpoint]:
    async with OpcUaEndpoint(
        "secure", sim.FACTORY, [sim.machine("meter")], security=("Sign", "SignAndEncrypt"),
        anonymous=False, users={"gateway": "s3cret"},
    ) as endpoint:  # fmt: skip
        yield endpoint


def secure_device(sim: Any, server: OpcUaEndpoint, folder: Path, mode: str, password: str) -> Any:
    (folder / "opcua-password.txt").write_text(password + "\n", encoding="utf-8")
    return sim.device_for(
        server.machines[0], server.url, base_dir=folder, security_policy="Basic256Sha256",
        security_mode=mode, username="gateway",
        password_file="opcua-password.txt",  # noqa: S106 - a file name, not a password
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_secure_modes_with_a_username_read_exactly(
    sim: Any, secure: OpcUaEndpoint, tmp_path: Path, mode: str
) -> None:
    device = secure_device(sim, secure, tmp_path, mode, "s3cret")
    assert device.connection.certificate == str(tmp_path / "opcua-client.der")
    items = await OpcUaDriver([device]).read_once()
    assert [i for i in items if isinstance(i, ConnectivityEvent)] == []
    samples = {s.tag: s for i in items if isinstance(i, Batch) for s in i.samples}
    assert all(s.quality is Quality.GOOD for s in samples.values())
    assert {t: s.value for t, s in samples.items()} == sim.expected(secure.machines[0])
    cert = tmp_path / "opcua-client.der"
    key = tmp_path / "opcua-client.pem"
    assert uri_of(cert).startswith("urn:guantong:gateway:")
    assert key.stat().st_mode & 0o077 == 0  # the private key is the owner's alone
    # kept, not made again: the server's trust in it must last
    first = cert.read_bytes()
    items = await OpcUaDriver([device]).read_once()
    assert all(s.quality is Quality.GOOD for i in items if isinstance(i, Batch) for s in i.samples)
    assert cert.read_bytes() == first


async def test_a_wrong_password_is_a_down_device_with_the_reason(
    sim: Any, secure: OpcUaEndpoint, tmp_path: Path
) -> None:
    device = secure_device(sim, secure, tmp_path, "SignAndEncrypt", "wrong")
    items = await OpcUaDriver([device]).read_once()
    (event,) = [i for i in items if isinstance(i, ConnectivityEvent)]
    assert not event.up
    assert "Bad" in event.reason
    batches = [i for i in items if isinstance(i, Batch)]
    assert {b.group for b in batches} == {g.name for g in device.groups}
    assert all(s.quality is Quality.BAD for b in batches for s in b.samples)


async def test_half_a_certificate_pair_is_refused_not_overwritten(
    sim: Any, secure: OpcUaEndpoint, tmp_path: Path
) -> None:
    device = secure_device(sim, secure, tmp_path, "Sign", "s3cret")
    (tmp_path / "opcua-client.pem").write_bytes(b"a key whose certificate was lost")
    items = await OpcUaDriver([device]).read_once()
    (event,) = [i for i in items if isinstance(i, ConnectivityEvent)]
    assert "opcua-client.der is missing" in event.reason
    assert (tmp_path / "opcua-client.pem").read_bytes() == b"a key whose certificate was lost"

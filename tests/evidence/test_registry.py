"""Reading the firm's device records: what fails, fails as a RegistryError naming the firm."""

from __future__ import annotations

import pytest
from _services import free_port

import evidence
import identifiers


async def test_an_unreachable_node_is_a_registry_error_naming_the_firm() -> None:
    async with identifiers.Client(f"http://127.0.0.1:{free_port()}", timeout=2) as client:
        with pytest.raises(evidence.RegistryError) as err:
            await evidence.registered_devices(
                client, "88.709.911/firm", handles=["88.709.911/dev.kiln"]
            )
    assert err.value.firm == "88.709.911/firm"
    assert "unavailable" in err.value.reason
    assert isinstance(err.value, evidence.EvidenceError)

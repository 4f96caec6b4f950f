"""The firm's registered devices, read from its identifier records.

Evidence reads the registry through :class:`identifiers.Client`, not the node's tables: a
firm's records live on whichever node serves its prefix (a city's secondary node, the firm's
own enterprise node, reached by referral), usually not in the database ingest writes to. The
node's answer is also what an evaluator can check for themselves with any Handle client.
Listing a prefix needs a token for it; a caller without one passes the device handles.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

import identifiers
from evidence._errors import RegistryError


@dataclass(frozen=True, slots=True)
class RegisteredDevice:
    """What the registry says about one device: the facts the networking rate and the stage
    coverage count."""

    identifier: str
    gateway: str
    key_equipment: bool
    stages: tuple[str, ...] = ()
    name: str | None = None
    #: stages some of its tags serve: stage → tag names (``GT_TAG_STAGE``)
    tag_stages: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: the tags its OEE is computed from (``GT_OEE``), if it declares them
    oee: identifiers.OeeSignals | None = None


def _prefix(firm: str) -> str:
    return identifiers.parse(firm).prefix


async def registered_devices(
    client: identifiers.Client, firm: str, handles: Iterable[str] | None = None
) -> list[RegisteredDevice]:
    """Every device record naming ``firm`` as its enterprise, sorted by identifier.

    Without ``handles`` the firm's prefix is listed (the client needs a token for it); each
    handle is resolved, and records that are not devices of this firm are left out, so a
    listing that also holds the firm's gateways and other records is fine.
    """
    firm = str(identifiers.parse(firm))
    try:
        names = list(handles) if handles is not None else await client.list(_prefix(firm))
        records = await asyncio.gather(*(client.resolve(h) for h in names))
    except identifiers.NodeUnavailable as exc:
        raise RegistryError(firm, f"identifier node unavailable: {exc}") from exc
    except identifiers.HandleError as exc:
        raise RegistryError(firm, f"the identifier node answered {exc}") from exc
    found = []
    for record in records:
        template = record.first("GT_TEMPLATE")
        if template is None or template.text.split("/")[0] != "device":
            continue
        device = identifiers.DeviceRecord.from_record(record)
        if device.enterprise != firm:
            continue
        found.append(
            RegisteredDevice(
                identifier=record.handle,
                gateway=device.gateway,
                key_equipment=device.key_equipment,
                stages=device.stages,
                name=device.name,
                tag_stages=device.tag_stages,
                oee=device.oee,
            )
        )
    return sorted(found, key=lambda d: d.identifier)

"""The northbound wire contract: envelopes, their canonical bytes and signatures, topics.

A leaf: it imports the identifier codec, ``cryptography`` and (for Sparkplug B, on first use)
``protobuf``, nothing heavy (no MQTT, no drivers, no pydantic), so that ingest and third-party
verifiers can use it alone. The format is specified in docs/protocol.md, precisely enough to
implement a gateway in another language.

Public API::

    Envelope, Sample, Loss, Quality, Kind    the model; ``Envelope.canonical``, ``.digest``
    Checkpoint, Period, Count                 a gateway's attested counts (kind 3)
    SignedEnvelope, sign                      Ed25519 over the canonical bytes; ``.verify(key)``
    public_key_bytes, fingerprint             the raw key as published in ``HS_PUBKEY``
    encode_json, decode_json                  the JSON carrier (``decode_json`` is
    parse_json, decode_json_document          ``decode_json_document(parse_json(raw))``)
    Topic, data_topic, loss_topic, checkpoint_topic, status_topic, envelope_topic,
    parse_topic, check_topic
    GENESIS, VERSION, MAX_* limits, SUBSCRIPTION
    Sparkplug*, encode_sparkplug, decode_sparkplug, decode_sparkplug_envelope,
    check_sparkplug_topic, SPARKPLUG_SUBSCRIPTIONS …   Sparkplug B 3.0 payloads and topics;
                                              the signed envelope travels in ``body``

Exceptions::

    ValueError
    └── ProtocolError            .field names where the contract is broken
        ├── MalformedEnvelope    not JSON, missing/unknown field, wrong type, impossible value
        ├── UnsupportedVersion   .version
        ├── EnvelopeTooLarge     .size, .limit
        ├── TopicError           .topic: outside the scheme or not matching the envelope
        └── SignatureError       .gateway, .seq: does not verify under the gateway's key
"""

from gateway.protocol._envelope import (
    GENESIS,
    MAX_EXACT_INT,
    MAX_REASON_BYTES,
    MAX_SAMPLES,
    MAX_TAG_BYTES,
    MAX_TEXT_BYTES,
    MAX_TS,
    MIN_TS,
    VERSION,
    Checkpoint,
    Count,
    Envelope,
    Kind,
    Loss,
    Period,
    Quality,
    Sample,
)
from gateway.protocol._errors import (
    EnvelopeTooLarge,
    MalformedEnvelope,
    ProtocolError,
    SignatureError,
    TopicError,
    UnsupportedVersion,
)
from gateway.protocol._json import (
    MAX_PAYLOAD_BYTES,
    decode_json,
    decode_json_document,
    encode_json,
    parse_json,
)
from gateway.protocol._signing import SignedEnvelope, fingerprint, public_key_bytes, sign
from gateway.protocol._sparkplug import (
    MAX_SPARKPLUG_BYTES,
    SPARKPLUG_BDSEQ,
    SPARKPLUG_ENVELOPE_UUID,
    SPARKPLUG_NAMESPACE,
    SPARKPLUG_QUALITY_BAD,
    SPARKPLUG_QUALITY_GOOD,
    SPARKPLUG_QUALITY_STALE,
    SPARKPLUG_REBIRTH,
    SPARKPLUG_SUBSCRIPTIONS,
    SparkplugDataType,
    SparkplugMessageType,
    SparkplugMetric,
    SparkplugPayload,
    SparkplugTopic,
    check_sparkplug_topic,
    decode_sparkplug,
    decode_sparkplug_envelope,
    encode_sparkplug,
    parse_sparkplug_topic,
    sparkplug_device,
    sparkplug_edge_node,
    sparkplug_envelope,
    sparkplug_topic,
)
from gateway.protocol._topics import (
    SUBSCRIPTION,
    Topic,
    check_topic,
    checkpoint_topic,
    data_topic,
    envelope_topic,
    loss_topic,
    parse_topic,
    status_topic,
)

__all__ = [
    "GENESIS",
    "MAX_EXACT_INT",
    "MAX_PAYLOAD_BYTES",
    "MAX_REASON_BYTES",
    "MAX_SAMPLES",
    "MAX_SPARKPLUG_BYTES",
    "MAX_TAG_BYTES",
    "MAX_TEXT_BYTES",
    "MAX_TS",
    "MIN_TS",
    "SPARKPLUG_BDSEQ",
    "SPARKPLUG_ENVELOPE_UUID",
    "SPARKPLUG_NAMESPACE",
    "SPARKPLUG_QUALITY_BAD",
    "SPARKPLUG_QUALITY_GOOD",
    "SPARKPLUG_QUALITY_STALE",
    "SPARKPLUG_REBIRTH",
    "SPARKPLUG_SUBSCRIPTIONS",
    "SUBSCRIPTION",
    "VERSION",
    "Checkpoint",
    "Count",
    "Envelope",
    "EnvelopeTooLarge",
    "Kind",
    "Loss",
    "MalformedEnvelope",
    "Period",
    "ProtocolError",
    "Quality",
    "Sample",
    "SignatureError",
    "SignedEnvelope",
    "SparkplugDataType",
    "SparkplugMessageType",
    "SparkplugMetric",
    "SparkplugPayload",
    "SparkplugTopic",
    "Topic",
    "TopicError",
    "UnsupportedVersion",
    "check_sparkplug_topic",
    "check_topic",
    "checkpoint_topic",
    "data_topic",
    "decode_json",
    "decode_json_document",
    "decode_sparkplug",
    "decode_sparkplug_envelope",
    "encode_json",
    "encode_sparkplug",
    "envelope_topic",
    "fingerprint",
    "loss_topic",
    "parse_json",
    "parse_sparkplug_topic",
    "parse_topic",
    "public_key_bytes",
    "sign",
    "sparkplug_device",
    "sparkplug_edge_node",
    "sparkplug_envelope",
    "sparkplug_topic",
    "status_topic",
]

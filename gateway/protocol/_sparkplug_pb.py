"""The Sparkplug B protobuf messages, built at run time from the schema of the specification.

No generated code and no ``protoc``: the table below is ``sparkplug_b.proto`` (next to this
file) written as data, and ``tests/gateway/sparkplug/test_codec.py`` checks that the two agree
field by field. The descriptors live in a private pool, so another Sparkplug library loaded in
the same process can register its own without a clash.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "guantong.sparkplug_b"
_FIELD = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "uint32": _FIELD.TYPE_UINT32,
    "uint64": _FIELD.TYPE_UINT64,
    "float": _FIELD.TYPE_FLOAT,
    "double": _FIELD.TYPE_DOUBLE,
    "bool": _FIELD.TYPE_BOOL,
    "string": _FIELD.TYPE_STRING,
    "bytes": _FIELD.TYPE_BYTES,
}
#: "extensions N to max" ends here (exclusive), the largest field number plus one
_MAX = 536_870_912

# message path → (fields, first extension number or None); a field is
# (label, type, name, number, oneof "value" or None). Types that are not scalars name a message
# by its path under Payload.
_VALUE = "value"
SCHEMA: dict[str, tuple[list[tuple[str, str, str, int, str | None]], int | None]] = {
    "Payload": (
        [
            ("optional", "uint64", "timestamp", 1, None),
            ("repeated", "Metric", "metrics", 2, None),
            ("optional", "uint64", "seq", 3, None),
            ("optional", "string", "uuid", 4, None),
            ("optional", "bytes", "body", 5, None),
        ],
        6,
    ),
    "Payload.Template": (
        [
            ("optional", "string", "version", 1, None),
            ("repeated", "Metric", "metrics", 2, None),
            ("repeated", "Template.Parameter", "parameters", 3, None),
            ("optional", "string", "template_ref", 4, None),
            ("optional", "bool", "is_definition", 5, None),
        ],
        6,
    ),
    "Payload.Template.Parameter": (
        [
            ("optional", "string", "name", 1, None),
            ("optional", "uint32", "type", 2, None),
            ("optional", "uint32", "int_value", 3, _VALUE),
            ("optional", "uint64", "long_value", 4, _VALUE),
            ("optional", "float", "float_value", 5, _VALUE),
            ("optional", "double", "double_value", 6, _VALUE),
            ("optional", "bool", "boolean_value", 7, _VALUE),
            ("optional", "string", "string_value", 8, _VALUE),
            (
                "optional",
                "Template.Parameter.ParameterValueExtension",
                "extension_value",
                9,
                _VALUE,
            ),
        ],
        None,
    ),
    "Payload.Template.Parameter.ParameterValueExtension": ([], 1),
    "Payload.DataSet": (
        [
            ("optional", "uint64", "num_of_columns", 1, None),
            ("repeated", "string", "columns", 2, None),
            ("repeated", "uint32", "types", 3, None),
            ("repeated", "DataSet.Row", "rows", 4, None),
        ],
        5,
    ),
    "Payload.DataSet.DataSetValue": (
        [
            ("optional", "uint32", "int_value", 1, _VALUE),
            ("optional", "uint64", "long_value", 2, _VALUE),
            ("optional", "float", "float_value", 3, _VALUE),
            ("optional", "double", "double_value", 4, _VALUE),
            ("optional", "bool", "boolean_value", 5, _VALUE),
            ("optional", "string", "string_value", 6, _VALUE),
            (
                "optional",
                "DataSet.DataSetValue.DataSetValueExtension",
                "extension_value",
                7,
                _VALUE,
            ),
        ],
        None,
    ),
    "Payload.DataSet.DataSetValue.DataSetValueExtension": ([], 1),
    "Payload.DataSet.Row": ([("repeated", "DataSet.DataSetValue", "elements", 1, None)], 2),
    "Payload.PropertyValue": (
        [
            ("optional", "uint32", "type", 1, None),
            ("optional", "bool", "is_null", 2, None),
            ("optional", "uint32", "int_value", 3, _VALUE),
            ("optional", "uint64", "long_value", 4, _VALUE),
            ("optional", "float", "float_value", 5, _VALUE),
            ("optional", "double", "double_value", 6, _VALUE),
            ("optional", "bool", "boolean_value", 7, _VALUE),
            ("optional", "string", "string_value", 8, _VALUE),
            ("optional", "PropertySet", "propertyset_value", 9, _VALUE),
            ("optional", "PropertySetList", "propertysets_value", 10, _VALUE),
            ("optional", "PropertyValue.PropertyValueExtension", "extension_value", 11, _VALUE),
        ],
        None,
    ),
    "Payload.PropertyValue.PropertyValueExtension": ([], 1),
    "Payload.PropertySet": (
        [
            ("repeated", "string", "keys", 1, None),
            ("repeated", "PropertyValue", "values", 2, None),
        ],
        3,
    ),
    "Payload.PropertySetList": ([("repeated", "PropertySet", "propertyset", 1, None)], 2),
    "Payload.MetaData": (
        [
            ("optional", "bool", "is_multi_part", 1, None),
            ("optional", "string", "content_type", 2, None),
            ("optional", "uint64", "size", 3, None),
            ("optional", "uint64", "seq", 4, None),
            ("optional", "string", "file_name", 5, None),
            ("optional", "string", "file_type", 6, None),
            ("optional", "string", "md5", 7, None),
            ("optional", "string", "description", 8, None),
        ],
        9,
    ),
    "Payload.Metric": (
        [
            ("optional", "string", "name", 1, None),
            ("optional", "uint64", "alias", 2, None),
            ("optional", "uint64", "timestamp", 3, None),
            ("optional", "uint32", "datatype", 4, None),
            ("optional", "bool", "is_historical", 5, None),
            ("optional", "bool", "is_transient", 6, None),
            ("optional", "bool", "is_null", 7, None),
            ("optional", "MetaData", "metadata", 8, None),
            ("optional", "PropertySet", "properties", 9, None),
            ("optional", "uint32", "int_value", 10, _VALUE),
            ("optional", "uint64", "long_value", 11, _VALUE),
            ("optional", "float", "float_value", 12, _VALUE),
            ("optional", "double", "double_value", 13, _VALUE),
            ("optional", "bool", "boolean_value", 14, _VALUE),
            ("optional", "string", "string_value", 15, _VALUE),
            ("optional", "bytes", "bytes_value", 16, _VALUE),
            ("optional", "DataSet", "dataset_value", 17, _VALUE),
            ("optional", "Template", "template_value", 18, _VALUE),
            ("optional", "Metric.MetricValueExtension", "extension_value", 19, _VALUE),
        ],
        None,
    ),
    "Payload.Metric.MetricValueExtension": ([], 1),
}


def _message(path: str, into: Any) -> None:
    fields, extensions_from = SCHEMA[path]
    message = into.add()
    message.name = path.rsplit(".", 1)[-1]
    if any(oneof for *_, oneof in fields):
        message.oneof_decl.add().name = _VALUE
    for label, kind, name, number, oneof in fields:
        field = message.field.add(name=name, number=number)
        field.label = _FIELD.LABEL_REPEATED if label == "repeated" else _FIELD.LABEL_OPTIONAL
        if kind in _SCALARS:
            field.type = _SCALARS[kind]
        else:
            field.type = _FIELD.TYPE_MESSAGE
            field.type_name = f".{PACKAGE}.Payload.{kind}"
        if oneof is not None:
            field.oneof_index = 0
    if extensions_from is not None:
        message.extension_range.add(start=extensions_from, end=_MAX)
    depth = path.count(".") + 1
    for child in SCHEMA:
        if child.startswith(path + ".") and child.count(".") == depth:
            _message(child, message.nested_type)


def _build() -> Any:
    proto = descriptor_pb2.FileDescriptorProto(
        name="guantong/sparkplug_b.proto", package=PACKAGE, syntax="proto2"
    )
    _message("Payload", proto.message_type)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.Payload"))


#: the ``Payload`` message class (upb when available)
Payload: Any = _build()

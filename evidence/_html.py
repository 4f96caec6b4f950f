"""The HTML rendering of a signed report: for reading, Chinese labels first. The JSON file is
the evidence; this page is made from it and carries no signature of its own."""

from __future__ import annotations

import html
from typing import Any

from evidence._report import Report

_STYLE = """
body{font-family:system-ui,"Noto Sans CJK SC",sans-serif;margin:2em;max-width:72em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3;text-align:left}.num{text-align:right}.fp{font-family:monospace}
td,li{white-space:pre-line}
"""


def _cell(value: Any, numeric: bool = False) -> str:
    text = "—" if value is None else str(value)
    return (
        f'<td class="num">{html.escape(text)}</td>' if numeric else f"<td>{html.escape(text)}</td>"
    )


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{value:.1%}"


_STRENGTH = {"none": "无 none", "weak": "弱 weak", "partial": "部分 partial", "strong": "强 strong"}


def _both(zh: str | None, en: str) -> str:
    """Chinese first, then English on a line of its own (reports made before the Chinese
    texts have the English only)."""
    return f"{zh}\n{en}" if zh else en


def _indicators(items: list[dict[str, Any]]) -> str:
    rows = []
    for i in items:
        zh_open = i.get("not_evidenced_zh") or [None] * len(i["not_evidenced"])
        rows.append([
            f"{i['dimension']} / {i['item']}", i["level"],
            _STRENGTH.get(i["strength"], i["strength"]), i["points"],
            _both(i.get("basis_zh"), i["basis"]),
            "\n".join(_both(zh, en) for zh, en in zip(zh_open, i["not_evidenced"], strict=True)),
        ])  # fmt: skip
    head = ["指标 Item", "层级 Level", "支撑强度 Strength", "得分 Points", "依据 Basis",
            "仍需核实 Still to check"]  # fmt: skip
    return _table(head, rows)


def _table(head: list[str], rows: list[list[Any]], numeric: frozenset[int] = frozenset()) -> str:
    out = ["<table><tr>", *(f"<th>{html.escape(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(_cell(v, i in numeric) for i, v in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _oee(devices: list[dict[str, Any]]) -> list[str]:
    """The OEE table, for the devices whose records declare the signals (reports made before
    OEE have none)."""
    rows = [
        [d["identifier"], _pct(o["availability"]), _pct(o["performance"]), _pct(o["quality"]),
         _pct(o["oee"]), o["total"], "；".join(o["missing"]) or None]
        for d in devices
        if (o := d.get("oee"))
    ]  # fmt: skip
    if not rows:
        return []
    head = ["设备 Device", "开动率 Availability", "性能 Performance", "合格率 Quality", "OEE",
            "产量 Parts", "缺少 Missing"]  # fmt: skip
    return ["<h2>设备综合效率 OEE</h2>", _table(head, rows, frozenset({1, 2, 3, 4, 5}))]


def render_html(report: Report, fingerprint: str) -> str:
    doc = report.report
    facts, assessment = doc["facts"], doc["assessment"]
    net = facts["networking"]
    cover = facts.get("identifier_coverage")  # reports made before it have none
    parts = [
        "<!doctype html><html lang=zh-CN><meta charset=utf-8>",
        f"<title>数据连通性证据报告 Evidence report — {html.escape(doc['firm'])}</title>",
        f"<style>{_STYLE}</style>",
        "<h1>数据连通性证据报告 <small>Data connectivity evidence report</small></h1>",
        _table(
            ["项目 Item", "内容 Value"],
            [
                ["企业 Firm", doc["firm"]],
                ["时间窗口 Window", f"{doc['window']['from']} — {doc['window']['to']}"],
                ["生成时间 Generated", doc["generated"]],
                ["平台密钥 Platform key", fingerprint],
                ["生产设备联网率 Networking rate", _pct(net["rate"])],
                [
                    "关键设备 Key devices (networked / registered)",
                    f"{net['key_networked']} / {net['key_registered']}",
                ],
                [
                    "标识解析一致 Identifier coverage (matched / delivering)",
                    f"{cover['matched']} / {cover['delivering']}" if cover else None,
                ],
            ],
        ),
        "<p>本页由签名的 JSON 报告生成；核验请用 <code>guantong evidence verify</code>。"
        "This page is rendered from the signed JSON report; verify that file.</p>",
        "<h2>评测指标 Indicator items</h2>",
        _indicators(assessment["items"]),
        "<h2>设备 Devices</h2>",
        _table(
            [
                "设备 Device",
                "网关 Gateway",
                "关键设备 Key",
                "样本 Samples",
                "完整率 Completeness",
                "联网 Networked",
            ],
            [
                [
                    d["identifier"],
                    d["gateway"],
                    "是" if d["key_equipment"] else "否",
                    d["samples"],
                    d["completeness"],
                    "是" if d["networked"] else "否",
                ]
                for d in facts["devices"]
            ],
            frozenset({3, 4}),
        ),
        *_oee(facts["devices"]),
        "<h2>网关签名检查点 Gateway checkpoints</h2>",
        _table(
            ["网关 Gateway", "检查点 Checkpoints", "已声明丢失 Declared losses"],
            [[a["gateway"], len(a["checkpoints"]), len(a["losses"])] for a in doc["attestation"]],
            frozenset({1, 2}),
        ),
    ]
    if assessment["doubts"]:
        parts.append("<h2>存疑 Doubts</h2><ul>")
        doubts_zh = assessment.get("doubts_zh") or [None] * len(assessment["doubts"])
        parts += [
            f"<li>{html.escape(_both(zh, en))}</li>"
            for zh, en in zip(doubts_zh, assessment["doubts"], strict=True)
        ]
        parts.append("</ul>")
    return "\n".join(parts) + "\n"

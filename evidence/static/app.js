// The evidence page: plain JavaScript over the /api/v1 endpoints, no build step.
// The token stays in sessionStorage (gone with the tab); every text from the API is set with
// textContent, never parsed as HTML.
"use strict";

const TEXT = {
  zh: {
    title: "贯通 · 数据连通证据", logout: "退出", login: "登录", enter: "进入",
    loginHint: "请输入平台发放的访问令牌。", tokenPlaceholder: "访问令牌",
    badToken: "令牌无效或已过期", firm: "企业", window: "评估窗口",
    networking: "生产设备联网率", liveDevices: "在线设备", gatewaysOnline: "网关在线时长",
    latency: "传输时延 p50 / p99", devices: "设备", device: "设备标识", name: "名称",
    gateway: "网关", keyEquipment: "关键设备", stages: "业务环节", status: "状态",
    lastSample: "最新数据", deviceDetail: "设备详情", tag: "点位", value: "当前值",
    quality: "质量", time: "时间", range: "时间范围", last10m: "最近10分钟",
    last1h: "最近1小时", last24h: "最近24小时", last7d: "最近7天", last30d: "最近30天", indicators: "评测指标对应情况（2024版）",
    indicatorNote: "机器数据只能支撑部分指标项；本表不给出等级，需评测人员现场核实其余内容。",
    item: "指标项", level: "等级", strength: "证据强度", points: "得分 / 满分", basis: "依据",
    toCheck: "仍需核实", integrity: "数据完整性与可信度", yes: "是", no: "否",
    live: "在线", stale: "数据过期", silent: "无数据",
    none: "无", weak: "弱", partial: "部分", strong: "强",
    good: "良好", uncertain: "不确定", bad: "坏值", noData: "暂无数据",
    envelopes: "数据包", validSignatures: "签名有效", signatureShare: "有效签名比例",
    badSignatures: "签名无效（已隔离）", gaps: "序号缺口事件", missingEnvelopes: "缺失数据包",
    undeclaredMissing: "未声明的缺失", declaredLosses: "网关声明的丢失（包 / 样本）",
    chainBreaks: "哈希链断裂", quarantined: "隔离消息", doubtsNone: "未发现可信度问题",
    seconds: "秒", ofKey: "台关键设备", oee: "OEE（评估窗口）", oeeParts: "A 开动率 · P 性能 · Q 合格率",
  },
  en: {
    title: "Guantong · connectivity evidence", logout: "Log out", login: "Log in",
    enter: "Enter", loginHint: "Enter the access token the platform gave you.",
    tokenPlaceholder: "access token", badToken: "invalid or expired token", firm: "Firm",
    window: "Window", networking: "Production equipment networking rate",
    liveDevices: "Devices live", gatewaysOnline: "Gateway online time",
    latency: "Latency p50 / p99", devices: "Devices", device: "Identifier", name: "Name",
    gateway: "Gateway", keyEquipment: "Key equipment", stages: "Business stages",
    status: "Status", lastSample: "Newest sample", deviceDetail: "Device", tag: "Tag",
    value: "Value", quality: "Quality", time: "Time", range: "Range", last10m: "last 10 min",
    last1h: "last hour", last24h: "last 24 h", last7d: "last 7 days", last30d: "last 30 days", indicators: "Assessment items (2024 edition)",
    indicatorNote: "Machine data supports only some items; no level is given, the evaluator " +
      "checks the rest on site.",
    item: "Item", level: "Level", strength: "Strength", points: "Points / max", basis: "Basis",
    toCheck: "Still to check", integrity: "Integrity and trust", yes: "yes", no: "no",
    live: "live", stale: "stale", silent: "silent",
    none: "none", weak: "weak", partial: "partial", strong: "strong",
    good: "good", uncertain: "uncertain", bad: "bad", noData: "no data",
    envelopes: "Envelopes", validSignatures: "Valid signatures", signatureShare: "Valid share",
    badSignatures: "Invalid signatures (quarantined)", gaps: "Gap events",
    missingEnvelopes: "Missing envelopes", undeclaredMissing: "Missing, undeclared",
    declaredLosses: "Declared losses (envelopes / samples)", chainBreaks: "Chain breaks",
    quarantined: "Quarantined messages", doubtsNone: "no integrity doubts found",
    seconds: "s", ofKey: "key devices", oee: "OEE (window)",
    oeeParts: "A availability · P performance · Q quality",
  },
};
const QUALITY = ["good", "uncertain", "bad"];
const POLL = { live: 2000, devices: 5000, evidence: 30000, charts: 5000 };

const $ = (sel) => document.querySelector(sel);
const state = {
  lang: localStorage.getItem("guantong.lang") || "zh",
  token: sessionStorage.getItem("guantong.token"),
  firm: null, device: null, timers: [], charts: new Map(),
  last: { devices: null, evidence: null, live: null },
};

function t(key) { return TEXT[state.lang][key] ?? key; }

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function pct(x) { return x === null || x === undefined ? "—" : `${(x * 100).toFixed(1)}%`; }
function num(x) {
  if (x === null || x === undefined) return "—";
  if (typeof x !== "number" || Number.isInteger(x)) return String(x);
  return String(Number(x.toPrecision(6)));
}
function clock(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return d.toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB", { hour12: false });
}
function secs(x) { return x === null || x === undefined ? "—" : `${x.toFixed(1)} ${t("seconds")}`; }

class Unauthorized extends Error {}

async function api(path, params = {}) {
  const url = new URL(path, location.href);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  const res = await fetch(url, { headers: { Authorization: `Bearer ${state.token}` } });
  if (res.status === 401) throw new Unauthorized((await res.json()).error);
  if (!res.ok) throw new Error(`${res.status}: ${(await res.json()).error}`);
  return res.json();
}

function applyLanguage() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.title = t("title");
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) {
    node.placeholder = t(node.dataset.i18nPlaceholder);
  }
  $("#lang").textContent = state.lang === "zh" ? "English" : "中文";
  if (state.last.devices) renderDevices(state.last.devices);
  if (state.last.evidence) renderEvidence(state.last.evidence);
  if (state.last.live) renderLive(state.last.live);
}

function showError(err) {
  if (err instanceof Unauthorized) { logout(err.message); return; }
  $("#error").textContent = err ? String(err.message || err) : "";
}

function every(ms, work) {
  const run = () => work().then(() => showError(null), showError);
  run();
  state.timers.push(setInterval(run, ms));
}

function stopTimers() { state.timers.forEach(clearInterval); state.timers = []; }

// --- devices ---------------------------------------------------------------------------------

function renderDevices(answer) {
  const body = $("#devices tbody");
  body.replaceChildren();
  for (const d of answer.devices) {
    const row = el("tr");
    row.dataset.device = d.identifier;
    row.dataset.status = d.status;
    if (d.identifier === state.device) row.classList.add("selected");
    row.append(el("td", d.identifier, "mono"), el("td", d.name ?? "—"), el("td", d.gateway ?? "—", "mono"),
      el("td", d.key_equipment ? t("yes") : t("no")), el("td", d.stages.join("、") || "—"),
      el("td", t(d.status), `status ${d.status}`),
      el("td", d.last_sample ? `${clock(d.last_sample)} (${secs(d.age)})` : "—"), oeeCell(d.identifier));
    row.addEventListener("click", () => selectDevice(d.identifier));
    body.append(row);
  }
  const live = answer.devices.filter((d) => d.status === "live").length;
  $("#live-count").textContent = `${live} / ${answer.devices.length}`;
}

// OEE comes with the evidence of the overview's window, not with the device list
function oeeCell(id) {
  const dev = state.last.evidence?.evidence.devices.find((d) => d.identifier === id);
  const o = dev?.oee;
  if (!o) return el("td", "—");
  const cell = el("td", `${pct(o.oee)} (A ${pct(o.availability)} · P ${pct(o.performance)} · Q ${pct(o.quality)})`, "oee");
  cell.title = [t("oeeParts"), ...o.missing].join("\n");
  return cell;
}

async function loadDevices() {
  const answer = await api("api/v1/devices", { firm: state.firm });
  state.last.devices = answer;
  renderDevices(answer);
}

// --- one device: live values and charts ------------------------------------------------------

function renderLive(answer) {
  const body = $("#live tbody");
  body.replaceChildren();
  for (const v of answer.values) {
    const row = el("tr");
    row.dataset.tag = v.tag;
    const value = v.value ?? v.text_value;
    const quality = v.quality === null ? "—" : t(QUALITY[v.quality] ?? "bad");
    row.append(el("td", v.tag, "mono"), el("td", value === null ? t("noData") : num(value), "value"),
      el("td", quality, `quality q${v.quality}`), el("td", clock(v.ts)));
    body.append(row);
  }
}

async function loadLive() {
  if (!state.device) return;
  const answer = await api("api/v1/live", { firm: state.firm, device: state.device });
  if (answer.device !== state.device) return;
  state.last.live = answer;
  renderLive(answer);
  for (const v of answer.values) {
    if (v.value !== null && !state.charts.has(v.tag)) addChart(v.tag);
  }
}

function addChart(tag) {
  const box = el("div", null, "chart");
  box.dataset.tag = tag;
  box.append(el("h3", tag, "mono"));
  $("#charts").append(box);
  const opts = {
    width: Math.max(320, box.clientWidth - 4), height: 180,
    scales: { x: { time: true } },
    series: [{}, { label: "avg", stroke: "#1f6feb", width: 1.5 },
      { label: "min", stroke: "#9ab", width: 1 }, { label: "max", stroke: "#9ab", width: 1 }],
    axes: [{}, { size: 60 }],
  };
  state.charts.set(tag, new uPlot(opts, [[], [], [], []], box));
  loadChart(tag).catch(showError);
}

async function loadChart(tag) {
  const seconds = Number($("#range").value);
  const end = new Date();
  const start = new Date(end.getTime() - seconds * 1000);
  const s = await api("api/v1/series", {
    firm: state.firm, device: state.device, tag, start: start.toISOString(), end: end.toISOString(),
    points: 300,
  });
  const chart = state.charts.get(tag);
  if (!chart || s.device !== state.device) return;
  chart.setData([s.t.map((x) => Date.parse(x) / 1000), s.avg, s.min, s.max], false);
  chart.setScale("x", { min: start.getTime() / 1000, max: end.getTime() / 1000 });
  chart.root.parentElement.dataset.points = String(s.t.length);
}

async function loadCharts() {
  if (state.device) await Promise.all([...state.charts.keys()].map(loadChart));
}

function resetDevice() {
  state.device = null;
  state.last.live = null;
  for (const c of state.charts.values()) c.destroy();
  state.charts.clear();
  $("#charts").replaceChildren();
  $("#live tbody").replaceChildren();
  $("#device").hidden = true;
}

function selectDevice(id) {
  resetDevice();
  state.device = id;
  setLink();
  $("#device").hidden = false;
  $("#device-id").textContent = id;
  for (const row of document.querySelectorAll("#devices tbody tr")) {
    row.classList.toggle("selected", row.dataset.device === id);
  }
  loadLive().catch(showError);
}

// --- evidence: indicator table and integrity panel ------------------------------------------

// the assessment gives each text in English (`basis`) and Chinese (`basis_zh`)
function said(obj, field) {
  return state.lang === "zh" ? obj[`${field}_zh`] ?? obj[field] : obj[field];
}

function renderEvidence(answer) {
  const ev = answer.evidence;
  const a = answer.assessment;
  $("#window").textContent = `${clock(ev.window.start)} — ${clock(ev.window.end)}`;
  const n = ev.networking;
  $("#networking").textContent = `${pct(n.rate)} (${n.key_networked} / ${n.key_registered} ${t("ofKey")})`;
  const span = (Date.parse(ev.as_of) - Date.parse(ev.window.start)) / 1000;
  $("#gw-online").textContent = ev.gateways.map((g) => pct(span > 0 ? g.online_seconds / span : null)).join(" · ") || "—";
  $("#gw-online").title = ev.gateways.map((g) => g.identifier).join(" · ");
  $("#latency").textContent = `${secs(ev.latency.p50)} / ${secs(ev.latency.p99)}`;

  const body = $("#indicators tbody");
  body.replaceChildren();
  for (const item of a.items) {
    const row = el("tr");
    row.dataset.item = item.id;
    const points = item.max_points === null ? "—" : `${num(item.points)} / ${num(item.max_points)}`;
    row.append(el("td", `${item.dimension} / ${item.item}`),
      el("td", item.level ?? "—"), el("td", t(item.strength), `strength ${item.strength}`),
      el("td", points, "points"), el("td", said(item, "basis"), "basis"),
      el("td", said(item, "not_evidenced").join("；") || "—", "to-check"));
    body.append(row);
  }

  const i = ev.integrity;
  const doubts = $("#doubts");
  const reasons = said(a, "doubts");
  doubts.replaceChildren(...(reasons.length ? reasons.map((d) => el("li", d)) : [el("li", t("doubtsNone"), "ok")]));
  const facts = [
    ["envelopes", i.envelopes], ["validSignatures", i.valid_signatures],
    ["signatureShare", pct(i.signature_share)], ["badSignatures", i.bad_signatures],
    ["gaps", i.gaps], ["missingEnvelopes", i.missing_envelopes],
    ["undeclaredMissing", i.undeclared_missing],
    ["declaredLosses", `${i.declared_lost_envelopes} / ${i.declared_lost_samples}`],
    ["chainBreaks", i.chain_breaks],
    ["quarantined", Object.entries(i.quarantined).map(([k, v]) => `${k}: ${v}`).join(", ") || "0"],
  ];
  const dl = $("#integrity dl");
  dl.replaceChildren();
  for (const [key, value] of facts) {
    const dt = el("dt", t(key));
    const dd = el("dd", value);
    dd.dataset.fact = key;
    dl.append(dt, dd);
  }
}

async function loadEvidence() {
  const end = new Date();
  const start = new Date(end.getTime() - Number($("#span").value) * 1000);
  const answer = await api("api/v1/evidence", {
    firm: state.firm, start: start.toISOString(), end: end.toISOString(),
  });
  state.last.evidence = answer;
  renderEvidence(answer);
  if (state.last.devices) renderDevices(state.last.devices);
}

// --- session ---------------------------------------------------------------------------------

// the page's address names the firm and device shown: "#firm=ID&device=ID", a link an
// identifier record can carry (the firm may be left out: the one sharing the device's prefix)
function setLink() {
  const link = new URLSearchParams({ firm: state.firm });
  if (state.device) link.set("device", state.device);
  history.replaceState(null, "", `#${link}`);
}

function linked(firms) {
  const link = new URLSearchParams(location.hash.slice(1));
  const device = link.get("device");
  const prefix = (id) => id.split("/")[0];
  const firm = firms.find((f) => f.identifier === link.get("firm")) ??
    firms.find((f) => device && prefix(f.identifier) === prefix(device)) ?? firms[0];
  return { firm: firm?.identifier, device: firm && device && prefix(device) === prefix(firm.identifier) ? device : null };
}

function watchFirm(firm, device = null) {
  stopTimers();
  state.firm = firm;
  resetDevice();
  $("#firm").value = firm;
  setLink();
  if (device) selectDevice(device);
  every(POLL.devices, loadDevices);
  every(POLL.evidence, loadEvidence);
  every(POLL.live, loadLive);
  every(POLL.charts, loadCharts);
}

async function start() {
  const me = await api("api/v1/me");
  const firms = await api("api/v1/firms");
  $("#who").textContent = `${me.name} (${me.role})`;
  const select = $("#firm");
  select.replaceChildren(...firms.map((f) => {
    const option = el("option", f.identifier);
    option.value = f.identifier;
    return option;
  }));
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  const shown = linked(firms);
  if (shown.firm) watchFirm(shown.firm, shown.device);
}

function logout(message) {
  stopTimers();
  resetDevice();
  state.last.devices = state.last.evidence = null;
  sessionStorage.removeItem("guantong.token");
  state.token = null;
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#who").textContent = "";
  $("#login-error").textContent = message || "";
}

function init() {
  applyLanguage();
  $("#lang").addEventListener("click", () => {
    state.lang = state.lang === "zh" ? "en" : "zh";
    localStorage.setItem("guantong.lang", state.lang);
    applyLanguage();
  });
  $("#logout").addEventListener("click", () => logout(""));
  $("#firm").addEventListener("change", (e) => watchFirm(e.target.value));
  $("#range").addEventListener("change", () => loadCharts().catch(showError));
  $("#span").addEventListener("change", () => loadEvidence().catch(showError));
  $("#login").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("#token").value.trim();
    start().then(() => sessionStorage.setItem("guantong.token", state.token),
      (err) => logout(err instanceof Unauthorized ? t("badToken") : String(err.message || err)));
  });
  if (state.token) start().catch((err) => logout(err instanceof Unauthorized ? t("badToken") : ""));
}

init();

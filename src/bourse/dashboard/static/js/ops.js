// The operations view: every stream's rate, bytes and messages, every consumer's lag,
// ack-pending, redeliveries and throughput, with sparklines; and the health of the parts.
// Polls GET /v2/ops/streams once a second (the gateway samples JetStream at most that often).

import { ApiError } from "./api.js";
import { fmtBytes, fmtCompact, fmtRate, setClass, setText } from "./format.js";

const HISTORY = 60; // samples per sparkline
const LAG_WARNING = 1000; // messages

class History {
  constructor() { this.values = []; }
  push(value) {
    this.values.push(value ?? 0);
    if (this.values.length > HISTORY) this.values.shift();
  }
}

function drawSpark(canvas, values, color) {
  const ratio = window.devicePixelRatio || 1;
  const width = 120;
  const height = 22;
  if (canvas.width !== width * ratio) {
    canvas.width = width * ratio;
    canvas.height = height * ratio;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  if (values.length < 2) return;
  const max = Math.max(1, ...values);
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.2;
  ctx.beginPath();
  // The newest sample at the right edge; a history still filling up grows leftwards.
  const offset = HISTORY - values.length;
  values.forEach((v, i) => {
    const x = ((offset + i) / (HISTORY - 1)) * width;
    const y = height - 1 - (v / max) * (height - 3);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

export class OpsView {
  constructor({ api, scheduler, els, links }) {
    this.api = api;
    this.scheduler = scheduler;
    this.els = els;
    this.links = links; // () => {market, trades}: the page's own connections
    this.report = null;
    this.error = null;
    this.streamHistory = new Map();
    this.lagHistory = new Map();
    this.throughputHistory = new Map();
    this.streamRows = new Map();
    this.consumerRows = new Map();
    this.polls = 0;
    this.timer = null;
  }

  start() {
    const poll = async () => {
      await this.poll();
      this.timer = setTimeout(poll, 1000);
    };
    poll();
  }

  stop() {
    clearTimeout(this.timer);
  }

  async poll() {
    try {
      this.report = await this.api.get("/v2/ops/streams");
      this.error = null;
      this.polls += 1;
      for (const s of this.report.streams) {
        const name = s.stream.name;
        if (!this.streamHistory.has(name)) this.streamHistory.set(name, new History());
        this.streamHistory.get(name).push(s.messages_per_s);
      }
      for (const c of this.report.consumers) {
        const key = `${c.consumer.stream}/${c.consumer.name}`;
        if (!this.lagHistory.has(key)) { this.lagHistory.set(key, new History()); this.throughputHistory.set(key, new History()); }
        this.lagHistory.get(key).push(c.consumer.num_pending);
        this.throughputHistory.get(key).push(c.delivered_per_s);
      }
    } catch (error) {
      this.error = error instanceof ApiError ? error.message : "the gateway is not answering";
    }
    this.scheduler.mark("ops");
  }

  render() {
    this.renderHealth();
    if (!this.report) return;
    this.renderStreams();
    this.renderConsumers();
  }

  renderHealth() {
    const report = this.report;
    const links = this.links();
    const feed = report?.streams.find((s) => s.stream.name === "MARKET_DATA");
    const worstLag = report ? Math.max(0, ...report.consumers.map((c) => c.consumer.num_pending)) : null;
    const cards = [
      ["Gateway", this.error ? this.error : "answering", this.error ? "bad" : "ok"],
      ["NATS", report ? (report.nats_connected ? "connected" : "disconnected") : "–", report?.nats_connected ? "ok" : "bad"],
      ["Feed rate", feed ? `${fmtRate(feed.messages_per_s)} msg/s` : "–", feed?.messages_per_s > 0 ? "ok" : "warn"],
      ["Worst consumer lag", worstLag === null ? "–" : fmtCompact(worstLag), worstLag !== null && worstLag < LAG_WARNING ? "ok" : "warn"],
      ["Market data link", links.market, links.market === "on" ? "ok" : "warn"],
      ["Trade updates link", links.trades, links.trades === "on" ? "ok" : "warn"],
      // Every service's readiness, as /readyz reports it.
      ...Object.entries(report?.services ?? {}).filter(([name]) => name !== "nats").map(([name, answer]) => [
        `Service: ${name}`, answer === "ok" ? "ready" : answer, answer === "ok" ? "ok" : "bad",
      ]),
    ];
    const container = this.els.health;
    if (container.children.length !== cards.length) {
      container.replaceChildren(...cards.map(() => {
        const div = document.createElement("div");
        div.innerHTML = '<div class="label"></div><div class="value"></div>';
        return div;
      }));
    }
    cards.forEach(([label, value, state], i) => {
      const card = container.children[i];
      setClass(card, `card ${state}`);
      card.dataset.name = label;
      setText(card.children[0], label);
      setText(card.children[1], value);
    });
  }

  row(table, rows, key, width) {
    let row = rows.get(key);
    if (!row) {
      const tr = document.createElement("tr");
      tr.dataset.key = key;
      const cells = Array.from({ length: width }, () => tr.appendChild(document.createElement("td")));
      table.tBodies[0].append(tr);
      row = { tr, cells };
      rows.set(key, row);
    }
    return row;
  }

  spark(cell, values, color) {
    let canvas = cell.firstElementChild;
    if (!canvas) {
      canvas = document.createElement("canvas");
      canvas.className = "spark";
      canvas.setAttribute("role", "img");
      cell.append(canvas);
    }
    canvas.setAttribute("aria-label", `last ${values.length} samples, latest ${fmtRate(values[values.length - 1])}`);
    drawSpark(canvas, values, color);
  }

  renderStreams() {
    for (const s of this.report.streams) {
      const info = s.stream;
      const { cells } = this.row(this.els.streams, this.streamRows, info.name, 8);
      const [name, rate, spark, bytesRate, messages, bytes, consumers, replicas] = cells;
      setText(name, info.name);
      setText(rate, fmtRate(s.messages_per_s));
      this.spark(spark, this.streamHistory.get(info.name).values, "#4c9aff");
      setText(bytesRate, s.bytes_per_s === null ? "–" : `${fmtBytes(s.bytes_per_s)}/s`);
      setText(messages, fmtCompact(info.messages));
      messages.dataset.value = String(info.messages);
      setText(bytes, fmtBytes(info.bytes));
      setText(consumers, String(info.consumer_count));
      setText(replicas, `${info.current_replicas}/${info.replicas}${info.leader ? ` (${info.leader})` : ""}`);
      for (const cell of [rate, bytesRate, messages, bytes, consumers]) cell.className = "num";
    }
  }

  renderConsumers() {
    for (const c of this.report.consumers) {
      const info = c.consumer;
      const key = `${info.stream}/${info.name}`;
      const { cells } = this.row(this.els.consumers, this.consumerRows, key, 8);
      const [stream, name, lag, lagSpark, ackPending, redelivered, rate, rateSpark] = cells;
      setText(stream, info.stream);
      setText(name, info.name);
      setText(lag, fmtCompact(info.num_pending));
      lag.dataset.value = String(info.num_pending);
      setClass(lag, `num ${info.num_pending >= LAG_WARNING ? "down" : ""}`);
      this.spark(lagSpark, this.lagHistory.get(key).values, "#f0b429");
      setText(ackPending, fmtCompact(info.num_ack_pending));
      setText(redelivered, fmtCompact(info.num_redelivered));
      setText(rate, fmtRate(c.delivered_per_s));
      this.spark(rateSpark, this.throughputHistory.get(key).values, "#26a69a");
      for (const cell of [ackPending, redelivered, rate]) cell.className = "num";
    }
  }
}

// The account (cash, equity, buying power, halts), positions with live unrealized P&L, open
// orders with cancel and replace, and fills (account activities). REST is the truth; trade updates from /stream
// say when to re-read it (coalesced: one refresh in flight, at most one queued).

import { ApiError } from "./api.js";
import { fmtMoney, fmtPrice, fmtQty, fmtSigned, fmtTime, num, setClass, setText, signClass } from "./format.js";

const MAX_FILLS = 50;
const REFRESH_EVERY = 5000; // ms; trade updates trigger refreshes in between

export class Portfolio {
  constructor({ api, market, scheduler, els, toast }) {
    this.api = api;
    this.market = market;
    this.scheduler = scheduler;
    this.els = els;
    this.toast = toast;
    this.account = null;
    this.positions = [];
    this.orders = [];
    this.fills = [];
    this.inFlight = null;
    this.again = false;
    this.editing = null; // the order id being replaced
    this.timer = setInterval(() => this.refresh(), REFRESH_EVERY);
  }

  stop() {
    clearInterval(this.timer);
  }

  refresh() {
    if (this.inFlight) { this.again = true; return this.inFlight; }
    this.inFlight = this.load().finally(() => {
      this.inFlight = null;
      if (this.again) { this.again = false; this.refresh(); }
    });
    return this.inFlight;
  }

  async load() {
    try {
      const [account, positions, orders, fills] = await Promise.all([
        this.api.get("/v2/account"),
        this.api.get("/v2/positions"),
        this.api.get("/v2/orders?status=open&limit=100&direction=desc"),
        this.api.get(`/v2/account/activities/FILL?page_size=${MAX_FILLS}`),
      ]);
      this.account = account;
      this.positions = positions;
      this.orders = orders;
      // The account's latest fills, also those from before this page was opened.
      this.fills = fills.map((f) => ({
        ts: f.transaction_time, symbol: f.symbol, side: f.side, qty: f.qty, price: f.price,
      }));
      this.scheduler.mark("account", "positions", "orders", "fills");
    } catch (error) {
      if (!(error instanceof ApiError)) return; // the gateway is away; the next refresh retries
      console.warn(`refresh failed: ${error.message}`);
    }
  }

  onTradeUpdate(data) {
    // A fill's update is sent once the read model has it: the refresh lists it.
    if (data.event === "rejected") this.toast(`order rejected: ${data.order?.symbol ?? ""}`, "warn");
    this.refresh();
  }

  markOf(position) {
    return this.market.mark(position.symbol) ?? num(position.current_price);
  }

  unrealized() {
    let total = 0;
    for (const p of this.positions) {
      const mark = this.markOf(p);
      if (mark !== null) total += (mark - num(p.avg_entry_price)) * num(p.qty);
    }
    return total;
  }

  renderAccount() {
    const a = this.account;
    if (!a) return;
    let marketValue = 0;
    for (const p of this.positions) marketValue += (this.markOf(p) ?? 0) * num(p.qty);
    const equity = this.positions.length ? num(a.cash) + marketValue : num(a.equity);
    setText(this.els.equity, fmtMoney(equity));
    setText(this.els.cash, fmtMoney(a.cash));
    setText(this.els.buyingPower, fmtMoney(a.buying_power));
    const upl = this.unrealized();
    setText(this.els.upl, fmtSigned(upl));
    setClass(this.els.upl, signClass(upl));
    this.els.banner.hidden = !a.trading_blocked;
    setText(this.els.haltedReason, a.blocked_reason || "halted");
  }

  renderPositions() {
    const body = this.els.positions.tBodies[0];
    if (!this.positions.length) {
      if (!body.querySelector(".empty")) body.innerHTML = '<tr><td class="empty" colspan="6">no positions</td></tr>';
      this.renderAccount();
      return;
    }
    const rows = this.positions.map((p) => {
      let tr = body.querySelector(`tr[data-symbol="${CSS.escape(p.symbol)}"]`);
      if (!tr) {
        tr = document.createElement("tr");
        tr.dataset.symbol = p.symbol;
        tr.innerHTML = '<td></td><td class="num"></td><td class="num"></td><td class="num"></td><td class="num pl"></td><td><button class="ghost small">Close</button></td>';
        tr.querySelector("button").addEventListener("click", () => this.close(p.symbol));
        tr.querySelector("button").setAttribute("aria-label", `Close ${p.symbol} position`);
      }
      const mark = this.markOf(p);
      const pl = mark === null ? null : (mark - num(p.avg_entry_price)) * num(p.qty);
      const cells = tr.cells;
      setText(cells[0], p.symbol);
      setText(cells[1], fmtQty(p.qty));
      setText(cells[2], fmtPrice(p.avg_entry_price));
      setText(cells[3], fmtPrice(mark));
      setText(cells[4], fmtSigned(pl));
      setClass(cells[4], `num pl ${signClass(pl)}`);
      return tr;
    });
    if (rows.length !== body.rows.length || rows.some((tr, i) => body.rows[i] !== tr)) body.replaceChildren(...rows);
    this.renderAccount();
  }

  async close(symbol) {
    try {
      await this.api.delete(`/v2/positions/${encodeURIComponent(symbol)}`);
    } catch (error) {
      this.toast(`closing ${symbol}: ${error.message}`, "warn");
    }
    this.refresh();
  }

  renderOrders() {
    const body = this.els.orders.tBodies[0];
    if (!this.orders.length) {
      body.innerHTML = '<tr><td class="empty" colspan="6">no open orders</td></tr>';
      return;
    }
    if (this.editing && !this.orders.some((o) => o.id === this.editing)) this.editing = null;
    if (this.editing && body.querySelector("input")) return; // keep what is being typed
    body.replaceChildren(...this.orders.map((o) => this.orderRow(o)));
  }

  orderRow(o) {
    const tr = document.createElement("tr");
    tr.dataset.orderId = o.id;
    const price = o.limit_price ?? o.stop_price;
    const cells = [o.symbol, `${o.side} ${o.type} ${o.time_in_force}`, fmtQty(o.qty), fmtPrice(price), o.status];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      if (i === 2 || i === 3) td.className = "num";
      td.textContent = text;
      tr.append(td);
    });
    const actions = document.createElement("td");
    if (this.editing === o.id) {
      const qty = Object.assign(document.createElement("input"), { value: o.qty, size: 5 });
      qty.setAttribute("aria-label", "New quantity");
      const px = Object.assign(document.createElement("input"), { value: price ?? "", size: 7 });
      px.setAttribute("aria-label", o.limit_price ? "New limit price" : "New stop price");
      const save = Object.assign(document.createElement("button"), { className: "ghost small", textContent: "Save" });
      const error = Object.assign(document.createElement("span"), { className: "field-error" });
      save.addEventListener("click", () => this.replace(o, qty.value, px.value, error));
      const stopEditing = (event) => {
        if (event.key === "Escape") { this.editing = null; this.renderOrders(); }
        if (event.key === "Enter") this.replace(o, qty.value, px.value, error);
      };
      qty.addEventListener("keydown", stopEditing);
      px.addEventListener("keydown", stopEditing);
      actions.append(qty, px, save, error);
      queueMicrotask(() => qty.focus());
    } else {
      const cancel = Object.assign(document.createElement("button"), { className: "ghost small", textContent: "Cancel" });
      cancel.setAttribute("aria-label", `Cancel order ${o.symbol} ${o.side} ${o.qty}`);
      cancel.addEventListener("click", () => this.cancel(o.id, cancel));
      actions.append(cancel);
      if (o.type !== "market") {
        const replace = Object.assign(document.createElement("button"), { className: "ghost small", textContent: "Replace" });
        replace.addEventListener("click", () => { this.editing = o.id; this.renderOrders(); });
        actions.append(replace);
      }
    }
    tr.append(actions);
    return tr;
  }

  async cancel(id, button) {
    button.disabled = true;
    try {
      await this.api.delete(`/v2/orders/${id}`);
    } catch (error) {
      this.toast(`cancel failed: ${error.message}`, "warn");
      button.disabled = false;
    }
    this.refresh();
  }

  async replace(order, qty, price, errorEl) {
    const body = {};
    if (qty.trim() && qty.trim() !== order.qty) body.qty = qty.trim();
    const field = order.limit_price ? "limit_price" : "stop_price";
    if (price.trim() && price.trim() !== order[field]) body[field] = price.trim();
    try {
      await this.api.patch(`/v2/orders/${order.id}`, body);
      this.editing = null;
    } catch (error) {
      errorEl.textContent = error.message;
      return;
    }
    this.refresh();
  }

  renderFills() {
    const body = this.els.fills.tBodies[0];
    if (!this.fills.length) {
      body.innerHTML = '<tr><td class="empty" colspan="5">no fills yet</td></tr>';
      return;
    }
    body.replaceChildren(...this.fills.slice(0, 12).map((f) => {
      const tr = document.createElement("tr");
      for (const [text, cls] of [[fmtTime(f.ts), ""], [f.symbol, ""], [f.side, f.side === "buy" ? "up" : "down"], [fmtQty(f.qty), "num"], [fmtPrice(f.price), "num"]]) {
        const td = document.createElement("td");
        td.textContent = text;
        td.className = cls;
        tr.append(td);
      }
      return tr;
    }));
  }
}

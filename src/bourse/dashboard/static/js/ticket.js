// The order ticket: buy/sell, market/limit/stop/stop_limit, time in force. The API is the
// only validator, so its exact message (422, 403) is shown next to the field it is about.

import { ApiError } from "./api.js";
import { fmtPrice, fmtQty } from "./format.js";

const FIELDS = ["qty", "limit_price", "stop_price", "time_in_force", "symbol", "type", "side"];

// Which field an API error is about: the first field name its message mentions, else what
// its reason code implies (buying power and positions are about the quantity), else the form.
export function fieldOf(error, type) {
  const message = error.message || "";
  let best = null;
  let at = Infinity;
  for (const field of FIELDS) {
    const match = new RegExp(`\\b${field}\\b`).exec(message);
    if (match && match.index < at) { best = field; at = match.index; }
  }
  if (best) return best;
  if (/^asset\b/.test(message)) return "symbol";
  const reason = error.reason || "";
  if (/quantity|buying_power|position|short|notional|lot/.test(reason)) return "qty";
  if (/price|collar|tick/.test(reason)) return type === "stop" ? "stop_price" : "limit_price";
  return "form";
}

export class Ticket {
  constructor({ form, api, onPlaced }) {
    this.form = form;
    this.api = api;
    this.onPlaced = onPlaced;
    this.result = form.querySelector("#ticket-result");
    this.submit = form.querySelector("#t-submit");
    this.symbol = form.querySelector("#t-symbol");
    this.type = form.querySelector("#t-type");
    form.addEventListener("submit", (event) => { event.preventDefault(); this.place(); });
    form.addEventListener("change", () => this.layout());
    this.layout();
  }

  setSymbols(symbols) {
    this.symbol.replaceChildren(...symbols.map((s) => new Option(s, s)));
  }

  setSymbol(symbol) {
    this.symbol.value = symbol;
  }

  side() {
    return this.form.querySelector("input[name=side]:checked").value;
  }

  layout() {
    const type = this.type.value;
    this.form.querySelector("[data-for=limit]").hidden = !(type === "limit" || type === "stop_limit");
    this.form.querySelector("[data-for=stop]").hidden = !(type === "stop" || type === "stop_limit");
    const side = this.side();
    this.submit.textContent = side === "buy" ? "Buy" : "Sell";
    this.submit.className = `submit ${side}`;
  }

  clearErrors() {
    for (const el of this.form.querySelectorAll(".field-error")) el.textContent = "";
    for (const el of this.form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  }

  showError(field, message) {
    const target = this.form.querySelector(`#err-${field}`) || this.form.querySelector("#err-form");
    target.textContent = message;
    const input = this.form.elements.namedItem(field);
    if (input && input.setAttribute) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  }

  body() {
    const type = this.type.value;
    const data = {
      symbol: this.symbol.value,
      side: this.side(),
      type,
      qty: this.form.elements.qty.value.trim(),
      time_in_force: this.form.elements.time_in_force.value,
    };
    if (type === "limit" || type === "stop_limit") data.limit_price = this.form.elements.limit_price.value.trim();
    if (type === "stop" || type === "stop_limit") data.stop_price = this.form.elements.stop_price.value.trim();
    return data;
  }

  async place() {
    this.clearErrors();
    this.result.textContent = "";
    this.submit.disabled = true;
    const body = this.body();
    try {
      const order = await this.api.post("/v2/orders", body);
      const filled = Number.parseFloat(order.filled_qty || "0");
      this.result.textContent = `${order.status}: ${order.side} ${fmtQty(order.qty)} ${order.symbol} ${order.type}`
        + (filled > 0 ? `, filled ${fmtQty(order.filled_qty)} at ${fmtPrice(order.filled_avg_price)}` : "");
      this.result.dataset.status = order.status;
      this.onPlaced(order);
    } catch (error) {
      if (!(error instanceof ApiError)) {
        this.showError("form", `could not reach the gateway: ${error.message}`);
        return;
      }
      this.showError(fieldOf(error, body.type), error.message);
    } finally {
      this.submit.disabled = false;
    }
  }
}

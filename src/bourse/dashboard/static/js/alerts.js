// Price alerts (`/v2/alerts`, when the gateway serves it): create, list, delete, and a
// notification when one fires (the `alerts` stream of /stream). Without the endpoint the
// panel says so and nothing is asked.

import { ApiError } from "./api.js";
import { fmtPrice, setText } from "./format.js";

export class AlertsView {
  constructor({ container, api, toast }) {
    this.container = container;
    this.api = api;
    this.toast = toast;
    this.alerts = [];
    this.available = false;
  }

  enable(symbols) {
    this.available = true;
    this.container.innerHTML = `
      <form id="alert-form" class="row2" novalidate>
        <div class="field"><label for="a-symbol">Symbol</label><select id="a-symbol" name="symbol"></select></div>
        <div class="field"><label for="a-condition">Condition</label>
          <select id="a-condition" name="condition"><option>above</option><option>below</option><option>crosses</option></select></div>
        <div class="field"><label for="a-price">Price</label><input id="a-price" name="price" inputmode="decimal"></div>
        <div class="field"><label for="a-recurring">Recurring</label><input id="a-recurring" name="recurring" type="checkbox"></div>
        <button type="submit" class="ghost" id="a-submit">Add alert</button>
        <p class="field-error" id="err-alert" role="alert"></p>
      </form>
      <table class="grid" id="alerts-list"><tbody></tbody></table>`;
    const form = this.container.querySelector("#alert-form");
    form.elements.symbol.replaceChildren(...symbols.map((s) => new Option(s, s)));
    form.addEventListener("submit", (event) => { event.preventDefault(); this.create(form); });
    this.refresh();
  }

  setSymbol(symbol) {
    const select = this.container.querySelector("#a-symbol");
    if (select) select.value = symbol;
  }

  async create(form) {
    const error = form.querySelector("#err-alert");
    error.textContent = "";
    try {
      await this.api.post("/v2/alerts", {
        symbol: form.elements.symbol.value,
        condition: form.elements.condition.value,
        price: form.elements.price.value.trim(),
        recurring: form.elements.recurring.checked,
      });
      form.elements.price.value = "";
    } catch (e) {
      error.textContent = e instanceof ApiError ? e.message : `could not reach the gateway: ${e.message}`;
    }
    this.refresh();
  }

  async refresh() {
    if (!this.available) return;
    try {
      this.alerts = await this.api.get("/v2/alerts?status=all");
    } catch {
      return;
    }
    this.render();
  }

  render() {
    const body = this.container.querySelector("#alerts-list tbody");
    if (!body) return;
    if (!this.alerts.length) {
      body.innerHTML = '<tr><td class="empty">no alerts</td></tr>';
      return;
    }
    body.replaceChildren(...this.alerts.slice(0, 10).map((a) => {
      const tr = document.createElement("tr");
      tr.dataset.alertId = a.id;
      const what = document.createElement("td");
      what.textContent = `${a.symbol} ${a.condition} ${fmtPrice(a.price)}${a.recurring ? " (recurring)" : ""}`;
      const status = document.createElement("td");
      setText(status, a.fire_count ? `${a.status}, fired ${a.fire_count}×` : a.status);
      const actions = document.createElement("td");
      const remove = Object.assign(document.createElement("button"), { className: "ghost small", textContent: "Delete" });
      remove.setAttribute("aria-label", `Delete alert ${what.textContent}`);
      remove.addEventListener("click", async () => {
        try { await this.api.delete(`/v2/alerts/${a.id}`); } catch (e) { this.toast(e.message, "warn"); }
        this.refresh();
      });
      actions.append(remove);
      tr.append(what, status, actions);
      return tr;
    }));
  }

  onFired(data) {
    this.toast(`Alert: ${data.symbol} ${data.condition} ${fmtPrice(data.price)} — now ${fmtPrice(data.market_price)}`, "warn");
    this.refresh();
  }
}

// Risk alerts of the signed-in account: the recent ones from `GET /v2/risk/alerts` (when the
// gateway serves it) on load, then each new one live from the `risk` stream of /stream. The
// newest first, at most `keep`; an alert seen twice (listed and streamed) is shown once.

import { fmtTime } from "./format.js";

const SEVERITIES = new Set(["info", "warning", "critical"]);

export class RiskAlertsView {
  constructor({ table, api, toast, keep = 20 }) {
    this.table = table;
    this.api = api;
    this.toast = toast;
    this.keep = keep;
    this.alerts = new Map(); // alert id -> alert, as the API and the stream send it
  }

  async load(paths) {
    if (paths.has("/v2/risk/alerts")) {
      try {
        for (const alert of await this.api.get(`/v2/risk/alerts?limit=${this.keep}`)) this.add(alert);
      } catch {
        // the live stream still fills the list
      }
    }
    this.render();
  }

  onAlert(data) {
    const fresh = !this.alerts.has(data.alert_id);
    this.add(data);
    this.render();
    if (fresh && data.severity === "critical") this.toast(`Risk: ${data.message}`, "warn");
  }

  add(alert) {
    if (!alert || typeof alert.alert_id !== "string") return;
    this.alerts.set(alert.alert_id, alert);
  }

  newestFirst() {
    const time = (a) => Date.parse(a.timestamp) || 0;
    return [...this.alerts.values()].sort((a, b) => time(b) - time(a)).slice(0, this.keep);
  }

  render() {
    const body = this.table.tBodies[0] || this.table.createTBody();
    const shown = this.newestFirst();
    this.alerts = new Map(shown.map((a) => [a.alert_id, a]));
    if (!shown.length) {
      body.innerHTML = '<tr><td class="empty">no risk alerts</td></tr>';
      return;
    }
    body.replaceChildren(...shown.map((a) => {
      const severity = SEVERITIES.has(a.severity) ? a.severity : "info";
      const tr = document.createElement("tr");
      tr.dataset.alertId = a.alert_id;
      tr.dataset.severity = severity;
      tr.className = `risk ${severity}`;
      const cells = [
        ["severity", severity],
        ["rule", String(a.rule ?? "").replaceAll("_", " ")],
        ["message", a.message ?? ""],
        ["time", a.timestamp ? fmtTime(a.timestamp) : ""],
      ].map(([cls, text]) => Object.assign(document.createElement("td"), { className: cls, textContent: text }));
      cells[2].title = a.message ?? "";
      cells[3].title = a.timestamp ?? "";
      tr.append(...cells);
      return tr;
    }));
  }
}

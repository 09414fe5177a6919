// The dashboard's entry point: sign-in, then the markets, trading and operations views wired
// to the gateway (REST with the signed-in key, /dashboard/ws for market data, /stream for the
// account's order updates, price alert firings and risk alerts).

import { Api, ApiError, servedPaths } from "./api.js";
import { AlertsView } from "./alerts.js";
import { RiskAlertsView } from "./risk.js";
import { BookView } from "./book.js";
import { BarBook, ChartView } from "./chart.js";
import { FrameScheduler } from "./frame.js";
import { MarketState } from "./market.js";
import { OpsView } from "./ops.js";
import { Portfolio } from "./portfolio.js";
import { ReconnectingSocket } from "./socket.js";
import { Ticket } from "./ticket.js";
import { Watchlist } from "./watchlist.js";

const $ = (id) => document.getElementById(id);
const STORAGE_KEY = "bourse.keys";

function toast(message, kind = "") {
  const el = document.createElement("div");
  el.className = `toast ${kind}`;
  el.setAttribute("role", "status");
  el.textContent = message;
  $("toasts").append(el);
  while ($("toasts").children.length > 4) $("toasts").firstElementChild.remove();
  setTimeout(() => el.remove(), 8000);
}

// ---- sign-in ----

async function offerDemoKeys() {
  try {
    const response = await fetch("/dashboard/demo-keys", { cache: "no-store" });
    if (response.status !== 200) return;
    const keys = await response.json();
    $("demo-offer").hidden = false;
    $("use-demo").addEventListener("click", () => {
      $("s-key").value = keys.key_id;
      $("s-secret").value = keys.secret;
      $("s-submit").focus();
    });
  } catch {
    // no demo account offered: nothing to show
  }
}

async function signIn(keys) {
  const api = new Api(keys);
  try {
    const account = await api.get("/v2/account");
    return { api, account };
  } catch (error) {
    const message = error instanceof ApiError ? error.message : `the gateway is not answering (${error.message})`;
    $("signin-error").textContent = message;
    return null;
  }
}

function showSignIn() {
  $("signin").hidden = false;
  $("app").hidden = true;
  offerDemoKeys();
  $("s-key").focus();
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("signin-error").textContent = "";
    const keys = { key: $("s-key").value.trim(), secret: $("s-secret").value.trim() };
    if (!keys.key || !keys.secret) {
      $("signin-error").textContent = "enter both the API key id and its secret";
      return;
    }
    const session = await signIn(keys);
    if (session) {
      sessionStorage.setItem(STORAGE_KEY, JSON.stringify(keys));
      await boot(session.api, session.account);
    }
  });
}

// ---- the signed-in page ----

async function boot(api, account) {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(STORAGE_KEY);
    location.reload();
  });

  const scheduler = new FrameScheduler();
  const market = new MarketState(scheduler);
  const [paths, assets] = await Promise.all([servedPaths(), api.get("/v2/assets")]);
  const symbols = assets.filter((a) => a.tradable).map((a) => a.symbol);
  market.setSymbols(symbols);

  const bars = new BarBook();
  market.onTrade((symbol, trade) => bars.addTrade(symbol, trade.price, trade.size, trade.ts));
  const chart = new ChartView({ element: $("chart"), book: bars, api, paths });
  const book = new BookView({ market, table: $("book"), tapeTable: $("tape") });
  const ticket = new Ticket({ form: $("ticket"), api, onPlaced: () => portfolio.refresh() });
  const alerts = new AlertsView({ container: $("alerts"), api, toast });
  const risk = new RiskAlertsView({ table: $("risk-alerts"), api, toast });
  const portfolio = new Portfolio({
    api, market, scheduler, toast,
    els: {
      equity: $("acct-equity"), cash: $("acct-cash"), buyingPower: $("acct-bp"), upl: $("acct-upl"),
      banner: $("halted-banner"), haltedReason: $("halted-reason"),
      positions: $("positions"), orders: $("orders"), fills: $("fills"),
    },
  });
  portfolio.account = account;
  const watchlist = new Watchlist({
    market, table: $("watchlist"), venuesTable: $("venues"), venuesTitle: $("venues-symbol"),
    arbitrageList: $("arbitrage"),
    onSelect: (symbol) => {
      setText("chart-symbol", symbol);
      chart.setSymbol(symbol);
      book.setSymbol(symbol);
      ticket.setSymbol(symbol);
      alerts.setSymbol(symbol);
    },
  });
  const links = { market: "off", trades: "off" };
  const ops = new OpsView({
    api, scheduler, els: { health: $("health"), streams: $("streams"), consumers: $("consumers") },
    links: () => links,
  });

  scheduler.register("watchlist", () => watchlist.render());
  scheduler.register("venues", () => watchlist.renderVenues());
  scheduler.register("arbitrage", () => watchlist.renderArbitrage());
  scheduler.register("chart", () => chart.render());
  scheduler.register("book", () => book.render());
  scheduler.register("tape", () => book.renderTape());
  scheduler.register("account", () => portfolio.renderAccount());
  scheduler.register("positions", () => portfolio.renderPositions());
  scheduler.register("orders", () => portfolio.renderOrders());
  scheduler.register("fills", () => portfolio.renderFills());
  scheduler.register("ops", () => { if (!$("view-ops").hidden) ops.render(); });

  ticket.setSymbols(symbols);
  watchlist.build(symbols);
  watchlist.select(symbols[0]);
  if (paths.has("/v2/alerts")) alerts.enable(symbols);
  scheduler.mark("account", "positions", "orders", "fills");
  portfolio.refresh();
  ops.start();

  // Timeframes and overlays.
  for (const button of document.querySelectorAll("button.tf")) {
    button.addEventListener("click", () => {
      for (const b of document.querySelectorAll("button.tf")) b.setAttribute("aria-pressed", String(b === button));
      chart.setTimeframe(Number(button.dataset.tf));
    });
  }
  const overlays = () => chart.setOverlays({ vwap: $("ov-vwap").checked, sma: $("ov-sma").checked });
  $("ov-vwap").addEventListener("change", overlays);
  $("ov-sma").addEventListener("change", overlays);

  // Tabs.
  const views = { "tab-trade": $("view-trade"), "tab-ops": $("view-ops") };
  for (const [tabId, view] of Object.entries(views)) {
    $(tabId).addEventListener("click", () => {
      for (const [otherId, other] of Object.entries(views)) {
        $(otherId).setAttribute("aria-selected", String(otherId === tabId));
        other.hidden = other !== view;
      }
      scheduler.mark("ops");
    });
  }

  const linkState = (name, el) => (state) => {
    links[name] = state;
    el.dataset.state = state;
    scheduler.mark("ops");
  };
  const keys = api.keys;
  const marketSocket = new ReconnectingSocket({
    path: "/dashboard/ws",
    hello: () => ({ action: "auth", key: keys.key, secret: keys.secret }),
    isReady: (m) => m.type === "authorized",
    onState: linkState("market", $("md-state")),
    onMessage: (m) => {
      if (m.type === "md") market.apply(m);
      else if (m.type === "error") toast(`market data: ${m.message}`, "warn");
    },
  }).start();
  const tradesSocket = new ReconnectingSocket({
    path: "/stream",
    hello: () => ({ action: "auth", key: keys.key, secret: keys.secret }),
    isReady: (m) => m.stream === "listening",
    onState: (state) => {
      linkState("trades", $("tu-state"))(state);
      if (state === "on") { // re-read what happened while away (listening already: no gap)
        portfolio.refresh();
        risk.load(paths);
      }
    },
    onMessage: (m) => {
      if (m.stream === "authorization" && m.data?.status === "authorized") {
        tradesSocket.send({ action: "listen", data: { streams: ["trade_updates", "alerts", "risk"] } });
      } else if (m.stream === "trade_updates") {
        portfolio.onTradeUpdate(m.data);
      } else if (m.stream === "alerts") {
        alerts.onFired(m.data);
      } else if (m.stream === "risk") {
        risk.onAlert(m.data);
      }
    },
  }).start();

  // For the browser tests and the dashboard benchmark: what the page has seen and drawn.
  window.bourse = { scheduler, market, portfolio, ops, marketSocket, tradesSocket, bars, risk };
  document.body.dataset.ready = "true";
}

function setText(id, text) {
  $(id).textContent = text;
}

async function start() {
  const stored = sessionStorage.getItem(STORAGE_KEY);
  if (stored) {
    const session = await signIn(JSON.parse(stored));
    if (session) {
      await boot(session.api, session.account);
      return;
    }
    sessionStorage.removeItem(STORAGE_KEY);
  }
  showSignIn();
}

start();

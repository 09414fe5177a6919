// The watchlist (best bid/offer across venues, last, change, volume), the selected symbol's
// venues, and arbitrage events. Rows are built once; a frame only rewrites changed cells.

import { fmtCompact, fmtPrice, fmtTime, setClass, setText, signClass } from "./format.js";

export class Watchlist {
  constructor({ market, table, venuesTable, venuesTitle, arbitrageList, onSelect }) {
    this.market = market;
    this.body = table.tBodies[0];
    this.venuesBody = venuesTable.tBodies[0];
    this.venuesTitle = venuesTitle;
    this.arbitrageList = arbitrageList;
    this.onSelect = onSelect;
    this.rows = new Map();
    this.selected = null;
    this.venueRows = new Map();
  }

  build(symbols) {
    this.body.replaceChildren();
    this.rows.clear();
    for (const symbol of symbols) {
      const tr = document.createElement("tr");
      tr.tabIndex = 0;
      tr.dataset.symbol = symbol;
      tr.setAttribute("aria-selected", "false");
      const cells = ["symbol", "bid", "ask", "last", "chg", "vol"].map((name) => {
        const td = document.createElement("td");
        if (name !== "symbol") td.className = "num";
        tr.append(td);
        return td;
      });
      cells[0].textContent = symbol;
      tr.addEventListener("click", () => this.select(symbol));
      tr.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); this.select(symbol); }
        if (event.key === "ArrowDown") tr.nextElementSibling?.focus();
        if (event.key === "ArrowUp") tr.previousElementSibling?.focus();
      });
      this.body.append(tr);
      this.rows.set(symbol, { tr, cells, last: null });
    }
  }

  select(symbol) {
    this.selected = symbol;
    for (const [s, row] of this.rows) row.tr.setAttribute("aria-selected", String(s === symbol));
    this.venueRows.clear();
    this.venuesBody.replaceChildren();
    setText(this.venuesTitle, symbol);
    this.onSelect(symbol);
    this.renderVenues();
  }

  render() {
    for (const [symbol, row] of this.rows) {
      const { bid, ask, volume } = this.market.nbbo(symbol);
      const last = this.market.last.get(symbol)?.price ?? null;
      const change = this.market.change(symbol);
      const [, bidCell, askCell, lastCell, chgCell, volCell] = row.cells;
      setText(bidCell, fmtPrice(bid));
      setText(askCell, fmtPrice(ask));
      const state = bid === null || ask === null ? "" : bid > ask ? "crossed" : bid === ask ? "locked" : "";
      if ((row.tr.dataset.market ?? "") !== state) {
        row.tr.dataset.market = state;
        row.tr.title = {
          crossed: "crossed: a venue bids above another venue's ask (an arbitrage, see below)",
          locked: "locked: a venue bids at another venue's ask",
        }[state] ?? "";
      }
      const lastText = fmtPrice(last);
      if (lastCell.textContent !== lastText) {
        if (row.last !== null && last !== null && last !== row.last) {
          lastCell.className = `num ${last > row.last ? "flash-up" : "flash-down"}`;
        }
        lastCell.textContent = lastText;
        row.last = last;
      }
      setText(chgCell, change === null ? "–" : `${change > 0 ? "+" : ""}${change.toFixed(2)}`);
      setClass(chgCell, `num ${signClass(change)}`);
      setText(volCell, fmtCompact(volume));
    }
  }

  renderVenues() {
    if (!this.selected) return;
    const venues = this.market.quotes.get(this.selected) || new Map();
    const best = this.market.nbbo(this.selected);
    for (const [venue, q] of [...venues].sort(([a], [b]) => a.localeCompare(b))) {
      let row = this.venueRows.get(venue);
      if (!row) {
        const tr = document.createElement("tr");
        const cells = [0, 1, 2, 3, 4].map((i) => {
          const td = document.createElement("td");
          if (i) td.className = "num";
          tr.append(td);
          return td;
        });
        cells[0].textContent = venue;
        this.venuesBody.append(tr);
        row = { tr, cells };
        this.venueRows.set(venue, row);
      }
      const [, bid, ask, last, vol] = row.cells;
      setText(bid, fmtPrice(q.bid));
      setClass(bid, `num${venue === best.bidVenue ? " best" : ""}`);
      setText(ask, fmtPrice(q.ask));
      setClass(ask, `num${venue === best.askVenue ? " best" : ""}`);
      setText(last, fmtPrice(q.last));
      setText(vol, fmtCompact(q.volume));
    }
  }

  renderArbitrage() {
    const items = this.market.arbitrage.slice(-20).reverse();
    if (!items.length) return;
    this.arbitrageList.replaceChildren(
      ...items.map((a) => {
        const li = document.createElement("li");
        if (a.type === "arbitrage_opened") {
          li.textContent = `${fmtTime(a.ts)} ${a.symbol}: buy ${a.buy_venue} ${fmtPrice(a.buy_price)}, `
            + `sell ${a.sell_venue} ${fmtPrice(a.sell_price)} × ${a.size} (edge ${fmtPrice(a.edge, 4)})`;
          li.className = "up";
        } else {
          li.textContent = `${fmtTime(a.ts)} ${a.symbol}: ${a.buy_venue}/${a.sell_venue} closed`;
          li.className = "muted";
        }
        return li;
      }),
    );
  }
}

// The bourse venue's depth ladder (best levels, size bars) and the time and sales tape.

import { fmtPrice, fmtQty, fmtTime, setText } from "./format.js";

const LEVELS = 8;
const TAPE_ROWS = 40;

export class BookView {
  constructor({ market, table, tapeTable }) {
    this.market = market;
    this.body = table.tBodies[0];
    this.tapeBody = tapeTable.tBodies[0];
    this.symbol = null;
    this.rows = [];
    this.tapeRows = [];
    this.buildLadder();
  }

  buildLadder() {
    const make = (cls) => {
      const tr = document.createElement("tr");
      tr.className = cls;
      const cells = [0, 1, 2].map((i) => {
        const td = document.createElement("td");
        if (i === 1) td.className = "price";
        const bar = document.createElement("div");
        bar.className = "bar";
        const span = document.createElement("span");
        td.append(bar, span);
        tr.append(td);
        return { td, bar, span };
      });
      this.body.append(tr);
      return cells;
    };
    this.asks = Array.from({ length: LEVELS }, () => make("ask"));
    const spread = document.createElement("tr");
    spread.className = "spread";
    this.spreadCell = document.createElement("td");
    this.spreadCell.colSpan = 3;
    spread.append(this.spreadCell);
    this.body.append(spread);
    this.bids = Array.from({ length: LEVELS }, () => make("bid"));
  }

  setSymbol(symbol) {
    this.symbol = symbol;
    this.render();
    this.renderTape();
  }

  render() {
    const depth = this.market.depth.get(this.symbol) || { bids: [], asks: [] };
    const asks = depth.asks.slice(0, LEVELS);
    const bids = depth.bids.slice(0, LEVELS);
    const biggest = Math.max(1, ...asks.map(([, s]) => s), ...bids.map(([, s]) => s));
    // Asks from the highest shown down to the best, just above the spread.
    for (let i = 0; i < LEVELS; i += 1) {
      const level = asks[LEVELS - 1 - i] ?? null;
      const [bidCell, priceCell, askCell] = this.asks[i];
      setText(bidCell.span, "");
      bidCell.bar.style.width = "0";
      setText(priceCell.span, level ? fmtPrice(level[0]) : "");
      setText(askCell.span, level ? fmtQty(level[1]) : "");
      askCell.bar.style.width = level ? `${(100 * level[1]) / biggest}%` : "0";
    }
    for (let i = 0; i < LEVELS; i += 1) {
      const level = bids[i] ?? null;
      const [bidCell, priceCell, askCell] = this.bids[i];
      setText(bidCell.span, level ? fmtQty(level[1]) : "");
      bidCell.bar.style.width = level ? `${(100 * level[1]) / biggest}%` : "0";
      setText(priceCell.span, level ? fmtPrice(level[0]) : "");
      setText(askCell.span, "");
      askCell.bar.style.width = "0";
    }
    const spread = asks.length && bids.length ? asks[0][0] - bids[0][0] : null;
    setText(
      this.spreadCell,
      spread === null ? "no two-sided book" : `spread ${fmtPrice(spread)}`,
    );
  }

  renderTape() {
    const tape = (this.market.tape.get(this.symbol) || []).slice(-TAPE_ROWS).reverse();
    while (this.tapeRows.length < tape.length) {
      const tr = document.createElement("tr");
      const cells = [0, 1, 2, 3].map((i) => {
        const td = document.createElement("td");
        if (i >= 2) td.className = "num";
        tr.append(td);
        return td;
      });
      this.tapeBody.append(tr);
      this.tapeRows.push({ tr, cells });
    }
    this.tapeRows.forEach(({ tr, cells }, i) => {
      const t = tape[i];
      tr.hidden = !t;
      if (!t) return;
      setText(cells[0], fmtTime(t.ts));
      setText(cells[1], t.venue);
      setText(cells[2], fmtPrice(t.price));
      cells[2].className = `num ${t.side === "buy" ? "up" : t.side === "sell" ? "down" : ""}`;
      setText(cells[3], fmtQty(t.size));
    });
  }
}

// Market state fed by /dashboard/ws: quotes per symbol and venue, the best bid and offer
// across venues, recent trades, the bourse venue's depth and arbitrage events. Every buffer is
// bounded; handlers only update state and mark views dirty (the frame scheduler draws).

import { num } from "./format.js";

const TAPE_LENGTH = 100;
const ARBITRAGE_LENGTH = 50;

export class MarketState {
  constructor(scheduler) {
    this.scheduler = scheduler;
    this.symbols = [];
    this.quotes = new Map(); // symbol -> Map(venue -> quote)
    this.last = new Map(); // symbol -> {price, ts}
    this.open = new Map(); // symbol -> first price seen (for the change column)
    this.tape = new Map(); // symbol -> trades, newest last
    this.depth = new Map(); // symbol -> {bids, asks, seq}
    this.arbitrage = [];
    this.tradeListeners = [];
    this.messages = 0;
    this.dropped = 0;
  }

  setSymbols(symbols) {
    this.symbols = symbols;
    for (const s of symbols) if (!this.quotes.has(s)) this.quotes.set(s, new Map());
  }

  onTrade(listener) {
    this.tradeListeners.push(listener);
  }

  apply(frame) {
    this.dropped += frame.dropped || 0;
    for (const item of frame.items || []) {
      this.messages += 1;
      switch (item.type) {
        case "quote": this.applyQuote(item); break;
        case "trade": this.applyTrade(item); break;
        case "depth": this.applyDepth(item); break;
        case "arbitrage_opened":
        case "arbitrage_closed": this.applyArbitrage(item); break;
        default: break;
      }
    }
  }

  applyQuote(q) {
    let venues = this.quotes.get(q.symbol);
    if (!venues) { venues = new Map(); this.quotes.set(q.symbol, venues); }
    const quote = {
      bid: num(q.bid), ask: num(q.ask), bidSize: num(q.bid_size), askSize: num(q.ask_size),
      last: num(q.last), volume: num(q.volume), ts: q.ts,
    };
    venues.set(q.venue, quote);
    this.seePrice(q.symbol, quote.last, q.ts);
    this.scheduler.mark("watchlist", "venues", "positions");
  }

  applyTrade(t) {
    const trade = { venue: t.venue, price: num(t.price), size: num(t.size), side: t.side, ts: t.ts };
    let tape = this.tape.get(t.symbol);
    if (!tape) { tape = []; this.tape.set(t.symbol, tape); }
    tape.push(trade);
    if (tape.length > TAPE_LENGTH * 2) tape.splice(0, tape.length - TAPE_LENGTH);
    this.seePrice(t.symbol, trade.price, t.ts);
    for (const listener of this.tradeListeners) listener(t.symbol, trade);
    this.scheduler.mark("watchlist", "tape", "chart", "positions");
  }

  applyDepth(d) {
    const previous = this.depth.get(d.symbol);
    if (previous && d.seq <= previous.seq) return; // older than what we show
    this.depth.set(d.symbol, {
      bids: d.bids.map(([p, s]) => [num(p), num(s)]),
      asks: d.asks.map(([p, s]) => [num(p), num(s)]),
      seq: d.seq,
    });
    this.scheduler.mark("book");
  }

  applyArbitrage(a) {
    this.arbitrage.push(a);
    if (this.arbitrage.length > ARBITRAGE_LENGTH) this.arbitrage.shift();
    this.scheduler.mark("arbitrage");
  }

  seePrice(symbol, price, ts) {
    if (price === null) return;
    const last = this.last.get(symbol);
    if (!last || ts >= last.ts) this.last.set(symbol, { price, ts });
    if (!this.open.has(symbol)) this.open.set(symbol, price);
  }

  // The best bid and offer across venues, with the venues that show them.
  nbbo(symbol) {
    let bid = null, ask = null, bidVenue = "", askVenue = "", volume = 0;
    for (const [venue, q] of this.quotes.get(symbol) || []) {
      if (q.bid !== null && (bid === null || q.bid > bid)) { bid = q.bid; bidVenue = venue; }
      if (q.ask !== null && (ask === null || q.ask < ask)) { ask = q.ask; askVenue = venue; }
      volume += q.volume || 0;
    }
    return { bid, ask, bidVenue, askVenue, volume };
  }

  // What a position is marked at: the NBBO mid, else the last price.
  mark(symbol) {
    const { bid, ask } = this.nbbo(symbol);
    if (bid !== null && ask !== null && ask >= bid) return (bid + ask) / 2;
    return this.last.get(symbol)?.price ?? null;
  }

  change(symbol) {
    const open = this.open.get(symbol);
    const last = this.last.get(symbol)?.price;
    if (!open || last === undefined) return null;
    return ((last - open) / open) * 100;
  }
}

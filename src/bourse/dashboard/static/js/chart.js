// The candlestick chart: TradingView's lightweight-charts (vendored; its attribution logo is
// on the chart and the notice in the footer). Bars are built here from live trades for every
// symbol and timeframe at once (bounded), backfilled from the history API when the gateway
// serves it, with VWAP (cumulative over the bars held) and SMA 20 overlays.

import {
  CandlestickSeries,
  ColorType,
  LineSeries,
  createChart,
} from "../vendor/lightweight-charts/lightweight-charts.standalone.production.mjs";

const MAX_BARS = 1500;
export const TIMEFRAMES = [1, 5, 60, 300]; // seconds
const SMA_LENGTH = 20;
const BACKFILL = { 60: "1Min", 300: "5Min" };

export class BarBook {
  constructor() {
    this.series = new Map(); // "SYMBOL|tf" -> bars, oldest first
  }

  bars(symbol, tf) {
    const key = `${symbol}|${tf}`;
    let bars = this.series.get(key);
    if (!bars) { bars = []; this.series.set(key, bars); }
    return bars;
  }

  addTrade(symbol, price, size, tsNs) {
    const seconds = Math.floor(tsNs / 1e9);
    for (const tf of TIMEFRAMES) {
      const bars = this.bars(symbol, tf);
      const time = seconds - (seconds % tf);
      const last = bars[bars.length - 1];
      if (last && time < last.time) continue; // late for a closed bar: keep bars monotonic
      if (last && last.time === time) {
        last.high = Math.max(last.high, price);
        last.low = Math.min(last.low, price);
        last.close = price;
        last.volume += size;
        last.pv += price * size;
      } else {
        bars.push({ time, open: price, high: price, low: price, close: price, volume: size, pv: price * size });
        if (bars.length > MAX_BARS) bars.splice(0, bars.length - MAX_BARS);
      }
    }
  }

  // History bars (Alpaca's shape: t, o, h, l, c, v, vw) before the live ones.
  backfill(symbol, tf, history) {
    const bars = this.bars(symbol, tf);
    const firstLive = bars.length ? bars[0].time : Infinity;
    const older = history
      .map((b) => ({
        time: Math.floor(Date.parse(b.t) / 1000),
        open: b.o, high: b.h, low: b.l, close: b.c, volume: b.v, pv: (b.vw ?? b.c) * b.v,
      }))
      .filter((b) => b.time < firstLive && Number.isFinite(b.time))
      .sort((a, b) => a.time - b.time);
    bars.unshift(...older);
    if (bars.length > MAX_BARS) bars.splice(0, bars.length - MAX_BARS);
  }
}

function vwapAndSma(bars) {
  const vwap = [];
  const sma = [];
  let pv = 0;
  let volume = 0;
  let sum = 0;
  bars.forEach((bar, i) => {
    pv += bar.pv;
    volume += bar.volume;
    if (volume > 0) vwap.push({ time: bar.time, value: pv / volume });
    sum += bar.close;
    if (i >= SMA_LENGTH) sum -= bars[i - SMA_LENGTH].close;
    if (i >= SMA_LENGTH - 1) sma.push({ time: bar.time, value: sum / SMA_LENGTH });
  });
  return { vwap, sma };
}

export class ChartView {
  constructor({ element, book, api, paths }) {
    this.book = book;
    this.api = api;
    this.paths = paths;
    this.symbol = null;
    this.tf = 5;
    this.shown = { key: "", count: 0 };
    this.backfilled = new Set();
    this.chart = createChart(element, {
      autoSize: true,
      layout: {
        background: { type: ColorType.Solid, color: "#161b22" },
        textColor: "#8a96a3",
        attributionLogo: true, // TradingView's attribution link, as its licence asks
      },
      grid: { vertLines: { color: "#1f262f" }, horzLines: { color: "#1f262f" } },
      rightPriceScale: { borderColor: "#2a323d" },
      timeScale: { borderColor: "#2a323d", timeVisible: true, secondsVisible: true },
    });
    this.candles = this.chart.addSeries(CandlestickSeries, {
      upColor: "#26a69a", downColor: "#ef5350", borderVisible: false,
      wickUpColor: "#26a69a", wickDownColor: "#ef5350",
    });
    const line = { lineWidth: 1, priceLineVisible: false, lastValueVisible: false, crosshairMarkerVisible: false };
    this.vwap = this.chart.addSeries(LineSeries, { ...line, color: "#f0b429", title: "VWAP" });
    this.sma = this.chart.addSeries(LineSeries, { ...line, color: "#4c9aff", title: "SMA 20" });
  }

  setSymbol(symbol) {
    this.symbol = symbol;
    this.shown.key = "";
    this.loadHistory();
    this.render();
  }

  setTimeframe(tf) {
    this.tf = tf;
    this.shown.key = "";
    this.loadHistory();
    this.render();
  }

  setOverlays({ vwap, sma }) {
    this.vwap.applyOptions({ visible: vwap });
    this.sma.applyOptions({ visible: sma });
  }

  async loadHistory() {
    const symbol = this.symbol;
    const tf = this.tf;
    const timeframe = BACKFILL[tf];
    const key = `${symbol}|${tf}`;
    if (!timeframe || this.backfilled.has(key) || symbol.includes("-")) return;
    if (!this.paths.has("/v2/stocks/{symbol}/bars")) return;
    this.backfilled.add(key);
    try {
      const data = await this.api.get(
        `/v2/stocks/${encodeURIComponent(symbol)}/bars?timeframe=${timeframe}&limit=500`,
      );
      this.book.backfill(symbol, tf, data?.bars || []);
      if (this.symbol === symbol && this.tf === tf) {
        this.shown.key = "";
        this.render();
      }
    } catch (error) {
      this.backfilled.delete(key);
      console.warn(`no history for ${symbol}: ${error.message}`);
    }
  }

  render() {
    if (!this.symbol) return;
    const key = `${this.symbol}|${this.tf}`;
    const bars = this.book.bars(this.symbol, this.tf);
    if (this.shown.key !== key || bars.length < this.shown.count) {
      this.candles.setData(bars.map(({ time, open, high, low, close }) => ({ time, open, high, low, close })));
      const { vwap, sma } = vwapAndSma(bars);
      this.vwap.setData(vwap);
      this.sma.setData(sma);
      this.shown = { key, count: bars.length };
      return;
    }
    if (!bars.length) return;
    // Only the bars that changed since the last frame: the last shown one and any new ones.
    const from = Math.max(0, this.shown.count - 1);
    const since = bars[from].time;
    for (let i = from; i < bars.length; i += 1) {
      const { time, open, high, low, close } = bars[i];
      this.candles.update({ time, open, high, low, close });
    }
    const { vwap, sma } = vwapAndSma(bars); // VWAP is cumulative: a pass over the bars held
    for (const point of vwap) if (point.time >= since) this.vwap.update(point);
    for (const point of sma) if (point.time >= since) this.sma.update(point);
    this.shown.count = bars.length;
  }
}

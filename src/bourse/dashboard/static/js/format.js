// Number and time formatting. Prices arrive as decimal strings; the page only displays them,
// so parsing to a double for arithmetic on screen (P&L, VWAP) is fine: the API stays exact.

const money = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export function num(value) {
  const n = typeof value === "number" ? value : Number.parseFloat(value);
  return Number.isFinite(n) ? n : null;
}

export function fmtMoney(value) {
  const n = num(value);
  return n === null ? "–" : money.format(n);
}

export function fmtPrice(value, digits = 2) {
  const n = num(value);
  if (n === null) return "–";
  const places = n < 1 ? Math.max(digits, 4) : digits;
  return n.toLocaleString("en-US", { minimumFractionDigits: places, maximumFractionDigits: places });
}

export function fmtQty(value) {
  const n = num(value);
  if (n === null) return "–";
  return Number.isInteger(n) ? integer.format(n) : String(value);
}

export function fmtCompact(value) {
  const n = num(value);
  return n === null ? "–" : compact.format(n);
}

export function fmtSigned(value, suffix = "") {
  const n = num(value);
  if (n === null) return "–";
  return (n > 0 ? "+" : "") + money.format(n) + suffix;
}

export function fmtBytes(value) {
  const n = num(value);
  if (n === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function fmtRate(value) {
  const n = num(value);
  return n === null ? "–" : n >= 100 ? integer.format(n) : n.toFixed(1);
}

export function fmtTime(nsOrIso) {
  const date = typeof nsOrIso === "number" ? new Date(nsOrIso / 1e6) : new Date(nsOrIso);
  return date.toISOString().slice(11, 19);
}

export function signClass(value) {
  const n = num(value);
  return n === null || n === 0 ? "" : n > 0 ? "up" : "down";
}

// Set text only when it changed: the DOM is the expensive part of a busy frame.
export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

export function setClass(el, cls) {
  if (el.className !== cls) el.className = cls;
}

// A WebSocket that authenticates on open and reconnects with exponential backoff and jitter
// (0.25 s doubling to 10 s) after the gateway goes away, e.g. across a restart.

export class ReconnectingSocket {
  constructor({ path, hello, onMessage, onState, isReady }) {
    this.path = path;
    this.hello = hello; // () => object sent first on every connection
    this.onMessage = onMessage;
    this.onState = onState || (() => {});
    this.isReady = isReady; // (message) => true once the server accepted us
    this.attempt = 0;
    this.closed = false;
    this.ws = null;
    this.timer = null;
    this.decoder = new TextDecoder();
  }

  start() {
    this.closed = false;
    this.connect();
    return this;
  }

  stop() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.onState("off");
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}${this.path}`);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.onState("connecting");
    ws.onopen = () => ws.send(JSON.stringify(this.hello()));
    ws.onmessage = (event) => {
      const text = typeof event.data === "string" ? event.data : this.decoder.decode(event.data);
      let message;
      try { message = JSON.parse(text); } catch { return; }
      const messages = Array.isArray(message) ? message : [message];
      for (const m of messages) {
        if (this.isReady(m)) {
          this.attempt = 0;
          this.onState("on");
        }
        this.onMessage(m);
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closed) return;
      this.onState("connecting");
      const delay = Math.min(10_000, 250 * 2 ** this.attempt) * (0.75 + Math.random() * 0.5);
      this.attempt = Math.min(this.attempt + 1, 8);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }
}

ReconnectingSocket.prototype.send = function send(message) {
  if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
};

// Protocol v1 client: connects, keeps the resume token in sessionStorage, reconnects with
// backoff after a drop and de-duplicates replayed events by seq. No DOM here.

const TOKEN_KEY = "ephemera.session";

export class ChatClient extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.lastSeq = 0;
    this.attempt = 0;
    this.closedByUser = false;
  }

  connect() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const url = token ? `${this.url}?resume=${encodeURIComponent(token)}&last_seq=${this.lastSeq}` : this.url;
    this.ws = new WebSocket(url);
    this.ws.onmessage = (event) => this.receive(JSON.parse(event.data));
    this.ws.onclose = (event) => {
      this.emit("disconnected", { code: event.code });
      if (!this.closedByUser && event.code !== 1000 && event.code !== 1008) this.reconnectLater();
    };
  }

  reconnectLater() {
    // Exponential backoff with full jitter, capped, so a server restart is not stampeded.
    const delay = Math.random() * Math.min(10000, 250 * 2 ** this.attempt++);
    setTimeout(() => this.connect(), delay);
  }

  receive(frame) {
    if (frame.type === "hello") {
      this.attempt = 0;
      sessionStorage.setItem(TOKEN_KEY, frame.session);
      if (!frame.resumed) this.lastSeq = 0;
    }
    if (typeof frame.seq === "number") {
      if (frame.seq <= this.lastSeq) return; // a replayed event already shown
      this.lastSeq = frame.seq;
    }
    if (frame.type === "ended") this.lastSeq = 0;
    this.emit(frame.type, frame);
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  find({ mode = "text", interests = [], nick = null }) {
    this.send({ type: "find", adult: true, mode, interests, nick });
  }

  say(text) { this.send({ type: "msg", text }); }
  typing(active) { this.send({ type: "typing", active }); }
  next() { this.send({ type: "next" }); }
  leave() { this.send({ type: "leave" }); }

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}

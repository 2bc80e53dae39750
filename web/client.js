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
      this.pow = frame.pow;
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

  async find({ mode = "text", interests = [], nick = null }) {
    const frame = { type: "find", adult: true, mode, interests, nick };
    if (this.pow) {
      this.emit("working", {});
      frame.pow = await solvePow(this.pow);
      this.pow = null;
    }
    this.send(frame);
  }

  say(text) { this.send({ type: "msg", text }); }
  typing(active) { this.send({ type: "typing", active }); }
  next() { this.send({ type: "next" }); }
  leave() { this.send({ type: "leave" }); }

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}

// Proof of work: the smallest decimal nonce such that SHA-256(challenge ‖ nonce) starts with
// `difficulty` zero bits. Web Crypto needs a secure context (HTTPS, or localhost).
export async function solvePow({ challenge, difficulty }) {
  const b64 = challenge.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  const prefix = Uint8Array.from(raw, (c) => c.charCodeAt(0));
  const encoder = new TextEncoder();
  for (let n = 0; ; n++) {
    const nonce = String(n);
    const tail = encoder.encode(nonce);
    const input = new Uint8Array(prefix.length + tail.length);
    input.set(prefix);
    input.set(tail, prefix.length);
    const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", input));
    if (leadingZeroBits(hash) >= difficulty) return nonce;
  }
}

function leadingZeroBits(bytes) {
  let bits = 0;
  for (const byte of bytes) {
    if (byte === 0) { bits += 8; continue; }
    return bits + Math.clz32(byte) - 24;
  }
  return bits;
}

// Protocol v1 client: no DOM here, so node's test runner can drive it with a fake socket.
// It keeps the resume token in sessionStorage, reconnects with backoff and jitter after a drop,
// drops replayed events it has already seen (by seq), and holds messages typed while offline
// until the chat is back. The view listens to its events; every event's detail is the frame.

const TOKEN_KEY = "ephemera.session";
/// Messages typed while disconnected, at most; more would be a surprise flood on reconnect.
const MAX_QUEUED = 20;
/// How long after a resume a message sent before the drop may still be echoed by the replay.
const UNACKED_GRACE_MS = 3000;

export const REPORT_REASONS = ["spam", "harassment", "nudity", "minor", "other"];

/// Reconnect delay: exponential, capped at 10 s, with full jitter so a restarted server is not
/// stampeded by every client at once.
export function backoffDelay(attempt, random = Math.random) {
  return Math.floor(random() * Math.min(10000, 250 * 2 ** Math.min(attempt, 10)));
}

/// Why a media file cannot be sent, in words for people, or null when it fits the limits.
export function mediaProblem(limits, kind, mime, bytes) {
  const allowed = limits?.media_mime_types ?? [];
  if (!mime.startsWith(kind === "image" ? "image/" : "audio/") || !allowed.includes(mime)) {
    const names = allowed.filter((m) => m.startsWith(kind === "image" ? "image/" : "audio/"));
    return `That file type (${mime || "unknown"}) can't be sent. Allowed: ${names.join(", ")}.`;
  }
  const max = limits?.max_media_bytes ?? Infinity;
  if (bytes > max) return `That file is too large (${kib(bytes)}); the limit is ${kib(max)}.`;
  if (bytes === 0) return "That file is empty.";
  return null;
}

/// Why a message cannot be sent, or null.
export function textProblem(limits, text) {
  if (!text.trim()) return "Type something first.";
  const max = limits?.max_text_chars ?? Infinity;
  const chars = [...text].length;
  return chars > max ? `That message is too long (${chars} characters; the limit is ${max}).` : null;
}

/// Interests as the server will see them: trimmed, lowercased, de-duplicated, within limits.
export function parseInterests(input, limits) {
  const max = limits?.max_interests ?? 10;
  const maxChars = limits?.max_interest_chars ?? 32;
  const seen = new Set();
  for (const raw of input.split(",")) {
    const tag = [...raw.trim().toLowerCase()].slice(0, maxChars).join("");
    if (tag) seen.add(tag);
  }
  return [...seen].slice(0, max);
}

/// An error frame in words for people.
export function errorText(frame) {
  const wait = frame.retry_after_ms ? ` Try again in ${Math.ceil(frame.retry_after_ms / 1000)} s.` : "";
  switch (frame.code) {
    case "rate_limited": return `Slow down a little.${wait}`;
    case "banned": return `You have been reported too often and can't chat for now.${wait}`;
    case "too_large": return "That was too large to send.";
    case "server_busy": return "The server is full right now. Please try again in a minute.";
    case "age_required": return "You must confirm you are 18 or older.";
    default: return frame.message || "Something went wrong.";
  }
}

function kib(bytes) {
  return bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MiB` : `${Math.ceil(bytes / 1024)} KiB`;
}

export class ChatClient extends EventTarget {
  /// `env` replaces the browser's globals in unit tests.
  constructor(url, env = {}) {
    super();
    this.url = url;
    this.WebSocket = env.WebSocket ?? globalThis.WebSocket;
    this.storage = env.storage ?? globalThis.sessionStorage;
    this.random = env.random ?? Math.random;
    this.setTimeout = env.setTimeout ?? globalThis.setTimeout.bind(globalThis);
    this.clearTimeout = env.clearTimeout ?? globalThis.clearTimeout.bind(globalThis);
    this.ws = null;
    this.lastSeq = 0;
    this.attempt = 0;
    this.retryTimer = null;
    this.stopped = false;
    this.connected = false;
    this.state = "idle";
    this.hello = null;
    this.queued = []; // { id, text } typed while disconnected
    this.unacked = []; // { id, text } sent, echo not seen yet
    this.nextLocalId = 1;
  }

  get limits() { return this.hello?.limits ?? null; }

  /// Opens the socket, resuming the tab's session if it has one.
  connect() {
    this.stopped = false;
    this.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const token = this.storage.getItem(TOKEN_KEY);
    const url = token
      ? `${this.url}?resume=${encodeURIComponent(token)}&last_seq=${this.lastSeq}`
      : this.url;
    const ws = new this.WebSocket(url);
    const previous = this.ws;
    this.ws = ws;
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      if (frame.type === "hello" && previous && previous !== ws) {
        // The new connection has taken over; the old one may still be open after a network
        // change. The server has already let go of it, so closing it ends nothing.
        previous.onclose = null;
        previous.onmessage = null;
        try { previous.close(); } catch { /* already closed */ }
      }
      this.receive(frame);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.connected = false;
      this.emit("disconnected", { code: event.code });
      // 1000: we or the server ended the session on purpose; 1008: refused for misbehaving.
      if (!this.stopped && event.code !== 1000 && event.code !== 1008) this.reconnectLater();
    };
  }

  reconnectLater() {
    const delay = backoffDelay(this.attempt++, this.random);
    this.emit("reconnecting", { delay });
    this.retryTimer = this.setTimeout(() => this.connect(), delay);
  }

  /// The network is back (the browser's `online` event): try now rather than after the backoff,
  /// and replace a socket that may have died silently while the network was away.
  networkBack() {
    if (this.stopped || !this.hello) return;
    this.attempt = 0;
    this.connect();
  }

  receive(frame) {
    if (frame.type === "hello") return this.receiveHello(frame);
    if (frame.type === "matched") {
      this.lastSeq = frame.seq ?? 1; // a new chat numbers from 1 again
    } else if (typeof frame.seq === "number") {
      if (frame.seq <= this.lastSeq) return; // replayed, and already shown
      this.lastSeq = frame.seq;
    }
    switch (frame.type) {
      case "waiting": this.state = "waiting"; break;
      case "matched": this.state = "chatting"; break;
      case "ended":
        this.state = "idle";
        this.dropUnsent("The chat ended before this was sent.");
        break;
      case "msg":
        if (frame.from === "you") {
          const index = this.unacked.findIndex((m) => m.text === frame.text);
          if (index >= 0) frame = { ...frame, localId: this.unacked.splice(index, 1)[0].id };
        }
        break;
      case "error":
        if (frame.code === "pow_required" || frame.code === "pow_invalid") this.solvedPow = false;
        break;
    }
    this.emit(frame.type, frame);
  }

  receiveHello(frame) {
    const resumedChat = frame.resumed && frame.state === "chatting";
    const wasBusy = this.state === "chatting" || this.state === "waiting";
    this.hello = frame;
    this.connected = true;
    this.attempt = 0;
    this.storage.setItem(TOKEN_KEY, frame.session);
    if (!frame.resumed) {
      this.lastSeq = 0;
      this.solvedPow = false;
    }
    this.state = frame.state;
    this.emit("hello", frame);
    // The session came back empty: the grace ran out, or the server restarted.
    if (wasBusy && frame.state === "idle") this.emit("lost", {});
    if (resumedChat) {
      const sentBeforeDrop = this.unacked.map((m) => m.id);
      this.flushQueued();
      // A message sent just before the drop either reached the server (its echo is in the
      // replay that follows this hello) or did not; after a moment, say so rather than guess.
      this.setTimeout(() => {
        for (const id of sentBeforeDrop) {
          const index = this.unacked.findIndex((m) => m.id === id);
          if (index >= 0) {
            this.unacked.splice(index, 1);
            this.emit("unsent", { localId: id, reason: "This may not have been delivered." });
          }
        }
      }, UNACKED_GRACE_MS);
    } else {
      this.dropUnsent(frame.resumed ? "The chat ended before this was sent." : "The connection was lost before this was sent.");
    }
  }

  dropUnsent(reason) {
    for (const m of [...this.queued, ...this.unacked]) this.emit("unsent", { localId: m.id, reason });
    this.queued = [];
    this.unacked = [];
  }

  flushQueued() {
    const queued = this.queued;
    this.queued = [];
    for (const m of queued) {
      this.unacked.push(m);
      this.send({ type: "msg", text: m.text });
    }
  }

  send(frame) {
    if (!this.connected || !this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /// Joins the queue. Solves the proof of work first when hello asked for one.
  async find({ mode = "text", interests = [], nick = null } = {}) {
    const frame = { type: "find", adult: true, mode, interests, nick };
    const pow = this.hello?.pow;
    if (pow && !this.solvedPow) {
      this.emit("working", {});
      frame.pow = await solvePow(pow);
      this.solvedPow = true;
    }
    return this.send(frame);
  }

  /// Sends a chat message; returns its local id (the echo carries it back as `localId`), or
  /// throws an Error whose message is for people. While disconnected it is queued.
  say(text) {
    const problem = textProblem(this.limits, text);
    if (problem) throw new Error(problem);
    const message = { id: this.nextLocalId++, text };
    if (this.connected && this.send({ type: "msg", text })) {
      this.unacked.push(message);
    } else if (this.state === "chatting" && this.queued.length < MAX_QUEUED) {
      this.queued.push(message);
    } else {
      throw new Error(this.state === "chatting" ? "Too many messages waiting for the connection." : "You are not in a chat.");
    }
    return message.id;
  }

  /// Sends an image or voice note given as base64; throws when it breaks the server's limits.
  sendMedia(kind, mime, base64, bytes) {
    const problem = mediaProblem(this.limits, kind, mime, bytes);
    if (problem) throw new Error(problem);
    if (this.state !== "chatting") throw new Error("You are not in a chat.");
    if (!this.send({ type: "media", kind, mime, data: base64 })) {
      throw new Error("Not connected; try again when the connection is back.");
    }
  }

  /// Tells the stranger whether we are typing: only in a chat, only when it changes, and a
  /// "still typing" at most every 2 s, well under the server's max_typing_per_second.
  typing(active) {
    const now = Date.now();
    if (this.state !== "chatting") { this.typingSent = false; return; }
    if (active === Boolean(this.typingSent) && (!active || now - this.typingSentAt < 2000)) return;
    this.typingSent = active;
    this.typingSentAt = now;
    this.send({ type: "typing", active });
  }
  signal(data) { return this.send({ type: "signal", data }); }
  next() { return this.send({ type: "next" }); }
  /// Ends the chat, or leaves the queue. The server does not answer a leave from the queue,
  /// so the session is idle at once and `left` tells the view.
  leave() {
    const sent = this.send({ type: "leave" });
    if (sent && this.state === "waiting") {
      this.state = "idle";
      this.emit("left", {});
    }
    return sent;
  }

  report(reason) {
    if (!REPORT_REASONS.includes(reason)) throw new Error(`Unknown report reason: ${reason}`);
    return this.send({ type: "report", reason });
  }

  /// Ends everything: the session, its token, any reconnect.
  close() {
    this.stopped = true;
    this.clearTimeout(this.retryTimer);
    this.storage.removeItem(TOKEN_KEY);
    if (this.ws) {
      this.ws.onclose = null;
      try { this.ws.close(1000); } catch { /* already closed */ }
      this.ws = null;
    }
    this.connected = false;
  }

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
    const tail = encoder.encode(String(n));
    const input = new Uint8Array(prefix.length + tail.length);
    input.set(prefix);
    input.set(tail, prefix.length);
    const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", input));
    if (leadingZeroBits(hash) >= difficulty) return String(n);
  }
}

export function leadingZeroBits(bytes) {
  let bits = 0;
  for (const byte of bytes) {
    if (byte === 0) { bits += 8; continue; }
    return bits + Math.clz32(byte) - 24;
  }
  return bits;
}

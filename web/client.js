// Protocol v1.1 client: no DOM here, so node's test runner can drive it with a fake socket.
// It keeps the resume token in sessionStorage and resumes with a `resume` frame (never in a
// URL), reconnects with backoff and jitter after a drop, drops replayed events it has already
// seen (by seq, within one chat), and gives every message an id so that what was pending at a
// drop is resent after the resume and delivered exactly once. The view listens to its events;
// every event's detail is the frame.

const TOKEN_KEY = "ephemera.session";
/// Messages waiting for the server, at most; more typed offline would be a surprise flood.
const MAX_PENDING = 20;
/// Messages and media sent per second, at most: under the server's default of 5, so a resend
/// of everything held during a drop is paced rather than refused.
const POSTS_PER_SECOND = 4;
/// Errors the server may answer a `msg` or `media` with; each means one of them was refused.
const REFUSED = {
  not_chatting: "Not sent: the chat ended.",
  rate_limited: "Not sent: you were sending too fast.",
  too_large: "Not sent: it was too large.",
  bad_request: "Not sent: the server refused it.",
};
const NOT_SENT_ENDED = REFUSED.not_chatting;
const NOT_SENT_LOST = "Not sent: the connection was lost.";
const NOT_SENT_LEFT = "Not sent: you left the chat.";

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
    case "not_chatting": return "You are not in a chat.";
    default: return frame.message || "Something went wrong.";
  }
}

function kib(bytes) {
  return bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MiB` : `${Math.ceil(bytes / 1024)} KiB`;
}

const BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

export class ChatClient extends EventTarget {
  /// `env` replaces the browser's globals in unit tests.
  constructor(url, env = {}) {
    super();
    this.url = url;
    this.WebSocket = env.WebSocket ?? globalThis.WebSocket;
    this.storage = env.storage ?? globalThis.sessionStorage;
    this.random = env.random ?? Math.random;
    this.now = env.now ?? Date.now;
    this.setTimeout = env.setTimeout ?? globalThis.setTimeout.bind(globalThis);
    this.clearTimeout = env.clearTimeout ?? globalThis.clearTimeout.bind(globalThis);
    this.ws = null;
    /// Where this connection is in its greeting: "hello" (waiting for the server's first
    /// hello), "resume" (resume sent, waiting for the hello that answers it) or "open".
    this.greeting = "open";
    this.offeredHello = null; // the first hello of a connection that is resuming
    this.chatId = null; // the chat the session is in, or last saw; named when resuming
    this.lastSeq = 0; // the highest seq seen within that chat
    this.attempt = 0;
    this.retryTimer = null;
    this.stopped = false;
    this.connected = false;
    this.state = "idle";
    this.leaving = false; // next, leave or report sent; the chat's `ended` has not come yet
    /// A next, leave or report asked for while the connection was down: the latest one, sent
    /// first thing after the resume. Dropping it would land the chatter back in the chat.
    this.intent = null;
    this.lastFind = {}; // the options of the latest find, for a `next` that finds the chat over
    this.hello = null;
    /// Messages and media the server has not answered, oldest first: { id, frame, sent }.
    /// `sent` is true once the frame went out on the current connection.
    this.pending = [];
    this.refusals = 0; // refusal errors not yet matched to a pending message
    this.refusedWith = null; // the latest of them, for its words
    this.postTimes = []; // when the latest messages went out, for pacing
    this.pumpTimer = null;
    // Ids are unique within the session: a random prefix per page, then a counter.
    this.idPrefix = Array.from({ length: 8 }, () => BASE64URL[Math.floor(this.random() * 64)]).join("");
    this.nextId = 1;
  }

  get limits() { return this.hello?.limits ?? null; }

  /// True while a message can be sent now or held for the resume: in a chat, not leaving it.
  get inChat() { return this.state === "chatting" && !this.leaving; }

  /// Opens the socket at the plain URL; a session the tab already has is resumed by a frame,
  /// since a URL is seen by proxies and access logs.
  connect() {
    this.stopped = false;
    this.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const ws = new this.WebSocket(this.url);
    const previous = this.ws;
    this.ws = ws;
    this.greeting = "hello";
    this.offeredHello = null;
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      if (this.greeting !== "open") return this.greet(ws, frame, previous);
      this.receive(frame);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.connected = false;
      this.greeting = "open";
      this.clearTimeout(this.pumpTimer);
      // Whatever was in flight may or may not have arrived: it goes again, with its id.
      for (const entry of this.pending) entry.sent = false;
      this.emit("disconnected", { code: event.code });
      // 1000: we or the server ended the session on purpose; 1008: refused for misbehaving.
      if (!this.stopped && event.code !== 1000 && event.code !== 1008) this.reconnectLater();
    };
  }

  /// The frames before a connection is open: the first hello is a fresh session, kept only
  /// when the tab has none to resume; otherwise `resume` goes first, and the second hello
  /// says which session this connection holds. Nothing else is sent until then.
  greet(ws, frame, previous) {
    const token = this.storage.getItem(TOKEN_KEY);
    if (this.greeting === "hello" && frame.type === "hello" && token) {
      this.greeting = "resume";
      this.offeredHello = frame;
      const resume = { type: "resume", session: token, last_seq: this.lastSeq };
      if (this.chatId) resume.chat = this.chatId;
      ws.send(JSON.stringify(resume));
      return;
    }
    let hello = frame;
    if (this.greeting === "resume" && frame.type === "error") {
      // A server older than v1.1 refuses the frame; the session it offered is all there is.
      hello = this.offeredHello;
    } else if (frame.type !== "hello") {
      // Refused at the door (server_busy, rate_limited): say why; the close follows.
      if (frame.type === "error") this.emit("error", frame);
      return;
    }
    this.greeting = "open";
    if (previous && previous !== ws) {
      // The new connection has taken over; the old one may still be open after a network
      // change. The server has already let go of it, so closing it ends nothing.
      previous.onclose = null;
      previous.onmessage = null;
      try { previous.close(); } catch { /* already closed */ }
    }
    this.receiveHello(hello);
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
    if (frame.type === "hello") return; // only ever the first frame, handled by greet
    if (frame.type === "matched" && frame.chat !== this.chatId) {
      // A new chat numbers from 1 again; a replayed `matched` of this chat is a duplicate.
      this.chatId = frame.chat ?? null;
      this.lastSeq = 0;
    }
    if (typeof frame.seq === "number") {
      if (frame.seq <= this.lastSeq) return; // replayed or answered twice, and already shown
      this.lastSeq = frame.seq;
    }
    switch (frame.type) {
      case "waiting": this.state = "waiting"; break;
      case "matched":
        this.state = "chatting";
        this.leaving = false;
        this.dropPending(NOT_SENT_ENDED); // none expected: a chat's end already dropped them
        break;
      case "ended":
        this.state = "idle";
        this.leaving = false;
        this.dropPending(NOT_SENT_ENDED);
        break;
      case "msg":
      case "media":
        if (frame.from === "you" && frame.id) this.confirm(frame.id);
        break;
      case "error":
        if (frame.code === "pow_required" || frame.code === "pow_invalid") this.solvedPow = false;
        if (frame.code in REFUSED) {
          this.refusals += 1;
          this.refusedWith = frame;
          this.settleRefusals();
        }
        break;
    }
    this.emit(frame.type, frame);
  }

  receiveHello(frame) {
    const wasBusy = this.state === "chatting" || this.state === "waiting";
    this.hello = frame;
    this.connected = true;
    this.attempt = 0;
    this.refusals = 0;
    this.storage.setItem(TOKEN_KEY, frame.session);
    if (!frame.resumed) {
      this.chatId = null;
      this.lastSeq = 0;
      this.leaving = false;
      this.solvedPow = false;
    }
    this.state = frame.state;
    if (this.state !== "chatting") this.leaving = false;
    this.emit("hello", frame);
    // The session came back empty: the grace ran out, or the server restarted. (A resumed
    // session whose chat ended while away hears it from the replayed `ended`.)
    if (wasBusy && !frame.resumed) this.emit("lost", {});
    // What the chatter asked for while away goes before any resend: leaving makes them moot.
    const intent = this.intent;
    this.intent = null;
    if (intent) this.carryOut(intent);
    if (frame.resumed && this.inChat) {
      // Still in the chat: what the server has not confirmed goes again with the same id. It
      // either never arrived, or the server answers with the original echo and relays nothing.
      this.pump();
    } else {
      this.dropPending(frame.resumed ? NOT_SENT_ENDED : NOT_SENT_LOST);
    }
  }

  /// An echo from the server: that message is delivered. Echoes come in the order the
  /// messages were sent, so a refusal still unmatched may now be placed.
  confirm(id) {
    const index = this.pending.findIndex((entry) => entry.id === id);
    if (index >= 0) this.pending.splice(index, 1);
    this.settleRefusals();
  }

  /// Refusals carry no id. Each one answers a message sent on this connection, and every
  /// accepted one is echoed; so once as many refusals have come as there are messages still
  /// waiting for an answer, those messages are the refused ones.
  settleRefusals() {
    const waiting = this.pending.filter((entry) => entry.sent);
    if (waiting.length === 0) this.refusals = 0; // about something else, such as `typing`
    if (this.refusals === 0 || this.refusals < waiting.length) return;
    this.refusals = 0;
    this.pending = this.pending.filter((entry) => !entry.sent);
    const reason = REFUSED[this.refusedWith?.code] ?? REFUSED.bad_request;
    for (const entry of waiting) this.emit("unsent", { id: entry.id, reason });
  }

  dropPending(reason) {
    this.clearTimeout(this.pumpTimer);
    for (const entry of this.pending) this.emit("unsent", { id: entry.id, reason });
    this.pending = [];
    this.refusals = 0;
  }

  /// Sends what is pending and not yet sent on this connection, in order, at most
  /// POSTS_PER_SECOND a second; the rest waits for a timer.
  pump() {
    this.clearTimeout(this.pumpTimer);
    this.pumpTimer = null;
    if (!this.connected || !this.inChat) return;
    for (const entry of this.pending) {
      if (entry.sent) continue;
      const now = this.now();
      this.postTimes = this.postTimes.filter((time) => now - time < 1000);
      if (this.postTimes.length >= POSTS_PER_SECOND) {
        this.pumpTimer = this.setTimeout(() => this.pump(), this.postTimes[0] + 1000 - now);
        return;
      }
      if (!this.send(entry.frame)) return;
      entry.sent = true;
      this.postTimes.push(now);
    }
  }

  send(frame) {
    if (!this.connected || !this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /// Joins the queue. Solves the proof of work first when hello asked for one. While the
  /// connection is down it is kept, as a `next`, for the resume.
  async find({ mode = "text", interests = [], nick = null } = {}) {
    this.lastFind = { mode, interests, nick };
    if (this.state === "idle" && this.keepIntent({ type: "next" })) return true;
    const frame = { type: "find", adult: true, mode, interests, nick };
    const pow = this.hello?.pow;
    if (pow && !this.solvedPow) {
      this.emit("working", {});
      frame.pow = await solvePow(pow);
      this.solvedPow = true;
    }
    return this.send(frame);
  }

  /// Sends a chat message and returns its id; its echo (an `msg` event from "you") or an
  /// `unsent` event carries the id back. While disconnected it is held for the resume.
  /// Throws an Error whose message is for people when it cannot be sent at all.
  say(text) {
    const problem = textProblem(this.limits, text);
    if (problem) throw new Error(problem);
    return this.post({ type: "msg", text });
  }

  /// Sends an image or voice note given as base64 and returns its id, like `say`.
  sendMedia(kind, mime, base64, bytes) {
    const problem = mediaProblem(this.limits, kind, mime, bytes);
    if (problem) throw new Error(problem);
    // Media is not held while offline: a few of them would be megabytes kept for a maybe.
    if (this.inChat && !this.connected) throw new Error("Not connected; try again when the connection is back.");
    return this.post({ type: "media", kind, mime, data: base64 });
  }

  post(frame) {
    if (!this.inChat) throw new Error("You are not in a chat.");
    if (this.pending.length >= MAX_PENDING) throw new Error("Too many messages are waiting to be sent.");
    const id = `${this.idPrefix}${(this.nextId++).toString(36)}`;
    this.pending.push({ id, frame: { ...frame, id }, sent: false });
    this.pump();
    return id;
  }

  /// Tells the stranger whether we are typing: only in a chat, only when it changes, and a
  /// "still typing" at most every 2 s, well under the server's max_typing_per_second.
  typing(active) {
    const now = this.now();
    if (!this.inChat || !this.connected) { this.typingSent = false; return; }
    if (active === Boolean(this.typingSent) && (!active || now - this.typingSentAt < 2000)) return;
    this.typingSent = active;
    this.typingSentAt = now;
    this.send({ type: "typing", active });
  }
  signal(data) { return this.send({ type: "signal", data }); }

  /// Ends the chat (the `ended` follows) and queues again.
  next() { return this.sendLeaving({ type: "next" }); }

  /// Ends the chat, or leaves the queue. The server does not answer a leave from the queue,
  /// so the session is idle at once and `left` tells the view.
  leave() {
    const waiting = this.state === "waiting";
    const sent = this.sendLeaving({ type: "leave" });
    // Kept for the resume, leaving the queue is as good as done: the page can say so now.
    if (sent && waiting) {
      this.state = "idle";
      this.emit("left", {});
    }
    return sent;
  }

  report(reason) {
    if (!REPORT_REASONS.includes(reason)) throw new Error(`Unknown report reason: ${reason}`);
    return this.sendLeaving({ type: "report", reason });
  }

  /// A frame that ends the chat: from here until its `ended`, nothing more is said in it.
  /// While the connection is down it is kept for the resume, and counts as sent.
  sendLeaving(frame) {
    const sent = this.keepIntent(frame) || this.send(frame);
    if (sent && this.state === "chatting") {
      this.leaving = true;
      this.emit("leaving", {});
    }
    return sent;
  }

  /// Keeps a next, leave or report (or a find, as `next`) asked for while a session is
  /// reconnecting; the latest wins. What was waiting to be said in the chat never will be.
  /// False when the connection is up, or there is no session to resume.
  keepIntent(frame) {
    if (this.connected || this.stopped || !this.hello) return false;
    this.intent = frame;
    if (this.state === "chatting") this.dropPending(NOT_SENT_LEFT);
    this.emit("intent", { type: frame.type, state: this.state });
    return true;
  }

  /// Does what was asked for while away, as far as it still makes sense in the state the
  /// session came back in: a report needs the chat, a next from the queue is already done,
  /// a next that finds the session idle (the chat ended meanwhile, or the session is new)
  /// queues again.
  carryOut(intent) {
    if (intent.type === "report" && this.state !== "chatting") return;
    if (intent.type === "leave" && this.state === "idle") return;
    if (intent.type === "next" && this.state === "waiting") return;
    if (intent.type === "next" && this.state === "idle") return void this.find(this.lastFind);
    if (intent.type === "leave") return void this.leave();
    this.sendLeaving(intent);
  }

  /// Ends everything: the session, its token, any reconnect.
  close() {
    this.stopped = true;
    this.clearTimeout(this.retryTimer);
    this.clearTimeout(this.pumpTimer);
    this.storage.removeItem(TOKEN_KEY);
    if (this.ws) {
      this.ws.onclose = null;
      try { this.ws.close(1000); } catch { /* already closed */ }
      this.ws = null;
    }
    this.connected = false;
    this.greeting = "open";
    this.pending = [];
    this.chatId = null;
    this.lastSeq = 0;
    this.state = "idle";
    this.leaving = false;
    this.intent = null;
    this.hello = null; // a session to resume no more: a later start is a fresh one
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

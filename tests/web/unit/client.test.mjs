// Unit tests of the page's protocol module (web/client.js) with a scripted socket, run by
// node's own test runner: resume, de-duplication, backoff, limits and the offline queue.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  ChatClient, backoffDelay, mediaProblem, textProblem, parseInterests, errorText, leadingZeroBits, solvePow,
} from "../../../web/client.js";

const LIMITS = {
  max_text_chars: 10, max_interests: 2, max_interest_chars: 5, max_media_bytes: 1000,
  media_mime_types: ["image/png", "image/jpeg", "audio/webm"],
};

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 1;
    this.sent = [];
    this.closedWith = null;
    FakeSocket.all.push(this);
  }
  send(text) { this.sent.push(JSON.parse(text)); }
  close(code) { this.closedWith = code ?? 1005; this.readyState = 3; }
  deliver(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }
  drop(code = 1006) { this.readyState = 3; this.onclose?.({ code }); }
}

function makeClient() {
  FakeSocket.all = [];
  const stored = new Map();
  const timers = [];
  const storage = {
    getItem: (k) => stored.get(k) ?? null,
    setItem: (k, v) => stored.set(k, String(v)),
    removeItem: (k) => stored.delete(k),
  };
  const client = new ChatClient("ws://test/ws", {
    WebSocket: FakeSocket,
    storage,
    random: () => 0.5,
    setTimeout: (fn, ms) => timers.push({ fn, ms }),
    clearTimeout: () => {},
  });
  const seen = [];
  for (const type of ["hello", "matched", "msg", "media", "ended", "unsent", "lost", "reconnecting"]) {
    client.addEventListener(type, (e) => seen.push({ type, ...e.detail }));
  }
  return { client, storage, timers, seen, socket: () => FakeSocket.all.at(-1) };
}

const hello = (over = {}) => ({
  type: "hello", protocol: 1, session: "tok-1", resumed: false, state: "idle", online: 2,
  limits: LIMITS, ice_servers: [], relay_only: false, pow: null, ...over,
});

async function chatting(t) {
  t.client.connect();
  t.socket().deliver(hello());
  await t.client.find({ interests: ["music"] });
  t.socket().deliver({ type: "matched", seq: 1, mode: "text", common: [], stranger: { nick: null }, initiator: true });
}

test("the token from hello is kept and a reconnect resumes with the last seq seen", async () => {
  const t = makeClient();
  await chatting(t);
  assert.deepEqual(t.socket().sent[0], { type: "find", adult: true, mode: "text", interests: ["music"], nick: null });
  assert.equal(t.storage.getItem("ephemera.session"), "tok-1");
  t.socket().deliver({ type: "msg", seq: 2, from: "stranger", text: "hi" });
  t.socket().drop();
  assert.equal(t.timers.length, 1, "a reconnect is scheduled");
  t.timers[0].fn();
  assert.equal(t.socket().url, "ws://test/ws?resume=tok-1&last_seq=2");
});

test("replayed events already shown are dropped, and new ones after them kept", async () => {
  const t = makeClient();
  await chatting(t);
  t.socket().deliver({ type: "msg", seq: 2, from: "stranger", text: "a" });
  t.socket().drop();
  t.timers[0].fn();
  t.socket().deliver(hello({ resumed: true, state: "chatting" }));
  t.socket().deliver({ type: "msg", seq: 2, from: "stranger", text: "a" });
  t.socket().deliver({ type: "msg", seq: 3, from: "stranger", text: "b" });
  assert.deepEqual(t.seen.filter((e) => e.type === "msg").map((e) => e.text), ["a", "b"]);
});

test("a new chat numbers from 1 again, and a replayed ended is not shown twice", async () => {
  const t = makeClient();
  await chatting(t);
  t.socket().deliver({ type: "msg", seq: 2, from: "stranger", text: "a" });
  t.socket().deliver({ type: "ended", seq: 3, reason: "stranger_left" });
  t.socket().drop();
  t.timers[0].fn();
  assert.match(t.socket().url, /last_seq=3$/);
  t.socket().deliver(hello({ resumed: true, state: "idle" }));
  t.socket().deliver({ type: "ended", seq: 3, reason: "stranger_left" });
  assert.equal(t.seen.filter((e) => e.type === "ended").length, 1);
  t.socket().deliver({ type: "matched", seq: 1, mode: "text", common: [], stranger: { nick: null }, initiator: false });
  t.socket().deliver({ type: "msg", seq: 2, from: "stranger", text: "new chat" });
  assert.equal(t.seen.filter((e) => e.type === "matched").length, 2);
  assert.equal(t.seen.at(-1).text, "new chat");
});

test("messages typed while disconnected are sent once the chat resumes, and acknowledged by their echo", async () => {
  const t = makeClient();
  await chatting(t);
  const sentLive = t.client.say("live");
  t.socket().drop();
  const queued = t.client.say("queued");
  t.timers[0].fn();
  const resumed = t.socket();
  resumed.deliver(hello({ resumed: true, state: "chatting" }));
  assert.deepEqual(resumed.sent, [{ type: "msg", text: "queued" }]);
  // The replay holds the echo of the message sent before the drop, then the queued one's.
  resumed.deliver({ type: "msg", seq: 2, from: "you", text: "live" });
  resumed.deliver({ type: "msg", seq: 3, from: "you", text: "queued" });
  const echoes = t.seen.filter((e) => e.type === "msg");
  assert.deepEqual(echoes.map((e) => e.localId), [sentLive, queued]);
  // Nothing is left to be reported as unsent when the grace timer fires.
  for (const timer of t.timers.slice(1)) timer.fn();
  assert.equal(t.seen.filter((e) => e.type === "unsent").length, 0);
});

test("a message sent just before a drop and missing from the replay is reported, not resent", async () => {
  const t = makeClient();
  await chatting(t);
  const lost = t.client.say("lost");
  t.socket().drop();
  t.timers[0].fn();
  const resumed = t.socket();
  resumed.deliver(hello({ resumed: true, state: "chatting" }));
  assert.deepEqual(resumed.sent, [], "never resent: it may have arrived");
  const grace = t.timers.at(-1);
  assert.equal(grace.ms, 3000);
  grace.fn();
  assert.deepEqual(t.seen.filter((e) => e.type === "unsent").map((e) => e.localId), [lost]);
});

test("a session that could not be resumed drops the queue and says the chat was lost", async () => {
  const t = makeClient();
  await chatting(t);
  t.socket().drop();
  const queued = t.client.say("too late");
  t.timers[0].fn();
  t.socket().deliver(hello({ session: "tok-2", resumed: false, state: "idle" }));
  assert.equal(t.storage.getItem("ephemera.session"), "tok-2");
  assert.deepEqual(t.seen.filter((e) => e.type === "unsent").map((e) => e.localId), [queued]);
  assert.equal(t.seen.filter((e) => e.type === "lost").length, 1);
  assert.deepEqual(t.socket().sent, []);
});

test("a new connection that takes over closes the old one without ending the session", async () => {
  const t = makeClient();
  await chatting(t);
  const old = t.socket();
  t.client.networkBack();
  const fresh = t.socket();
  assert.notEqual(fresh, old);
  assert.equal(old.closedWith, null, "kept until the new one is greeted");
  fresh.deliver(hello({ resumed: true, state: "chatting" }));
  assert.notEqual(old.closedWith, null);
  assert.equal(t.seen.filter((e) => e.type === "reconnecting").length, 0, "the old socket's close is ignored");
});

test("close ends everything: close code 1000, no reconnect, token forgotten", async () => {
  const t = makeClient();
  await chatting(t);
  const socket = t.socket();
  t.client.close();
  assert.equal(socket.closedWith, 1000);
  assert.equal(t.storage.getItem("ephemera.session"), null);
  assert.equal(t.timers.length, 0);
});

test("a refusal close (1008) is not retried", async () => {
  const t = makeClient();
  t.client.connect();
  t.socket().drop(1008);
  assert.equal(t.timers.length, 0);
});

test("backoff grows exponentially, is capped at 10 s and jittered", () => {
  assert.equal(backoffDelay(0, () => 0.999), 249);
  assert.equal(backoffDelay(3, () => 0.5), 1000);
  assert.equal(backoffDelay(30, () => 0.999), 9990);
  assert.equal(backoffDelay(5, () => 0), 0);
});

test("limits from hello are checked before anything is sent", async () => {
  const t = makeClient();
  await chatting(t);
  assert.throws(() => t.client.say("x".repeat(11)), /too long \(11 characters; the limit is 10\)/);
  assert.throws(() => t.client.say("   "), /Type something/);
  assert.throws(() => t.client.sendMedia("image", "image/png", "AAAA", 2000), /too large/);
  assert.throws(() => t.client.sendMedia("image", "image/bmp", "AAAA", 10), /can't be sent/);
  assert.throws(() => t.client.sendMedia("audio", "image/png", "AAAA", 10), /can't be sent/);
  assert.throws(() => t.client.report("rude"), /Unknown report reason/);
  const before = t.socket().sent.length;
  t.client.sendMedia("image", "image/png", "AAAA", 3);
  t.client.report("spam");
  assert.deepEqual(t.socket().sent.slice(before), [
    { type: "media", kind: "image", mime: "image/png", data: "AAAA" },
    { type: "report", reason: "spam" },
  ]);
});

test("pure helpers: media and text checks, interests, error words", () => {
  assert.equal(mediaProblem(LIMITS, "image", "image/jpeg", 1000), null);
  assert.match(mediaProblem(LIMITS, "image", "image/jpeg", 1001), /too large/);
  assert.match(mediaProblem(LIMITS, "audio", "audio/webm", 0), /empty/);
  assert.equal(textProblem(LIMITS, "héllo 👋"), null);
  assert.deepEqual(parseInterests(" Music, films ,music,, LONGINTEREST, x", LIMITS), ["music", "films"]);
  assert.equal(errorText({ code: "rate_limited", retry_after_ms: 1500 }), "Slow down a little. Try again in 2 s.");
  assert.equal(errorText({ code: "whatever", message: "as sent" }), "as sent");
});

test("proof of work: the nonce found has the leading zero bits asked for", async () => {
  assert.equal(leadingZeroBits(Uint8Array.of(0, 0x10, 0xff)), 11);
  const challenge = "c2FsdC1mb3ItdGVzdHM";
  const nonce = await solvePow({ challenge, difficulty: 8 });
  const prefix = Buffer.from(challenge, "base64url");
  const hash = await crypto.subtle.digest("SHA-256", Buffer.concat([prefix, Buffer.from(nonce)]));
  assert.ok(leadingZeroBits(new Uint8Array(hash)) >= 8);
});

test("typing is sent only in a chat, only when it changes, and refreshed at most every 2 s", async () => {
  const t = makeClient();
  t.client.connect();
  t.socket().deliver(hello());
  t.client.typing(true);
  assert.equal(t.socket().sent.filter((f) => f.type === "typing").length, 0, "nothing between chats");
  await chatting(t);
  const typing = () => t.socket().sent.filter((f) => f.type === "typing");
  for (let key = 0; key < 20; key++) t.client.typing(true);
  assert.deepEqual(typing().map((f) => f.active), [true], "twenty keystrokes, one indicator");
  t.client.typingSentAt -= 2500;
  t.client.typing(true);
  t.client.typing(false);
  t.client.typing(false);
  assert.deepEqual(typing().map((f) => f.active), [true, true, false]);
});

test("leaving the queue makes the client idle at once, since the server does not answer", async () => {
  const t = makeClient();
  t.client.connect();
  t.socket().deliver(hello());
  await t.client.find({});
  t.socket().deliver({ type: "waiting", online: 1 });
  const left = [];
  t.client.addEventListener("left", () => left.push(t.client.state));
  assert.equal(t.client.leave(), true);
  assert.deepEqual(t.socket().sent.at(-1), { type: "leave" });
  assert.deepEqual(left, ["idle"]);
});

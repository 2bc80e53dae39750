// Unit tests of the page's protocol module (web/client.js) with a scripted socket, run by
// node's own test runner: resume by frame, message ids and resends, de-duplication per chat,
// refusals, the page between chats, backoff, limits and pacing.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  ChatClient, backoffDelay, mediaProblem, textProblem, parseInterests, errorText, leadingZeroBits, solvePow,
} from "../../../web/client.js";

const LIMITS = {
  max_text_chars: 10, max_interests: 2, max_interest_chars: 5, max_media_bytes: 1000,
  media_mime_types: ["image/png", "image/jpeg", "audio/webm"],
};
const CHAT_A = "chatAAAAAAAAAAAA";
const CHAT_B = "chatBBBBBBBBBBBB";

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
  const clock = { now: 1_000_000 };
  const storage = {
    getItem: (k) => stored.get(k) ?? null,
    setItem: (k, v) => stored.set(k, String(v)),
    removeItem: (k) => stored.delete(k),
  };
  const client = new ChatClient("ws://test/ws", {
    WebSocket: FakeSocket,
    storage,
    random: () => 0.5,
    now: () => clock.now,
    setTimeout: (fn, ms) => {
      const timer = { fn, ms, cleared: false };
      timers.push(timer);
      return timer;
    },
    clearTimeout: (timer) => { if (timer) timer.cleared = true; },
  });
  const seen = [];
  for (const type of ["hello", "matched", "msg", "media", "ended", "unsent", "lost", "reconnecting", "error"]) {
    client.addEventListener(type, (e) => seen.push({ type, ...e.detail }));
  }
  const live = () => timers.filter((timer) => !timer.cleared);
  return {
    client, storage, clock, seen, socket: () => FakeSocket.all.at(-1),
    /// Runs the latest timer still set (the reconnect, or the pacing of sends).
    fire() {
      const timer = live().at(-1);
      assert.ok(timer, "a timer is set");
      timer.cleared = true;
      timer.fn();
    },
    live,
    of: (type) => seen.filter((e) => e.type === type),
  };
}

const hello = (over = {}) => ({
  type: "hello", protocol: 1, session: "tok-1", resumed: false, state: "idle", online: 2,
  limits: LIMITS, ice_servers: [], relay_only: false, pow: null, ...over,
});
const matched = (chat, over = {}) => ({
  type: "matched", seq: 1, chat, mode: "text", common: [], stranger: { nick: null }, initiator: true, ...over,
});
const echo = (seq, text, id) => ({ type: "msg", seq, from: "you", text, id });

async function chatting(t, chat = CHAT_A) {
  t.client.connect();
  t.socket().deliver(hello());
  await t.client.find({ interests: ["music"] });
  t.socket().deliver({ type: "waiting", online: 2 });
  t.socket().deliver(matched(chat));
}

/// The connection drops; the reconnect is greeted with a fresh session, the page answers with
/// `resume`, and `second` is the server's answer to it. Returns the new socket.
function dropAndResume(t, second) {
  t.socket().drop();
  t.fire();
  const socket = t.socket();
  socket.deliver(hello({ session: "offered-fresh" }));
  if (second) socket.deliver(hello(second));
  return socket;
}

test("a session with no token keeps the first hello and sends no resume", () => {
  const t = makeClient();
  t.client.connect();
  assert.equal(t.socket().url, "ws://test/ws");
  t.socket().deliver(hello());
  assert.deepEqual(t.socket().sent, []);
  assert.equal(t.storage.getItem("ephemera.session"), "tok-1");
  assert.equal(t.client.connected, true);
  assert.equal(t.of("hello").length, 1);
});

test("a reconnect never puts the token in the URL: resume is the first frame, naming the chat and the last seq", async () => {
  const t = makeClient();
  await chatting(t);
  t.socket().deliver({ type: "msg", seq: 2, from: "stranger", text: "hi" });
  t.socket().drop();
  t.fire();
  const socket = t.socket();
  assert.equal(socket.url, "ws://test/ws");
  assert.ok(FakeSocket.all.every((s) => !s.url.includes("tok-1")), "no URL carries the token");
  assert.deepEqual(socket.sent, [], "nothing before the server's first hello");

  socket.deliver(hello({ session: "offered-fresh" }));
  assert.deepEqual(socket.sent, [{ type: "resume", session: "tok-1", chat: CHAT_A, last_seq: 2 }]);
  assert.equal(t.storage.getItem("ephemera.session"), "tok-1", "the offered session is not kept");
  assert.equal(t.of("hello").length, 1, "the offered hello is not the session's");
  // Until the answer, nothing else goes out: a message is held, typing is not sent.
  const held = t.client.say("held");
  t.client.typing(true);
  t.client.signal({ candidate: null });
  await t.client.find({});
  assert.deepEqual(socket.sent.map((f) => f.type), ["resume"]);

  socket.deliver(hello({ resumed: true, state: "chatting" }));
  assert.equal(t.of("hello").length, 2);
  assert.equal(t.of("hello").at(-1).resumed, true);
  assert.deepEqual(socket.sent.slice(1), [{ type: "msg", text: "held", id: held }]);
});

test("a fresh second hello replaces the stored token, and what was pending is marked not sent", async () => {
  const t = makeClient();
  await chatting(t);
  const pending = t.client.say("lost");
  const socket = dropAndResume(t, { session: "tok-2", resumed: false, state: "idle" });
  assert.equal(t.storage.getItem("ephemera.session"), "tok-2");
  assert.deepEqual(t.of("unsent").map((e) => [e.id, e.reason]), [[pending, "Not sent: the connection was lost."]]);
  assert.equal(t.of("lost").length, 1);
  assert.deepEqual(socket.sent.map((f) => f.type), ["resume"], "nothing resent into a fresh session");
  // The next drop resumes the new session, and names no chat: the old one is gone with it.
  socket.drop();
  t.fire();
  t.socket().deliver(hello({ session: "offered-again" }));
  assert.deepEqual(t.socket().sent, [{ type: "resume", session: "tok-2", last_seq: 0 }]);
});

test("every message and media carries its own id, and an echo confirms by id, not by text", async () => {
  const t = makeClient();
  await chatting(t);
  const first = t.client.say("same");
  const second = t.client.say("same");
  const image = t.client.sendMedia("image", "image/png", "AAAA", 3);
  const posted = t.socket().sent.filter((f) => f.type === "msg" || f.type === "media");
  assert.deepEqual(posted.map((f) => f.id), [first, second, image]);
  assert.equal(new Set([first, second, image]).size, 3);
  for (const id of [first, second, image]) assert.match(id, /^[A-Za-z0-9_-]{1,64}$/);

  // The second one's echo comes first: only the first one and the image are still pending.
  t.socket().deliver(echo(2, "same", second));
  assert.deepEqual(t.of("msg").map((e) => e.id), [second]);
  t.clock.now += 1000; // past the pacing of sends
  const socket = dropAndResume(t, { resumed: true, state: "chatting" });
  assert.deepEqual(socket.sent.slice(1).map((f) => f.id), [first, image]);
});

test("lines pending at a drop are resent with the same id after the resume, confirmed once, duplicate echo ignored", async () => {
  const t = makeClient();
  await chatting(t);
  const beforeCut = t.client.say("before cut");
  t.socket().drop();
  const offline = t.client.say("offline");
  t.fire();
  const socket = t.socket();
  socket.deliver(hello({ session: "offered-fresh" }));
  socket.deliver(hello({ resumed: true, state: "chatting" }));
  assert.deepEqual(socket.sent, [
    { type: "resume", session: "tok-1", chat: CHAT_A, last_seq: 1 },
    { type: "msg", text: "before cut", id: beforeCut },
    { type: "msg", text: "offline", id: offline },
  ]);
  // The server had the first one: its echo is in the replay, and the resend is answered with
  // the same echo again, which is ignored. The second is new.
  socket.deliver(echo(2, "before cut", beforeCut));
  socket.deliver(echo(2, "before cut", beforeCut));
  socket.deliver(echo(3, "offline", offline));
  assert.deepEqual(t.of("msg").map((e) => e.id), [beforeCut, offline]);
  assert.deepEqual(t.of("unsent"), []);
  assert.deepEqual(t.client.pending, []);
  // Confirmed lines are not sent again after a later drop.
  const later = dropAndResume(t, { resumed: true, state: "chatting" });
  assert.deepEqual(later.sent.map((f) => f.type), ["resume"]);
});

test("a refused message is marked not sent, once the echoes of earlier ones tell which it was", async () => {
  const t = makeClient();
  await chatting(t);
  const accepted = t.client.say("one");
  const refused = t.client.say("two");
  t.socket().deliver({ type: "error", code: "rate_limited", message: "slow", retry_after_ms: 200 });
  assert.deepEqual(t.of("unsent"), [], "either could be the refused one until the first's echo");
  t.socket().deliver(echo(2, "one", accepted));
  assert.deepEqual(t.of("unsent").map((e) => [e.id, e.reason]), [[refused, "Not sent: you were sending too fast."]]);

  const alone = t.client.sendMedia("image", "image/png", "AAAA", 3);
  t.socket().deliver({ type: "error", code: "too_large", message: "too large" });
  assert.deepEqual(t.of("unsent").at(-1), { type: "unsent", id: alone, reason: "Not sent: it was too large." });

  // An error while nothing is waiting is about something else, never a later message.
  t.socket().deliver({ type: "error", code: "bad_request", message: "?" });
  const fine = t.client.say("three");
  t.socket().deliver(echo(3, "three", fine));
  assert.equal(t.of("unsent").length, 2);
  assert.deepEqual(t.client.pending, []);
});

test("the chat's end marks pending lines not sent, and between chats nothing is sent", async () => {
  const t = makeClient();
  await chatting(t);
  const late = t.client.say("late");
  t.socket().deliver({ type: "error", code: "not_chatting", message: "you are not in a chat" });
  t.socket().deliver({ type: "ended", seq: 2, reason: "stranger_left" });
  assert.deepEqual(t.of("unsent").map((e) => [e.id, e.reason]), [[late, "Not sent: the chat ended."]]);

  const sentBefore = t.socket().sent.length;
  assert.throws(() => t.client.say("anyone"), /not in a chat/);
  assert.throws(() => t.client.sendMedia("image", "image/png", "AAAA", 3), /not in a chat/);
  for (let key = 0; key < 15; key++) t.client.typing(true);
  t.client.typing(false);
  await t.client.find({});
  t.socket().deliver({ type: "waiting", online: 1 });
  assert.throws(() => t.client.say("waiting"), /not in a chat/);
  t.client.typing(true);
  assert.deepEqual(t.socket().sent.slice(sentBefore).map((f) => f.type), ["find"], "only the find");
});

test("after next, leave or report nothing more is said in the chat, until its end", async () => {
  for (const leave of [(c) => c.next(), (c) => c.leave(), (c) => c.report("spam")]) {
    const t = makeClient();
    await chatting(t);
    assert.equal(leave(t.client), true);
    assert.equal(t.client.inChat, false);
    assert.throws(() => t.client.say("after"), /not in a chat/);
    t.client.typing(true);
    assert.deepEqual(t.socket().sent.filter((f) => f.type === "msg" || f.type === "typing"), []);
  }
});

test("a resumed session whose chat ended while away marks pending lines not sent and never resends them", async () => {
  const t = makeClient();
  await chatting(t);
  const pending = t.client.say("too late");
  const socket = dropAndResume(t, { resumed: true, state: "idle" });
  assert.deepEqual(socket.sent.map((f) => f.type), ["resume"]);
  assert.deepEqual(t.of("unsent").map((e) => [e.id, e.reason]), [[pending, "Not sent: the chat ended."]]);
  assert.equal(t.of("lost").length, 0, "the replayed ended says how it ended");
  socket.deliver({ type: "ended", seq: 2, reason: "stranger_left" });
  socket.deliver({ type: "ended", seq: 2, reason: "stranger_left" });
  assert.deepEqual(t.of("ended").map((e) => e.reason), ["stranger_left"]);
});

test("seq de-duplication is per chat: a resume that missed a chat's end and a new match shows both", async () => {
  const t = makeClient();
  await chatting(t);
  t.socket().deliver({ type: "msg", seq: 2, from: "stranger", text: "a1" });
  t.socket().deliver({ type: "msg", seq: 3, from: "stranger", text: "a2" });
  assert.equal(t.client.next(), true);
  // The connection drops before the chat's end comes back; meanwhile the server matched again.
  t.socket().drop();
  t.fire();
  const socket = t.socket();
  socket.deliver(hello({ session: "offered-fresh" }));
  assert.deepEqual(socket.sent, [{ type: "resume", session: "tok-1", chat: CHAT_A, last_seq: 3 }]);
  socket.deliver(hello({ resumed: true, state: "chatting" }));
  socket.deliver({ type: "ended", seq: 4, reason: "you_left" });
  socket.deliver(matched(CHAT_B, { initiator: false }));
  socket.deliver({ type: "msg", seq: 2, from: "stranger", text: "b1" });
  // The same again (a replay overlapping live traffic) is not shown twice.
  socket.deliver(matched(CHAT_B, { initiator: false }));
  socket.deliver({ type: "msg", seq: 2, from: "stranger", text: "b1" });
  socket.deliver({ type: "msg", seq: 3, from: "stranger", text: "b2" });
  assert.deepEqual(t.of("ended").map((e) => e.reason), ["you_left"]);
  assert.deepEqual(t.of("matched").map((e) => e.chat), [CHAT_A, CHAT_B]);
  assert.deepEqual(t.of("msg").map((e) => e.text), ["a1", "a2", "b1", "b2"]);
  assert.equal(t.client.state, "chatting");
  assert.equal(t.client.inChat, true, "the new chat takes messages");
  // The next resume names the new chat.
  const again = dropAndResume(t);
  assert.deepEqual(again.sent, [{ type: "resume", session: "tok-1", chat: CHAT_B, last_seq: 3 }]);
});

test("a backlog resent after a resume is paced under the server's message rate", async () => {
  const t = makeClient();
  await chatting(t);
  t.socket().drop();
  const ids = ["1", "2", "3", "4", "5", "6"].map((text) => t.client.say(text));
  t.fire();
  const socket = t.socket();
  socket.deliver(hello({ session: "offered-fresh" }));
  socket.deliver(hello({ resumed: true, state: "chatting" }));
  assert.deepEqual(socket.sent.slice(1).map((f) => f.id), ids.slice(0, 4));
  const pacing = t.live().at(-1);
  assert.equal(pacing.ms, 1000);
  t.clock.now += 1000;
  t.fire();
  assert.deepEqual(socket.sent.slice(1).map((f) => f.id), ids);
});

test("a new connection that takes over closes the old one only once the server has answered the resume", async () => {
  const t = makeClient();
  await chatting(t);
  const old = t.socket();
  t.client.networkBack();
  const fresh = t.socket();
  assert.notEqual(fresh, old);
  fresh.deliver(hello({ session: "offered-fresh" }));
  assert.equal(fresh.sent[0].type, "resume");
  assert.equal(old.closedWith, null, "the session still lives on the old one");
  fresh.deliver(hello({ resumed: true, state: "chatting" }));
  assert.notEqual(old.closedWith, null);
  assert.equal(t.of("reconnecting").length, 0, "the old socket's close is ignored");
});

test("a server that refuses the resume frame (older than v1.1) leaves the session it offered", async () => {
  const t = makeClient();
  await chatting(t);
  t.client.say("lost");
  const socket = dropAndResume(t);
  socket.deliver({ type: "error", code: "bad_request", message: "unknown type" });
  assert.equal(t.storage.getItem("ephemera.session"), "offered-fresh");
  assert.equal(t.client.connected, true);
  assert.equal(t.of("lost").length, 1);
  assert.equal(t.of("unsent").length, 1);
});

test("close ends everything: close code 1000, no reconnect, token forgotten", async () => {
  const t = makeClient();
  await chatting(t);
  const socket = t.socket();
  t.client.close();
  assert.equal(socket.closedWith, 1000);
  assert.equal(t.storage.getItem("ephemera.session"), null);
  assert.deepEqual(t.live(), []);
});

test("a refusal close (1008) is not retried", async () => {
  const t = makeClient();
  t.client.connect();
  t.socket().drop(1008);
  assert.deepEqual(t.live(), []);
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
  const id = t.client.sendMedia("image", "image/png", "AAAA", 3);
  t.client.report("spam");
  assert.deepEqual(t.socket().sent.slice(before), [
    { type: "media", kind: "image", mime: "image/png", data: "AAAA", id },
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
  t.socket().deliver(matched(CHAT_A));
  const typing = () => t.socket().sent.filter((f) => f.type === "typing");
  for (let key = 0; key < 20; key++) t.client.typing(true);
  assert.deepEqual(typing().map((f) => f.active), [true], "twenty keystrokes, one indicator");
  t.clock.now += 2500;
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

test("next then leave while the connection is down: the last one is sent right after the resume, before any resend", async () => {
  const t = makeClient();
  await chatting(t);
  const pending = t.client.say("pending");
  t.socket().drop();
  const intents = [];
  t.client.addEventListener("intent", (e) => intents.push(e.detail.type));
  assert.equal(t.client.next(), true, "kept, not dropped");
  assert.equal(t.client.leave(), true);
  assert.deepEqual(intents, ["next", "leave"]);
  assert.equal(t.client.inChat, false, "nothing more is said in the chat");
  // At once, not after the resume: those lines will never be said.
  assert.deepEqual(t.of("unsent").map((e) => [e.id, e.reason]), [[pending, "Not sent: you left the chat."]]);

  const socket = dropAndResumeAfterDrop(t, { resumed: true, state: "chatting" });
  assert.deepEqual(socket.sent.map((f) => f.type), ["resume", "leave"], "leave, not next, and no resend");
  socket.deliver({ type: "ended", seq: 2, reason: "you_left" });
  assert.equal(t.client.state, "idle");
  // Kept once: the next drop sends nothing but its resume.
  const later = dropAndResume(t, { resumed: true, state: "idle" });
  assert.deepEqual(later.sent.map((f) => f.type), ["resume"]);
});

test("stop while waiting and the connection down leaves the queue at once, and tells the server after the resume", async () => {
  const t = makeClient();
  t.client.connect();
  t.socket().deliver(hello());
  await t.client.find({ interests: ["chess"] });
  t.socket().deliver({ type: "waiting", online: 1 });
  t.socket().drop();
  const left = [];
  t.client.addEventListener("left", () => left.push(t.client.state));
  assert.equal(t.client.leave(), true);
  assert.deepEqual(left, ["idle"]);
  const socket = dropAndResumeAfterDrop(t, { resumed: true, state: "waiting" });
  assert.deepEqual(socket.sent.map((f) => f.type), ["resume", "leave"]);
  assert.equal(t.client.state, "idle");
});

test("next while down finds again with the same preferences when the session comes back idle", async () => {
  const t = makeClient();
  await chatting(t);
  t.socket().drop();
  t.client.next();
  // The chat ended meanwhile (grace over, a fresh session): the chatter still wants someone new.
  const socket = dropAndResumeAfterDrop(t, { session: "tok-2", resumed: false, state: "idle" });
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(socket.sent.map((f) => f.type), ["resume", "find"]);
  assert.deepEqual(socket.sent[1].interests, ["music"]);
});

test("a report made while down is dropped if the chat is over by the resume", async () => {
  const t = makeClient();
  await chatting(t);
  t.socket().drop();
  assert.equal(t.client.report("spam"), true);
  const socket = dropAndResumeAfterDrop(t, { resumed: true, state: "idle" });
  assert.deepEqual(socket.sent.map((f) => f.type), ["resume"]);
});

/// Like dropAndResume, for a connection already dropped: the reconnect timer runs, the fresh
/// hello is answered with `resume`, and `second` answers that.
function dropAndResumeAfterDrop(t, second) {
  t.fire();
  const socket = t.socket();
  socket.deliver(hello({ session: "offered-fresh" }));
  socket.deliver(hello(second));
  return socket;
}

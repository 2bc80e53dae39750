// The e-mail list's module (web/notify.js) with a scripted fetch: when the form is offered,
// what is sent, confirmations that never tell whether an address was there, and refusals in
// words (a rate limit says when to try again).
import { test } from "node:test";
import assert from "node:assert/strict";

import { topicsFrom, signUp, remove, refusalText, retryWords, signedUp, REMOVED } from "../../../web/notify.js";

/// A fetch that records each call and answers with the next scripted Response (or throws it).
function scriptedFetch(...answers) {
  const calls = [];
  const fetchFn = async (url, init = {}) => {
    calls.push({ url, ...init, json: init.body ? JSON.parse(init.body) : undefined });
    const answer = answers.shift();
    if (answer instanceof Error) throw answer;
    return answer;
  };
  return { fetchFn, calls };
}

const json = (status, body, headers = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });
const NOW = Date.parse("2026-11-24T12:00:00Z");
const now = () => NOW;

test("the form is offered only when the page's meta lists topics", () => {
  assert.deepEqual(topicsFrom("news,releases"), ["news", "releases"]);
  assert.deepEqual(topicsFrom("news"), ["news"]);
  assert.equal(topicsFrom(""), null, "an empty list: the server keeps none");
  assert.equal(topicsFrom(undefined), null, "no meta at all");
  assert.deepEqual(topicsFrom("news,,<b>,Rules, releases "), ["news", "releases"]);
});

test("signing up posts the trimmed address and the topic as JSON to /api/notify", async () => {
  const { fetchFn, calls } = scriptedFetch(json(202, { status: "accepted" }));
  const outcome = await signUp("  Ann@Example.ORG ", "news", { fetchFn, now });
  assert.deepEqual(outcome, { ok: true, message: signedUp() });
  assert.equal(calls[0].url, "/api/notify");
  assert.equal(calls[0].method, "POST");
  assert.equal(calls[0].headers["Content-Type"], "application/json");
  assert.deepEqual(calls[0].json, { email: "Ann@Example.ORG", topic: "news" }, "the server normalises the rest");
});

test("the confirmation is the same whether or not the address was already there", async () => {
  const { fetchFn } = scriptedFetch(json(202, { status: "accepted" }), json(202, { status: "accepted" }));
  const first = await signUp("ann@example.org", "news", { fetchFn, now });
  const again = await signUp("ann@example.org", "news", { fetchFn, now });
  assert.deepEqual(first, again);
  assert.doesNotMatch(signedUp(), /\b(already|new|added|welcome back)\b/i);
  assert.doesNotMatch(REMOVED, /wasn't|was not|not found|removed it/i);
});

test("with several topics the confirmation names the one chosen", async () => {
  const { fetchFn } = scriptedFetch(json(202, { status: "accepted" }));
  const outcome = await signUp("ann@example.org", "releases", { nameTopic: true, fetchFn, now });
  assert.match(outcome.message, /“releases”/);
});

test("removing posts only the address to /api/notify/delete", async () => {
  const { fetchFn, calls } = scriptedFetch(json(202, { status: "accepted" }));
  assert.deepEqual(await remove(" ann@example.org", { fetchFn, now }), { ok: true, message: REMOVED });
  assert.equal(calls[0].url, "/api/notify/delete");
  assert.equal(calls[0].method, "POST");
  assert.deepEqual(calls[0].json, { email: "ann@example.org" });
});

test("a refusal shows the server's own sentence", async () => {
  const { fetchFn } = scriptedFetch(json(400, { error: "invalid_email", message: "That is not an e-mail address." }));
  assert.deepEqual(await signUp("ann@", "news", { fetchFn, now }), { ok: false, message: "That is not an e-mail address." });
});

test("a rate limit says when to try again, from Retry-After in seconds or as a date", async () => {
  const { fetchFn } = scriptedFetch(json(429, { error: "rate_limited", message: "Too many sign-ups from here" }, { "Retry-After": "30" }));
  const outcome = await signUp("ann@example.org", "news", { fetchFn, now });
  assert.deepEqual(outcome, { ok: false, message: "Too many sign-ups from here. Please try again in 30 seconds." });

  const { fetchFn: again } = scriptedFetch(json(429, { error: "rate_limited", message: "Too many requests; try again in 30 s." }, { "Retry-After": "30" }));
  assert.equal((await remove("ann@example.org", { fetchFn: again, now })).message, "Too many requests; try again in 30 s.",
    "a sentence that says when already is not told twice");

  assert.equal(retryWords("1", NOW), "Please try again in a second.");
  assert.equal(retryWords("60", NOW), "Please try again in a minute.");
  assert.equal(retryWords("125", NOW), "Please try again in 3 minutes.");
  assert.equal(retryWords("7200", NOW), "Please try again in 2 hours.");
  assert.equal(retryWords(new Date(NOW + 90_000).toUTCString(), NOW), "Please try again in 2 minutes.");
  assert.equal(retryWords(null, NOW), "Please try again later.");
  assert.equal(retryWords("soon", NOW), "Please try again later.");
});

test("a refusal without a usable sentence gets ours, by the server's code or the status", () => {
  assert.equal(refusalText(400, { error: "unknown_topic" }, null, NOW), "That topic is no longer offered. Reload the page and try again.");
  assert.equal(refusalText(413, {}, null, NOW), "That is too long for an e-mail address.");
  assert.equal(refusalText(503, { error: "unavailable", message: "" }, null, NOW), "The list is unavailable right now. Please try again later.");
  assert.equal(refusalText(429, {}, "5", NOW), "Too many tries from your network. Please try again in 5 seconds.");
  assert.equal(refusalText(400, { error: "toString" }, null, NOW), "The server did not understand the request. Reload the page and try again.");
  assert.equal(refusalText(502, {}, null, NOW), "Something went wrong (the server answered 502). Please try again later.");
  assert.equal(refusalText(400, { error: "bad_request", message: "x".repeat(301) }, null, NOW),
    "The server did not understand the request. Reload the page and try again.", "a page, not a sentence");
});

test("a body that is not JSON, a network failure or a timeout still give words, never a throw", async () => {
  const { fetchFn } = scriptedFetch(
    new Response("Payload Too Large", { status: 413 }),
    new TypeError("Failed to fetch"),
    new DOMException("signal timed out", "TimeoutError"),
  );
  assert.deepEqual(await remove("ann@example.org", { fetchFn, now }), { ok: false, message: "That is too long for an e-mail address." });
  assert.match((await remove("ann@example.org", { fetchFn, now })).message, /Couldn't reach the server/);
  assert.match((await signUp("ann@example.org", "news", { fetchFn, now })).message, /took too long/);
});

// A real network drop in a real browser: the page goes offline and its connections are cut
// (the server sees them close without a close frame), the stranger keeps writing, and when the
// network is back the page resumes the chat with nothing lost and nothing doubled: a message
// whose echo was lost in the drop is resent with its id and delivered once. The token that
// resumes the session travels in a frame, never in a URL.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import {
  startServer, startProxy, launchBrowser, openPage, startChat, send, lines, screenshot, otherOrigins, sentFrames,
} from "./harness.mjs";

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

test("going offline for a few seconds and back resumes the chat with no lost or doubled message, the token never in a URL", async (t) => {
  const server = await startServer();
  const proxy = await startProxy(server.port);
  t.after(async () => { proxy.stop(); await server.stop(); });

  const a = await openPage(browser, proxy.url);
  const b = await openPage(browser, server.url);
  await startChat(a.page, { nick: "Ann" });
  await startChat(b.page, { nick: "Bo" });
  for (const { page } of [a, b]) await page.waitForSelector('#chat[data-state="chatting"]');
  await send(a.page, "before the drop");
  await b.page.waitForSelector('#log li.stranger:has-text("before the drop")');
  await send(b.page, "reply before");
  await a.page.waitForSelector('#log li.stranger:has-text("reply before")');

  // Just before the cut: the message reaches the server and the stranger, but its echo is lost.
  proxy.stall();
  await send(a.page, "typed just before the cut");
  await b.page.waitForSelector('#log li.stranger:has-text("typed just before the cut")');
  assert.equal(await a.page.locator('#log li.you.pending:has-text("typed just before the cut")').count(), 1);
  await a.context.setOffline(true);
  proxy.cut();
  await b.page.waitForSelector('#status:has-text("The stranger\'s connection dropped, waiting")');
  await a.page.waitForSelector('#status:has-text("offline")');
  await send(b.page, "while you were away 1");
  await send(b.page, "while you were away 2");
  await send(a.page, "typed while offline");
  await a.page.waitForSelector('#log li.you.pending:has-text("typed while offline")');
  // Real time on purpose: stay offline as a real drop does, long enough for the page's
  // reconnect attempts to fail and back off, so the resume is tested after a gap, not a blip.
  await a.page.waitForTimeout(2000);

  await a.context.setOffline(false);
  await b.page.waitForSelector('#status:has-text("The stranger is back.")');
  await a.page.waitForSelector('#log li.stranger:has-text("while you were away 2")');
  await b.page.waitForSelector('#log li.stranger:has-text("typed while offline")');
  await a.page.waitForSelector('#log li.you:not(.pending):has-text("typed while offline")');
  await a.page.waitForSelector('#log li.you:not(.pending):has-text("typed just before the cut")');
  await send(b.page, "after the return");
  await a.page.waitForSelector('#log li.stranger:has-text("after the return")');
  // Written after the resend, so had the resend been relayed it would be on the page by now.
  await send(a.page, "after the return too");
  await b.page.waitForSelector('#log li.stranger:has-text("after the return too")');

  const mine = ["before the drop", "typed just before the cut", "typed while offline", "after the return too"];
  assert.deepEqual(await lines(a.page, "stranger"),
    ["reply before", "while you were away 1", "while you were away 2", "after the return"]);
  assert.deepEqual(await lines(a.page, "you"), mine);
  assert.deepEqual(await lines(b.page, "stranger"), mine, "each message arrived exactly once");
  assert.deepEqual(await lines(b.page, "you"),
    ["reply before", "while you were away 1", "while you were away 2", "after the return"]);
  assert.equal(await a.page.locator("#log li.pending, #log li.failed").count(), 0);
  // The message whose echo was lost went twice, with one id: the server relayed it once.
  const cutMessage = sentFrames(a, "msg").filter((f) => f.text === "typed just before the cut");
  assert.ok(cutMessage.length >= 2);
  assert.deepEqual(new Set(cutMessage.map((f) => f.id)).size, 1);
  assert.match(cutMessage[0].id, /^.{1,64}$/);

  // The token: in sessionStorage and in the resume frame, in no URL the page ever opened.
  const token = await a.page.evaluate(() => sessionStorage.getItem("ephemera.session"));
  assert.match(token, /^[A-Za-z0-9_-]{22}$/);
  assert.deepEqual(a.requests.filter((url) => url.includes(token)), []);
  assert.ok(a.sockets.length >= 2);
  for (const socket of a.sockets) assert.equal(new URL(socket.url).pathname + new URL(socket.url).search, "/ws");
  const chat = a.sockets[0].received.find((f) => f.type === "matched").chat;
  const resumes = a.sockets.slice(1).filter((socket) => socket.sent.length > 0);
  assert.ok(resumes.length >= 1, "a connection after the cut said something");
  for (const socket of resumes) {
    assert.deepEqual(Object.keys(socket.sent[0]).sort(), ["chat", "last_seq", "session", "type"]);
    assert.equal(socket.sent[0].type, "resume", "resume is the first frame");
    assert.equal(socket.sent[0].session, token);
    assert.equal(socket.sent[0].chat, chat);
  }
  assert.deepEqual(otherOrigins(a.requests, proxy.url), []);
  assert.deepEqual(await a.context.cookies(), []);
  await screenshot(a.page, "resumed");
});

test("a resume that missed the chat's end and a new match shows the old chat ending and the new one beginning", async (t) => {
  const server = await startServer();
  const proxy = await startProxy(server.port);
  t.after(async () => { proxy.stop(); await server.stop(); });
  const a = await openPage(browser, proxy.url);
  const b = await openPage(browser, server.url);
  await startChat(a.page, { nick: "Ann" });
  await startChat(b.page, { nick: "Bo" });
  for (const { page } of [a, b]) await page.waitForSelector('#chat[data-state="chatting"]');
  const c = await openPage(browser, server.url);
  await startChat(c.page, { nick: "Cy" });
  await c.page.waitForSelector('#chat[data-state="waiting"]');
  await send(a.page, "bye Bo");
  await b.page.waitForSelector('#log li.stranger:has-text("bye Bo")');

  // Next, whose answer (the end of the chat with Bo, a match with Cy) the page does not see.
  proxy.stall();
  await a.page.click("#next");
  await c.page.waitForSelector('#status:has-text("stranger (Ann)")');
  await b.page.waitForSelector('#status:has-text("The stranger left the chat.")');
  proxy.cut();

  await a.page.waitForSelector('#status:has-text("stranger (Cy)")');
  assert.deepEqual(await lines(a.page, "system"), ["While you were away: You left the chat."]);
  assert.deepEqual(await lines(a.page, "you"), [], "the old chat's lines are gone with it");
  assert.equal(await a.page.isEnabled("#text"), true);
  await send(a.page, "hi Cy");
  await c.page.waitForSelector('#log li.stranger:has-text("hi Cy")');
  await a.page.waitForSelector('#log li.you:not(.pending):has-text("hi Cy")');
  assert.deepEqual(await lines(b.page, "stranger"), ["bye Bo"]);
  const resume = a.sockets.at(-1).sent[0];
  assert.equal(resume.type, "resume");
  assert.equal(resume.chat, a.sockets[0].received.find((f) => f.type === "matched").chat);
  await screenshot(a.page, "resumed-into-new-chat");
});

test("closing the tab ends the chat at once for the stranger", async (t) => {
  const server = await startServer();
  t.after(server.stop);
  const a = await openPage(browser, server.url);
  const b = await openPage(browser, server.url);
  await startChat(a.page);
  await startChat(b.page);
  for (const { page } of [a, b]) await page.waitForSelector('#chat[data-state="chatting"]');
  await a.page.close({ runBeforeUnload: true });
  await b.page.waitForSelector('#log li.system:has-text("The stranger left the chat.")');
  await screenshot(b.page, "tab-closed");
});

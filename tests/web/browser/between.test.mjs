// The page between chats, tried as a chatter would (issue #12): once a chat ends nothing can
// be typed or sent into it, the controls say what they will do, the status line says how the
// chat ended, a message the server refuses is marked not sent, and the typing indicator never
// moves the message box.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import {
  chattingPair, startServer, startProxy, launchBrowser, openPage, startChat, send, lines, screenshot, sentFrames, waitFor,
} from "./harness.mjs";

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

const pair = (urls) => chattingPair(browser, urls);

async function newChat(people) {
  for (const { page } of people) await page.click("#next");
  for (const { page } of people) await page.waitForSelector('#chat[data-state="chatting"]');
}

test("after a chat ends the controls are disabled and say why, typing sends nothing and adds no line", async (t) => {
  const server = await startServer();
  t.after(server.stop);
  const [a, b] = await pair([server.url]);
  assert.equal(await a.page.isEnabled("#text"), true);
  await a.page.fill("#text", "half a thou");
  await b.page.waitForSelector("#typing", { state: "visible" });
  await b.page.click("#stop");

  await a.page.waitForSelector('#chat[data-state="idle"]');
  assert.equal(await a.page.textContent("#status"), "The stranger left the chat.");
  assert.equal(await b.page.textContent("#status"), "You left the chat.");
  for (const control of ["#text", "#send", "#image", "#voice", "#report"]) {
    assert.equal(await a.page.isDisabled(control), true, `${control} is disabled`);
  }
  assert.match(await a.page.getAttribute("#text", "placeholder"), /Not in a chat: New chat/);
  assert.equal(await a.page.textContent("#next"), "New chat");

  // The chatter goes on typing a sentence, and presses Enter: nothing goes anywhere.
  const logBefore = await a.page.locator("#log li").count();
  const typingBefore = sentFrames(a, "typing").length;
  await a.page.keyboard.type("ght, are you still there?");
  await a.page.keyboard.press("Enter");
  await a.page.evaluate(() => {
    // And as if the box still took input: the page sends no typing for it either.
    document.getElementById("text").dispatchEvent(new Event("input"));
  });
  assert.equal(await a.page.locator("#log li").count(), logBefore, "no line added");
  assert.equal(await a.page.locator("#log li.you").count(), 0);

  // New chat: its `find` is recorded after anything typed before it would have been.
  await a.page.click("#next");
  await waitFor(() => sentFrames(a, "find").length === 2, 5000, "the second find");
  assert.equal(sentFrames(a, "typing").length, typingBefore, "no typing frame between chats");
  assert.deepEqual(sentFrames(a, "msg"), []);
  assert.ok(a.sockets.every((s) => s.received.every((f) => f.type !== "error")), "no refusal");
  await a.page.waitForSelector('#chat[data-state="waiting"]');
  assert.equal(await a.page.textContent("#status"), "Looking for a stranger…");
  assert.equal(await a.page.isDisabled("#text"), true);
  assert.equal(await a.page.getAttribute("#text", "placeholder"), "Waiting for a stranger…");
  assert.equal(await a.page.textContent("#next"), "Next");
  await screenshot(a.page, "between-chats");
});

test("a message the server refuses is marked not sent, never left looking sent", async (t) => {
  const server = await startServer({ EPHEMERA_MAX_MESSAGES_PER_SECOND: "1" });
  t.after(server.stop);
  const [a, b] = await pair([server.url]);
  await send(a.page, "first");
  await send(a.page, "second, too soon");
  const refused = await a.page.waitForSelector("#log li.you.failed");
  assert.match(await refused.textContent(), /second, too soon.*Not sent: you were sending too fast\./);
  await a.page.waitForSelector('#log li.you:not(.pending):not(.failed):has-text("first")');
  assert.equal(await a.page.locator("#log li.pending").count(), 0);
  assert.equal(await refused.getAttribute("aria-busy"), null);
  await b.page.waitForSelector('#log li.stranger:has-text("first")');
  assert.deepEqual(await lines(b.page, "stranger"), ["first"]);
  await screenshot(a.page, "refused-message");
});

test("the typing indicator keeps its space, so the message box does not move", async (t) => {
  const server = await startServer();
  t.after(server.stop);
  const [a, b] = await pair([server.url]);
  const before = await b.page.locator("#text").boundingBox();
  await a.page.fill("#text", "typing");
  await b.page.waitForSelector("#typing", { state: "visible" });
  const shown = await b.page.locator("#text").boundingBox();
  await a.page.fill("#text", "");
  await b.page.waitForSelector("#typing", { state: "hidden" });
  const hidden = await b.page.locator("#text").boundingBox();
  assert.deepEqual(shown, before);
  assert.deepEqual(hidden, before);
});

test("the status line says how each chat ended: reported, connection lost, server restarting", async (t) => {
  const server = await startServer({ EPHEMERA_RESUME_GRACE_SECONDS: "1", EPHEMERA_REMATCH_COOLDOWN_SECONDS: "0" });
  const proxy = await startProxy(server.port);
  t.after(async () => { proxy.stop(); await server.stop(); });
  const [a, b] = await pair([proxy.url, server.url]);

  await b.page.click("#report");
  await b.page.check('#report-dialog input[value="spam"]');
  await b.page.click("#report-send");
  await b.page.waitForSelector('#chat[data-state="idle"]');
  assert.equal(await b.page.textContent("#status"), "You reported the stranger. The chat has ended.");
  await a.page.waitForSelector('#status:text-is("The stranger left the chat.")');

  // Ann's network goes for longer than the grace.
  await newChat([a, b]);
  await a.context.setOffline(true);
  proxy.cut();
  await b.page.waitForSelector('#status:text-is("The stranger\'s connection was lost.")');
  await a.context.setOffline(false);
  await a.page.waitForSelector('#status:text-is("The connection was lost for too long, so the chat ended.")');

  await newChat([a, b]);
  await server.stop();
  for (const { page } of [a, b]) {
    await page.waitForSelector('#status:has-text("The server is restarting. Please come back in a moment.")');
    assert.equal(await page.isDisabled("#text"), true);
  }
});

// What a newcomer stumbled on, tried again in a real Chromium: Next and Stop while the
// connection is down, Esc inside an input method, the theme toggle's state, the report's
// reason, focus after a chat ends, a browser that can record no voice format, and Next while
// already looking.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import {
  chattingPair, startServer, startProxy, launchBrowser, openPage, startChat, send, screenshot, sentFrames, waitFor,
} from "./harness.mjs";

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

const pair = (urls) => chattingPair(browser, urls);

test("Next then Stop while the connection is down say what will happen, and the resume leaves the chat", async (t) => {
  const server = await startServer();
  const proxy = await startProxy(server.port);
  t.after(async () => { proxy.stop(); await server.stop(); });
  const [a, b] = await pair([proxy.url, server.url]);
  // Someone waiting: had the page sent `next` (or nothing), Ann would end up in a chat.
  const c = await openPage(browser, server.url);
  await startChat(c.page, { nick: "Cy" });
  await c.page.waitForSelector('#chat[data-state="waiting"]');

  await a.context.setOffline(true);
  proxy.cut();
  await a.page.waitForSelector('#status:has-text("offline")');
  await send(a.page, "typed while away");
  await a.page.click("#next");
  await a.page.waitForSelector('#status:text-is("Looking for someone new once reconnected…")');
  await a.page.click("#stop");
  await a.page.waitForSelector('#status:text-is("You left the chat; reconnecting…")');
  await a.page.waitForSelector('#log li.you.failed:has-text("Not sent: you left the chat.")');
  assert.equal(await a.page.isDisabled("#text"), true, "nothing more is said in the chat");
  await screenshot(a.page, "left-while-offline");
  // Reconnect attempts that fail meanwhile keep saying it.
  await a.page.waitForTimeout(1500);
  assert.equal(await a.page.textContent("#status"), "You left the chat; reconnecting…");

  await a.context.setOffline(false);
  await b.page.waitForSelector('#status:text-is("The stranger left the chat.")');
  await a.page.waitForSelector('#chat[data-state="idle"]');
  await a.page.waitForSelector('#status:text-is("You left the chat.")');
  const resumed = a.sockets.at(-1).sent;
  assert.deepEqual(resumed.map((f) => f.type), ["resume", "leave"], "the last intent, and no resend");
  assert.equal(sentFrames(a, "next").length, 0);
  assert.equal(await c.page.getAttribute("#chat", "data-state"), "waiting", "Ann was not matched");
  assert.deepEqual(sentFrames(a, "msg").filter((f) => f.text === "typed while away"), []);
});

test("Esc while composing with an input method cancels the composition only", async (t) => {
  const server = await startServer();
  t.after(server.stop);
  const [a] = await pair([server.url]);
  await a.page.focus("#text");
  const stillInChat = await a.page.evaluate(() => {
    const text = document.getElementById("text");
    text.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", isComposing: true, bubbles: true, cancelable: true }));
    text.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", keyCode: 229, bubbles: true, cancelable: true }));
    return !text.disabled;
  });
  assert.equal(stillInChat, true);
  await a.page.keyboard.press("Escape");
  await waitFor(() => sentFrames(a, "next").length === 1, 5000, "the plain Esc's next");
});

test("the theme toggle is pressed and says on when dark, and its name stays the same", async (t) => {
  const server = await startServer();
  t.after(server.stop);
  const { page } = await openPage(browser, server.url);
  await page.emulateMedia({ colorScheme: "light" });
  await page.reload();
  assert.equal(await page.getAttribute("#theme", "aria-pressed"), "false");
  assert.equal(await page.textContent("#theme-state"), "off");
  await page.click("#theme");
  assert.equal(await page.getAttribute("html", "data-theme"), "dark");
  assert.equal(await page.getAttribute("#theme", "aria-pressed"), "true");
  assert.equal(await page.textContent("#theme-state"), "on");
  assert.equal(await page.getByRole("button", { name: "Dark theme", exact: true, pressed: true }).count(), 1);
  await page.click("#theme");
  assert.equal(await page.getAttribute("html", "data-theme"), "light");
  assert.equal(await page.getByRole("button", { name: "Dark theme", exact: true, pressed: false }).count(), 1);
});

test("the report dialog ticks no reason, and Report waits for one", async (t) => {
  const server = await startServer();
  t.after(server.stop);
  const [a, b] = await pair([server.url]);
  await a.page.click("#report");
  assert.equal(await a.page.locator('#report-dialog input[name="reason"]:checked').count(), 0);
  assert.equal(await a.page.isDisabled("#report-send"), true);
  await a.page.check('#report-dialog input[value="nudity"]');
  assert.equal(await a.page.isEnabled("#report-send"), true);
  await a.page.click("#report-send");
  await b.page.waitForSelector('#status:text-is("The stranger left the chat.")');
  assert.deepEqual(sentFrames(a, "report").map((f) => f.reason), ["nudity"]);
});

test("after a chat ends focus is on New chat: a sentence typed on starts nothing, Enter after a pause does", async (t) => {
  const server = await startServer();
  t.after(server.stop);
  const [a, b] = await pair([server.url]);
  await a.page.focus("#text");
  await b.page.click("#stop");
  await a.page.waitForSelector('#chat[data-state="idle"]');
  await waitFor(async () => (await a.page.evaluate(() => document.activeElement.id)) === "next", 2000, "focus on New chat");
  await a.page.keyboard.type("still there? ");
  await a.page.keyboard.press("Enter");
  await a.page.waitForTimeout(1100); // real time: the pause is what tells a press from typing
  assert.equal(sentFrames(a, "find").length, 1, "typing on started no chat");
  assert.equal(await a.page.getAttribute("#chat", "data-state"), "idle");
  await a.page.keyboard.press("Enter");
  await a.page.waitForSelector('#chat[data-state="waiting"]');
});

test("a browser that records in no format the server takes has Voice note disabled, saying why", async (t) => {
  const server = await startServer();
  t.after(server.stop);
  const people = [];
  for (const nick of ["Ann", "Bo"]) {
    const person = await openPage(browser, server.url);
    await person.context.addInitScript(() => { MediaRecorder.isTypeSupported = () => false; });
    await person.page.reload();
    await startChat(person.page, { nick });
    people.push(person);
  }
  for (const { page } of people) await page.waitForSelector('#chat[data-state="chatting"]');
  const [a] = people;
  assert.equal(await a.page.isDisabled("#voice"), true);
  assert.equal(await a.page.getAttribute("#voice", "title"), "Your browser can't record in a format the server takes");
  assert.equal(await a.page.isEnabled("#image"), true);
  assert.deepEqual(a.problems, []);
});

test("Next while already looking says so and sends nothing", async (t) => {
  const server = await startServer();
  t.after(server.stop);
  const a = await openPage(browser, server.url);
  await startChat(a.page, {});
  await a.page.waitForSelector('#chat[data-state="waiting"]');
  await a.page.click("#next");
  await a.page.waitForSelector('#status:text-is("Still looking for a stranger…")');
  await a.page.keyboard.press("Escape");
  assert.equal(sentFrames(a, "next").length, 0);
  assert.equal(await a.page.getAttribute("#chat", "data-state"), "waiting");
});

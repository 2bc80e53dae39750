// The page in a real Chromium against the real server: pairing, text (unicode included),
// typing, images, voice notes, Next, Report, keyboard use, theme, cookies and origins.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import {
  chattingPair, startServer, launchBrowser, openPage, startChat, send, lines, screenshot, otherOrigins, waitFor,
} from "./harness.mjs";

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

/// A PNG drawn by the browser itself, so the test needs no image file.
async function drawnPng(page, color) {
  const base64 = await page.evaluate((fill) => {
    const canvas = document.createElement("canvas");
    canvas.width = 160;
    canvas.height = 90;
    const g = canvas.getContext("2d");
    g.fillStyle = fill;
    g.fillRect(0, 0, 160, 90);
    g.fillStyle = "#fff";
    g.font = "20px sans-serif";
    g.fillText("Ephemera", 30, 52);
    return canvas.toDataURL("image/png").split(",")[1];
  }, color);
  return Buffer.from(base64, "base64");
}

const pair = (server) => chattingPair(browser, [server.url], { interests: "music, films" });

test("two strangers pair, see nick and shared interests, and chat in unicode; typing shows and clears", async (t) => {
  const server = await startServer();
  t.after(server.stop);
  const [a, b] = await pair(server);
  assert.match(await a.page.textContent("#status"), /stranger \(Bo\)\. You both like (music, films|films, music)\./);
  assert.match(await b.page.textContent("#status"), /stranger \(Ann\)/);

  await a.page.fill("#text", "typing…");
  await b.page.waitForSelector("#typing", { state: "visible" });
  const greeting = "héllo — ünïcödé 👋 你好 مرحبا";
  await send(a.page, greeting);
  await b.page.waitForSelector("#typing", { state: "hidden" });
  await b.page.waitForSelector(`#log li.stranger:has-text("${greeting}")`);
  await send(b.page, "hi Ann! 🎉");
  await a.page.waitForSelector('#log li.stranger:has-text("hi Ann! 🎉")');
  // The sender's line is confirmed by the server's echo: no longer pending, shown once.
  await a.page.waitForSelector("#log li.you:not(.pending)");
  assert.deepEqual(await lines(a.page, "you"), [greeting]);
  assert.deepEqual(await lines(b.page, "stranger"), [greeting]);
  assert.deepEqual(await lines(b.page, "you"), ["hi Ann! 🎉"]);

  for (const person of [a, b]) {
    assert.deepEqual(await person.context.cookies(), [], "no cookie of any kind");
    assert.deepEqual(otherOrigins(person.requests, server.url), [], "nothing from another origin");
    assert.deepEqual(person.problems, []);
  }
  await screenshot(a.page, "chat-text");
});

test("an image goes across from the picker and from a paste, and renders on both sides", async (t) => {
  const server = await startServer();
  t.after(server.stop);
  const [a, b] = await pair(server);
  await send(a.page, "look at this");
  await a.page.setInputFiles("#image-file", { name: "blue.png", mimeType: "image/png", buffer: await drawnPng(a.page, "#2457d6") });
  const received = await b.page.waitForSelector("#log li.stranger img");
  await waitFor(() => received.evaluate((img) => img.complete && img.naturalWidth === 160), 5000, "the image to decode");
  assert.equal(await received.getAttribute("alt"), "Image from the stranger");
  await a.page.waitForSelector("#log li.you img");

  // Paste: a clipboard holding an image file, as a screenshot tool would leave it.
  const pasted = (await drawnPng(b.page, "#b3261e")).toString("base64");
  await b.page.evaluate((data) => {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], "red.png", { type: "image/png" }));
    document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true }));
  }, pasted);
  await a.page.waitForSelector("#log li.stranger img");
  await send(b.page, "nice 😀");
  await a.page.waitForSelector('#log li.stranger:has-text("nice 😀")');
  await screenshot(a.page, "chat");

  // Too large even after shrinking: a clear message, nothing sent.
  const huge = Buffer.alloc(3 << 20, 1);
  await a.page.setInputFiles("#image-file", { name: "huge.gif", mimeType: "image/gif", buffer: huge });
  await a.page.waitForSelector("#log li.system");
  assert.equal(await b.page.locator("#log li.stranger img").count(), 1);
});

test("a voice note is recorded from the microphone and plays on the other side", async (t) => {
  const server = await startServer();
  t.after(server.stop);
  const [a, b] = await pair(server);
  await a.page.click("#voice");
  await a.page.waitForSelector('#voice[aria-pressed="true"]');
  // Real time on purpose: a voice note is a recording, so a second of the fake microphone's
  // beep must really be recorded.
  await a.page.waitForTimeout(1200);
  await a.page.click("#voice");
  const note = await b.page.waitForSelector("#log li.stranger audio");
  assert.match(await note.getAttribute("src"), /^blob:/);
  await waitFor(() => note.evaluate((audio) => audio.readyState >= 1), 5000, "the voice note to load");
  assert.equal(await a.page.locator("#log li.you audio").count(), 1);
  await screenshot(b.page, "voice-note");
});

test("Next (Esc) pairs with a third stranger, never the same one; Report ends the chat on both sides", async (t) => {
  const server = await startServer();
  t.after(server.stop);
  const [a, b] = await pair(server);
  const c = await openPage(browser, server.url);
  await startChat(c.page, { nick: "Cy", interests: "music" });
  await c.page.waitForSelector('#status:has-text("Looking for a stranger")');

  await a.page.focus("#text");
  await a.page.keyboard.press("Escape");
  await b.page.waitForSelector('#log li.system:has-text("The stranger left the chat.")');
  await a.page.waitForSelector('#status:has-text("stranger (Cy)")');
  await c.page.waitForSelector('#status:has-text("stranger (Ann)")');
  assert.equal(await b.page.textContent("#next"), "New chat");

  await send(c.page, "hello Ann");
  await a.page.waitForSelector('#log li.stranger:has-text("hello Ann")');
  await c.page.click("#report");
  await c.page.check('#report-dialog input[value="harassment"]');
  await c.page.click("#report-send");
  await c.page.waitForSelector('#log li.system:has-text("You reported the stranger")');
  await a.page.waitForSelector('#log li.system:has-text("The stranger left the chat.")');
  await screenshot(c.page, "reported");
});

test("the lobby works with the keyboard alone, remembers preferences, and has a dark theme", async (t) => {
  const server = await startServer();
  t.after(server.stop);
  const { page, context } = await openPage(browser, server.url);
  // Every form control has a name a screen reader can read.
  const unnamed = await page.$$eval("input:not([type=file]), button", (els) =>
    els.filter((el) => !(el.labels?.length || el.textContent.trim() || el.getAttribute("aria-label"))).map((el) => el.outerHTML));
  assert.deepEqual(unnamed, []);

  await page.click("#theme");
  assert.equal(await page.getAttribute("html", "data-theme"), "dark");
  await page.check('input[name="mode"][value="video"]');
  await page.fill("#interests", "chess");
  await page.check("#adult");
  await page.click("#start");
  await page.waitForSelector("#chat:not([hidden])");
  await screenshot(page, "dark");

  // A new tab: same preferences (localStorage), a fresh session (sessionStorage is per tab).
  const again = await context.newPage();
  await again.goto(server.url);
  assert.equal(await again.getAttribute("html", "data-theme"), "dark");
  assert.equal(await again.inputValue("#interests"), "chess");
  assert.equal(await again.isChecked('input[name="mode"][value="video"]'), true);
  assert.equal(await again.inputValue("#nick"), "", "the nickname is not remembered");
  await again.check('input[name="mode"][value="text"]');

  // Keyboard only: tab to the age box, tick it with Space, tab on to Start, press Enter.
  for (let i = 0; i < 12 && (await again.evaluate(() => document.activeElement.id)) !== "adult"; i++) {
    await again.keyboard.press("Tab");
  }
  await again.keyboard.press("Space");
  for (let i = 0; i < 12 && (await again.evaluate(() => document.activeElement.id)) !== "start"; i++) {
    await again.keyboard.press("Tab");
  }
  await again.keyboard.press("Enter");
  await again.waitForSelector('#status:has-text("Looking for a stranger")');
  assert.deepEqual(await context.cookies(), []);
});

test("Stop while looking for a stranger leaves the queue and says so", async (t) => {
  const server = await startServer();
  t.after(server.stop);
  const { page } = await openPage(browser, server.url);
  await startChat(page, {});
  await page.waitForSelector('#chat[data-state="waiting"]');
  await page.click("#stop");
  await page.waitForSelector('#chat[data-state="idle"]');
  assert.equal(await page.textContent("#status"), "You left the queue.");
  assert.equal(await page.textContent("#stop"), "Leave");
  assert.equal(await page.isDisabled("#report"), true);
  const stats = await (await fetch(`${server.url}/stats`)).json();
  assert.equal(stats.waiting, 0, "the server took the session out of the queue");
  await screenshot(page, "stop-while-waiting");
});

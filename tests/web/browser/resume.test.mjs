// A real network drop in a real browser: the page goes offline and its connections are cut
// (the server sees them close without a close frame), the stranger keeps writing, and when the
// network is back the page resumes the chat with nothing lost and nothing doubled.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import {
  startServer, startProxy, launchBrowser, openPage, startChat, send, lines, screenshot, otherOrigins,
} from "./harness.mjs";

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

test("going offline for a few seconds and back resumes the chat with no lost or doubled message", async (t) => {
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
  await send(b.page, "after the return");
  await a.page.waitForSelector('#log li.stranger:has-text("after the return")');

  assert.deepEqual(await lines(a.page, "stranger"),
    ["reply before", "while you were away 1", "while you were away 2", "after the return"]);
  assert.deepEqual(await lines(a.page, "you"), ["before the drop", "typed while offline"]);
  assert.deepEqual(await lines(b.page, "stranger"), ["before the drop", "typed while offline"]);
  assert.deepEqual(await lines(b.page, "you"),
    ["reply before", "while you were away 1", "while you were away 2", "after the return"]);
  assert.equal(await a.page.locator("#log li.pending, #log li.failed").count(), 0);
  assert.deepEqual(otherOrigins(a.requests, proxy.url), []);
  assert.deepEqual(await a.context.cookies(), []);
  await screenshot(a.page, "resumed");
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

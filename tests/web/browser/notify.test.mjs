// The early-access e-mail list in a real Chromium against the real server: hidden when off;
// signing up and removing an address through the lobby's forms, checked with the operator's
// own export (and the database holding no address in clear); several topics; the rate limit.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";

import { BINARY, startServer, launchBrowser, openPage, otherOrigins, screenshot } from "./harness.mjs";

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

/// A server with the list on, its database and master key in a fresh directory of their own.
async function serverWithList(t, topics, settings = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "ephemera-notify-"));
  const env = {
    EPHEMERA_NOTIFY_DB_PATH: path.join(dir, "notify.db"),
    EPHEMERA_NOTIFY_MASTER_KEY_PATH: path.join(dir, "master.key"),
    ...(topics ? { EPHEMERA_NOTIFY_TOPICS: topics } : {}),
  };
  const server = await startServer({ ...env, ...settings });
  t.after(async () => { await server.stop(); rmSync(dir, { recursive: true, force: true }); });
  return { ...server, env };
}

/// What the operator's command prints: `ephemera notify export --topic T` or `notify count`.
function operator(env, ...args) {
  const run = spawnSync(BINARY, ["notify", ...args], { env: { ...process.env, ...env }, encoding: "utf8" });
  assert.equal(run.status, 0, `ephemera notify ${args.join(" ")} failed: ${run.stderr}`);
  return run.stdout;
}
const exported = (env, topic) => operator(env, "export", "--topic", topic).split("\n").filter(Boolean);

/// The database's bytes and those of its write-ahead log and journal, where they exist.
function databaseBytes(env) {
  const db = env.EPHEMERA_NOTIFY_DB_PATH;
  return Buffer.concat([db, `${db}-wal`, `${db}-journal`].filter(existsSync).map((file) => readFileSync(file)));
}

async function signUp(page, email) {
  await page.fill("#notify-email", email);
  await page.press("#notify-email", "Enter");
}

/// Does `act` and waits for the page to have shown the server's answer to the POST it makes.
async function answered(page, form, act) {
  const path = form === "#notify-form" ? "/api/notify" : "/api/notify/delete";
  await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === path && r.request().method() === "POST"),
    act(),
  ]);
  await page.waitForSelector(`${form} button:enabled`);
  return page.textContent(`${form} .notify-result`);
}

test("with the list off (the default) the form stays hidden and nothing goes wrong", async (t) => {
  const server = await startServer();
  t.after(server.stop);
  const person = await openPage(browser, server.url);
  await person.page.waitForLoadState("networkidle");
  assert.equal(person.requests.filter((url) => new URL(url).pathname.startsWith("/api/notify")).length, 0, "the page asks nothing: the topics come in the page");
  assert.equal(await person.page.isVisible("#notify"), false);
  assert.equal(await person.page.isVisible("#notify-email"), false);
  assert.deepEqual(person.problems, []);
});

test("an address signed up through the form is on the operator's export, encrypted at rest, and the remove form takes it off", async (t) => {
  const server = await serverWithList(t);
  const person = await openPage(browser, server.url);
  const { page } = person;
  await page.waitForSelector("#notify");
  assert.equal(await page.isVisible("#notify-topic"), false, "one topic: nothing to choose");
  assert.equal(await page.getAttribute("#notify-email", "autocomplete"), "email");

  await page.check("#adult"); // so that, were Enter to reach Start, a chat would begin
  // The button waits while the request is out.
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  await page.route("**/api/notify", async (route) => { await held; await route.continue(); });
  await signUp(page, "Ann.Early@Example.ORG");
  await page.waitForSelector('#notify-form button:disabled');
  release();
  await page.waitForSelector('#notify-form .notify-result:has-text("Thanks")');
  await page.unroute("**/api/notify");
  const thanks = await page.textContent("#notify-form .notify-result");
  assert.equal(await page.isEnabled("#notify-form button"), true);
  assert.equal(await page.isHidden("#chat"), true, "Enter in the e-mail field does not start a chat");
  await page.locator("#notify").scrollIntoViewIfNeeded();
  await screenshot(page, "notify-signed-up");

  // Trimmed and with the domain lowercased; the local part as given.
  const address = "Ann.Early@example.org";
  assert.deepEqual(exported(server.env, "news"), [address]);
  const stored = databaseBytes(server.env);
  assert.ok(stored.length > 0, "the database is on disk");
  for (const clear of [address, "Ann.Early", "ann.early", "example.org"]) {
    assert.equal(stored.includes(clear), false, `"${clear}" is not in the database in clear`);
  }
  assert.equal(statSync(server.env.EPHEMERA_NOTIFY_MASTER_KEY_PATH).mode & 0o777, 0o600);

  // Again: the same words (the page never tells whether an address was there), still once.
  assert.equal(await answered(page, "#notify-form", () => signUp(page, "Ann.Early@Example.ORG")), thanks);
  assert.deepEqual(exported(server.env, "news"), [address]);

  await page.click("#notify summary:text-is('Remove my address')");
  assert.equal(await page.isVisible('#notify details a[href="/privacy"]'), true, "the policy is one click away");
  await page.fill("#notify-remove-email", "Ann.Early@Example.ORG");
  const removed = await answered(page, "#notify-remove-form", () => page.click("#notify-remove-form button"));
  assert.match(removed, /^Done/);
  assert.deepEqual(exported(server.env, "news"), []);
  await page.locator("#notify").scrollIntoViewIfNeeded();
  await screenshot(page, "notify-removed");

  // Removing an address that is not there reads the same.
  await page.fill("#notify-remove-email", "nobody@example.org");
  assert.equal(await answered(page, "#notify-remove-form", () => page.click("#notify-remove-form button")), removed);

  assert.deepEqual(otherOrigins(person.requests, server.url), [], "nothing from another origin");
  assert.deepEqual(person.problems, []);
});

test("with several topics a select picks one, and removing takes the address off all of them", async (t) => {
  const server = await serverWithList(t, "news,releases");
  const { page, problems } = await openPage(browser, server.url);
  await page.waitForSelector("#notify-topic");
  assert.deepEqual(await page.$$eval("#notify-topic option", (options) => options.map((o) => o.value)), ["news", "releases"]);
  // A phone: the row wraps instead of scrolling sideways, in either theme.
  await page.click("#theme");
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= innerWidth), "no sideways scroll at 360 px");
  await page.locator("#notify").scrollIntoViewIfNeeded();
  await screenshot(page, "notify-topics-dark");

  await page.selectOption("#notify-topic", "releases");
  await signUp(page, "bo@example.org");
  await page.waitForSelector('#notify-form .notify-result:has-text("“releases”")');
  assert.equal(await page.inputValue("#notify-email"), "", "a confirmed address leaves the field");
  await page.selectOption("#notify-topic", "news");
  await signUp(page, "bo@example.org");
  await page.waitForSelector('#notify-form .notify-result:has-text("“news”")');
  assert.deepEqual(exported(server.env, "releases"), ["bo@example.org"]);
  assert.deepEqual(exported(server.env, "news"), ["bo@example.org"]);
  assert.match(operator(server.env, "count"), /^releases 1$/m);

  await page.click("#notify summary");
  await page.fill("#notify-remove-email", "bo@example.org");
  await page.press("#notify-remove-email", "Enter");
  await page.waitForSelector('#notify-remove-form .notify-result:has-text("Done")');
  assert.deepEqual(exported(server.env, "releases"), []);
  assert.deepEqual(exported(server.env, "news"), []);
  assert.deepEqual(problems, []);
});

test("past the server's limit the page says, in the server's words, when to try again", async (t) => {
  const server = await serverWithList(t, null, { EPHEMERA_MAX_NOTIFY_REQUESTS_PER_MINUTE: "2" });
  const { page } = await openPage(browser, server.url);
  await page.waitForSelector("#notify");
  for (let i = 0; i < 2; i++) {
    assert.match(await answered(page, "#notify-form", () => signUp(page, "cy@example.org")), /^Thanks/);
  }
  const refused = await answered(page, "#notify-form", () => signUp(page, "cy@example.org"));
  assert.match(refused, /try again in \d+/i);
  assert.equal(await page.getAttribute("#notify-form .notify-result", "class"), "notify-result problem");
  await page.locator("#notify").scrollIntoViewIfNeeded();
  await screenshot(page, "notify-rate-limited");
});

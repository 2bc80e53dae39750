// What the browser tests share: the real server binary, a real coturn, a cuttable TCP proxy
// (a network drop the server really sees), and Debian's Chromium driven by playwright-core.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const BINARY = process.env.EPHEMERA_TEST_BINARY ?? path.join(ROOT, "target/release/ephemera");
export const SCREENSHOTS = path.join(ROOT, "target/screenshots");
export const TURN_SECRET = "browser-test-secret";
/// When set, the page is served from this directory instead of the copy embedded in the
/// binary: for working on web/ against a server built earlier. Unset, the tests see exactly
/// what the binary serves.
const WEB_DIR = process.env.EPHEMERA_TEST_WEB_DIR;
const CONTENT_TYPES = { html: "text/html", js: "text/javascript", css: "text/css" };

/// Settings for tests: limits lifted, no proof of work, a short heartbeat so drops are seen.
const TEST_ENV = {
  EPHEMERA_LISTEN_ADDR: "127.0.0.1:0",
  EPHEMERA_MAX_CONNECTIONS_PER_MINUTE: "0",
  EPHEMERA_MAX_FINDS_PER_MINUTE: "0",
  EPHEMERA_MAX_MESSAGES_PER_SECOND: "0",
  EPHEMERA_MAX_MEDIA_PER_MINUTE: "0",
  EPHEMERA_POW_AUTO_THRESHOLD_PER_SECOND: "0",
  EPHEMERA_INTEREST_TIMEOUT_SECONDS: "0.2",
  EPHEMERA_HEARTBEAT_INTERVAL_SECONDS: "1",
  EPHEMERA_CLIENT_TIMEOUT_SECONDS: "3",
  EPHEMERA_RESUME_GRACE_SECONDS: "60",
  EPHEMERA_LOG_LEVEL: "warn",
  // The admin (metrics) listener on a port of its own, so servers never collide on 9898.
  EPHEMERA_METRICS_ADDR: "127.0.0.1:0",
};

/// Starts the release server on a free port; resolves once its banner names the address.
export async function startServer(settings = {}) {
  const child = spawn(BINARY, [], {
    env: { ...process.env, ...TEST_ENV, ...settings },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let banner = "";
  const url = await new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`server exited early (${code})`)));
    child.stdout.on("data", (chunk) => {
      banner += chunk;
      const match = banner.match(/open (http:\/\/127\.0\.0\.1:\d+)\//);
      if (match) resolve(match[1]);
    });
  });
  return { url, port: Number(new URL(url).port), stop: () => stopChild(child) };
}

/// A real coturn on 127.0.0.1 with the TURN REST shared secret, relaying between loopback peers.
export async function startTurn() {
  const port = await freePort();
  const child = spawn("turnserver", [
    "-n", "--no-cli", "--no-tls", "--no-dtls", "--fingerprint",
    "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", `--listening-port=${port}`,
    "--min-port=49200", "--max-port=49400", "--allow-loopback-peers",
    "--use-auth-secret", `--static-auth-secret=${TURN_SECRET}`, "--realm=ephemera.test",
    "--log-file=stdout", "--simple-log",
  ], { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout.on("data", (chunk) => { log += chunk; });
  await waitFor(() => log.includes("Total General servers"), 10000, "coturn to start");
  return { url: `turn:127.0.0.1:${port}?transport=udp`, port, log: () => log, stop: () => stopChild(child) };
}

/// A TCP proxy in front of the server whose connections can be cut, as a network drop would:
/// the server sees its sockets close without a WebSocket close frame. Before the cut they can
/// be stalled: what the server says is lost on the way, while what the page says still
/// arrives (the echo of a message sent just before a drop is never seen).
export async function startProxy(targetPort) {
  const sockets = new Set();
  const pairs = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    const pair = { client, upstream };
    pairs.add(pair);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => { sockets.delete(s); pairs.delete(pair); });
      s.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = server.address().port;
  return {
    url: `http://127.0.0.1:${port}`,
    cut() { for (const s of sockets) s.destroy(); },
    stall() {
      for (const { client, upstream } of pairs) {
        upstream.unpipe(client);
        upstream.on("data", () => {}); // keep reading, so the server is not held up
      }
    },
    stop() { for (const s of sockets) s.destroy(); server.close(); },
  };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
      "--autoplay-policy=no-user-gesture-required",
      // A page served by the test (WEB_DIR) has no address of its own, so Chromium would take
      // it for a public site and block its socket to 127.0.0.1.
      ...(WEB_DIR ? ["--disable-features=LocalNetworkAccessChecks"] : []),
    ],
  });
}

/// A fresh browser context (its own storage, like another person) on a phone-sized screen,
/// recording every request it makes so a test can check none left this server, and every
/// WebSocket with the frames it carried: { url, sent: [frame], received: [frame] }.
export async function openPage(browser, url, { width = 360, height = 740 } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  await context.grantPermissions(["camera", "microphone"], { origin: url });
  if (WEB_DIR) await serveWebFromDisk(context);
  const page = await context.newPage();
  const requests = [];
  const problems = [];
  const sockets = [];
  page.on("request", (request) => requests.push(request.url()));
  page.on("websocket", (socket) => {
    requests.push(socket.url());
    const record = { url: socket.url(), sent: [], received: [] };
    sockets.push(record);
    const parse = (payload) => { try { return JSON.parse(payload); } catch { return payload; } };
    socket.on("framesent", ({ payload }) => record.sent.push(parse(payload)));
    socket.on("framereceived", ({ payload }) => record.received.push(parse(payload)));
  });
  page.on("pageerror", (error) => problems.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(message.text());
  });
  await page.goto(url);
  return { page, context, requests, problems, sockets };
}

async function serveWebFromDisk(context) {
  await context.route((url) => url.pathname === "/" || url.pathname.startsWith("/static/"), async (route) => {
    const { pathname } = new URL(route.request().url());
    const name = pathname === "/" ? "index.html" : path.basename(pathname);
    const extension = name.split(".").pop();
    let body = readFileSync(path.join(WEB_DIR, name));
    if (name === "index.html") {
      // The server fills in the e-mail list's topics; keep what this server filled in.
      const served = await (await route.fetch()).text();
      const meta = served.match(/<meta name="ephemera-notify-topics"[^>]*>/)?.[0];
      if (meta) body = body.toString().replace(/<meta name="ephemera-notify-topics"[^>]*>/, meta);
    }
    route.fulfill({ body, contentType: CONTENT_TYPES[extension] });
  });
}

/// The frames of one type a page sent, over all its connections.
export function sentFrames(person, type) {
  return person.sockets.flatMap((socket) => socket.sent).filter((frame) => frame.type === type);
}

/// Every request went to this server's origin (the page and its socket), none elsewhere.
export function otherOrigins(requests, url) {
  const own = new URL(url);
  return requests.filter((r) => {
    const u = new URL(r);
    return u.host !== own.host || !["http:", "ws:"].includes(u.protocol);
  });
}

export async function startChat(page, { nick = "", interests = "", mode = "text", relayOnly = false } = {}) {
  await page.check("#adult");
  await page.check(`input[name="mode"][value="${mode}"]`);
  if (mode === "video") await page.setChecked("#relay-only", relayOnly);
  await page.fill("#interests", interests);
  await page.fill("#nick", nick);
  await page.click("#start");
}

/// Opens one page per nick (the i-th on urls[i], or on urls[0]), starts a text chat on each, and
/// waits until every one of them is chatting.
export async function chattingPair(browser, urls, { nicks = ["Ann", "Bo"], interests = "" } = {}) {
  const people = [];
  for (const [index, nick] of nicks.entries()) {
    const person = await openPage(browser, urls[index] ?? urls[0]);
    await startChat(person.page, { nick, interests });
    people.push(person);
  }
  for (const { page } of people) await page.waitForSelector('#chat[data-state="chatting"]');
  return people;
}

export async function send(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

/// The texts of the log's lines of one kind ("you", "stranger" or "system"), labels removed.
export function lines(page, who) {
  return page.$$eval(`#log li.${who}`, (items) => items.map((li) => li.childNodes[1]?.textContent ?? ""));
}

export function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  return page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });
}

export async function waitFor(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function freePort() {
  const server = net.createServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  return port;
}

async function stopChild(child) {
  if (child.exitCode !== null) return;
  child.kill("SIGTERM");
  await Promise.race([once(child, "exit"), new Promise((r) => setTimeout(r, 3000))]);
  if (child.exitCode === null) child.kill("SIGKILL");
}

// Video mode in a real Chromium with its fake camera and microphone: the two pages connect
// over WebRTC with offer, answer and candidates relayed by the server, directly or, in
// relay-only mode, through a real coturn that checks the server's minted TURN credentials.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import {
  startServer, startTurn, launchBrowser, openPage, startChat, send, screenshot, otherOrigins, waitFor, TURN_SECRET,
} from "./harness.mjs";

let browser;
let turn;
before(async () => {
  browser = await launchBrowser();
  turn = await startTurn();
});
after(async () => {
  await browser?.close();
  await turn?.stop();
});

async function videoPair(server, relayOnlyToggle = false) {
  const people = [];
  for (const nick of ["Ann", "Bo"]) {
    const person = await openPage(browser, server.url);
    await startChat(person.page, { nick, mode: "video", relayOnly: relayOnlyToggle });
    people.push(person);
  }
  for (const { page } of people) await page.waitForSelector('#chat[data-state="chatting"]');
  return people;
}

async function assertConnectedAndPlaying(page) {
  await waitFor(() => page.evaluate(() => window.ephemeraCall?.pc.connectionState === "connected"), 20000, "a connected RTCPeerConnection");
  // Playing: the remote video has frames and its clock moves.
  await waitFor(() => page.evaluate(() => {
    const video = document.getElementById("remote-video");
    return video.readyState >= 2 && !video.paused && video.currentTime > 0.5 && video.videoWidth > 0;
  }), 20000, "the stranger's video to play");
}

/// The types of the candidates the stranger offered, as this page's connection saw them.
function remoteCandidateTypes(page) {
  return page.evaluate(async () => {
    const stats = await window.ephemeraCall.pc.getStats();
    return [...stats.values()].filter((r) => r.type === "remote-candidate").map((r) => r.candidateType);
  });
}

test("video mode connects the two strangers and plays each one's camera on the other side", async (t) => {
  const server = await startServer({
    EPHEMERA_TURN_URLS: turn.url,
    EPHEMERA_TURN_SHARED_SECRET: TURN_SECRET,
  });
  t.after(server.stop);
  const [a, b] = await videoPair(server);
  await assertConnectedAndPlaying(a.page);
  await assertConnectedAndPlaying(b.page);
  // Text chat beside the video.
  await send(a.page, "can you see me?");
  await b.page.waitForSelector('#log li.stranger:has-text("can you see me?")');
  // The camera toggle turns the track off and says so.
  await a.page.click("#camera");
  assert.equal(await a.page.getAttribute("#camera", "aria-pressed"), "false");
  assert.equal(await a.page.evaluate(() => document.getElementById("local-video").srcObject.getVideoTracks()[0].enabled), false);
  await a.page.click("#camera");
  // Real time on purpose: the re-enabled camera paints a frame before the screenshot.
  await a.page.waitForTimeout(500);
  await screenshot(a.page, "video");
  for (const person of [a, b]) {
    assert.deepEqual(otherOrigins(person.requests, server.url), []);
    assert.deepEqual(person.problems, []);
  }
});

test("relay-only mode connects through coturn, and neither side is offered the other's address", async (t) => {
  const server = await startServer({
    EPHEMERA_TURN_URLS: turn.url,
    EPHEMERA_TURN_SHARED_SECRET: TURN_SECRET,
    EPHEMERA_RELAY_ONLY: "true",
  });
  t.after(server.stop);
  const [a, b] = await videoPair(server);
  await assertConnectedAndPlaying(a.page);
  await assertConnectedAndPlaying(b.page);
  for (const { page } of [a, b]) {
    assert.equal(await page.evaluate(() => window.ephemeraCall.localCandidateType()), "relay");
    const types = await remoteCandidateTypes(page);
    assert.ok(types.length > 0);
    assert.deepEqual([...new Set(types)], ["relay"], "only the relay's address is ever offered");
  }
  assert.match(await a.page.textContent("#status"), /through the relay/);
  await screenshot(b.page, "video-relay");
});

test("the user's relay-only toggle works on a server that does not force it", async (t) => {
  const server = await startServer({
    EPHEMERA_TURN_URLS: turn.url,
    EPHEMERA_TURN_SHARED_SECRET: TURN_SECRET,
  });
  t.after(server.stop);
  const [a, b] = await videoPair(server, true);
  await assertConnectedAndPlaying(a.page);
  await assertConnectedAndPlaying(b.page);
  assert.equal(await a.page.evaluate(() => window.ephemeraCall.localCandidateType()), "relay");
  await screenshot(a.page, "video-relay-toggle");
});

test("with a wrong TURN secret, relay-only video fails and says so, and text still works", async (t) => {
  const server = await startServer({
    EPHEMERA_TURN_URLS: turn.url,
    EPHEMERA_TURN_SHARED_SECRET: "not-the-secret",
    EPHEMERA_RELAY_ONLY: "true",
  });
  t.after(server.stop);
  const [a, b] = await videoPair(server);
  await a.page.waitForSelector('#status:has-text("video connection failed")', { timeout: 40000 });
  await send(b.page, "text still works");
  await a.page.waitForSelector('#log li.stranger:has-text("text still works")');
  assert.notEqual(await a.page.evaluate(() => window.ephemeraCall.pc.connectionState), "connected");
  await screenshot(a.page, "video-failed");
});

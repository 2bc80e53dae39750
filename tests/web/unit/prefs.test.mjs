// Preferences: only known, well-formed values are read back; nothing else is stored.
import { test } from "node:test";
import assert from "node:assert/strict";

import { loadPrefs, savePrefs, DEFAULT_PREFS } from "../../../web/prefs.js";

function memoryStorage(initial) {
  const map = new Map(initial ? [["ephemera.prefs", initial]] : []);
  return { getItem: (k) => map.get(k) ?? null, setItem: (k, v) => map.set(k, v), map };
}

test("defaults: text mode (video off), automatic theme, relay off", () => {
  assert.deepEqual(loadPrefs(memoryStorage()), DEFAULT_PREFS);
  assert.equal(DEFAULT_PREFS.mode, "text");
});

test("saved preferences come back, unknown keys are not stored", () => {
  const storage = memoryStorage();
  savePrefs({ ...DEFAULT_PREFS, mode: "video", theme: "dark", interests: "chess", nick: "Ann" }, storage);
  assert.ok(!storage.map.get("ephemera.prefs").includes("Ann"), "a nickname is never stored");
  const prefs = loadPrefs(storage);
  assert.equal(prefs.mode, "video");
  assert.equal(prefs.theme, "dark");
  assert.equal(prefs.interests, "chess");
});

test("broken or hostile values fall back to the defaults", () => {
  assert.deepEqual(loadPrefs(memoryStorage("{not json")), DEFAULT_PREFS);
  const prefs = loadPrefs(memoryStorage(JSON.stringify({ mode: "telepathy", theme: 3, relayOnly: "yes" })));
  assert.deepEqual(prefs, DEFAULT_PREFS);
});

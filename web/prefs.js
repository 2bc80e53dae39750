// Preferences kept in this browser's localStorage, and nothing else: no nickname, no history.
// Anything unreadable falls back to the defaults, so a hand-edited value cannot break the page.

const KEY = "ephemera.prefs";

export const DEFAULT_PREFS = Object.freeze({
  mode: "text", // video is off by default
  interests: "",
  theme: "auto", // "auto" follows the system; "light" or "dark" pin it
  relayOnly: false,
  camera: true,
  microphone: true,
});

const VALID = {
  mode: (v) => v === "text" || v === "video",
  interests: (v) => typeof v === "string" && v.length <= 400,
  theme: (v) => v === "auto" || v === "light" || v === "dark",
  relayOnly: (v) => typeof v === "boolean",
  camera: (v) => typeof v === "boolean",
  microphone: (v) => typeof v === "boolean",
};

export function loadPrefs(storage = globalThis.localStorage) {
  let stored = {};
  try {
    stored = JSON.parse(storage.getItem(KEY) ?? "{}") ?? {};
  } catch {
    stored = {};
  }
  const prefs = { ...DEFAULT_PREFS };
  for (const [name, valid] of Object.entries(VALID)) {
    if (valid(stored[name])) prefs[name] = stored[name];
  }
  return prefs;
}

export function savePrefs(prefs, storage = globalThis.localStorage) {
  const known = {};
  for (const [name, valid] of Object.entries(VALID)) {
    if (valid(prefs[name])) known[name] = prefs[name];
  }
  try {
    storage.setItem(KEY, JSON.stringify(known));
  } catch {
    // Storage full or disabled (private mode): preferences are a convenience only.
  }
}

// The page: lobby, chat, media and video, wired to the protocol client (client.js), the
// video call (call.js) and the stored preferences (prefs.js).
import { ChatClient, errorText, parseInterests, mediaProblem } from "./client.js";
import { VideoCall } from "./call.js";
import { loadPrefs, savePrefs } from "./prefs.js";

const $ = (id) => document.getElementById(id);
const ENDED = {
  you_left: "You left the chat.",
  stranger_left: "The stranger left the chat.",
  stranger_lost: "The stranger's connection was lost.",
  you_reported: "You reported the stranger. The chat has ended.",
  server_shutdown: "The server is restarting. Please come back in a moment.",
};
/// Voice notes are Opus at this rate, so a minute is about 240 KB.
const VOICE_BITS_PER_SECOND = 32000;
const VOICE_MAX_SECONDS = 120;

const prefs = loadPrefs();
const client = new ChatClient(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
let findOnHello = false;
let typingTimer = null;
let call = null;
let localStream = null;
let recorder = null;
let wentOffline = false;
const objectUrls = [];

// ---- preferences and theme -------------------------------------------------------------------

function applyTheme() {
  const dark = prefs.theme === "dark" || (prefs.theme === "auto" && matchMedia("(prefers-color-scheme: dark)").matches);
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  $("theme").setAttribute("aria-pressed", String(dark));
}

function currentMode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

function showModeOptions() {
  $("relay-line").hidden = currentMode() !== "video";
}

applyTheme();
document.querySelector(`input[name="mode"][value="${prefs.mode}"]`).checked = true;
$("interests").value = prefs.interests;
$("relay-only").checked = prefs.relayOnly;
showModeOptions();
for (const radio of document.querySelectorAll('input[name="mode"]')) radio.addEventListener("change", showModeOptions);

$("theme").addEventListener("click", () => {
  prefs.theme = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  savePrefs(prefs);
  applyTheme();
});

// ---- the log ---------------------------------------------------------------------------------

function addLine(who, content, localId) {
  const item = document.createElement("li");
  item.className = who;
  if (localId) item.dataset.localId = localId;
  const label = document.createElement("strong");
  label.textContent = who === "you" ? "You: " : who === "stranger" ? "Stranger: " : "";
  item.append(label, content);
  $("log").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function showOnline(count) {
  $("online").textContent = `${count} ${count === 1 ? "person" : "people"} online now`;
}

function say(text) { addLine("system", document.createTextNode(text)); }
function status(text) { $("status").textContent = text; }

function clearLog() {
  for (const url of objectUrls.splice(0)) URL.revokeObjectURL(url);
  $("log").replaceChildren();
}

function pendingLine(localId) {
  return $("log").querySelector(`li[data-local-id="${localId}"]`);
}

function mediaElement(frame) {
  const bytes = Uint8Array.from(atob(frame.data), (c) => c.charCodeAt(0));
  const url = URL.createObjectURL(new Blob([bytes], { type: frame.mime }));
  objectUrls.push(url);
  const who = frame.from === "you" ? "you" : "the stranger";
  if (frame.kind === "image") {
    const img = document.createElement("img");
    img.src = url;
    img.alt = `Image from ${who}`;
    return img;
  }
  const audio = document.createElement("audio");
  audio.controls = true;
  audio.src = url;
  audio.setAttribute("aria-label", `Voice note from ${who}`);
  return audio;
}

// ---- the chat --------------------------------------------------------------------------------

/// The chat's state on the page, for styles and tests: idle, waiting or chatting.
function showState() {
  $("chat").dataset.state = client.state;
}
for (const type of ["hello", "waiting", "matched", "ended", "lost", "left"]) client.addEventListener(type, showState);

function setIdleControls(idle) {
  $("next").textContent = idle ? "New chat" : "Next";
  $("stop").textContent = idle ? "Leave" : "Stop";
  $("report").disabled = idle;
}

async function start() {
  if (!$("adult").checked) {
    $("adult-hint").hidden = false;
    $("adult").focus();
    return;
  }
  $("adult-hint").hidden = true;
  prefs.mode = currentMode();
  prefs.interests = $("interests").value;
  prefs.relayOnly = $("relay-only").checked;
  savePrefs(prefs);
  $("lobby").hidden = true;
  $("chat").hidden = false;
  $("video").hidden = prefs.mode !== "video";
  status("Connecting…");
  if (prefs.mode === "video") await openCamera();
  findOnHello = true;
  client.connect();
  $("text").focus();
}

function find() {
  client.find({
    mode: prefs.mode,
    interests: parseInterests(prefs.interests, client.limits),
    nick: $("nick").value.trim() || null,
  });
}

function backToLobby() {
  client.close();
  endCall();
  closeCamera();
  clearLog();
  $("chat").hidden = true;
  $("lobby").hidden = false;
  $("start").focus();
}

client.addEventListener("hello", (e) => {
  const hello = e.detail;
  showOnline(hello.online);
  if (findOnHello) {
    findOnHello = false;
    find();
  } else if (hello.resumed && hello.state === "chatting") {
    status("Reconnected.");
  } else if (hello.state === "waiting") {
    status("Looking for a stranger…");
  }
});
client.addEventListener("lost", () => {
  endCall();
  say("The connection was lost for too long and the chat has ended.");
  status("");
  setIdleControls(true);
});
client.addEventListener("left", () => {
  status("You left the queue.");
  setIdleControls(true);
});
client.addEventListener("working", () => status("Checking you are not a bot…"));
client.addEventListener("waiting", (e) => {
  showOnline(e.detail.online);
  setIdleControls(false);
  status("Looking for a stranger…");
});
client.addEventListener("matched", (e) => {
  clearLog();
  setIdleControls(false);
  const { stranger, common, initiator } = e.detail;
  const name = stranger.nick ? ` (${stranger.nick})` : "";
  const shared = common.length ? ` You both like ${common.join(", ")}.` : "";
  status(`You're now chatting with a stranger${name}.${shared}`);
  if (e.detail.mode === "video") startCall(initiator);
  refreshOnline();
});
client.addEventListener("msg", (e) => {
  const { from, text, localId } = e.detail;
  const pending = localId && pendingLine(localId);
  if (pending) {
    pending.classList.remove("pending");
    pending.removeAttribute("aria-busy");
  } else {
    addLine(from, document.createTextNode(text));
  }
});
client.addEventListener("media", (e) => addLine(e.detail.from, mediaElement(e.detail)));
client.addEventListener("typing", (e) => { $("typing").hidden = !e.detail.active; });
client.addEventListener("signal", (e) => call?.handle(e.detail.data));
client.addEventListener("stranger_away", () => {
  $("typing").hidden = true;
  status("The stranger's connection dropped, waiting…");
});
client.addEventListener("stranger_back", () => status("The stranger is back."));
client.addEventListener("ended", (e) => {
  $("typing").hidden = true;
  endCall();
  say(ENDED[e.detail.reason] || "The chat ended.");
  status("");
  setIdleControls(true);
});
client.addEventListener("error", (e) => say(errorText(e.detail)));
client.addEventListener("unsent", (e) => {
  const line = pendingLine(e.detail.localId);
  if (line) {
    line.classList.replace("pending", "failed");
    line.title = e.detail.reason;
    line.append(document.createTextNode(` (${e.detail.reason})`));
  }
});
client.addEventListener("disconnected", () => {
  status(navigator.onLine ? "Connection lost, reconnecting…" : "You are offline; the chat will resume when the network is back.");
});

$("start").addEventListener("click", start);
$("compose").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value;
  try {
    const localId = client.say(text);
    const line = addLine("you", document.createTextNode(text), localId);
    line.classList.add("pending");
    line.setAttribute("aria-busy", "true");
    $("text").value = "";
    clearTimeout(typingTimer);
    client.typing(false);
  } catch (error) {
    say(error.message);
  }
});
$("text").addEventListener("input", () => {
  clearTimeout(typingTimer);
  if (!$("text").value) return client.typing(false);
  client.typing(true);
  typingTimer = setTimeout(() => client.typing(false), 3000);
});
$("next").addEventListener("click", () => {
  if (client.state === "idle") find();
  else client.next();
});
$("stop").addEventListener("click", () => {
  if (client.state === "idle") backToLobby();
  else client.leave();
});
$("report").addEventListener("click", () => $("report-dialog").showModal());
$("report-dialog").addEventListener("close", () => {
  if ($("report-dialog").returnValue !== "report") return;
  const reason = $("report-dialog").querySelector('input[name="reason"]:checked').value;
  client.report(reason);
});
document.addEventListener("keydown", (e) => {
  if (e.key !== "Escape" || $("chat").hidden || $("report-dialog").open) return;
  e.preventDefault();
  $("next").click();
});

// ---- images and voice notes ------------------------------------------------------------------

function readBase64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] ?? "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

/// A photo straight off a phone is often over the limit or in a type not allowed (HEIC);
/// re-encoding it smaller as JPEG is what the sender wanted anyway.
async function shrinkImage(file, maxBytes) {
  const bitmap = await createImageBitmap(file);
  let scale = Math.min(1, 1600 / Math.max(bitmap.width, bitmap.height));
  for (let attempt = 0; attempt < 5; attempt++, scale *= 0.7) {
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
    if (blob && blob.size <= maxBytes) return blob;
  }
  return null;
}

async function sendImage(file) {
  try {
    let blob = file;
    if (mediaProblem(client.limits, "image", file.type, file.size)) {
      blob = (await shrinkImage(file, client.limits?.max_media_bytes ?? 1 << 20).catch(() => null)) ?? file;
    }
    client.sendMedia("image", blob.type, await readBase64(blob), blob.size);
  } catch (error) {
    say(error.message);
  }
}

$("image").addEventListener("click", () => $("image-file").click());
$("image-file").addEventListener("change", () => {
  const file = $("image-file").files[0];
  $("image-file").value = "";
  if (file) sendImage(file);
});
document.addEventListener("paste", (e) => {
  if ($("chat").hidden) return;
  const item = [...(e.clipboardData?.items ?? [])].find((i) => i.kind === "file" && i.type.startsWith("image/"));
  if (!item) return;
  e.preventDefault();
  sendImage(item.getAsFile());
});

async function toggleVoiceNote() {
  if (recorder) {
    recorder.stop();
    return;
  }
  const type = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm"].find((t) => MediaRecorder.isTypeSupported(t));
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch {
    return say("The microphone is blocked, so voice notes can't be recorded.");
  }
  const maxBytes = client.limits?.max_media_bytes ?? 1 << 20;
  const maxSeconds = Math.min(VOICE_MAX_SECONDS, Math.floor((maxBytes * 8 * 0.9) / VOICE_BITS_PER_SECOND));
  const chunks = [];
  recorder = new MediaRecorder(stream, { mimeType: type, audioBitsPerSecond: VOICE_BITS_PER_SECOND });
  const started = Date.now();
  const tick = setInterval(() => {
    const seconds = Math.floor((Date.now() - started) / 1000);
    $("voice").textContent = `Stop and send (${seconds} s)`;
    if (seconds >= maxSeconds) recorder?.stop();
  }, 250);
  recorder.ondataavailable = (e) => chunks.push(e.data);
  recorder.onstop = async () => {
    clearInterval(tick);
    for (const track of stream.getTracks()) track.stop();
    recorder = null;
    $("voice").textContent = "Voice note";
    $("voice").setAttribute("aria-pressed", "false");
    const blob = new Blob(chunks, { type: type.split(";")[0] });
    try {
      client.sendMedia("audio", blob.type, await readBase64(blob), blob.size);
    } catch (error) {
      say(error.message);
    }
  };
  recorder.start();
  $("voice").setAttribute("aria-pressed", "true");
  $("voice").textContent = "Stop and send (0 s)";
}
$("voice").addEventListener("click", toggleVoiceNote);

// ---- video -----------------------------------------------------------------------------------

async function openCamera() {
  try {
    localStream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    for (const track of localStream.getVideoTracks()) track.enabled = prefs.camera;
    for (const track of localStream.getAudioTracks()) track.enabled = prefs.microphone;
    $("local-video").srcObject = localStream;
  } catch {
    localStream = null;
    say("The camera is blocked or missing; you will see the stranger, who won't see you.");
  }
  showToggles();
}

function closeCamera() {
  for (const track of localStream?.getTracks() ?? []) track.stop();
  localStream = null;
  $("local-video").srcObject = null;
}

function showToggles() {
  $("camera").textContent = prefs.camera ? "Camera on" : "Camera off";
  $("camera").setAttribute("aria-pressed", String(prefs.camera));
  $("microphone").textContent = prefs.microphone ? "Microphone on" : "Microphone off";
  $("microphone").setAttribute("aria-pressed", String(prefs.microphone));
}

function toggle(kind) {
  prefs[kind] = !prefs[kind];
  savePrefs(prefs);
  const tracks = kind === "camera" ? localStream?.getVideoTracks() : localStream?.getAudioTracks();
  for (const track of tracks ?? []) track.enabled = prefs[kind];
  showToggles();
}
$("camera").addEventListener("click", () => toggle("camera"));
$("microphone").addEventListener("click", () => toggle("microphone"));

function startCall(initiator) {
  endCall();
  const hello = client.hello;
  const relayOnly = hello.relay_only || prefs.relayOnly;
  const hasTurn = hello.ice_servers.some((s) => s.urls.some((u) => /^turns?:/.test(u)));
  if (relayOnly && !hasTurn) {
    say("This server has no relay, so video would show the stranger your address. Untick \"relay only\" to allow it, or chat by text.");
    return;
  }
  call = new VideoCall({
    signal: (data) => client.signal(data),
    iceServers: hello.ice_servers,
    relayOnly,
    initiator,
    localStream,
  });
  window.ephemeraCall = call; // for the browser tests' look at the connection
  call.addEventListener("remote", (ev) => { $("remote-video").srcObject = ev.detail.stream; });
  call.addEventListener("state", (ev) => {
    if (ev.detail.state === "connected") status(`Video connected${relayOnly ? " through the relay" : ""}.`);
    if (ev.detail.state === "failed") status("The video connection failed; text still works.");
  });
  call.addEventListener("failed", (ev) => say(`Video problem: ${ev.detail.message}`));
  call.start().catch((error) => say(`Video problem: ${error.message}`));
}

function endCall() {
  call?.close();
  call = null;
  $("remote-video").srcObject = null;
}

// ---- connection and lifetime -----------------------------------------------------------------

addEventListener("offline", () => {
  wentOffline = true;
  status("You are offline; the chat will resume when the network is back.");
});
addEventListener("online", () => {
  if (!wentOffline) return;
  wentOffline = false;
  client.networkBack();
});
// Closing the tab (or leaving the page) ends the chat at once, and forgets the token.
addEventListener("pagehide", () => client.close());

async function refreshOnline() {
  try {
    const stats = await (await fetch("/stats")).json();
    showOnline(stats.online);
  } catch { /* offline: keep the last number */ }
}
refreshOnline();
setInterval(refreshOnline, 10000);

// The page: lobby, chat, media and video, wired to the protocol client (client.js), the
// video call (call.js), the stored preferences (prefs.js) and the e-mail list (notify.js).
import { ChatClient, errorText, parseInterests, mediaProblem } from "./client.js";
import { VideoCall } from "./call.js";
import { loadPrefs, savePrefs } from "./prefs.js";
import { topicsFrom, signUp, remove } from "./notify.js";

const $ = (id) => document.getElementById(id);
/// How a chat ended, in the log and in the status line, where people look.
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
/// Recording formats to try, best first; each is one the server's default list takes.
const VOICE_TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm"];

const prefs = loadPrefs();
const client = new ChatClient(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
let findOnHello = false;
let typingTimer = null;
let call = null;
let localStream = null;
let recorder = null;
let wentOffline = false;
/// The page's words for an idle session: how the last chat ended, or that the queue was left.
let idleStatus = "";
/// A resumed connection's replay may end the old chat and start a new one at once (a `next`
/// sent just before the drop); the old chat's end is then kept at the top of the new log.
let replaying = false;
let endedWhileAway = "";
const objectUrls = [];

// ---- preferences and theme -------------------------------------------------------------------

function applyTheme() {
  const dark = prefs.theme === "dark" || (prefs.theme === "auto" && matchMedia("(prefers-color-scheme: dark)").matches);
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  // A toggle: its name stays "Dark theme", pressed when dark; the on/off is for the eye.
  $("theme").setAttribute("aria-pressed", String(dark));
  $("theme-state").textContent = dark ? "on" : "off";
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

function addLine(who, content, id) {
  const item = document.createElement("li");
  item.className = who;
  if (id) item.dataset.id = id;
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

/// The line of a message this page sent, by the id the client gave it.
function sentLine(id) {
  return [...$("log").querySelectorAll("li.you[data-id]")].find((li) => li.dataset.id === id);
}

/// A line of ours, shown at once and marked pending until the server's echo confirms it.
function addPendingLine(content, id) {
  const line = addLine("you", content, id);
  line.classList.add("pending");
  line.setAttribute("aria-busy", "true");
  return line;
}

function base64Blob(frame) {
  return new Blob([Uint8Array.from(atob(frame.data), (c) => c.charCodeAt(0))], { type: frame.mime });
}

function mediaElement(kind, blob, from) {
  const url = URL.createObjectURL(blob);
  objectUrls.push(url);
  const who = from === "you" ? "you" : "the stranger";
  if (kind === "image") {
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

/// The controls for the chat's state: between chats nothing can be said, so the message box
/// and media buttons are disabled and say why, and Next and Stop say what they will do.
/// The state is also on the page for styles and tests: idle, waiting or chatting.
function showControls() {
  const state = client.state;
  const inChat = client.inChat;
  $("chat").dataset.state = state;
  const text = $("text");
  text.disabled = !inChat;
  $("send").disabled = !inChat;
  text.placeholder = inChat ? "Say hi"
    : state === "waiting" ? "Waiting for a stranger…"
    : state === "chatting" ? "Leaving this chat…"
    : "Not in a chat: New chat (Esc) meets someone";
  // Media is not held while offline, so the buttons wait for the connection too.
  $("image").disabled = $("voice").disabled = !(inChat && client.connected);
  if (!voiceType()) {
    $("voice").disabled = true;
    $("voice").title = "Your browser can't record in a format the server takes";
  }
  $("next").textContent = state === "idle" ? "New chat" : "Next";
  $("stop").textContent = state === "idle" ? "Leave" : "Stop";
  $("report").disabled = !(inChat && client.connected);
  if (!inChat) {
    clearTimeout(typingTimer);
    showTyping(false);
    if (recorder) stopRecording(false);
  }
  // A disabled box drops the focus; the chat's end moves it to New chat (focusNext).
}
for (const type of ["hello", "waiting", "matched", "ended", "lost", "left", "leaving", "disconnected"]) {
  client.addEventListener(type, showControls);
}

/// The indicator's line keeps its space while hidden, so the message box never moves.
function showTyping(active) {
  $("typing").classList.toggle("active", active);
}

/// The status line between chats, and the words it comes back to after a reconnect.
function idle(words) {
  idleStatus = words;
  status(words);
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
  idleStatus = "";
  showControls();
  if (prefs.mode === "video") await openCamera();
  findOnHello = true;
  client.connect();
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

/// The chatter asked for something new: an earlier chat's end is no news any more.
function chatterActed() {
  replaying = false;
  endedWhileAway = "";
}

client.addEventListener("hello", (e) => {
  const hello = e.detail;
  showOnline(hello.online);
  replaying = hello.resumed;
  if (findOnHello) {
    findOnHello = false;
    find();
  } else if (client.intent) {
    status("Reconnected."); // what was asked for while away is under way
  } else if (hello.resumed && hello.state === "chatting") {
    status("Reconnected.");
  } else if (hello.state === "waiting") {
    status("Looking for a stranger…");
  } else {
    status(idleStatus || "Not in a chat.");
  }
});
client.addEventListener("lost", () => {
  endCall();
  say("The connection was lost for too long and the chat has ended.");
  idle("The connection was lost for too long, so the chat ended.");
  focusNext();
});
client.addEventListener("left", () => {
  idle("You left the queue.");
  if (!client.connected) showConnectionLost();
});
client.addEventListener("working", () => status("Checking you are not a bot…"));
client.addEventListener("waiting", (e) => {
  showOnline(e.detail.online);
  status("Looking for a stranger…");
});
client.addEventListener("matched", (e) => {
  clearLog();
  $("text").value = ""; // a draft for the last stranger is not for this one
  if (endedWhileAway) say(`While you were away: ${endedWhileAway}`);
  chatterActed();
  const { stranger, common, initiator } = e.detail;
  const name = stranger.nick ? ` (${stranger.nick})` : "";
  const shared = common.length ? ` You both like ${common.join(", ")}.` : "";
  status(`You're now chatting with a stranger${name}.${shared}`);
  // Straight to the message box, unless the chatter is busy in another field.
  if ([document.body, $("next"), $("start"), null].includes(document.activeElement)) $("text").focus();
  if (e.detail.mode === "video") startCall(initiator);
  refreshOnline();
});

/// A `msg` or `media`: the echo of ours confirms its pending line (matched by id, so two
/// identical messages are told apart); anything else is a new line.
function showMessage(frame, content) {
  const line = frame.from === "you" && frame.id ? sentLine(frame.id) : null;
  if (!line) return addLine(frame.from, content());
  line.classList.remove("pending", "failed");
  line.removeAttribute("aria-busy");
  line.querySelector(".problem")?.remove();
}
client.addEventListener("msg", (e) => showMessage(e.detail, () => document.createTextNode(e.detail.text)));
client.addEventListener("media", (e) => showMessage(e.detail, () => mediaElement(e.detail.kind, base64Blob(e.detail), e.detail.from)));
client.addEventListener("typing", (e) => showTyping(e.detail.active));
client.addEventListener("signal", (e) => call?.handle(e.detail.data));
client.addEventListener("stranger_away", () => {
  showTyping(false);
  status("The stranger's connection dropped, waiting…");
});
client.addEventListener("stranger_back", () => status("The stranger is back."));
client.addEventListener("ended", (e) => {
  endCall();
  const words = ENDED[e.detail.reason] || "The chat ended.";
  say(words);
  idle(words);
  if (replaying) endedWhileAway = words;
  focusNext();
});

/// Once a chat is over, keyboard focus goes to New chat, the next thing to do (the message
/// box is disabled, and would leave the focus on the page's body). Someone still typing a
/// sentence into it must not start a chat by a space or Enter: while keys keep coming, less
/// than a second apart, the button ignores them; a deliberate press after a pause works.
let lastKeyAt = -Infinity;
let keyGapMs = Infinity;
let nextFocusedForYou = false;
function focusNext() {
  const active = document.activeElement;
  if (active && active !== document.body && !$("chat").contains(active)) return;
  nextFocusedForYou = true;
  $("next").focus();
}
document.addEventListener("keydown", (e) => {
  keyGapMs = e.timeStamp - lastKeyAt;
  lastKeyAt = e.timeStamp;
}, true);
$("next").addEventListener("keydown", (e) => {
  if (!nextFocusedForYou || (e.key !== " " && e.key !== "Enter")) return;
  if (keyGapMs < 1000) e.preventDefault();
  else nextFocusedForYou = false;
});
$("next").addEventListener("blur", () => { nextFocusedForYou = false; });
// Outside a chat the controls are disabled, so `not_chatting` only comes in a race with the
// chat's end, which the log already shows; a refused message is marked on its own line.
client.addEventListener("error", (e) => { if (e.detail.code !== "not_chatting") say(errorText(e.detail)); });
client.addEventListener("unsent", (e) => {
  const line = sentLine(e.detail.id);
  if (!line) return say(e.detail.reason);
  line.classList.replace("pending", "failed");
  line.removeAttribute("aria-busy");
  const problem = document.createElement("span");
  problem.className = "problem";
  problem.textContent = ` ${e.detail.reason}`;
  line.append(problem);
});
/// What will happen once the connection is back, when the chatter asked for it while away.
function intentWords() {
  const intent = client.intent;
  if (!intent) return null;
  if (intent.type === "next") return "Looking for someone new once reconnected…";
  if (intent.type === "report") return "You reported the stranger; reconnecting to end the chat…";
  // Leaving the queue is done at once: the idle status says so.
  return client.state === "chatting" ? "You left the chat; reconnecting…" : null;
}
client.addEventListener("intent", showConnectionLost);

function showConnectionLost() {
  const later = intentWords();
  if (later) {
    status(later);
  } else if (client.state === "idle") {
    // Keep how the chat ended in view (a restarting server closes right after saying so).
    status(`${idleStatus} ${navigator.onLine ? "Reconnecting…" : "You are offline."}`.trim());
  } else {
    status(navigator.onLine ? "Connection lost, reconnecting…" : "You are offline; the chat will resume when the network is back.");
  }
}
client.addEventListener("disconnected", showConnectionLost);

$("start").addEventListener("click", start);
$("compose").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value;
  try {
    const id = client.say(text);
    addPendingLine(document.createTextNode(text), id);
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
  chatterActed();
  if (client.state === "idle") find();
  // Already looking: a `next` would only repeat it, and nothing would show.
  else if (client.state === "waiting") status("Still looking for a stranger…");
  else client.next();
});
$("stop").addEventListener("click", () => {
  chatterActed();
  if (client.state === "idle") backToLobby();
  else client.leave();
});
/// A report needs a reason the chatter chose: none is ticked, and Report waits for one.
function reportReason() {
  return $("report-dialog").querySelector('input[name="reason"]:checked')?.value ?? null;
}
$("report").addEventListener("click", () => {
  for (const radio of $("report-dialog").querySelectorAll('input[name="reason"]')) radio.checked = false;
  $("report-send").disabled = true;
  $("report-dialog").returnValue = "";
  $("report-dialog").showModal();
});
$("report-dialog").addEventListener("change", () => { $("report-send").disabled = !reportReason(); });
$("report-dialog").addEventListener("close", () => {
  const reason = reportReason();
  if ($("report-dialog").returnValue !== "report" || !reason) return;
  chatterActed();
  client.report(reason);
});
document.addEventListener("keydown", (e) => {
  if (e.key !== "Escape" || $("chat").hidden || $("report-dialog").open) return;
  // Esc while composing with an input method cancels the composition, nothing more.
  if (e.isComposing || e.keyCode === 229) return;
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

/// Sends an image or voice note and shows it at once as pending, like a message.
async function sendMedia(kind, blob) {
  try {
    const id = client.sendMedia(kind, blob.type, await readBase64(blob), blob.size);
    addPendingLine(mediaElement(kind, blob, "you"), id);
  } catch (error) {
    say(error.message);
  }
}

async function sendImage(file) {
  let blob = file;
  if (mediaProblem(client.limits, "image", file.type, file.size)) {
    blob = (await shrinkImage(file, client.limits?.max_media_bytes ?? 1 << 20).catch(() => null)) ?? file;
  }
  await sendMedia("image", blob);
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

/// Stops the voice note being recorded; it is sent only when the chatter asked, not when
/// the chat ended under it.
function stopRecording(send) {
  recorder.send = send;
  if (recorder.state !== "inactive") recorder.stop(); // it may be stopping already
}

/// The first recording format both this browser and the server take, or undefined.
function voiceType() {
  const allowed = client.limits?.media_mime_types;
  return VOICE_TYPES.find((type) => globalThis.MediaRecorder?.isTypeSupported?.(type)
    && (!allowed || allowed.includes(type.split(";")[0])));
}

async function toggleVoiceNote() {
  if (recorder) {
    stopRecording(true);
    return;
  }
  const type = voiceType();
  if (!type) return showControls(); // the button says why
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
    if (seconds >= maxSeconds && recorder) stopRecording(true);
  }, 250);
  recorder.ondataavailable = (e) => chunks.push(e.data);
  recorder.onstop = async () => {
    const send = recorder.send;
    clearInterval(tick);
    for (const track of stream.getTracks()) track.stop();
    recorder = null;
    $("voice").textContent = "Voice note";
    $("voice").setAttribute("aria-pressed", "false");
    if (send) await sendMedia("audio", new Blob(chunks, { type: type.split(";")[0] }));
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

// ---- the e-mail list ------------------------------------------------------------------------

/// The lobby's "tell me what's new" forms, hidden in the HTML so nothing flashes: shown only
/// when the server offers the list, with a topic to pick only when it offers more than one.
function offerList() {
  const topics = topicsFrom(document.querySelector('meta[name="ephemera-notify-topics"]')?.content);
  if (!topics) return;
  $("notify-topic").replaceChildren(...topics.map((topic) => new Option(topic, topic)));
  $("notify-topic").hidden = topics.length < 2;
  $("notify").hidden = false;
}

/// Each form is its own (Enter in its field sends only it, never starts a chat); its button
/// waits while the request is out, and its live line says how it went.
function sendsToList(form, send) {
  const button = form.querySelector("button");
  const result = form.querySelector(".notify-result");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (button.disabled) return;
    button.disabled = true;
    result.classList.remove("problem");
    result.textContent = "Sending…"; // also makes the same answer twice be read out again
    // Only the latest answer stays on screen: the other form's line is cleared.
    for (const line of document.querySelectorAll("#notify .notify-result")) if (line !== result) line.textContent = "";
    const outcome = await send();
    button.disabled = false;
    result.classList.toggle("problem", !outcome.ok);
    result.textContent = outcome.message;
    if (outcome.ok) form.querySelector("input[type=email]").value = "";
  });
}
sendsToList($("notify-form"), () => signUp($("notify-email").value, $("notify-topic").value, { nameTopic: !$("notify-topic").hidden }));
sendsToList($("notify-remove-form"), () => remove($("notify-remove-email").value));
offerList();

// ---- connection and lifetime -----------------------------------------------------------------

addEventListener("offline", () => {
  wentOffline = true;
  showConnectionLost();
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

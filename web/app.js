// The page: lobby and text chat, wired to the protocol client.
import { ChatClient } from "./client.js";

const $ = (id) => document.getElementById(id);
const ENDED = {
  you_left: "You left the chat.",
  stranger_left: "The stranger left the chat.",
  stranger_lost: "The stranger's connection was lost.",
  you_reported: "You reported the stranger. The chat has ended.",
  server_shutdown: "The server is restarting. Please come back in a moment.",
};

const client = new ChatClient(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
let typingTimer = null;

function line(who, text) {
  const item = document.createElement("li");
  item.className = who;
  const label = document.createElement("strong");
  label.textContent = who === "you" ? "You: " : who === "stranger" ? "Stranger: " : "";
  item.append(label, document.createTextNode(text));
  $("log").append(item);
  item.scrollIntoView({ block: "end" });
}

function status(text) { $("status").textContent = text; }

async function refreshOnline() {
  try {
    const stats = await (await fetch("/stats")).json();
    $("online").textContent = stats.online;
  } catch { /* offline: keep the last number */ }
}

client.addEventListener("hello", (e) => {
  $("online").textContent = e.detail.online;
  if (e.detail.resumed) status(e.detail.state === "chatting" ? "Reconnected." : "");
});
client.addEventListener("working", () => status("Checking you are not a bot…"));
client.addEventListener("waiting", (e) => {
  $("online").textContent = e.detail.online;
  status("Looking for a stranger…");
});
client.addEventListener("matched", (e) => {
  $("log").replaceChildren();
  const { stranger, common } = e.detail;
  const name = stranger.nick ? ` (${stranger.nick})` : "";
  const shared = common.length ? ` You both like ${common.join(", ")}.` : "";
  status(`You're now chatting with a stranger${name}.${shared}`);
});
client.addEventListener("msg", (e) => line(e.detail.from, e.detail.text));
client.addEventListener("typing", (e) => { $("typing").hidden = !e.detail.active; });
client.addEventListener("stranger_away", () => status("The stranger's connection dropped, waiting…"));
client.addEventListener("stranger_back", () => status("The stranger is back."));
client.addEventListener("ended", (e) => { $("typing").hidden = true; line("system", ENDED[e.detail.reason] || "The chat ended."); });
client.addEventListener("error", (e) => line("system", e.detail.message));
client.addEventListener("disconnected", () => status("Connection lost, reconnecting…"));

$("start").addEventListener("click", () => {
  if (!$("adult").checked) { $("adult").focus(); return; }
  const interests = $("interests").value.split(",").map((s) => s.trim()).filter(Boolean);
  $("lobby").hidden = true;
  $("chat").hidden = false;
  client.addEventListener("hello", () => client.find({ interests, nick: $("nick").value.trim() || null }), { once: true });
  client.connect();
  $("text").focus();
});
$("compose").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  client.say(text);
  client.typing(false);
  $("text").value = "";
});
$("text").addEventListener("input", () => {
  client.typing(true);
  clearTimeout(typingTimer);
  typingTimer = setTimeout(() => client.typing(false), 3000);
});
$("next").addEventListener("click", () => client.next());
$("stop").addEventListener("click", () => client.leave());
document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !$("chat").hidden) client.next(); });

refreshOnline();
setInterval(refreshOnline, 10000);

// The early-access e-mail list ("tell me what's new"): the topics the server offers, what the
// page sends to /api/notify and the words it shows back. No DOM here (fetch is passed in), so
// node's test runner covers it;
// app.js wires it to the lobby's two small forms.

/// A request still unanswered after this would leave the button disabled for good.
const TIMEOUT_MS = 15000;
/// A server's sentence longer than this is not shown: it would be something else (a proxy's page).
const MAX_MESSAGE_CHARS = 300;

/// Confirmations: the same words whether or not the address was on the list, as the server's
/// 202 is, so nobody can use the page to learn if an address signed up.
export const signedUp = (topic = "") =>
  topic
    ? `Thanks — we'll write to this address about “${topic}”. You can remove it any time.`
    : "Thanks — we'll write to this address when there is news. You can remove it any time.";
export const REMOVED = "Done — if this address was on the list, it is off every topic now. Nothing more will be sent to it.";

/// Words for a refusal whose body has no usable message, by the server's code (or the status's).
const FALLBACK = {
  invalid_email: "That doesn't look like an e-mail address.",
  unknown_topic: "That topic is no longer offered. Reload the page and try again.",
  bad_request: "The server did not understand the request. Reload the page and try again.",
  too_large: "That is too long for an e-mail address.",
  unsupported_type: "The server did not understand the request. Reload the page and try again.",
  forbidden_origin: "The list only takes addresses from this site's own page.",
  rate_limited: "Too many tries from your network.",
  unavailable: "The list is unavailable right now. Please try again later.",
};
const CODE_OF_STATUS = { 400: "bad_request", 403: "forbidden_origin", 413: "too_large", 415: "unsupported_type", 429: "rate_limited", 503: "unavailable" };

/// The topics the server offers, from the content of the page's
/// <meta name="ephemera-notify-topics"> (the server fills it in), or null when the list is off
/// (empty) or the content is not a list of names: the form then stays hidden.
export function topicsFrom(content) {
  if (typeof content !== "string") return null;
  const names = content.split(",").map((t) => t.trim()).filter((t) => /^[a-z0-9_-]{1,32}$/.test(t));
  return names.length ? names : null;
}

/// Puts `email` on the list of `topic`. Resolves to { ok, message }; never rejects.
/// With several topics the confirmation names the one chosen (`nameTopic`), so a wrong pick shows.
export async function signUp(email, topic, { nameTopic = false, fetchFn = globalThis.fetch, now = Date.now } = {}) {
  const outcome = await post("/api/notify", { email: email.trim(), topic }, fetchFn, now);
  if (!outcome.ok) return outcome;
  return { ok: true, message: signedUp(nameTopic ? topic : "") };
}

/// Takes `email` off every topic. Resolves to { ok, message }; never rejects.
export async function remove(email, { fetchFn = globalThis.fetch, now = Date.now } = {}) {
  const outcome = await post("/api/notify/delete", { email: email.trim() }, fetchFn, now);
  return outcome.ok ? { ok: true, message: REMOVED } : outcome;
}

/// Resolves to { ok: true } on any 2xx, else { ok: false, message } in words for the chatter.
async function post(path, body, fetchFn, now) {
  let response;
  try {
    response = await fetchFn(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
      signal: globalThis.AbortSignal?.timeout?.(TIMEOUT_MS),
    });
  } catch (error) {
    return {
      ok: false,
      message: error?.name === "TimeoutError" ? "The server took too long to answer. Please try again."
        : "Couldn't reach the server. Check your connection and try again.",
    };
  }
  if (response.ok) return { ok: true };
  let answer = {};
  try {
    answer = (await response.json()) ?? {};
  } catch { /* not JSON (a proxy's page): the status speaks */ }
  return { ok: false, message: refusalText(response.status, answer, response.headers.get("Retry-After"), now()) };
}

/// The server's own sentence when it gave a usable one, else ours; a rate limit says when to
/// try again (from Retry-After, unless the sentence says so already).
export function refusalText(status, answer, retryAfter, nowMs) {
  const code = typeof answer?.error === "string" && Object.hasOwn(FALLBACK, answer.error) ? answer.error : CODE_OF_STATUS[status];
  const given = typeof answer?.message === "string" ? answer.message.trim() : "";
  let text = given && given.length <= MAX_MESSAGE_CHARS ? given
    : FALLBACK[code] ?? `Something went wrong (the server answered ${status}). Please try again later.`;
  if (status === 429 && !/try again/i.test(text)) text = `${text.replace(/([^.!?])$/, "$1.")} ${retryWords(retryAfter, nowMs)}`;
  return text;
}

/// "Please try again in 30 seconds." from a Retry-After of seconds or an HTTP date.
export function retryWords(retryAfter, nowMs) {
  const value = String(retryAfter ?? "").trim();
  const seconds = /^\d+$/.test(value) ? Number(value) : Math.ceil((Date.parse(value) - nowMs) / 1000);
  if (!value || !Number.isFinite(seconds)) return "Please try again later.";
  if (seconds <= 1) return "Please try again in a second.";
  if (seconds < 60) return `Please try again in ${seconds} seconds.`;
  const minutes = Math.ceil(seconds / 60);
  if (minutes < 60) return `Please try again in ${minutes === 1 ? "a minute" : `${minutes} minutes`}.`;
  const hours = Math.ceil(minutes / 60);
  return `Please try again in ${hours === 1 ? "an hour" : `${hours} hours`}.`;
}

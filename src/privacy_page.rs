//! GET /privacy: the privacy policy in plain words, generated from the running settings so it
//! can never drift from what this server actually does.

use actix_web::{http::header, web, HttpResponse};

use crate::settings::Settings;

/// Renders the policy once at start-up; the settings do not change while the server runs.
pub fn render(settings: &Settings) -> String {
    let seconds = |s: f64| -> String {
        if s >= 7200.0 && s % 3600.0 == 0.0 {
            format!("{} hours", s / 3600.0)
        } else if s >= 120.0 && s % 60.0 == 0.0 {
            format!("{} minutes", s / 60.0)
        } else {
            format!("{s} seconds")
        }
    };
    let ice = if settings.relay_only {
        "Video calls always go through this operator's TURN relay, so the stranger never \
         learns your network address; the relay sees it, and carries the encrypted call. \
         Its credentials are minted for your session and expire by themselves."
    } else if settings.ice_urls.is_empty() && settings.turn_urls.is_empty() {
        "Video calls connect your browser directly to the stranger's, so each of you can learn \
         the other's network address. No STUN or TURN server is configured, so no third party \
         takes part."
    } else if settings.turn_urls.is_empty() {
        "Video calls connect your browser directly to the stranger's (each of you can then \
         learn the other's network address), helped by the STUN servers this operator \
         configured, which see your address."
    } else {
        "Video calls connect your browser directly to the stranger's where possible (each of \
         you can then learn the other's network address), helped by the STUN/TURN servers this \
         operator configured, which see your address. Tick \"relay only\" before a video chat \
         to hide your address from the stranger: the call then goes through the TURN relay."
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Privacy: Ephemera</title><link rel="stylesheet" href="/static/style.css"></head>
<body><main>
<h1>Privacy</h1>
<p>This page is generated from the settings this server is running with right now.</p>
<h2>What we keep, and for how long</h2>
<table>
<tr><th>What</th><th>Where</th><th>How long</th></tr>
<tr><td>Your messages, images and voice notes</td><td>server memory, in your chat's log (at most the last {events} events, {log_mib} MiB)</td><td>until the chat ends; then wiped (overwritten with zeros) and freed</td></tr>
<tr><td>Your nickname and interests</td><td>server memory</td><td>while your session lasts</td></tr>
<tr><td>Your session</td><td>server memory: its state and a hash of its resume token (never the token)</td><td>until you leave, or {grace} after your connection drops</td></tr>
<tr><td>That two sessions have met</td><td>server memory: two internal numbers, nothing about you</td><td>{cooldown}, so you are not matched with the same stranger again</td></tr>
<tr><td>Your network address</td><td>nowhere: it is used once to compute a salted key (the salt lives only in memory and is replaced every {salt}) and then forgotten</td><td>-</td></tr>
<tr><td>Reports against you, and any ban</td><td>server memory, under your salted key</td><td>while a ban lasts, and {report_window} after the last report</td></tr>
<tr><td>The end of your last chat: its id, how it ended and its last number</td><td>server memory, so a reconnecting page learns the chat ended</td><td>{grace} after the chat ended</td></tr>
{list_row}<tr><td>Counts of sessions, chats and messages</td><td>server memory, as anonymous totals for the operator's statistics; {location}{mqtt}</td><td>until the server restarts</td></tr>
</table>
<p>{disk} No cookie is set. The page loads nothing from any other site.
Your browser keeps your resume token in this tab's session storage only; closing the tab
ends everything. It also keeps your preferences (text or video, your last interests, the
theme, relay only, camera and microphone) in its local storage, on your device only; never
your nickname. A restart of the server forgets everything.</p>
<h2>The e-mail list</h2>
{list}
<h2>Limits</h2>
<p>Messages up to {text} characters; images and voice notes up to {media_kib} KiB.
Connections silent for {timeout} count as dropped.</p>
<h2>Encryption</h2>
<p>{tls}</p>
<h2>Video</h2>
<p>{ice}</p>
<h2>Age</h2>
<p>This service is for adults only: you must confirm you are 18 or older to chat.</p>
<p><a href="/">Back to the chat</a></p>
</main></body></html>
"#,
        events = settings.event_log_max_events,
        log_mib = settings.event_log_max_bytes as f64 / (1 << 20) as f64,
        grace = seconds(settings.resume_grace_seconds),
        cooldown = seconds(settings.rematch_cooldown_seconds),
        text = settings.max_text_chars,
        media_kib = settings.max_media_bytes / 1024,
        timeout = seconds(settings.client_timeout_seconds),
        salt = seconds(settings.salt_rotation_seconds),
        report_window = seconds(settings.report_window_seconds),
        ice = ice,
        location = if settings.geoip_db_path.is_empty() {
            "nothing by location"
        } else {
            "sessions started are also counted by country and continent, looked up from your \
             network address when you connect (the address itself is not kept, and nothing \
             finer than a country is counted)"
        },
        // Only that the totals leave, and how often: never the broker's address or login.
        mqtt = if settings.mqtt_url.is_empty() {
            String::new()
        } else {
            format!(
                ". Every {}, the operator's statistics service also receives the number of \
                 sessions online, waiting and chatting, and of chats begun and messages sent \
                 in that time: totals only",
                seconds(settings.mqtt_interval_seconds)
            )
        },
        list_row = if settings.notify_db_path.is_empty() {
            ""
        } else {
            "<tr><td>Your e-mail address, only if you leave it in \"Tell me what's new\"</td>\
             <td>a database on this server's disk, encrypted</td><td>until you remove it</td></tr>\n"
        },
        disk = if settings.notify_db_path.is_empty() {
            "Nothing is written to disk."
        } else {
            "Nothing but the e-mail list is written to disk."
        },
        list = if settings.notify_db_path.is_empty() {
            "<p>This server keeps no e-mail list.</p>".to_owned()
        } else {
            format!(
                "<p>If you leave your e-mail address in \"Tell me what's new\" on the start \
                 page, it is kept so the operator can tell you what is new ({topics}). It is the \
                 only thing about you this server ever writes to disk, and it is never linked to \
                 a chat, a session or your network address.</p>\n\
                 <ul>\n\
                 <li>The address is encrypted (XChaCha20-Poly1305) with a key kept in a separate \
                 file, so a copy of the database alone reveals nothing. Duplicates are found \
                 through a keyed hash, without decrypting anything.</li>\n\
                 <li>Only with the operator's command that prepares a mailing is it ever \
                 decrypted. The server itself never reads it back.</li>\n\
                 <li>No time, no order of sign-up and nothing else about you is stored with it. \
                 The answer to a sign-up is the same whether or not the address was already \
                 there, so nobody can use this site to learn whether someone signed up.</li>\n\
                 <li>To remove it: open \"Remove my address\" under the form on the \
                 <a href=\"/\">start page</a>, or send \
                 <code>POST /api/notify/delete</code> with <code>{{\"email\": \"...\"}}</code>. \
                 It is removed from every topic and its row is overwritten in the file.</li>\n\
                 </ul>",
                topics = settings.notify_topics.join(", ")
            )
        },
        tls = if settings.tls_enabled() {
            "This server encrypts every connection with TLS itself."
        } else {
            "This server does not encrypt connections itself; its operator must put it behind \
             an HTTPS proxy. Check that the address bar shows https:// before you chat."
        },
    )
}

pub async fn privacy(page: web::Data<PrivacyPage>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .body(page.0.clone())
}

/// The rendered page, shared by the workers.
pub struct PrivacyPage(pub String);

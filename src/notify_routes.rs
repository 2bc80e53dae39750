//! The e-mail list's endpoints. Every answer to a well-formed request is the same 202 whether
//! or not the address was there, so the API cannot be used to learn who is on the list.
//!
//! Checks, in order: the feature is on (else 404), the Origin (a page on another site cannot
//! sign people up), the client's rate limit (bad requests count too), a JSON content type, a
//! body of at most `MAX_BODY_BYTES`, then the address. The body is read by hand, not by
//! actix's extractors, so no framework error (which may quote the input) is ever made from it.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use serde::Deserialize;

use crate::notify::{Address, AddressError, NotWritten, Notifier};
use crate::state::AppState;

/// Largest request body: an address of 254 characters, a topic and JSON around them, with room.
pub const MAX_BODY_BYTES: usize = 1024;
/// Requests to the list being read or written at once, from everyone together; past it,
/// 503 at once. With the deadline above, this bounds what slow clients can hold.
const MAX_IN_FLIGHT: usize = 256;

static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One request's place under `MAX_IN_FLIGHT`, given back when it is answered.
struct InFlight;

impl InFlight {
    fn take() -> Option<InFlight> {
        use std::sync::atomic::Ordering;
        let taken = IN_FLIGHT.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_IN_FLIGHT).then_some(n + 1)
        });
        taken.ok().map(|_| InFlight)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignUp {
    email: String,
    /// Absent: the first of `notify_topics`.
    #[serde(default)]
    topic: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Delete {
    email: String,
}

#[derive(Clone, Copy)]
enum Action {
    SignUp,
    Delete,
}

impl Action {
    fn label(self) -> &'static str {
        match self {
            Action::SignUp => "sign_up",
            Action::Delete => "delete",
        }
    }
}

/// GET /api/notify: the topics, so the page shows its form only when the list is on.
pub async fn topics(state: web::Data<AppState>) -> HttpResponse {
    match &state.notify {
        Some(notifier) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({ "topics": notifier.topics() })),
        None => not_found(),
    }
}

/// POST /api/notify `{"email": "...", "topic": "news"}`.
pub async fn sign_up(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let action = Action::SignUp;
    let Some(_place) = InFlight::take() else {
        return busy(action);
    };
    let (notifier, body) = match admit(&req, body, &state, action).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    let Some(request) = object::<SignUp>(&body) else {
        return refuse(
            action,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "The body must be a JSON object with email (and, if you like, topic).",
        );
    };
    let topic = match request.topic {
        None => notifier.topics()[0].clone(),
        Some(topic) if notifier.topics().contains(&topic) => topic,
        Some(_) => {
            return refuse(
                action,
                StatusCode::BAD_REQUEST,
                "unknown_topic",
                "There is no such topic.",
            )
        }
    };
    let address = match Address::parse(&request.email) {
        Ok(address) => address,
        Err(error) => return invalid_address(action, error),
    };
    written(action, notifier.sign_up(topic, address).await)
}

/// POST /api/notify/delete `{"email": "..."}`: removes the address from every topic.
pub async fn delete(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let action = Action::Delete;
    let Some(_place) = InFlight::take() else {
        return busy(action);
    };
    let (notifier, body) = match admit(&req, body, &state, action).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    let Some(request) = object::<Delete>(&body) else {
        return refuse(
            action,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "The body must be a JSON object with email.",
        );
    };
    let address = match Address::parse(&request.email) {
        Ok(address) => address,
        Err(error) => return invalid_address(action, error),
    };
    written(action, notifier.delete(address).await)
}

/// The checks every write goes through before its body is parsed; hands back the body.
async fn admit<'a>(
    req: &HttpRequest,
    mut body: web::Payload,
    state: &'a AppState,
    action: Action,
) -> Result<(&'a Notifier, Vec<u8>), HttpResponse> {
    let Some(notifier) = &state.notify else {
        return Err(not_found());
    };
    if !crate::client_identity::origin_allowed(req, state) {
        return Err(refuse(
            action,
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "Sign-ups are accepted from this site's own page only.",
        ));
    }
    let Some(keys) = crate::client_identity::client_keys(req) else {
        tracing::error!("no client key on a request; is forget_client_address installed?");
        return Err(refuse(
            action,
            StatusCode::INTERNAL_SERVER_ERROR,
            "unavailable",
            "The server is misconfigured.",
        ));
    };
    if let Err(wait) = state.hub.check_notify_request(&keys) {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut refusal = refuse(
            action,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            &format!("Too many requests from your network; try again in {seconds} s."),
        );
        if let Ok(value) = header::HeaderValue::from_str(&seconds.to_string()) {
            refusal.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Err(refusal);
    }
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(refuse(
            action,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_type",
            "The body must be JSON (Content-Type: application/json).",
        ));
    }
    let too_large = || {
        refuse(
            action,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "The body is too large.",
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(256).min(MAX_BODY_BYTES as u64) as usize);
    let read = async {
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else {
                return Err(refuse(
                    action,
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "The body could not be read.",
                ));
            };
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(())
    };
    // A body that trickles in (or never comes) must not hold its request, and its connection,
    // for good: it gets what the headers get (`http_request_timeout_seconds`).
    match tokio::time::timeout(notifier.body_deadline(), read).await {
        Ok(Ok(())) => Ok((notifier, bytes)),
        Ok(Err(refusal)) => Err(refusal),
        Err(_) => {
            let mut refusal = refuse(
                action,
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "The body took too long to arrive.",
            );
            // The rest of the body may still trickle in: this connection is done.
            refusal.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            Err(refusal)
        }
    }
}

/// The body as `T`, from a JSON object only: serde would also fill a struct from an array.
fn object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value @ serde_json::Value::Object(_)) => serde_json::from_value(value).ok(),
        _ => None,
    }
}

fn invalid_address(action: Action, error: AddressError) -> HttpResponse {
    let mut message = error.to_string();
    // "the address is empty" → "The address is empty."
    if let Some(first) = message.get(..1) {
        message = format!("{}{}.", first.to_uppercase(), &message[1..]);
    }
    refuse(action, StatusCode::BAD_REQUEST, "invalid_email", &message)
}

fn written(action: Action, result: Result<(), NotWritten>) -> HttpResponse {
    match result {
        Ok(()) => {
            count(action, "accepted");
            HttpResponse::Accepted()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(serde_json::json!({ "status": "accepted" }))
        }
        Err(NotWritten::Busy) => refuse(
            action,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "The list is busy; try again in a minute.",
        ),
        Err(NotWritten::Failed) => refuse(
            action,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "The list cannot be written just now; try again later.",
        ),
    }
}

/// An error answer, counted by its code.
fn refuse(action: Action, status: StatusCode, code: &'static str, message: &str) -> HttpResponse {
    count(action, code);
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "error": code, "message": message }))
}

fn busy(action: Action) -> HttpResponse {
    refuse(
        action,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "The list is busy; try again in a minute.",
    )
}

/// Any other method on the list's paths: a JSON refusal like the rest.
pub async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "error": "method_not_allowed",
            "message": "Use POST (or GET on /api/notify for the topics).",
        }))
}

fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "error": "not_found",
            "message": "This server keeps no e-mail list.",
        }))
}

fn count(action: Action, result: &'static str) {
    metrics::counter!(
        "ephemera_notify_requests_total",
        "action" => action.label(),
        "result" => result
    )
    .increment(1);
}

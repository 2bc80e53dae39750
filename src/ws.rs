//! The /ws endpoint: checks the Origin, upgrades with actix-ws, and adapts the socket to the
//! actors' transport boundary: incoming frames become a bounded stream of `ClientFrame`s, and
//! a `WsSink` queues outgoing frames for one writer task that owns the `actix_ws::Session`.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError};
use ephemera_actors::connection::{ClientFrame, ClientSink, OutboxGauge, Outgoing};
use ephemera_actors::Hub;
use futures_util::StreamExt as _;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::startup::AppState;

/// Frames read from a socket ahead of its session actor. Small: when the actor falls behind,
/// the reader stops reading and TCP pushes back on the client.
const INBOUND_FRAMES_AHEAD: usize = 16;

#[derive(Deserialize)]
pub struct ResumeQuery {
    resume: Option<String>,
    last_seq: Option<u64>,
}

pub async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    query: web::Query<ResumeQuery>,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    if !origin_allowed(&req, &state.allowed_origins) {
        state
            .hub
            .metrics
            .refused(ephemera_actors::metrics::Refusal::Other);
        return Ok(HttpResponse::Forbidden().body("origin not allowed\n"));
    }
    let (response, ws_session, messages) = actix_ws::handle(&req, body)?;
    let max_frame_bytes = state.hub.config.limits.max_frame_bytes;
    let messages = messages
        .max_frame_size(max_frame_bytes)
        .aggregate_continuations()
        .max_continuation_size(max_frame_bytes);

    let (frames_tx, frames_rx) = mpsc::channel(INBOUND_FRAMES_AHEAD);
    actix_web::rt::spawn(read_frames(messages, frames_tx));
    let sink = WsSink::spawn(ws_session, state.hub.outbox_total.clone());
    let frames = Box::pin(tokio_stream_from(frames_rx));

    let Some(keys) = crate::client_identity::client_keys(&req) else {
        return Ok(HttpResponse::InternalServerError().finish());
    };
    let hub: Arc<Hub> = state.hub.clone();
    let query = query.into_inner();
    actix_web::rt::spawn(async move {
        let resume = query
            .resume
            .as_deref()
            .map(|token| (token, query.last_seq.unwrap_or(0)));
        hub.connect(keys, resume, Box::new(sink), frames).await;
    });
    Ok(response)
}

/// Browsers always send Origin; a page on another site must not open sockets here. The
/// server's own origin is allowed (same host as the request), and so is no Origin at all.
fn origin_allowed(req: &HttpRequest, allowed: &[String]) -> bool {
    let Some(origin) = req.headers().get("origin") else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let info = req.connection_info();
    let own = format!("{}://{}", info.scheme(), info.host());
    origin.eq_ignore_ascii_case(&own)
        || origin
            .strip_prefix("https://")
            .is_some_and(|host| host.eq_ignore_ascii_case(info.host()))
}

async fn read_frames(
    mut messages: actix_ws::AggregatedMessageStream,
    frames: mpsc::Sender<ClientFrame>,
) {
    loop {
        let frame = match messages.next().await {
            Some(Ok(AggregatedMessage::Text(text))) => ClientFrame::Text(text),
            Some(Ok(AggregatedMessage::Binary(_))) => ClientFrame::Binary,
            Some(Ok(AggregatedMessage::Ping(payload))) => ClientFrame::Ping(payload),
            Some(Ok(AggregatedMessage::Pong(_))) => ClientFrame::Pong,
            Some(Ok(AggregatedMessage::Close(reason))) => {
                let _ = frames
                    .send(ClientFrame::Close(reason.map(|r| u16::from(r.code))))
                    .await;
                return;
            }
            Some(Err(ProtocolError::Overflow)) => {
                let _ = frames.send(ClientFrame::TooLarge).await;
                return;
            }
            Some(Err(_)) | None => {
                let _ = frames.send(ClientFrame::Dropped).await;
                return;
            }
        };
        if frames.send(frame).await.is_err() {
            // The session let go of this connection (it resumed elsewhere or ended).
            return;
        }
    }
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<ClientFrame>,
) -> impl futures_util::Stream<Item = ClientFrame> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The session's side of a socket: an unbounded queue whose byte size the session bounds,
/// drained by one writer task.
pub struct WsSink {
    tx: mpsc::UnboundedSender<Outgoing>,
    gauge: OutboxGauge,
    writer: tokio::task::AbortHandle,
}

impl WsSink {
    fn spawn(ws: actix_ws::Session, outbox_total: Arc<std::sync::atomic::AtomicUsize>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let gauge = OutboxGauge::counting_into(outbox_total);
        let writer = actix_web::rt::spawn(write_frames(ws, rx, gauge.clone())).abort_handle();
        Self { tx, gauge, writer }
    }
}

impl ClientSink for WsSink {
    fn send(&mut self, frame: Outgoing) {
        let weight = frame.weight();
        if self.tx.send(frame).is_ok() {
            self.gauge.add(weight);
        }
    }

    fn unsent_bytes(&self) -> usize {
        self.gauge.get()
    }

    fn abort(&mut self) {
        // Dropping the writer drops the queued frames and the socket's session, which ends
        // the response body and so the connection.
        self.writer.abort();
    }
}

async fn write_frames(
    mut ws: actix_ws::Session,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    gauge: OutboxGauge,
) {
    while let Some(frame) = rx.recv().await {
        let weight = frame.weight();
        let sent = match frame {
            Outgoing::Text(text) => ws.text(text).await,
            Outgoing::Ping => ws.ping(b"").await,
            Outgoing::Pong(payload) => ws.pong(&payload).await,
            Outgoing::Close { code, reason } => {
                let reason = CloseReason {
                    code: CloseCode::from(code),
                    description: Some(reason.to_owned()),
                };
                let _ = ws.close(Some(reason)).await;
                return;
            }
        };
        gauge.sub(weight);
        if sent.is_err() {
            return;
        }
    }
    // The session dropped its sink without a close frame (its actor stopped): say goodbye.
    let _ = ws.close(None).await;
}

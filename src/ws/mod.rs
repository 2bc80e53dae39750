//! The /ws endpoint: decides whether a client may connect (Origin, client key) before it
//! upgrades with actix-ws, then adapts the socket to the actors' transport boundary: a bounded
//! `FrameReader` turns incoming bytes into `ClientFrame`s, and a `WsSink` queues outgoing
//! frames for one writer task.

mod reader;
mod writer;

use std::sync::Arc;

use actix_web::{web, FromRequest as _, HttpRequest, HttpResponse};
use ephemera_actors::connection::ClientFrame;
use ephemera_actors::ids::ChatId;
use ephemera_actors::metrics::Refusal;
use ephemera_actors::protocol::ResumePoint;
use ephemera_actors::Hub;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::socket_watch::SocketId;
use crate::state::AppState;
pub use reader::MAX_FRAME_HEADER_BYTES;
use reader::{held_bytes, FrameReader, InboundBudget};
use writer::{ClosingHandshake, CutOff, CuttableBody, WsSink};

/// Frames read from a socket ahead of its session actor. Their bytes are bounded by the
/// reader's budget; the count only keeps many tiny frames from piling up.
const INBOUND_FRAMES_AHEAD: usize = 16;

/// `?resume=<token>&chat=<chat id>&last_seq=<n>` (`chat` since v1.1). Read leniently:
/// anything that does not parse means a fresh session, never an HTTP error (protocol v1.1).
#[derive(Deserialize, Default)]
struct ResumeQuery {
    resume: Option<String>,
    chat: Option<String>,
    last_seq: Option<String>,
}

impl ResumeQuery {
    fn from_request(req: &HttpRequest) -> Self {
        web::Query::<ResumeQuery>::from_query(req.query_string())
            .map(web::Query::into_inner)
            .unwrap_or_default()
    }

    /// The token and where to resume from, if all that is given is usable (a missing
    /// `last_seq` is 0).
    fn resume(&self) -> Option<(&str, ResumePoint)> {
        let token = self.resume.as_deref()?;
        let last_seq = match self.last_seq.as_deref() {
            None => 0,
            Some(text) => text.parse().ok()?,
        };
        let chat = match self.chat.as_deref() {
            None => None,
            Some(text) => Some(ChatId::parse(text)?),
        };
        Some((token, ResumePoint { chat, last_seq }))
    }
}

pub async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    let hub: Arc<Hub> = state.hub.clone();
    if !crate::client_identity::origin_allowed(&req, &state) {
        hub.metrics().refused(Refusal::Origin);
        return Ok(HttpResponse::Forbidden().body("origin not allowed\n"));
    }
    let Some(keys) = crate::client_identity::client_keys(&req) else {
        // The middleware that derives keys wraps every route; without it nothing is safe.
        tracing::error!("no client key on a /ws request; is forget_client_address installed?");
        return Ok(HttpResponse::InternalServerError().body("server misconfigured\n"));
    };
    // actix-ws does the handshake and owns the outgoing half; the incoming bytes go to our
    // own bounded reader, so actix-ws is handed an empty payload.
    let no_payload = web::Payload::from_request(&req, &mut actix_web::dev::Payload::None).await?;
    let (response, ws_session, _unused_stream) = actix_ws::handle(&req, no_payload)?;
    let socket = req.conn_data::<SocketId>().copied();
    let cut_off = Arc::new(CutOff::new(socket));
    let gauge = hub.new_outbox_gauge();
    let closing = ClosingHandshake::new(cut_off.clone());
    let response = response
        .map_body({
            let (cut_off, gauge, closing) = (cut_off.clone(), gauge.clone(), closing.clone());
            move |_, body| CuttableBody::new(body, cut_off, gauge, closing)
        })
        .map_into_boxed_body();

    let budget = Arc::new(InboundBudget::default());
    let (frames_tx, frames_rx) = mpsc::channel(INBOUND_FRAMES_AHEAD);
    let reader = FrameReader::new(
        body.into_inner(),
        hub.config().limits.max_frame_bytes,
        budget.clone(),
    );
    actix_web::rt::spawn(reader.run(frames_tx, closing));
    let sink = WsSink::spawn(ws_session, cut_off, gauge);
    let frames = Box::pin(frame_stream(frames_rx, budget));

    let query = ResumeQuery::from_request(&req);
    actix_web::rt::spawn(async move {
        let resume = query.resume();
        hub.connect(keys, resume, Box::new(sink), frames).await;
    });
    Ok(response)
}

/// The session's view of the reader: each frame it takes gives its bytes back to the budget.
/// When the session lets go of the stream (a resume elsewhere, a drop), the frames it never
/// took give theirs back too, and the channel closes: otherwise a reader waiting for room
/// would wait for good, holding its buffer.
struct SessionFrames {
    rx: mpsc::Receiver<ClientFrame>,
    budget: Arc<InboundBudget>,
}

impl futures_util::Stream for SessionFrames {
    type Item = ClientFrame;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ClientFrame>> {
        self.rx.poll_recv(cx).map(|frame| {
            if let Some(frame) = &frame {
                self.budget.release(held_bytes(frame));
            }
            frame
        })
    }
}

impl Drop for SessionFrames {
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(frame) = self.rx.try_recv() {
            self.budget.release(held_bytes(&frame));
        }
    }
}

fn frame_stream(
    rx: mpsc::Receiver<ClientFrame>,
    budget: Arc<InboundBudget>,
) -> impl futures_util::Stream<Item = ClientFrame> + Send {
    SessionFrames { rx, budget }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    fn text(bytes: usize) -> ClientFrame {
        ClientFrame::Text("x".repeat(bytes).into())
    }

    #[actix_web::rt::test]
    async fn frames_the_session_never_took_give_their_bytes_back_when_it_lets_go() {
        let budget = Arc::new(InboundBudget::default());
        let (tx, rx) = mpsc::channel(INBOUND_FRAMES_AHEAD);
        let mut frames = Box::pin(frame_stream(rx, budget.clone()));
        for bytes in [1000, 2 << 20, 100 << 10] {
            budget.hold(bytes);
            tx.send(text(bytes)).await.unwrap();
        }
        frames.next().await.expect("the session takes one frame");
        assert_eq!(budget.held(), (2 << 20) + (100 << 10));
        // The session lets go (a resume elsewhere): what it never took is given back, and the
        // reader's next send fails, so it stops waiting for room and notices.
        drop(frames);
        assert_eq!(budget.held(), 0);
        assert!(tx.send(text(1)).await.is_err());
    }
}

//! The outgoing half of a WebSocket: the session's `ClientSink`. Frames queue for one writer
//! task that owns the actix-ws `Session`. Their bytes are counted (per connection and
//! server-wide) from the moment the session queues them until actix-http takes them from the
//! response body, so what waits in actix-ws's own queue and encoder counts too, and the
//! session can cut off a client that does not read. Cutting off is immediate: the socket is
//! shut down (`socket_watch`) and the response body fails, so actix-http drops the connection
//! and everything it buffered, instead of waiting for a peer that never reads.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::web::Bytes;
use actix_ws::{CloseCode, CloseReason};
use ephemera_actors::connection::{ClientSink, OutboxGauge, Outgoing};

use crate::socket_watch::SocketId;
use futures_util::task::AtomicWaker;
use tokio::sync::mpsc;

/// How long a connection the session let go of may take to flush what was queued for it (its
/// `ended`, a close frame). A reader that keeps up needs milliseconds; one that does not read
/// is cut off after this, so it cannot hold its queue and socket buffers.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

/// How long a client that has received our close frame may take to answer it before the
/// server closes TCP anyway: a few round trips on any real network.
const REPLY_WINDOW: Duration = Duration::from_millis(250);

/// Ends a connection at once: shuts its socket down, and flips its response body into an
/// error, either of which makes actix-http drop the connection.
#[derive(Default)]
pub struct CutOff {
    cut: AtomicBool,
    waker: AtomicWaker,
    socket: Option<SocketId>,
}

impl CutOff {
    pub fn new(socket: Option<SocketId>) -> Self {
        Self {
            socket,
            ..Self::default()
        }
    }

    pub fn cut(&self) {
        if self.cut.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(socket) = self.socket {
            socket.cut();
        }
        self.waker.wake();
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }
}

impl CutOff {
    /// Cuts once what was written to the socket is on its way (`SocketId::is_flushed`), so
    /// the last frames are not lost to the shutdown; no connection lingers past `FLUSH_GRACE`.
    async fn cut_once_flushed(&self) {
        let deadline = tokio::time::Instant::now() + FLUSH_GRACE;
        if let Some(socket) = self.socket {
            while !socket.is_flushed() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        self.cut();
    }
}

/// The WebSocket closing handshake (RFC 6455, 7.1.1): once our close frame has gone out and the
/// client's has come in, whichever was first, the server closes the TCP connection at once
/// instead of lingering for the client to do it.
///
/// The client's close frame reaches our reader only through the request's payload, which
/// actix-http feeds only while the response lasts (after it, those bytes would be read as a new
/// HTTP request). So when our close frame has gone out first, the response body stays open
/// until the client's has come in (or `REPLY_WINDOW` passed), and only then ends.
pub struct ClosingHandshake {
    received: AtomicBool,
    /// The response body, waiting for the client's close frame.
    body_waker: AtomicWaker,
    finishing: AtomicBool,
    cut_off: Arc<CutOff>,
}

impl ClosingHandshake {
    pub fn new(cut_off: Arc<CutOff>) -> Arc<Self> {
        Arc::new(Self {
            received: AtomicBool::new(false),
            body_waker: AtomicWaker::new(),
            finishing: AtomicBool::new(false),
            cut_off,
        })
    }

    /// The client's close frame arrived, or nothing more will be read (the reader).
    pub fn close_received(self: &Arc<Self>) {
        self.received.store(true, Ordering::Release);
        self.body_waker.wake();
    }

    /// Ready once the client's close frame is in, or once `reply_window` (started on the
    /// first call) has passed without it.
    fn poll_answer(
        &self,
        cx: &mut Context<'_>,
        reply_window: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    ) -> Poll<()> {
        self.body_waker.register(cx.waker());
        if self.received.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        reply_window
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(REPLY_WINDOW)))
            .as_mut()
            .poll(cx)
    }

    /// Both close frames have passed (or the client did not answer ours): the body ends, and
    /// the connection is closed as soon as what was written is on its way.
    fn close_sent(self: &Arc<Self>) {
        if self.finishing.swap(true, Ordering::AcqRel) {
            return;
        }
        let closing = self.clone();
        actix_web::rt::spawn(async move {
            closing.cut_off.cut_once_flushed().await;
        });
    }
}

#[derive(Debug, thiserror::Error)]
#[error("connection cut off by the server")]
struct CutOffError;

/// The WebSocket response body (actix-ws's frame encoder), which fails once its `CutOff` is
/// cut, and which takes the bytes actix-http takes from it off the outbox's count.
pub struct CuttableBody {
    inner: BoxBody,
    /// actix-ws ended its body: our close frame (if any) is out.
    inner_ended: bool,
    reply_window: Option<Pin<Box<tokio::time::Sleep>>>,
    cut_off: Arc<CutOff>,
    gauge: OutboxGauge,
    closing: Arc<ClosingHandshake>,
}

impl CuttableBody {
    pub fn new(
        inner: BoxBody,
        cut_off: Arc<CutOff>,
        gauge: OutboxGauge,
        closing: Arc<ClosingHandshake>,
    ) -> Self {
        Self {
            inner,
            inner_ended: false,
            reply_window: None,
            cut_off,
            gauge,
            closing,
        }
    }
}

impl MessageBody for CuttableBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        this.cut_off.waker.register(cx.waker());
        if this.cut_off.is_cut() {
            return Poll::Ready(Some(Err(Box::new(CutOffError))));
        }
        if !this.inner_ended {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.gauge.sub_saturating(chunk.len());
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(None) => this.inner_ended = true,
                other => return other,
            }
        }
        // The closing handshake: see `ClosingHandshake`.
        if this
            .closing
            .poll_answer(cx, &mut this.reply_window)
            .is_pending()
        {
            return Poll::Pending;
        }
        this.closing.close_sent();
        Poll::Ready(None)
    }
}

/// The session's side of a socket: an unbounded queue whose byte size the session bounds
/// (every frame counts, control frames included), drained by one writer task.
pub struct WsSink {
    tx: mpsc::UnboundedSender<Outgoing>,
    gauge: OutboxGauge,
    writer: tokio::task::AbortHandle,
    /// A handle on the socket for a close frame sent past the queue (`close_at_once`). Dropped
    /// with the sink, so the writer's own handle is the last and ends the body when it closes.
    socket: Option<actix_ws::Session>,
    cut_off: Arc<CutOff>,
}

impl WsSink {
    pub fn spawn(ws: actix_ws::Session, cut_off: Arc<CutOff>, gauge: OutboxGauge) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let socket = Some(ws.clone());
        let writer = actix_web::rt::spawn(write_frames(ws, rx, gauge.clone())).abort_handle();
        Self {
            tx,
            gauge,
            writer,
            socket,
            cut_off,
        }
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
        // The writer's queue goes with its task; the failing body drops the connection.
        self.writer.abort();
        self.socket = None;
        self.cut_off.cut();
    }

    fn close_at_once(&mut self, code: u16, reason: &'static str) {
        self.writer.abort();
        let Some(socket) = self.socket.take() else {
            return;
        };
        let cut_off = self.cut_off.clone();
        actix_web::rt::spawn(async move {
            let close = socket.close(Some(CloseReason {
                code: CloseCode::from(code),
                description: Some(reason.to_owned()),
            }));
            let deadline = tokio::time::Instant::now() + FLUSH_GRACE;
            let _ = tokio::time::timeout_at(deadline, close).await;
            // A connection that has not taken its close frame by then goes without it.
            tokio::time::sleep_until(deadline).await;
            cut_off.cut();
        });
    }
}

impl Drop for WsSink {
    /// The session let go: the writer flushes what is queued, within `FLUSH_GRACE`.
    fn drop(&mut self) {
        if self.cut_off.is_cut() {
            return;
        }
        let cut_off = self.cut_off.clone();
        let writer = self.writer.clone();
        actix_web::rt::spawn(async move {
            tokio::time::sleep(FLUSH_GRACE).await;
            writer.abort();
            cut_off.cut();
        });
    }
}

async fn write_frames(
    mut ws: actix_ws::Session,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    gauge: OutboxGauge,
) {
    while let Some(frame) = rx.recv().await {
        // From here the frame's bytes wait in actix-ws's queue and encoder until the body
        // hands them to actix-http (`CuttableBody`), which takes them off the count.
        gauge.sub(frame.weight());
        gauge.add(encoded_len(&frame));
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
        if sent.is_err() {
            return;
        }
    }
    // The session dropped its sink without a close frame (its actor stopped): say goodbye.
    let _ = ws.close(None).await;
}

/// The bytes actix-ws encodes `frame` into: a server frame's header (2, 4 or 10 bytes, no
/// mask) and its payload.
fn encoded_len(frame: &Outgoing) -> usize {
    let payload = match frame {
        Outgoing::Text(text) => text.len(),
        Outgoing::Ping => 0,
        Outgoing::Pong(payload) => payload.len(),
        Outgoing::Close { reason, .. } => 2 + reason.len(),
    };
    let header = match payload {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    };
    header + payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_codec::Encoder as _;
    use actix_http::ws::{Codec, Message};
    use actix_web::web::BytesMut;

    #[test]
    fn encoded_lengths_match_the_codec() {
        let cases = [
            (
                Outgoing::Text("x".repeat(10).into()),
                Message::Text("x".repeat(10).into()),
            ),
            (
                Outgoing::Text("x".repeat(300).into()),
                Message::Text("x".repeat(300).into()),
            ),
            (
                Outgoing::Text("x".repeat(70_000).into()),
                Message::Text("x".repeat(70_000).into()),
            ),
            (Outgoing::Ping, Message::Ping(Bytes::new())),
            (
                Outgoing::Pong(Bytes::from_static(b"abc")),
                Message::Pong(Bytes::from_static(b"abc")),
            ),
            (
                Outgoing::Close {
                    code: 1000,
                    reason: "bye",
                },
                Message::Close(Some(CloseReason {
                    code: CloseCode::Normal,
                    description: Some("bye".to_owned()),
                })),
            ),
        ];
        for (ours, theirs) in cases {
            let mut encoded = BytesMut::new();
            Codec::new().encode(theirs, &mut encoded).unwrap();
            assert_eq!(encoded_len(&ours), encoded.len(), "{ours:?}");
        }
    }
}

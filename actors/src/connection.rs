//! The boundary between a session actor and its client connection. The actors know nothing
//! of HTTP: the server crate adapts a WebSocket into a stream of `ClientFrame`s and a
//! `ClientSink`; tests and benches use the crossbeam-backed `channel_sink`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;

/// A client connection's incoming frames; must end with `ClientFrame::Dropped`, a close, or
/// another last item (`TooLarge`, `Invalid`).
pub type FrameStream = std::pin::Pin<Box<dyn futures_core::Stream<Item = ClientFrame> + Send>>;

/// One thing a connection delivered to the server.
#[derive(Debug)]
pub enum ClientFrame {
    Text(ByteString),
    Binary,
    Ping(Bytes),
    Pong,
    /// A close frame, with the code the client gave.
    Close(Option<u16>),
    /// A frame over `max_frame_bytes`; the transport refused to read it.
    TooLarge,
    /// The client broke the WebSocket protocol (RFC 6455): a malformed or misplaced frame
    /// (`code` 1002) or text that is not UTF-8 (1007). Always the last item of a connection.
    Invalid {
        code: u16,
        reason: &'static str,
    },
    /// The connection ended without a close frame (network drop, protocol error). Always the
    /// last item of a connection's stream.
    Dropped,
}

/// One thing the server sends on a connection.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Text(ByteString),
    Ping,
    Pong(Bytes),
    /// Send a close frame and end the connection.
    Close {
        code: u16,
        reason: &'static str,
    },
}

/// What one queued frame costs besides its payload: its slot in the queue and its header on
/// the wire. Counting it makes a flood of empty frames (pongs to a ping flood) fill the outbox
/// bound like any other backlog.
pub const FRAME_OVERHEAD_BYTES: usize = 64;

impl Outgoing {
    /// Bytes this frame occupies in an outbox, for its bound.
    pub fn weight(&self) -> usize {
        FRAME_OVERHEAD_BYTES
            + match self {
                Outgoing::Text(text) => text.len(),
                Outgoing::Pong(payload) => payload.len(),
                Outgoing::Close { reason, .. } => reason.len(),
                Outgoing::Ping => 0,
            }
    }
}

/// Close codes the server uses.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Data that does not match its frame type (text that is not UTF-8).
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Private-use code: the session was resumed on another connection.
    pub const RESUMED_ELSEWHERE: u16 = 4001;
}

/// Where a session actor writes to its client. Writing never blocks: frames queue in an
/// outbox whose unsent size the session watches, so a client that stops reading is cut off
/// instead of growing the server's memory.
pub trait ClientSink: Send + 'static {
    /// Queues a frame for the client.
    fn send(&mut self, frame: Outgoing);
    /// Bytes queued but not yet handed to the transport.
    fn unsent_bytes(&self) -> usize;
    /// Drops everything unsent and ends the connection at once, without a close frame.
    fn abort(&mut self);
    /// Drops everything unsent, sends only a close frame, and ends the connection soon after
    /// whether or not the client read it. For a connection replaced by a resume.
    fn close_at_once(&mut self, code: u16, reason: &'static str);
}

/// Counts the bytes of an outbox between the sender and the writer that drains it, and the
/// same bytes in a server-wide total shared by every outbox.
#[derive(Debug, Clone, Default)]
pub struct OutboxGauge {
    own: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

impl OutboxGauge {
    /// A gauge for one outbox that also counts into `total`.
    pub fn counting_into(total: Arc<AtomicUsize>) -> Self {
        Self {
            own: Arc::default(),
            total,
        }
    }

    pub fn add(&self, bytes: usize) {
        self.own.fetch_add(bytes, Ordering::Relaxed);
        self.total.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn sub(&self, bytes: usize) {
        self.own.fetch_sub(bytes, Ordering::Relaxed);
        self.total.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Takes up to `bytes` off, never below zero: for counts kept by another party (the
    /// transport's encoder) that may not match ours to the byte.
    pub fn sub_saturating(&self, bytes: usize) {
        let taken = self
            .own
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |own| {
                Some(own.saturating_sub(bytes))
            })
            .map_or(0, |before| before.min(bytes));
        self.total.fetch_sub(taken, Ordering::Relaxed);
    }

    pub fn get(&self) -> usize {
        self.own.load(Ordering::Relaxed)
    }
}

impl Drop for OutboxGauge {
    /// The last handle of an outbox takes what was never drained out of the total, so a
    /// connection cut off with a backlog does not inflate it forever.
    fn drop(&mut self) {
        if Arc::strong_count(&self.own) == 1 {
            let left = self.own.swap(0, Ordering::Relaxed);
            self.total.fetch_sub(left, Ordering::Relaxed);
        }
    }
}

/// A sink over a crossbeam channel, for tests and benches that drive sessions without sockets.
pub struct ChannelSink {
    tx: Option<crossbeam_channel::Sender<Outgoing>>,
    gauge: OutboxGauge,
}

/// The reading end of a `ChannelSink`: what a client would have received.
pub struct ChannelSinkReceiver {
    rx: crossbeam_channel::Receiver<Outgoing>,
    gauge: OutboxGauge,
}

pub fn channel_sink() -> (ChannelSink, ChannelSinkReceiver) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let gauge = OutboxGauge::default();
    (
        ChannelSink {
            tx: Some(tx),
            gauge: gauge.clone(),
        },
        ChannelSinkReceiver { rx, gauge },
    )
}

impl ClientSink for ChannelSink {
    fn send(&mut self, frame: Outgoing) {
        if let Some(tx) = &self.tx {
            let weight = frame.weight();
            if tx.send(frame).is_ok() {
                self.gauge.add(weight);
            }
        }
    }

    fn unsent_bytes(&self) -> usize {
        self.gauge.get()
    }

    fn abort(&mut self) {
        self.tx = None;
    }

    fn close_at_once(&mut self, code: u16, reason: &'static str) {
        self.send(Outgoing::Close { code, reason });
        self.tx = None;
    }
}

impl ChannelSinkReceiver {
    /// The next frame, or `None` once the sink is gone and everything was read.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Outgoing> {
        let frame = self.rx.recv_timeout(timeout).ok()?;
        self.gauge.sub(frame.weight());
        Some(frame)
    }

    pub fn try_recv(&self) -> Option<Outgoing> {
        let frame = self.rx.try_recv().ok()?;
        self.gauge.sub(frame.weight());
        Some(frame)
    }

    /// Frames queued and not yet read.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

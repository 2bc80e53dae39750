//! The incoming half of a WebSocket: a bounded frame reader over the request payload. It
//! decides a frame's fate from its header (a frame announcing more than `max_frame_bytes`
//! fails at once with 1009, whatever follows), reads from the socket only when no whole frame
//! is buffered and the session has room, and decodes everything buffered (a close frame
//! included) before it acts on the end of the stream. actix-ws's `MessageStream` reads until
//! the socket is dry and checks sizes only once a frame is complete, which lets one client
//! make the server hold whatever it sends; this reader uses actix-http's codec on bytes it
//! has already bounded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_codec::Decoder as _;
use actix_http::ws::{Codec, Frame, Item, ProtocolError};
use actix_web::dev::Payload;
use actix_web::web::{Bytes, BytesMut};
use bytestring::ByteString;
use ephemera_actors::connection::{close_code, ClientFrame};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, Notify};

use super::writer::ClosingHandshake;

/// The longest frame header: 2 bytes, an 8-byte extended length and a 4-byte mask.
pub const MAX_FRAME_HEADER_BYTES: usize = 14;

/// After a frame larger than this, the read buffer is released once empty
/// (see `release_spent_buffer`).
const SPENT_BUFFER_BYTES: usize = 64 << 10;

/// Control frames carry at most 125 bytes and are never fragmented (RFC 6455, 5.5).
const MAX_CONTROL_PAYLOAD_BYTES: u64 = 125;

/// Bytes of a connection's frames that were read but not yet handled by its session: the
/// reader waits for room under the budget before it reads the socket again, and the session
/// side gives bytes back as it takes each frame.
#[derive(Default)]
pub struct InboundBudget {
    held_bytes: AtomicUsize,
    room: Notify,
}

impl InboundBudget {
    /// A frame of `bytes` went to the session.
    pub(super) fn hold(&self, bytes: usize) {
        self.held_bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    /// The session took a frame of `bytes`.
    pub fn release(&self, bytes: usize) {
        self.held_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.room.notify_one();
    }

    pub(super) fn held(&self) -> usize {
        self.held_bytes.load(Ordering::Acquire)
    }
}

/// How many bytes a frame handed to the session holds against the budget.
pub fn held_bytes(frame: &ClientFrame) -> usize {
    match frame {
        ClientFrame::Text(text) => text.len(),
        ClientFrame::Ping(payload) => payload.len(),
        _ => 0,
    }
}

/// The last frame of a connection: why its reading ended.
struct End(ClientFrame);

struct Fragments {
    is_text: bool,
    parts: Vec<Bytes>,
    bytes: usize,
}

pub struct FrameReader {
    payload: Payload,
    codec: Codec,
    /// Bytes read from the socket and not yet decoded.
    buffer: BytesMut,
    /// A fragmented message being put together: whether it is text, and its fragments so far
    /// (slices of the read buffer, not copies, so an unfinished message costs its bytes once).
    fragments: Option<Fragments>,
    max_frame_bytes: usize,
    budget: Arc<InboundBudget>,
    /// The socket has nothing more to give (end of stream or an I/O error).
    socket_done: bool,
    /// A frame over `SPENT_BUFFER_BYTES` was taken out of the buffer since it was last released.
    large_frame_taken: bool,
}

impl FrameReader {
    pub fn new(payload: Payload, max_frame_bytes: usize, budget: Arc<InboundBudget>) -> Self {
        Self {
            payload,
            // The codec's own limit is a backstop; the header check below comes first.
            codec: Codec::new().max_size(max_frame_bytes),
            buffer: BytesMut::new(),
            fragments: None,
            max_frame_bytes,
            budget,
            socket_done: false,
            large_frame_taken: false,
        }
    }

    /// Reads frames into `frames` until the connection ends; the last frame sent is always a
    /// `Close`, `TooLarge`, `Invalid` or `Dropped`. Returns early, quietly, when the session let
    /// go of the connection.
    pub async fn run(mut self, frames: mpsc::Sender<ClientFrame>, closing: Arc<ClosingHandshake>) {
        // Once the session lets go of this connection, frames are read only to see the
        // client's answer to our close frame; the connection is cut within a few seconds.
        let mut session_gone = false;
        loop {
            let frame = match self.next_frame().await {
                Ok(ClientFrame::Close(code)) => {
                    // Nothing may follow a close frame; the handshake ends the connection.
                    closing.close_received();
                    if !session_gone {
                        let _ = frames.send(ClientFrame::Close(code)).await;
                    }
                    return;
                }
                Ok(frame) => frame,
                Err(End(last)) => {
                    // Nothing more will be read: a failed connection (1002, 1007, 1009) or a
                    // dropped one is closed once our last frame is out.
                    closing.close_received();
                    if !session_gone {
                        let _ = frames.send(last).await;
                    }
                    return;
                }
            };
            if session_gone {
                continue;
            }
            let held = held_bytes(&frame);
            self.budget.hold(held);
            if frames.send(frame).await.is_err() {
                // The session let go of this connection (it resumed elsewhere or ended).
                self.budget.release(held);
                session_gone = true;
            }
        }
    }

    async fn next_frame(&mut self) -> Result<ClientFrame, End> {
        loop {
            if let Some(frame) = self.decode_buffered()? {
                self.release_spent_buffer();
                return Ok(frame);
            }
            if self.socket_done {
                return Err(End(ClientFrame::Dropped));
            }
            self.release_spent_buffer();
            self.wait_for_room().await;
            match self.payload.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(_)) | None => self.socket_done = true,
            }
        }
    }

    /// Waits until what the session has not handled yet, what is buffered here and the
    /// fragments of a message being put together leave room for a whole frame, so one
    /// connection holds at most about one frame of incoming data.
    async fn wait_for_room(&self) {
        let limit = self.max_frame_bytes + MAX_FRAME_HEADER_BYTES;
        loop {
            let room = self.budget.room.notified();
            let fragments = self.fragments.as_ref().map_or(0, |f| f.bytes);
            if self.budget.held() + self.buffer.len() + fragments <= limit {
                return;
            }
            room.await;
        }
    }

    /// Once a large frame has been taken out and the buffer is empty, lets the buffer's
    /// allocation go: the frame's bytes were slices of it, and an empty buffer that kept the
    /// allocation would hold a frame's worth of memory for nothing once they are dropped.
    fn release_spent_buffer(&mut self) {
        if self.buffer.is_empty() && std::mem::take(&mut self.large_frame_taken) {
            self.buffer = BytesMut::new();
        }
    }

    /// Decodes one frame from the buffer, if a whole one is there; fails the connection on a
    /// frame the header already shows to be too large or malformed.
    fn decode_buffered(&mut self) -> Result<Option<ClientFrame>, End> {
        loop {
            let Some(header) = peek_header(&self.buffer) else {
                return Ok(None);
            };
            self.check_header(header)?;
            self.large_frame_taken |= header.payload_bytes > SPENT_BUFFER_BYTES as u64;
            let frame = match self.codec.decode(&mut self.buffer) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(None),
                Err(ProtocolError::Overflow) => return Err(too_large()),
                Err(_) => return Err(invalid(close_code::PROTOCOL_ERROR, "protocol error")),
            };
            if let Some(frame) = self.accept(frame)? {
                return Ok(Some(frame));
            }
            // A fragment of a message that is not complete yet: decode on.
        }
    }

    fn check_header(&self, header: Header) -> Result<(), End> {
        if header.opcode >= 8 {
            if header.payload_bytes > MAX_CONTROL_PAYLOAD_BYTES || !header.fin {
                return Err(invalid(close_code::PROTOCOL_ERROR, "invalid control frame"));
            }
            return Ok(());
        }
        let so_far = self.fragments.as_ref().map_or(0, |f| f.bytes) as u64;
        if so_far.saturating_add(header.payload_bytes) > self.max_frame_bytes as u64 {
            return Err(too_large());
        }
        Ok(())
    }

    /// Turns a decoded frame into what the session sees; fragments are put together here.
    fn accept(&mut self, frame: Frame) -> Result<Option<ClientFrame>, End> {
        let frame = match frame {
            Frame::Text(bytes) => text(bytes)?,
            Frame::Binary(_) => ClientFrame::Binary,
            Frame::Ping(payload) => ClientFrame::Ping(payload),
            Frame::Pong(_) => ClientFrame::Pong,
            Frame::Close(reason) => ClientFrame::Close(reason.map(|r| u16::from(r.code))),
            Frame::Continuation(item) => return self.continue_message(item),
        };
        Ok(Some(frame))
    }

    fn continue_message(&mut self, item: Item) -> Result<Option<ClientFrame>, End> {
        let (is_text, bytes, last) = match item {
            Item::FirstText(bytes) => (Some(true), bytes, false),
            Item::FirstBinary(bytes) => (Some(false), bytes, false),
            Item::Continue(bytes) => (None, bytes, false),
            Item::Last(bytes) => (None, bytes, true),
        };
        match (is_text, self.fragments.as_mut()) {
            (Some(is_text), None) => {
                self.fragments = Some(Fragments {
                    is_text,
                    bytes: bytes.len(),
                    parts: vec![bytes],
                });
                return Ok(None);
            }
            (None, Some(so_far)) => {
                so_far.bytes += bytes.len();
                so_far.parts.push(bytes);
            }
            // The codec refuses a new message inside another and a continuation of none.
            _ => return Err(invalid(close_code::PROTOCOL_ERROR, "protocol error")),
        }
        if !last {
            return Ok(None);
        }
        let Some(fragments) = self.fragments.take() else {
            return Ok(None);
        };
        if !fragments.is_text {
            return Ok(Some(ClientFrame::Binary));
        }
        let mut whole = BytesMut::with_capacity(fragments.bytes);
        for part in fragments.parts {
            whole.extend_from_slice(&part);
        }
        text(whole.freeze()).map(Some)
    }
}

/// What a frame's header says, read before its payload has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: u8,
    payload_bytes: u64,
}

/// The header at the front of `buffer`, once its length field is complete.
fn peek_header(buffer: &[u8]) -> Option<Header> {
    let (&first, rest) = buffer.split_first()?;
    let &second = rest.first()?;
    let payload_bytes = match second & 0x7f {
        126 => u64::from(u16::from_be_bytes(buffer.get(2..4)?.try_into().ok()?)),
        127 => u64::from_be_bytes(buffer.get(2..10)?.try_into().ok()?),
        short => u64::from(short),
    };
    Some(Header {
        fin: first & 0x80 != 0,
        opcode: first & 0x0f,
        payload_bytes,
    })
}

fn text(bytes: Bytes) -> Result<ClientFrame, End> {
    ByteString::try_from(bytes)
        .map(ClientFrame::Text)
        .map_err(|_| invalid(close_code::INVALID_PAYLOAD, "text is not valid UTF-8"))
}

fn too_large() -> End {
    End(ClientFrame::TooLarge)
}

fn invalid(code: u16, reason: &'static str) -> End {
    End(ClientFrame::Invalid { code, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_read_before_its_payload() {
        assert_eq!(peek_header(&[0x81]), None, "one byte is not a header");
        assert_eq!(
            peek_header(&[0x81, 0x85]),
            Some(Header {
                fin: true,
                opcode: 1,
                payload_bytes: 5
            })
        );
        assert_eq!(
            peek_header(&[0x02, 0xfe, 0x01]),
            None,
            "16-bit length incomplete"
        );
        assert_eq!(
            peek_header(&[0x02, 0xfe, 0x01, 0x00]).map(|h| (h.fin, h.payload_bytes)),
            Some((false, 256))
        );
        let mut huge = vec![0x81, 0xff];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(peek_header(&huge).map(|h| h.payload_bytes), Some(1 << 40));
    }
}

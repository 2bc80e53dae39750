//! A WebSocket client written by hand over a TCP socket, for the fuzzers: it sends whatever
//! bytes a mutation builds (frames no library would write: invalid UTF-8, bad headers,
//! unfinished fragments) and reads the server's frames only to learn what it answered.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub(crate) mod opcode {
    pub(crate) const CONTINUATION: u8 = 0x0;
    pub(crate) const TEXT: u8 = 0x1;
    pub(crate) const BINARY: u8 = 0x2;
    pub(crate) const CLOSE: u8 = 0x8;
    pub(crate) const PING: u8 = 0x9;
    pub(crate) const PONG: u8 = 0xA;
}

/// How a frame's header states its payload length.
#[derive(Clone, Copy)]
pub(crate) enum LengthField {
    /// The shortest form, as RFC 6455 requires.
    Minimal,
    /// The 16-bit form whatever the length (non-minimal for short payloads).
    Sixteen,
    /// The 64-bit form whatever the length.
    SixtyFour,
    /// The 64-bit form claiming this many bytes, whatever payload follows.
    Claimed(u64),
}

/// One frame as a client would put it on the wire, every header bit under the caller's control.
pub(crate) struct RawFrame {
    pub(crate) fin: bool,
    /// RSV1..RSV3 (the low three bits are used).
    pub(crate) reserved_bits: u8,
    pub(crate) opcode: u8,
    /// `None` sends the frame unmasked, which a server must refuse.
    pub(crate) mask: Option<[u8; 4]>,
    pub(crate) length: LengthField,
    pub(crate) payload: Vec<u8>,
}

/// Payloads above this are masked with zeros: a valid mask that spares the load generator
/// the XOR of megabytes; the server unmasks them the same way.
const ZERO_MASK_ABOVE_BYTES: usize = 64 << 10;

impl RawFrame {
    /// A well-formed, final, masked frame; the mask comes from `mask_bits`.
    pub(crate) fn new(opcode: u8, payload: Vec<u8>, mask_bits: u32) -> Self {
        let mask = if payload.len() > ZERO_MASK_ABOVE_BYTES {
            [0; 4]
        } else {
            mask_bits.to_be_bytes()
        };
        Self {
            fin: true,
            reserved_bits: 0,
            opcode,
            mask: Some(mask),
            length: LengthField::Minimal,
            payload,
        }
    }

    pub(crate) fn fin(mut self, fin: bool) -> Self {
        self.fin = fin;
        self
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let first = (u8::from(self.fin) << 7) | ((self.reserved_bits & 0x7) << 4) | self.opcode;
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let len = self.payload.len();
        out.reserve(len + 14);
        out.push(first);
        match self.length {
            LengthField::Minimal if len < 126 => out.push(mask_bit | len as u8),
            LengthField::Minimal if len <= 0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            LengthField::Sixteen => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len.min(0xffff) as u16).to_be_bytes());
            }
            LengthField::Minimal | LengthField::SixtyFour => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
            LengthField::Claimed(claimed) => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&claimed.to_be_bytes());
            }
        }
        match self.mask {
            None => out.extend_from_slice(&self.payload),
            Some([0, 0, 0, 0]) => {
                out.extend_from_slice(&[0; 4]);
                out.extend_from_slice(&self.payload);
            }
            Some(mask) => {
                out.extend_from_slice(&mask);
                let start = out.len();
                out.extend_from_slice(&self.payload);
                for (index, byte) in out[start..].iter_mut().enumerate() {
                    *byte ^= mask[index % 4];
                }
            }
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// How the server ended a connection, as the fuzzer saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServerClose {
    /// A close frame with this status code.
    Code(u16),
    /// A close frame without a status code.
    NoCode,
    /// The TCP connection ended (FIN) without a close frame.
    NoCloseFrame,
    /// The TCP connection was reset.
    Reset,
}

impl ServerClose {
    /// The key under which the summary counts it.
    pub(crate) fn label(self) -> String {
        match self {
            ServerClose::Code(code) => code.to_string(),
            ServerClose::NoCode => "close_without_code".to_owned(),
            ServerClose::NoCloseFrame => "no_close_frame".to_owned(),
            ServerClose::Reset => "reset".to_owned(),
        }
    }
}

/// What the reader has learnt so far, for the worker deciding what to send next.
#[derive(Clone, Default)]
pub(crate) struct Live {
    /// The resume token from `hello`.
    pub(crate) session_token: Option<String>,
    /// `limits.max_frame_bytes` from `hello`.
    pub(crate) max_frame_bytes: Option<usize>,
    /// Between `matched` and `ended`: the connection is in a chat (with another fuzzer).
    pub(crate) chatting: bool,
    /// `retry_after_ms` of the last `error` that carried one.
    pub(crate) retry_after_ms: Option<u64>,
    pub(crate) closed: Option<ServerClose>,
}

/// What the server sent on one connection, counted by the reader.
#[derive(Default)]
pub(crate) struct ReaderCounts {
    /// Text frames by their `type`.
    pub(crate) events_by_type: BTreeMap<String, u64>,
    /// `error` frames by their `code`.
    pub(crate) errors_by_code: BTreeMap<String, u64>,
    /// Frames that break what a server may send (masked frames, unknown opcodes, text that
    /// is not JSON).
    pub(crate) malformed_server_frames: u64,
}

#[derive(Debug)]
pub(crate) enum OpenError {
    /// No TCP connection or no HTTP answer.
    Io(String),
    /// The server answered the upgrade with this HTTP status instead of 101.
    Status(u16),
}

/// The fixed `Sec-WebSocket-Key` of RFC 6455's example: the server does not care whether keys
/// repeat, and this client does not check the `Sec-WebSocket-Accept` it gets back.
const HANDSHAKE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Most bytes of an upgrade response the client reads before it gives up on it.
const MAX_RESPONSE_HEAD_BYTES: usize = 16 << 10;

pub(crate) struct RawConnection {
    write: Option<OwnedWriteHalf>,
    live: watch::Receiver<Live>,
    stop_reader: Option<oneshot::Sender<()>>,
    reader: Option<JoinHandle<ReaderCounts>>,
}

impl RawConnection {
    /// Connects from `source` and upgrades `path_and_query` (e.g. `/ws?resume=x`).
    pub(crate) async fn open(
        target: SocketAddr,
        host: &str,
        source: Ipv4Addr,
        path_and_query: &str,
    ) -> Result<Self, OpenError> {
        let within = Duration::from_secs(10);
        let io = |error: std::io::Error| OpenError::Io(error.to_string());
        let socket = tokio::net::TcpSocket::new_v4().map_err(io)?;
        socket
            .bind(SocketAddr::new(IpAddr::V4(source), 0))
            .map_err(io)?;
        let stream = tokio::time::timeout(within, socket.connect(target))
            .await
            .map_err(|_| OpenError::Io("connect timed out".to_owned()))?
            .map_err(io)?;
        let _ = stream.set_nodelay(true);
        let (mut read, mut write) = stream.into_split();
        let request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {HANDSHAKE_KEY}\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        write.write_all(request.as_bytes()).await.map_err(io)?;
        let (status, rest) = tokio::time::timeout(within, read_response_head(&mut read))
            .await
            .map_err(|_| OpenError::Io("no upgrade response within 10 s".to_owned()))??;
        if status != 101 {
            return Err(OpenError::Status(status));
        }
        let (live_tx, live) = watch::channel(Live::default());
        let (stop_reader, stopped) = oneshot::channel();
        let reader = tokio::spawn(read_server_frames(read, rest, live_tx, stopped));
        Ok(Self {
            write: Some(write),
            live,
            stop_reader: Some(stop_reader),
            reader: Some(reader),
        })
    }

    pub(crate) fn live(&self) -> Live {
        self.live.borrow().clone()
    }

    pub(crate) fn closed(&self) -> Option<ServerClose> {
        self.live.borrow().closed
    }

    /// Waits up to `within` for `hello` (true) or for the connection to end (false).
    pub(crate) async fn wait_for_hello(&mut self, within: Duration) -> bool {
        let seen = tokio::time::timeout(
            within,
            self.live
                .wait_for(|live| live.session_token.is_some() || live.closed.is_some()),
        )
        .await;
        matches!(seen, Ok(Ok(live)) if live.session_token.is_some())
    }

    /// Waits up to `within` for the server to end the connection.
    pub(crate) async fn wait_for_close(&mut self, within: Duration) -> Option<ServerClose> {
        let _ =
            tokio::time::timeout(within, self.live.wait_for(|live| live.closed.is_some())).await;
        self.closed()
    }

    /// Writes `bytes`; an error means the server closed (or reset) the connection, a timeout
    /// that it stopped reading.
    pub(crate) async fn write(&mut self, bytes: &[u8], within: Duration) -> WriteOutcome {
        let Some(write) = self.write.as_mut() else {
            return WriteOutcome::Failed;
        };
        match tokio::time::timeout(within, write.write_all(bytes)).await {
            Ok(Ok(())) => WriteOutcome::Written,
            Ok(Err(_)) => WriteOutcome::Failed,
            Err(_) => WriteOutcome::Stalled,
        }
    }

    /// Ends the connection. `reset` sends a TCP reset (no FIN, no close frame), as a dropped
    /// network would; otherwise the socket is shut down normally. Returns what the reader
    /// counted.
    pub(crate) async fn end(mut self, reset: bool) -> ReaderCounts {
        if let Some(write) = self.write.take() {
            if reset {
                set_linger_zero(&write);
                // The socket closes (with the reset) once the reader drops the other half.
                write.forget();
            } else {
                drop(write);
            }
        }
        if let Some(stop) = self.stop_reader.take() {
            let _ = stop.send(());
        }
        match self.reader.take() {
            Some(reader) => reader.await.unwrap_or_default(),
            None => ReaderCounts::default(),
        }
    }
}

pub(crate) enum WriteOutcome {
    Written,
    Failed,
    Stalled,
}

/// SO_LINGER with a zero timeout: closing the socket then resets the connection.
fn set_linger_zero(write: &OwnedWriteHalf) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let fd = write.as_ref().as_raw_fd();
    // SAFETY: the descriptor is open (the stream is alive) and `linger` is a valid value of
    // the size passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Reads an HTTP response head; returns its status and the bytes read past it.
async fn read_response_head(read: &mut OwnedReadHalf) -> Result<(u16, Vec<u8>), OpenError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = head.windows(4).position(|window| window == b"\r\n\r\n") {
            let status = std::str::from_utf8(&head[..end])
                .ok()
                .and_then(|text| text.split_whitespace().nth(1))
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| OpenError::Io("unreadable status line".to_owned()))?;
            return Ok((status, head[end + 4..].to_vec()));
        }
        if head.len() > MAX_RESPONSE_HEAD_BYTES {
            return Err(OpenError::Io("response head too long".to_owned()));
        }
        let read_bytes = read
            .read(&mut chunk)
            .await
            .map_err(|e| OpenError::Io(e.to_string()))?;
        if read_bytes == 0 {
            return Err(OpenError::Io("closed during the upgrade".to_owned()));
        }
        head.extend_from_slice(&chunk[..read_bytes]);
    }
}

/// Reads the server's frames until it ends the connection or the worker lets go of it,
/// publishing what the worker needs in `live` and counting the rest.
async fn read_server_frames(
    mut read: OwnedReadHalf,
    mut buffer: Vec<u8>,
    live: watch::Sender<Live>,
    mut stopped: oneshot::Receiver<()>,
) -> ReaderCounts {
    let mut counts = ReaderCounts::default();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let mut consumed = 0;
        while let Some((frame, used)) = parse_server_frame(&buffer[consumed..]) {
            consumed += used;
            if let Some(close) = take_frame(frame, &live, &mut counts) {
                live.send_modify(|live| live.closed = Some(close));
                return counts;
            }
        }
        buffer.drain(..consumed);
        let read_bytes = tokio::select! {
            _ = &mut stopped => return counts,
            read_bytes = read.read(&mut chunk) => read_bytes,
        };
        let close = match read_bytes {
            Ok(0) => ServerClose::NoCloseFrame,
            Ok(n) => {
                buffer.extend_from_slice(&chunk[..n]);
                continue;
            }
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => ServerClose::Reset,
            Err(_) => ServerClose::NoCloseFrame,
        };
        live.send_modify(|live| live.closed = Some(close));
        return counts;
    }
}

struct ServerFrame<'a> {
    opcode: u8,
    masked: bool,
    payload: &'a [u8],
}

/// One whole frame from the front of `bytes`, and how many bytes it took.
fn parse_server_frame(bytes: &[u8]) -> Option<(ServerFrame<'_>, usize)> {
    let (&first, rest) = bytes.split_first()?;
    let &second = rest.first()?;
    let masked = second & 0x80 != 0;
    let (len, mut offset): (u64, usize) = match second & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?), 10),
        short => (u64::from(short), 2),
    };
    if masked {
        // A server must not mask. Such a frame is counted as malformed; its payload is left
        // masked, as the fuzzer only needs to know it happened.
        offset += 4;
    }
    let end = offset.checked_add(usize::try_from(len).ok()?)?;
    let payload = bytes.get(offset..end)?;
    Some((
        ServerFrame {
            opcode: first & 0x0f,
            masked,
            payload,
        },
        end,
    ))
}

/// Counts one server frame; returns how the connection ended if it was a close frame.
fn take_frame(
    frame: ServerFrame<'_>,
    live: &watch::Sender<Live>,
    counts: &mut ReaderCounts,
) -> Option<ServerClose> {
    if frame.masked {
        counts.malformed_server_frames += 1;
    }
    match frame.opcode {
        opcode::TEXT => take_text(frame.payload, live, counts),
        opcode::CLOSE => {
            return Some(match frame.payload {
                [high, low, ..] => ServerClose::Code(u16::from_be_bytes([*high, *low])),
                _ => ServerClose::NoCode,
            })
        }
        opcode::PING | opcode::PONG => {}
        _ => counts.malformed_server_frames += 1,
    }
    None
}

fn take_text(payload: &[u8], live: &watch::Sender<Live>, counts: &mut ReaderCounts) {
    let Some(frame_type) = frame_type(payload) else {
        counts.malformed_server_frames += 1;
        return;
    };
    *counts
        .events_by_type
        .entry(frame_type.to_owned())
        .or_default() += 1;
    match frame_type {
        "hello" | "error" => {
            let Ok(frame) = serde_json::from_slice::<serde_json::Value>(payload) else {
                counts.malformed_server_frames += 1;
                return;
            };
            if frame_type == "error" {
                let code = frame["code"].as_str().unwrap_or("none").to_owned();
                *counts.errors_by_code.entry(code).or_default() += 1;
                if let Some(retry_after_ms) = frame["retry_after_ms"].as_u64() {
                    live.send_modify(|live| live.retry_after_ms = Some(retry_after_ms));
                }
                return;
            }
            if frame["resumed"] == true {
                // A fuzzer resumed one of its own dropped sessions: the real resume path.
                *counts
                    .events_by_type
                    .entry("hello_resumed".to_owned())
                    .or_default() += 1;
            }
            let token = frame["session"].as_str().map(str::to_owned);
            let max_frame_bytes = frame["limits"]["max_frame_bytes"]
                .as_u64()
                .map(|bytes| bytes as usize);
            live.send_modify(|live| {
                live.session_token = token;
                live.max_frame_bytes = max_frame_bytes;
            });
        }
        "matched" => live.send_modify(|live| live.chatting = true),
        "ended" => live.send_modify(|live| live.chatting = false),
        _ => {}
    }
}

/// The `type` of a server frame, read from its start without parsing the whole frame (a
/// relayed image is a megabyte of JSON the fuzzer has no use for).
fn frame_type(payload: &[u8]) -> Option<&str> {
    let head = &payload[..payload.len().min(256)];
    let start = head
        .windows(8)
        .position(|window| window == b"\"type\":\"")?
        + 8;
    let len = head[start..].iter().position(|&byte| byte == b'"')?;
    std::str::from_utf8(&head[start..start + len]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_encoded_with_the_header_it_asks_for() {
        let frame = RawFrame::new(opcode::TEXT, b"hi".to_vec(), 0);
        assert_eq!(frame.encode(), vec![0x81, 0x82, 0, 0, 0, 0, b'h', b'i']);
        let mut claimed = RawFrame::new(opcode::BINARY, vec![1], 0x0102_0304);
        claimed.length = LengthField::Claimed(1 << 40);
        let bytes = claimed.encode();
        assert_eq!(&bytes[..2], &[0x82, 0xff]);
        assert_eq!(&bytes[2..10], &(1u64 << 40).to_be_bytes());
        assert_eq!(&bytes[10..14], &[1, 2, 3, 4]);
        assert_eq!(bytes[14], 1 ^ 1, "the payload is masked");
        let unfinished = RawFrame::new(opcode::TEXT, vec![b'x'; 200], 0).fin(false);
        assert_eq!(&unfinished.encode()[..4], &[0x01, 0xfe, 0, 200]);
    }

    #[test]
    fn a_server_frame_is_parsed_only_once_whole() {
        let close = [0x88, 0x02, 0x03, 0xe8];
        let (frame, used) = parse_server_frame(&close).expect("a whole close frame");
        assert_eq!((frame.opcode, frame.payload, used), (8, &[3, 0xe8][..], 4));
        assert!(parse_server_frame(&close[..3]).is_none());
        assert_eq!(
            frame_type(br#"{"type":"hello","session":"x"}"#),
            Some("hello")
        );
    }
}

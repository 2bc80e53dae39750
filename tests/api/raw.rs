//! A WebSocket client written frame by frame over a plain TCP socket, for what no polite client
//! library will send: headers that lie about lengths, floods of control frames, broken frames,
//! and connections that never read.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const TEXT: u8 = 0x1;
pub const CONTINUATION: u8 = 0x0;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xa;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

pub struct RawSocket {
    pub stream: TcpStream,
    unread: Vec<u8>,
}

/// A frame the server sent.
#[derive(Debug)]
pub struct ServerFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).expect("server text frames are JSON")
    }

    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

impl RawSocket {
    /// Opens `path` (e.g. "/ws?resume=…") from `source` and completes the upgrade.
    pub async fn connect(server: SocketAddr, source: IpAddr, path: &str) -> RawSocket {
        Self::connect_with_headers(server, source, path, "").await
    }

    pub async fn connect_with_headers(
        server: SocketAddr,
        source: IpAddr,
        path: &str,
        extra_headers: &str,
    ) -> RawSocket {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        let stream = socket.connect(server).await.expect("tcp connects");
        Self::upgrade_with_headers(stream, path, extra_headers).await
    }

    /// Completes the upgrade on a connected stream.
    pub async fn upgrade(stream: TcpStream, path: &str) -> RawSocket {
        Self::upgrade_with_headers(stream, path, "").await
    }

    async fn upgrade_with_headers(
        mut stream: TcpStream,
        path: &str,
        extra_headers: &str,
    ) -> RawSocket {
        let host = stream.peer_addr().unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             {extra_headers}\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n = stream.read(&mut byte).await.expect("handshake answer");
            assert_eq!(
                n,
                1,
                "closed during the handshake: {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        RawSocket {
            stream,
            unread: Vec::new(),
        }
    }

    /// A masked frame header announcing `payload_bytes`, without the payload.
    pub fn header(fin: bool, opcode: u8, payload_bytes: u64) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload_bytes {
            0..=125 => out.push(0x80 | payload_bytes as u8),
            126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(payload_bytes as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&payload_bytes.to_be_bytes());
            }
        }
        out.extend_from_slice(&MASK);
        out
    }

    /// A whole masked frame.
    pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Self::header(fin, opcode, payload.len() as u64);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        out
    }

    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    pub async fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        self.write(&Self::frame(fin, opcode, payload)).await
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send(true, TEXT, value.to_string().as_bytes())
            .await
            .expect("frame sent");
    }

    /// The next frame, or `None` once the server closed the connection (or `within` passed).
    pub async fn read_frame(&mut self, within: Duration) -> Option<ServerFrame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(frame) = self.parse_frame() {
                return Some(frame);
            }
            let mut chunk = [0u8; 64 << 10];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.unread.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    fn parse_frame(&mut self) -> Option<ServerFrame> {
        let buf = &self.unread;
        if buf.len() < 2 {
            return None;
        }
        let (len, start) = match buf[1] & 0x7f {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
            127 if buf.len() >= 10 => (
                u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            short => (short as usize, 2),
        };
        if buf.len() < start + len {
            return None;
        }
        let frame = ServerFrame {
            opcode: buf[0] & 0x0f,
            payload: buf[start..start + len].to_vec(),
        };
        self.unread.drain(..start + len);
        Some(frame)
    }

    /// Reads until a text frame of `frame_type` comes (skipping pings and other frames).
    pub async fn expect(&mut self, frame_type: &str) -> Value {
        loop {
            let frame = self
                .read_frame(Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("closed while waiting for {frame_type}"));
            if frame.opcode == TEXT {
                let value = frame.json();
                if value["type"] == frame_type {
                    return value;
                }
            }
        }
    }

    /// The next text frame, whatever its type.
    pub async fn expect_any_text(&mut self) -> Value {
        loop {
            let frame = self
                .read_frame(Duration::from_secs(10))
                .await
                .expect("a text frame before the connection ends");
            if frame.opcode == TEXT {
                return frame.json();
            }
        }
    }

    /// Reads until the server's close frame; returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            let frame = self
                .read_frame(Duration::from_secs(10))
                .await
                .expect("a close frame before the connection ends");
            if frame.opcode == CLOSE {
                return frame.close_code().expect("the close frame has a code");
            }
        }
    }

    /// Whether the server ends the TCP connection within `within`, reading (and discarding)
    /// anything it still sends.
    pub async fn closed_by_server_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut chunk = vec![0u8; 256 << 10];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}

//! The load generator's WebSocket client: connecting from many loopback sources, reading
//! and expecting frames, and the process helpers (file limit, server memory, progress).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The `index`-th of `sources` loopback source addresses: 127.1.0.1 and up. Each address is
/// one client to the server (its rate limits and session bound are per address).
pub(crate) fn loopback_source(index: usize, sources: u32) -> Ipv4Addr {
    // Within 127.1.0.0/16: at most 65,535 distinct sources.
    let host = 1 + (index as u32) % sources.clamp(1, 0xffff);
    Ipv4Addr::new(127, 1, (host >> 8) as u8, (host & 0xff) as u8)
}

/// The host and port of a `ws://host:port/path` URL, resolved.
pub(crate) async fn ws_target(url: &str) -> Result<SocketAddr, String> {
    let target = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or("only ws:// URLs are supported")?;
    tokio::net::lookup_host(target)
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "no address".to_owned())
}

/// Opens a connection from the `index`-th loopback source address.
pub(crate) async fn connect(url: &str, index: usize, sources: u32) -> Result<Ws, String> {
    connect_from(url, loopback_source(index, sources)).await
}

/// Opens a connection from `source`, which must be a loopback address.
pub(crate) async fn connect_from(url: &str, source: Ipv4Addr) -> Result<Ws, String> {
    let target = ws_target(url).await?;
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .map_err(|e| e.to_string())?;
    let stream = socket.connect(target).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// The next JSON frame, or `None` on close, error or timeout.
pub(crate) async fn next_frame(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.ok()?? {
            Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

pub(crate) async fn expect(
    ws: &mut Ws,
    frame_type: &str,
    within: Duration,
) -> Result<Value, String> {
    loop {
        let frame = next_frame(ws, within)
            .await
            .ok_or_else(|| format!("no {frame_type}"))?;
        if frame["type"] == frame_type {
            return Ok(frame);
        }
        if frame["type"] == "error" {
            return Err(format!("error while waiting for {frame_type}: {frame}"));
        }
    }
}

/// Connects, solves proof of work if asked, finds, and waits for a match.
pub(crate) async fn matched_client(url: &str, index: usize, sources: u32) -> Result<Ws, String> {
    matched_client_with(url, index, sources, None).await
}

/// Like `matched_client`, with one interest: two clients that share a unique interest are
/// matched with each other, not with whoever else is queueing at the time.
pub(crate) async fn matched_client_with(
    url: &str,
    index: usize,
    sources: u32,
    interest: Option<String>,
) -> Result<Ws, String> {
    let mut ws = connect(url, index, sources).await?;
    let hello = expect(&mut ws, "hello", Duration::from_secs(30)).await?;
    let mut find = json!({"type":"find","adult":true});
    if let Some(interest) = interest {
        find["interests"] = json!([interest]);
    }
    if let Some(challenge) = hello["pow"]["challenge"].as_str() {
        let bits = hello["pow"]["difficulty"].as_u64().unwrap_or(0) as u32;
        let nonce = ephemera_actors::pow::solve(challenge, bits).ok_or("unreadable challenge")?;
        find["pow"] = json!(nonce);
    }
    send(&mut ws, &find).await?;
    expect(&mut ws, "matched", Duration::from_secs(60)).await?;
    Ok(ws)
}

pub(crate) async fn send(ws: &mut Ws, frame: &Value) -> Result<(), String> {
    ws.send(Message::Text(frame.to_string()))
        .await
        .map_err(|e| e.to_string())
}

pub(crate) fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Resident memory of `pid`, in KiB.
pub(crate) fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

pub(crate) fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar
}

// ---------------------------------------------------------------------------------------------
// chat
// ---------------------------------------------------------------------------------------------

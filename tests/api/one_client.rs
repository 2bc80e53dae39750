//! What one client can make the server do, tried as an attacker would: raw frames over a real
//! socket (headers that lie, floods of control frames, broken frames, connections that never
//! read), forwarded headers, and the real binary's memory and logs.

use std::io::Read as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use ephemera::settings::Settings;
use serde_json::json;

use crate::helpers::*;
use crate::raw::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A raw client that has read its hello.
async fn raw_client(server: &TestServer, source: &str) -> RawSocket {
    let mut socket = RawSocket::connect(server.addr, ip(source), "/ws").await;
    socket.expect("hello").await;
    socket
}

#[tokio::test]
async fn a_frame_announcing_more_than_the_limit_is_refused_at_its_header_with_1009() {
    let server = spawn_server(Settings {
        max_frame_bytes: 64 << 10,
        ..test_settings()
    });
    let mut socket = raw_client(&server, "127.90.0.1").await;
    // 2^40 bytes announced, none sent: the server must not wait for them.
    socket
        .write(&RawSocket::header(true, TEXT, 1 << 40))
        .await
        .unwrap();
    assert_eq!(socket.expect("error").await["code"], "too_large");
    assert_eq!(socket.expect_close().await, 1009);
    assert!(socket.closed_by_server_within(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn fragments_count_together_towards_the_frame_limit() {
    let server = spawn_server(Settings {
        max_frame_bytes: 64 << 10,
        ..test_settings()
    });
    let mut socket = raw_client(&server, "127.90.0.2").await;
    let part = vec![b' '; 40 << 10];
    socket.send(false, TEXT, &part).await.unwrap();
    // 80 KiB in all would pass the 64 KiB bound: refused at the second fragment's header.
    socket
        .write(&RawSocket::header(false, CONTINUATION, part.len() as u64))
        .await
        .unwrap();
    assert_eq!(socket.expect_close().await, 1009);

    // Under the bound, fragments make one message.
    let mut socket = raw_client(&server, "127.90.0.2").await;
    socket.send(false, TEXT, br#"{"type":"#).await.unwrap();
    socket
        .send(false, CONTINUATION, br#""find","#)
        .await
        .unwrap();
    socket
        .send(true, CONTINUATION, br#""adult":true}"#)
        .await
        .unwrap();
    socket.expect("waiting").await;
}

#[tokio::test]
async fn broken_frames_are_failed_with_1002_or_1007() {
    let server = spawn_server(test_settings());
    let mut unmasked = RawSocket::frame(true, TEXT, b"{}");
    unmasked[1] &= 0x7f;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "text that is not UTF-8",
            RawSocket::frame(true, TEXT, &[0xc3, 0x28]),
            1007,
        ),
        (
            "fragmented text that is not UTF-8",
            {
                let mut both = RawSocket::frame(false, TEXT, &[b'a', 0xe2]);
                both.extend(RawSocket::frame(true, CONTINUATION, &[0x28, 0xa1]));
                both
            },
            1007,
        ),
        (
            "reserved bits",
            {
                let mut frame = RawSocket::frame(true, TEXT, b"{}");
                frame[0] |= 0x40;
                frame
            },
            1002,
        ),
        ("an unknown opcode", RawSocket::frame(true, 0x3, b"x"), 1002),
        (
            "a ping over 125 bytes",
            RawSocket::frame(true, PING, &[0; 126]),
            1002,
        ),
        (
            "a fragmented ping",
            RawSocket::frame(false, PING, b"x"),
            1002,
        ),
        (
            "a continuation of nothing",
            RawSocket::frame(true, CONTINUATION, b"x"),
            1002,
        ),
        ("an unmasked frame", unmasked, 1002),
    ];
    for (what, bytes, code) in cases {
        let mut socket = raw_client(&server, "127.90.0.3").await;
        socket.write(&bytes).await.unwrap();
        assert_eq!(socket.expect_close().await, code, "{what}");
        assert!(
            socket.closed_by_server_within(Duration::from_secs(5)).await,
            "{what}: the connection ends"
        );
    }
    // The server keeps serving everyone else.
    server.matched_pair().await;
}

#[tokio::test]
async fn a_close_frame_followed_at_once_by_a_tcp_close_ends_the_chat_at_once() {
    let server = spawn_server(long_grace());
    let mut raw = raw_client(&server, "127.90.0.4").await;
    raw.send_json(find_text()).await;
    raw.expect("waiting").await;
    let mut stranger = server.client().await;
    stranger.send(find_text()).await;
    stranger.expect("waiting").await;
    raw.expect("matched").await;
    stranger.expect("matched").await;
    let mut goodbye = RawSocket::frame(true, CLOSE, &1000u16.to_be_bytes());
    goodbye.extend_from_slice(b"");
    raw.write(&goodbye).await.unwrap();
    drop(raw);
    // A close frame ends the chat; it is not a drop that waits for a resume.
    let frame = stranger.expect_any().await;
    assert_eq!(frame["type"], "ended", "got {frame}");
    assert_eq!(frame["reason"], "stranger_left");
}

#[tokio::test]
async fn pings_past_the_control_frame_rate_go_unanswered_and_end_the_connection() {
    let server = spawn_server(Settings {
        max_control_frames_per_second: 5,
        ..test_settings()
    });
    let mut socket = raw_client(&server, "127.90.0.5").await;
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.extend(RawSocket::frame(true, PING, &[7; 125]));
    }
    socket.write(&flood).await.unwrap();
    let (mut pongs, mut close) = (0, None);
    while let Some(frame) = socket.read_frame(Duration::from_secs(5)).await {
        match frame.opcode {
            PONG => pongs += 1,
            CLOSE => {
                close = frame.close_code();
                break;
            }
            _ => {}
        }
    }
    assert!(pongs >= 1, "pings within the rate are answered");
    assert!(pongs <= 10, "{pongs} pongs for a flood of 200");
    assert_eq!(close, Some(1008), "a flood is a stream of protocol errors");
    let metrics = server.metrics().await;
    assert!(metrics.contains(r#"ephemera_refusals_total{reason="control_frames"}"#));
}

#[tokio::test]
async fn signals_belong_to_video_chats_and_are_rate_limited() {
    let server = spawn_server(Settings {
        max_signals_per_minute: 3,
        ..test_settings()
    });
    let (mut a, b) = server.matched_pair().await;
    a.send(json!({"type":"signal","data":{"sdp":"x"}})).await;
    a.expect_error("bad_request").await;

    let (mut a, mut b2) = server.matched_pair_with(find_with("video", &[])).await;
    for n in 0..3 {
        a.send(json!({"type":"signal","data":{"n":n}})).await;
        assert_eq!(b2.expect("signal").await["data"]["n"], n);
    }
    a.send(json!({"type":"signal","data":{"n":3}})).await;
    let refused = a.expect_error("rate_limited").await;
    assert!(refused["retry_after_ms"].as_u64().unwrap() > 0);
    b2.expect_nothing(Duration::from_millis(200)).await;
    drop(b);
}

#[tokio::test]
async fn typing_past_its_rate_is_dropped_without_an_answer() {
    let server = spawn_server(Settings {
        max_typing_per_second: 2,
        ..test_settings()
    });
    let (mut a, mut b) = server.matched_pair().await;
    for n in 0..20 {
        a.send(json!({"type":"typing","active": n % 2 == 0})).await;
    }
    a.say("after the typing").await;
    assert_eq!(
        a.expect("msg").await["from"],
        "you",
        "no error came before the echo"
    );
    let mut typing = 0;
    loop {
        let frame = b.expect_any().await;
        match frame["type"].as_str() {
            Some("typing") => typing += 1,
            Some("msg") => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        (1..20).contains(&typing),
        "{typing} of 20 indicators relayed"
    );
    let metrics = server.metrics().await;
    assert!(metrics.contains(r#"ephemera_refusals_total{reason="typing_dropped"}"#));
}

#[tokio::test]
async fn a_json_array_is_not_a_frame() {
    let server = spawn_server(test_settings());
    let mut client = server.client().await;
    client
        .send(json!(["find", null, true, null, null, null]))
        .await;
    client.expect_error("bad_request").await;
}

/// Behind a trusted proxy, the client is the first untrusted hop from the right of the one
/// header the operator chose; whatever a client writes into it cannot choose its key.
#[tokio::test]
async fn a_client_behind_a_trusted_proxy_cannot_choose_its_client_key() {
    let server = spawn_server(Settings {
        trusted_proxies: vec!["127.31.0.0/24".to_owned()],
        max_sessions_per_client: 3,
        ..test_settings()
    });
    let proxy = ip("127.31.0.1");
    // Each connection claims another origin to the left, in another form, as an attacker
    // would: the proxy appends the real client, 127.91.0.1, and only that one counts.
    let claims = [
        "127.92.0.1",
        "127.92.0.2:4711",
        "[2001:db8::7]:80",
        "unknown",
        "_hidden",
    ];
    let mut held = Vec::new();
    for (n, claim) in claims.iter().enumerate() {
        let headers =
            format!("X-Forwarded-For: {claim}, 127.91.0.1\r\nForwarded: for=127.93.0.{n}\r\n");
        let mut socket = RawSocket::connect_with_headers(server.addr, proxy, "/ws", &headers).await;
        let first = socket.expect_any_text().await;
        held.push((first, socket));
    }
    let greeted = held
        .iter()
        .filter(|(first, _)| first["type"] == "hello")
        .count();
    assert_eq!(greeted, 3, "one client, one bound of 3 sessions");
    assert!(held
        .iter()
        .any(|(first, _)| first["code"] == "rate_limited"));
}

#[tokio::test]
async fn forwarded_hosts_are_believed_only_from_trusted_proxies() {
    let server = spawn_server(Settings {
        trusted_proxies: vec!["127.32.0.0/24".to_owned()],
        ..test_settings()
    });
    let origin = "Origin: https://chat.example\r\n";
    for forwarded in [
        "X-Forwarded-Host: chat.example\r\n",
        "Forwarded: host=chat.example\r\n",
    ] {
        let headers = format!("{origin}{forwarded}");
        let status = upgrade_status(&server, ip("127.94.0.1"), &headers).await;
        assert_eq!(
            status, 403,
            "an untrusted client's {forwarded:?} is ignored"
        );
    }
    let headers = format!("{origin}X-Forwarded-Host: chat.example\r\n");
    assert_eq!(
        upgrade_status(&server, ip("127.32.0.1"), &headers).await,
        101
    );
    let metrics = server.metrics().await;
    assert!(metrics.contains(r#"ephemera_refusals_total{reason="origin"}"#));
}

/// Sends `request` as it is and returns the status of the answer.
async fn raw_http_status(addr: std::net::SocketAddr, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response[9..12]).parse().unwrap()
}

async fn upgrade_status(server: &TestServer, source: IpAddr, headers: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(source, 0)).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

/// The real binary's resident memory and open descriptors.
struct Process(u32);

impl Process {
    fn resident_bytes(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0)).unwrap();
        let kib: usize = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib << 10
    }

    /// Connections the server still holds open on `port`: its end established, or closed by
    /// the peer and not yet by the server (read from /proc/net/tcp, so descriptors the
    /// process inherited or opened for itself do not count).
    fn connections_held(&self, port: u16) -> usize {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        table
            .lines()
            .skip(1)
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let local_port = fields[1]
                    .rsplit(':')
                    .next()
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok());
                // 01 established, 08 close-wait.
                local_port == Some(port) && matches!(fields[3], "01" | "08")
            })
            .count()
    }

    /// Waits (polling, up to `within`) until `done` holds.
    async fn settles(&self, within: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if done(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        done(self)
    }
}

const MIB: usize = 1 << 20;

/// One connection at a time tries each way of making the release server hold memory: a
/// header announcing a terabyte followed by a stream, a ping flood from a reader that never
/// reads, and twenty resume takeovers of a session with a full log by sockets that never read.
/// Each is cut off, and the server's resident memory stays within the two bounds that apply
/// (`max_frame_bytes` + `session_outbox_max_bytes`) plus a few MiB, and goes back afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_make_the_server_hold_memory() {
    let frame_bound = 2 * MIB;
    let outbox_bound = 2 * MIB;
    let spawned = spawn_binary(
        Command::new(server_binary())
            .args(["--listen-addr", "127.0.0.1:0", "--workers", "1"])
            .args(["--log-level", "warn", "--resume-grace-seconds", "30"])
            .args(["--max-frame-bytes", &frame_bound.to_string()])
            .args(["--session-outbox-max-bytes", &outbox_bound.to_string()])
            .args(["--memory-trim-interval-seconds", "0.2"])
            .args([
                "--max-connections-per-minute",
                "0",
                "--max-messages-per-second",
                "0",
            ])
            .stderr(Stdio::null()),
    );
    let child = KillOnDrop(spawned.child);
    let addr = spawned.addr;
    let process = Process(child.id());
    // Warm up: a chat, so start-up allocations are behind the baseline.
    {
        let (mut a, mut b) = matched_pair_at(addr, ip("127.95.0.1"), ip("127.95.0.2")).await;
        a.say("warm up").await;
        b.expect("msg").await;
        a.close().await;
        b.close().await;
    }
    stats_until(addr, "the warm-up sessions are gone", |s| s["online"] == 0).await;
    let baseline = process.resident_bytes();
    let bound = baseline + frame_bound + outbox_bound + 8 * MIB;
    let mut peak = baseline;

    // 1. A terabyte announced, then 64 MiB streamed after it.
    let mut socket = RawSocket::connect(addr, ip("127.95.0.3"), "/ws").await;
    socket.expect("hello").await;
    socket
        .write(&RawSocket::header(true, TEXT, 1 << 40))
        .await
        .unwrap();
    let chunk = vec![b'x'; MIB];
    for _ in 0..64 {
        if socket.write(&chunk).await.is_err() {
            break;
        }
        peak = peak.max(process.resident_bytes());
    }
    assert_eq!(socket.expect_close().await, 1009);
    drop(socket);
    peak = peak.max(process.resident_bytes());
    assert!(
        peak <= bound,
        "oversized frame: {} MiB over {} MiB",
        peak / MIB,
        baseline / MIB
    );

    // 2. Pings as fast as the socket takes them, never reading a pong.
    let mut socket = RawSocket::connect(addr, ip("127.95.0.4"), "/ws").await;
    let mut flood = Vec::new();
    for _ in 0..4096 {
        flood.extend(RawSocket::frame(true, PING, &[1; 125]));
    }
    for _ in 0..200 {
        let sent = tokio::time::timeout(Duration::from_secs(2), socket.write(&flood)).await;
        if !matches!(sent, Ok(Ok(()))) {
            break;
        }
        peak = peak.max(process.resident_bytes());
    }
    drop(socket);
    peak = peak.max(process.resident_bytes());
    assert!(
        peak <= bound,
        "ping flood: {} MiB over {} MiB",
        peak / MIB,
        baseline / MIB
    );

    // 3. A chat log filled with about 4 MiB, then twenty takeovers that never read.
    let (owner, mut stranger) = matched_pair_at(addr, ip("127.95.0.5"), ip("127.95.0.6")).await;
    let token = owner.token();
    owner.drop_connection();
    stranger.expect("stranger_away").await;
    let long = "y".repeat(1900);
    for _ in 0..2000 {
        stranger.say(&long).await;
        stranger.expect("msg").await;
    }
    let mut takeovers = Vec::new();
    for _ in 0..20 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        // A small receive window, so a replay cannot hide in the kernel's buffers.
        socket.set_recv_buffer_size(4096).unwrap();
        socket
            .bind(std::net::SocketAddr::new(ip("127.95.0.5"), 0))
            .unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let mut raw = RawSocket::upgrade(stream, &format!("/ws?resume={token}&last_seq=0")).await;
        // Read a little, so the takeover is in force, then never again.
        raw.read_frame(Duration::from_secs(5)).await.expect("hello");
        takeovers.push(raw);
        peak = peak.max(process.resident_bytes());
    }
    assert!(
        process
            .settles(Duration::from_secs(10), |p| p.connections_held(addr.port())
                <= 2)
            .await,
        "replaced connections are closed: {} held",
        process.connections_held(addr.port())
    );
    peak = peak.max(process.resident_bytes());
    assert!(
        peak <= bound,
        "takeovers: {} MiB over {} MiB",
        peak / MIB,
        baseline / MIB
    );
    drop(takeovers);
    drop(stranger);

    // 4. Memory goes back close to where it was.
    let settled = process
        .settles(Duration::from_secs(10), |p| {
            p.resident_bytes() <= baseline + 6 * MIB
        })
        .await;
    assert!(
        settled,
        "resident memory stays at {} MiB after the attacks, {} MiB before",
        process.resident_bytes() / MIB,
        baseline / MIB
    );
    drop(child);
}

/// Malformed HTTP requests carry client values into the frameworks' log lines. None of them
/// reaches the output at any level; each is counted, and the lines about them are few.
#[tokio::test]
async fn malformed_requests_are_counted_and_never_logged_with_what_the_client_sent() {
    for level in ["info", "trace"] {
        let spawned = spawn_binary(
            Command::new(server_binary())
                .args(["--listen-addr", "127.0.0.1:0", "--workers", "1"])
                .args(["--log-level", level])
                .stderr(Stdio::piped()),
        );
        let mut child = KillOnDrop(spawned.child);
        let stderr = child.0.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::BufReader::new(stderr)
                .read_to_string(&mut text)
                .unwrap();
            text
        });
        let malformed = [
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: NickZebra42\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: MarkerTe77, chunked\r\n\r\n",
            "GET /Marker\u{1}Path HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX-Marker: Marker\u{7f}Bad\r\n\r\n",
        ];
        const ROUNDS: usize = 50;
        for _ in 0..ROUNDS {
            for request in malformed {
                let status = raw_http_status(spawned.addr, request).await;
                assert_eq!(status, 400, "{request:?}");
            }
        }
        let (_, metrics) = http_get(spawned.metrics_addr, "/metrics").await;
        let counted: usize = metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix(r#"ephemera_refusals_total{reason="malformed_http"} "#)
            })
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert_eq!(
            counted,
            ROUNDS * malformed.len(),
            "every malformed request is counted"
        );
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.0.wait();
        let output = reader.join().unwrap();
        for marker in [
            "NickZebra42",
            "MarkerTe77",
            "Marker\u{1}Path",
            "Marker\u{7f}Bad",
            "X-Marker",
        ] {
            assert!(
                !output.contains(marker),
                "{level}: the log holds {marker:?}"
            );
        }
        let lines = output
            .lines()
            .filter(|line| line.contains("malformed"))
            .count();
        assert!(
            lines <= 3,
            "{level}: {lines} log lines for {} malformed requests",
            ROUNDS * malformed.len()
        );
    }
}

/// A raw client whose receive window is tiny, so what the server sends it piles up in the
/// server instead of hiding in this machine's socket buffers.
async fn non_reader(addr: std::net::SocketAddr, source: &str, path: &str) -> RawSocket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .bind(std::net::SocketAddr::new(ip(source), 0))
        .unwrap();
    let stream = socket.connect(addr).await.unwrap();
    RawSocket::upgrade(stream, path).await
}

/// Non-reading pairs flood each other with the largest media allowed. What waits for them in
/// actix-ws's queue and encoder counts against their outbox, so each is cut off at its bound and
/// its connection closed even though its socket is full: memory stays within the bounds, and
/// no connection is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_never_read_are_cut_off_and_their_connections_closed() {
    let spawned = spawn_binary(
        Command::new(server_binary())
            .args(["--listen-addr", "127.0.0.1:0", "--workers", "1"])
            .args(["--log-level", "warn", "--resume-grace-seconds", "1"])
            .args(["--session-outbox-max-bytes", &(2 * MIB).to_string()])
            .args([
                "--max-media-per-minute",
                "0",
                "--max-connections-per-minute",
                "0",
            ])
            .args(["--memory-trim-interval-seconds", "0.2"])
            .stderr(Stdio::null()),
    );
    let child = KillOnDrop(spawned.child);
    let (addr, process) = (spawned.addr, Process(child.id()));
    let metrics_addr = spawned.metrics_addr;
    let baseline = process.resident_bytes();
    let media = RawSocket::frame(
        true,
        TEXT,
        json!({"type":"media","kind":"image","mime":"image/png",
               "data": "A".repeat((1 << 20) / 3 * 4)})
        .to_string()
        .as_bytes(),
    );
    let mut members = Vec::new();
    for n in 0..8u8 {
        let mut member = non_reader(addr, &format!("127.96.0.{}", n / 2 + 1), "/ws").await;
        member
            .read_frame(Duration::from_secs(5))
            .await
            .expect("hello");
        member.send_json(find_text()).await;
        members.push(member);
    }
    let mut peak = baseline;
    for _ in 0..10 {
        for member in &mut members {
            // A cut-off member's writes fail: that is the point.
            let _ = tokio::time::timeout(Duration::from_secs(2), member.write(&media)).await;
        }
        peak = peak.max(process.resident_bytes());
    }
    // Per member its incoming frame and its outbox; per chat its log (4 MiB by default),
    // which keeps what was said for a resume by design.
    let bound = baseline + 8 * (2 * MIB + 2 * MIB) + 4 * (4 * MIB) + 16 * MIB;
    let closed = process
        .settles(Duration::from_secs(15), |p| {
            p.connections_held(addr.port()) == 0
        })
        .await;
    let (_, metrics) = http_get(metrics_addr, "/metrics").await;
    assert!(
        closed,
        "the server closed every flooded connection: {} held\n{}",
        process.connections_held(addr.port()),
        metrics
            .lines()
            .filter(|l| l.starts_with("ephemera_disconnects") || l.starts_with("ephemera_refusals"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    peak = peak.max(process.resident_bytes());
    assert!(
        peak <= bound,
        "{} MiB at the peak, {} MiB before",
        peak / MIB,
        baseline / MIB
    );
    let (_, metrics) = http_get(metrics_addr, "/metrics").await;
    assert!(metrics.contains(r#"ephemera_disconnects_total{reason="slow_consumer"}"#));
    drop(members);
}

/// Plain HTTP, pipelined by a client that never reads the answers: the connection is ended
/// as soon as its unread answers pass a bound, instead of actix-http buffering every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_whose_answers_are_never_read_end_the_connection() {
    let spawned = spawn_binary(
        Command::new(server_binary())
            .args([
                "--listen-addr",
                "127.0.0.1:0",
                "--workers",
                "1",
                "--log-level",
                "warn",
            ])
            .stderr(Stdio::null()),
    );
    let child = KillOnDrop(spawned.child);
    let (addr, process) = (spawned.addr, Process(child.id()));
    let metrics_addr = spawned.metrics_addr;
    let baseline = process.resident_bytes();
    let request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(20_000);
    let mut sockets = Vec::new();
    for n in 0..10u8 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket
            .bind(std::net::SocketAddr::new(
                ip(&format!("127.97.0.{}", n + 1)),
                0,
            ))
            .unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await
        })
        .await;
        sockets.push(stream);
    }
    assert!(
        process
            .settles(Duration::from_secs(10), |p| p.connections_held(addr.port())
                == 0)
            .await,
        "pipelining non-readers are disconnected: {} held",
        process.connections_held(addr.port())
    );
    let resident = process.resident_bytes();
    assert!(
        resident <= baseline + 16 * MIB,
        "{} MiB, {} MiB before",
        resident / MIB,
        baseline / MIB
    );
    let (status, metrics) = http_get(metrics_addr, "/metrics").await;
    assert_eq!(status, 200, "everyone else is still served");
    assert!(metrics.contains(r#"ephemera_refusals_total{reason="unread_responses"}"#));
    drop(sockets);
}

/// A connection that takes nothing while bytes wait for it is closed after the stall timeout,
/// below every byte bound: its stranger learns it is away.
#[tokio::test]
async fn a_connection_that_takes_nothing_is_closed_after_the_stall_timeout() {
    let server = spawn_server(Settings {
        write_stall_timeout_seconds: 0.5,
        resume_grace_seconds: 30.0,
        max_messages_per_second: 0,
        ..test_settings()
    });
    let mut stalled = non_reader(server.addr, "127.98.0.1", "/ws").await;
    stalled
        .read_frame(Duration::from_secs(5))
        .await
        .expect("hello");
    stalled.send_json(find_text()).await;
    let mut stranger = server.client().await;
    stranger.send(find_text()).await;
    stranger.expect("waiting").await;
    stranger.expect("matched").await;
    // About 1 MiB: far under the 8 MiB outbox bound, far over what the socket buffers take.
    let line = "z".repeat(1000);
    for _ in 0..1000 {
        stranger.say(&line).await;
    }
    loop {
        let frame = stranger.expect_any().await;
        if frame["type"] == "stranger_away" {
            break;
        }
        assert_eq!(frame["type"], "msg", "{frame}");
    }
    let metrics = server.metrics().await;
    assert!(metrics.contains(r#"ephemera_disconnects_total{reason="write_stalled"}"#));
    drop(stalled);
}

#[tokio::test]
async fn every_refused_frame_spends_the_protocol_error_budget() {
    let server = spawn_server(test_settings());
    let mut client = server.client().await;
    for _ in 0..21 {
        client.send(json!({"type":"leave"})).await;
    }
    for _ in 0..21 {
        client.expect_error("not_chatting").await;
    }
    client.expect_close(1008).await;
}

/// RFC 6455, 7.1.1: once both close frames have passed, whichever side began, the server
/// closes TCP at once (it used to linger about 2 s for the client to do it).
#[tokio::test]
async fn the_server_closes_tcp_as_soon_as_both_close_frames_have_passed() {
    let server = spawn_server(test_settings());
    // The client begins.
    let mut client = raw_client(&server, "127.99.0.1").await;
    client
        .send(true, CLOSE, &1000u16.to_be_bytes())
        .await
        .unwrap();
    assert_eq!(client.expect_close().await, 1000);
    let started = tokio::time::Instant::now();
    assert!(client.closed_by_server_within(Duration::from_secs(5)).await);
    let client_began = started.elapsed();

    // The server begins (too many refused frames) and the client answers.
    let mut client = raw_client(&server, "127.99.0.2").await;
    for _ in 0..21 {
        client.send_json(json!({"type":"leave"})).await;
    }
    assert_eq!(client.expect_close().await, 1008);
    client
        .send(true, CLOSE, &1008u16.to_be_bytes())
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    assert!(client.closed_by_server_within(Duration::from_secs(5)).await);
    let server_began = started.elapsed();

    // The server fails the connection (a frame that breaks the protocol): it closes without
    // waiting for an answer.
    let mut client = raw_client(&server, "127.99.0.3").await;
    client.send(true, 0x3, b"x").await.unwrap();
    assert_eq!(client.expect_close().await, 1002);
    let started = tokio::time::Instant::now();
    assert!(client.closed_by_server_within(Duration::from_secs(5)).await);
    let failed = started.elapsed();
    // Loopback takes a millisecond or so. The bound is the issue's "well under 100 ms", far
    // from the old 2 s linger and from the 250 ms the server waits for a reply it did not see.
    for (who, took) in [
        ("client began", client_began),
        ("server began", server_began),
        ("server failed it", failed),
    ] {
        assert!(
            took < Duration::from_millis(100),
            "{who}: TCP closed after {took:?}"
        );
    }
}

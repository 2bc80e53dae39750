//! The server around the chats: health, readiness, counts, and graceful shutdown.

use std::time::Duration;

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

#[tokio::test]
async fn health_and_readiness_answer() {
    let server = spawn_server(test_settings());
    assert_eq!(server.get("/healthz").await.0, 200);
    assert_eq!(server.get("/readyz").await.0, 200);
    // Uptime checks and load balancers often probe with HEAD.
    for path in ["/healthz", "/readyz", "/", "/privacy", "/stats"] {
        let head = format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "HEAD {path}: {answer}");
    }
    let (status, body) = server.get("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<html"));
}

#[tokio::test]
async fn stats_count_sessions_by_state() {
    let server = spawn_server(test_settings());
    let stats = |body: String| -> Value { serde_json::from_str(&body).unwrap() };
    let (_a, _b) = server.matched_pair().await;
    let _c = server.waiting_client(find_text()).await;
    let _d = server.client().await;
    let (status, body) = server.get("/stats").await;
    assert_eq!(status, 200);
    let counts = stats(body);
    assert_eq!(counts["online"], 4);
    assert_eq!(counts["waiting"], 1);
    assert_eq!(counts["chatting"], 2);
}

#[tokio::test]
async fn metrics_are_served_on_the_admin_listener_and_never_on_the_public_port() {
    let server = spawn_server(test_settings());
    let (mut a, mut b) = server.matched_pair().await;
    a.say("counted, never logged").await;
    b.expect("msg").await;
    let (status, _) = server.get("/metrics").await;
    assert_eq!(status, 404, "the public port has no /metrics");
    assert_ne!(server.metrics_addr.port(), server.addr.port());
    let body = server.metrics().await;
    let counted = |series: &str| -> f64 {
        body.lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    };
    // Incremented, not only registered (the recorder is shared by the tests in this process).
    assert!(counted("ephemera_chat_events_total{kind=\"msg\"}") >= 1.0);
    assert!(counted("ephemera_matches_total{mode=\"text\",interests=\"none\"}") >= 1.0);
    assert!(counted("ephemera_match_wait_seconds_count{mode=\"text\"}") >= 2.0);
    let build = format!(
        "ephemera_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(body.contains(&build), "{build}");
    assert!(body.contains("ephemera_sessions{state=\"online\",mode=\"any\"}"));
    assert!(body.contains("# HELP ephemera_chat_duration_seconds"));
    assert!(
        counted("process_resident_memory_bytes") > 0.0,
        "process metrics are collected"
    );
    assert!(counted("process_open_fds") > 0.0);
    assert!(!body.contains("counted, never logged"));
}

#[tokio::test]
async fn shutdown_ends_every_chat_and_closes_every_socket() {
    let mut server = spawn_server(test_settings());
    let (mut a, mut b) = server.matched_pair().await;
    let mut idle = server.client().await;
    let mut waiting = server.waiting_client(find_with("video", &[])).await;
    let addr = server.addr;
    let shutdown = tokio::spawn(async move {
        server.shutdown().await;
    });
    for client in [&mut a, &mut b] {
        let ended = client.expect("ended").await;
        assert_eq!(ended["reason"], "server_shutdown");
        client.expect_close(1001).await;
    }
    idle.expect_close(1001).await;
    waiting.expect_close(1001).await;
    tokio::time::timeout(EXPECT_WITHIN, shutdown)
        .await
        .expect("shutdown finishes within the drain time")
        .unwrap();
    // The listener is gone (closing it is the HTTP server's last step, on its own thread).
    let deadline = tokio::time::Instant::now() + EXPECT_WITHIN;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener stayed open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every `ephemera_*` or `process_*` name the dashboards and the alert rules use, exactly as the
/// server exports it (a histogram's `_bucket`, `_sum` and `_count` included): a renamed series
/// or a typo fails here, not on an operator's empty panel or an alert that can never fire.
#[tokio::test]
async fn every_series_the_dashboards_and_alert_rules_name_is_exported() {
    let server = spawn_server(test_settings());
    let (mut a, mut b) = server.matched_pair().await;
    a.say("x").await;
    a.expect("msg").await;
    b.expect("msg").await;
    a.send(serde_json::json!({"type":"leave"})).await;
    a.expect("ended").await;
    let body = server.metrics().await;
    let exported: std::collections::BTreeSet<&str> = body
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .filter(|name| !name.is_empty())
        .collect();
    let mut files = checked_in_dashboards();
    assert!(
        files.len() >= 2,
        "dashboards/ holds the overview and the abuse and health dashboards"
    );
    files.push(("ops/alerts.yml".into(), repository_file("ops/alerts.yml")));
    for (file, text) in &files {
        let mut named: Vec<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("ephemera_") || word.starts_with("process_"))
            .collect();
        named.sort_unstable();
        named.dedup();
        assert!(named.len() >= 5, "{file} queries the server's series");
        let missing: Vec<&&str> = named
            .iter()
            .filter(|name| !exported.contains(**name))
            .collect();
        assert!(
            missing.is_empty(),
            "{file} names series the server does not export: {missing:?}"
        );
    }
}

/// The real binary, as an operator runs it: it prints where to point a browser, drains on
/// SIGTERM (every chat gets `server_shutdown` and a close frame) and exits cleanly. Its whole
/// output, at TRACE level, holds no message, nickname, interest, token, client address or
/// e-mail address (signed up, removed, or refused).
#[tokio::test]
async fn the_binary_drains_on_sigterm_and_logs_nothing_identifying_even_at_trace() {
    use std::io::{BufReader, Read};
    use std::process::{Command, Stdio};

    let list_dir = std::env::temp_dir().join(format!("ephemera-trace-list-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&list_dir);
    std::fs::create_dir_all(&list_dir).unwrap();
    // The banner names the address: the binary prints where to point a browser.
    let SpawnedBinary {
        mut child,
        addr,
        banner,
        mut stdout,
        ..
    } = spawn_binary(
        Command::new(env!("CARGO_BIN_EXE_ephemera"))
            .env("EPHEMERA_NOTIFY_DB_PATH", list_dir.join("list.db"))
            .env(
                "EPHEMERA_NOTIFY_MASTER_KEY_PATH",
                list_dir.join("master.key"),
            )
            .args(["--listen-addr", "127.0.0.1:0", "--log-level", "trace"])
            .args(["--shutdown-drain-seconds", "5", "--workers", "2"])
            .stderr(Stdio::piped()),
    );
    let stderr = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        BufReader::new(stderr).read_to_string(&mut text).unwrap();
        text
    });

    let source = "127.77.0.9".parse().unwrap();
    let mut a = Client::connect_from(addr, source).await;
    let mut b = Client::connect_from(addr, source).await;
    a.send(serde_json::json!({"type":"find","adult":true,"nick":"NickMarkerQ7","interests":["InterestMarkerZ3"]}))
        .await;
    a.expect("waiting").await;
    b.send(serde_json::json!({"type":"find","adult":true,"interests":["interestmarkerz3"]}))
        .await;
    b.expect("waiting").await;
    a.expect("matched").await;
    b.expect("matched").await;
    a.say("MessageMarkerK9 secret words").await;
    b.expect("msg").await;
    let tokens = [a.token(), b.token()];
    for (path, body, status) in [
        (
            "/api/notify",
            r#"{"email":"EmailMarkerW5@markerdomain.example"}"#,
            202,
        ),
        (
            "/api/notify/delete",
            r#"{"email":"EmailMarkerW5@markerdomain.example"}"#,
            202,
        ),
        (
            "/api/notify",
            r#"{"email":"EmailMarkerW5@markerdomain"}"#,
            400,
        ),
        (
            "/api/notify",
            r#"{"email":"EmailMarkerW5@markerdomain.example","x":1}"#,
            400,
        ),
    ] {
        let (got, _, answer) = http_post_json(addr, source, path, "", body).await;
        assert_eq!(got, status, "{answer}");
    }

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for client in [&mut a, &mut b] {
        let mut frame = client.expect_any().await;
        if frame["type"] == "msg" {
            frame = client.expect_any().await;
        }
        assert_eq!(frame["type"], "ended");
        assert_eq!(frame["reason"], "server_shutdown");
        client.expect_close(1001).await;
    }
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exits cleanly after draining: {exit}");

    let mut output = banner.clone();
    stdout.read_to_string(&mut output).unwrap();
    output.push_str(&stderr_reader.join().unwrap());
    assert!(output.contains("TRACE") || output.contains("DEBUG") || output.contains("INFO"));
    for secret in [
        "MessageMarkerK9",
        "NickMarkerQ7",
        "InterestMarkerZ3",
        "interestmarkerz3",
        "127.77.0.9",
        "EmailMarkerW5",
        "markerdomain",
        tokens[0].as_str(),
        tokens[1].as_str(),
    ] {
        assert!(
            !output.contains(secret),
            "the server's output contains {secret:?}"
        );
    }
}

/// A SIGTERM right after a heavy chat run (many pairs mid-flood, outboxes full) still drains
/// and exits within `shutdown_drain_seconds` (seen once while benchmarking, never reproduced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_a_heavy_chat_run_still_drains_in_time() {
    use std::process::{Command, Stdio};

    const DRAIN_SECONDS: u64 = 3;
    let spawned = spawn_binary(
        Command::new(server_binary())
            .args(["--listen-addr", "127.0.0.1:0", "--workers", "2"])
            .args([
                "--config",
                concat!(env!("CARGO_MANIFEST_DIR"), "/ops/bench.toml"),
            ])
            .args(["--shutdown-drain-seconds", &DRAIN_SECONDS.to_string()])
            .args(["--log-level", "warn"])
            .stderr(Stdio::null()),
    );
    let mut child = KillOnDrop(spawned.child);
    let addr = spawned.addr;
    let mut pairs = Vec::new();
    for n in 0..100u32 {
        let source = std::net::IpAddr::from([127, 101, (n / 250) as u8, (n % 250) as u8 + 1]);
        pairs.push(matched_pair_at(addr, source, source).await);
    }
    // Every member floods without reading, so the server is busy and its queues are full when
    // the signal comes.
    for (a, b) in &mut pairs {
        for n in 0..50 {
            for member in [&mut *a, &mut *b] {
                let frame =
                    Message::Text(json!({"type":"msg","text":format!("load {n}")}).to_string());
                let _ = futures_util::SinkExt::feed(&mut member.ws, frame).await;
            }
        }
        let _ = futures_util::SinkExt::flush(&mut a.ws).await;
        let _ = futures_util::SinkExt::flush(&mut b.ws).await;
    }
    let signalled = std::time::Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let exit = child.0.wait();
        (exit, child)
    })
    .await
    .unwrap()
    .0
    .unwrap();
    let took = signalled.elapsed();
    assert!(exit.success(), "exits cleanly: {exit}");
    assert!(
        took < Duration::from_secs(DRAIN_SECONDS + 2),
        "drained in {took:?}, allowed {DRAIN_SECONDS} s"
    );
    drop(pairs);
}

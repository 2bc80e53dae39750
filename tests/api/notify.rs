//! The early-access e-mail list over real HTTP, and the operator's `ephemera notify` commands
//! run as the real binary beside a running server: answers that never tell membership, every
//! refusal, a kill -9 in a burst, 10,000 sign-ups, and a key rotation while the server writes.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::helpers::*;
use ephemera::settings::Settings;

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A fresh folder for one test's database and key file.
fn list_files(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("ephemera-notify-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    (dir.join("list.db"), dir.join("master.key"))
}

fn with_list(db: &Path, key: &Path) -> Settings {
    Settings {
        notify_db_path: db.display().to_string(),
        notify_master_key_path: key.display().to_string(),
        notify_topics: vec!["news".into(), "rules".into()],
        ..test_settings()
    }
}

async fn sign_up(addr: SocketAddr, body: &str) -> (u16, Value) {
    post(addr, LOOPBACK, "/api/notify", "", body).await
}

async fn post(
    addr: SocketAddr,
    source: IpAddr,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, Value) {
    let (status, _, body) = http_post_json(addr, source, path, headers, body).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Runs `ephemera notify <args>` with the list's files; returns (success, stdout, stderr).
fn notify_command(db: &Path, key: &Path, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(server_binary())
        .arg("notify")
        .args(args)
        .env("EPHEMERA_NOTIFY_DB_PATH", db)
        .env("EPHEMERA_NOTIFY_MASTER_KEY_PATH", key)
        .env("EPHEMERA_NOTIFY_TOPICS", "news,rules")
        .output()
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn export(db: &Path, key: &Path, topic: &str) -> Vec<String> {
    let (ok, out, err) = notify_command(db, key, &["export", "--topic", topic]);
    assert!(ok, "export failed: {err}");
    out.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_is_off_by_default_and_every_endpoint_says_not_found() {
    let server = spawn_server(test_settings());
    let (status, _) = server.get("/api/notify").await;
    assert_eq!(status, 404);
    for path in ["/api/notify", "/api/notify/delete"] {
        let (status, body) = post(server.addr, LOOPBACK, path, "", r#"{"email":"a@b.org"}"#).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"], "not_found");
    }
    let (_, privacy) = server.get("/privacy").await;
    assert!(privacy.contains("This server keeps no e-mail list."));
    assert!(privacy.contains("Nothing is written to disk."));
    let (_, page) = server.get("/").await;
    assert!(page.contains(r#"<meta name="ephemera-notify-topics" content="">"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sign_up_and_a_deletion_answer_exactly_like_the_first() {
    let (db, key) = list_files("answers");
    let server = spawn_server(with_list(&db, &key));
    let (status, body) = server.get("/api/notify").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["topics"],
        serde_json::json!(["news", "rules"])
    );
    let first = sign_up(
        server.addr,
        r#"{"email":" Ann@Example.ORG ","topic":"news"}"#,
    )
    .await;
    let again = sign_up(server.addr, r#"{"email":"Ann@example.org","topic":"news"}"#).await;
    assert_eq!(first, (202, serde_json::json!({"status": "accepted"})));
    assert_eq!(
        again, first,
        "the answer does not tell the address was there"
    );
    // No topic: the first one. Another topic: a row of its own.
    assert_eq!(
        sign_up(server.addr, r#"{"email":"bo@example.org"}"#)
            .await
            .0,
        202
    );
    assert_eq!(
        sign_up(server.addr, r#"{"email":"bo@example.org","topic":"rules"}"#)
            .await
            .0,
        202
    );
    assert_eq!(
        export(&db, &key, "news"),
        vec!["Ann@example.org", "bo@example.org"]
    );
    assert_eq!(export(&db, &key, "rules"), vec!["bo@example.org"]);

    let remove = |email: &str| format!(r#"{{"email":"{email}"}}"#);
    let present = post(
        server.addr,
        LOOPBACK,
        "/api/notify/delete",
        "",
        &remove("bo@EXAMPLE.org"),
    )
    .await;
    let absent = post(
        server.addr,
        LOOPBACK,
        "/api/notify/delete",
        "",
        &remove("cy@example.org"),
    )
    .await;
    assert_eq!(present, (202, serde_json::json!({"status": "accepted"})));
    assert_eq!(absent, present);
    assert_eq!(export(&db, &key, "news"), vec!["Ann@example.org"]);
    assert!(export(&db, &key, "rules").is_empty());
    let (ok, counts, _) = notify_command(&db, &key, &["count"]);
    assert!(ok);
    assert_eq!(counts, "news 1\nrules 0\n");
    // A mistyped topic is an error, not an empty list.
    let (ok, out, err) = notify_command(&db, &key, &["export", "--topic", "new"]);
    assert!(!ok && out.is_empty());
    assert!(err.contains("no topic \"new\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_clear_error_store_nothing_and_are_counted() {
    let (db, key) = list_files("refusals");
    let server = spawn_server(Settings {
        max_notify_requests_per_minute: 0,
        ..with_list(&db, &key)
    });
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        (
            "/api/notify",
            "",
            r#"{"email":"ann@localhost"}"#,
            400,
            "invalid_email",
        ),
        (
            "/api/notify",
            "",
            r#"{"email":"a@b@c.org"}"#,
            400,
            "invalid_email",
        ),
        ("/api/notify", "", r#"{"email":""}"#, 400, "invalid_email"),
        (
            "/api/notify",
            "",
            r#"{"email":"ann@example.org","topic":"gossip"}"#,
            400,
            "unknown_topic",
        ),
        (
            "/api/notify",
            "",
            r#"{"mail":"ann@example.org"}"#,
            400,
            "bad_request",
        ),
        (
            "/api/notify",
            "",
            r#"["ann@example.org"]"#,
            400,
            "bad_request",
        ),
        ("/api/notify", "", "not json", 400, "bad_request"),
        (
            "/api/notify/delete",
            "",
            r#"{"email":"nobody"}"#,
            400,
            "invalid_email",
        ),
        (
            "/api/notify",
            "Origin: https://elsewhere.example\r\n",
            r#"{"email":"ann@example.org"}"#,
            403,
            "forbidden_origin",
        ),
    ];
    for (path, headers, body, status, code) in cases {
        let (got, answer) = post(server.addr, LOOPBACK, path, headers, body).await;
        assert_eq!(
            (got, answer["error"].as_str()),
            (*status, Some(*code)),
            "{body}"
        );
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(
            !answer["message"].as_str().unwrap().contains("ann@"),
            "no answer quotes the input"
        );
    }
    // Not JSON by its content type (a cross-site form could send text/plain), and too large.
    let (status, _, body) = http_exchange(
        server.addr,
        LOOPBACK,
        "POST",
        "/api/notify",
        "Content-Type: text/plain\r\n",
        br#"{"email":"ann@example.org"}"#,
    )
    .await;
    assert_eq!(status, 415, "{body}");
    let huge = format!(r#"{{"email":"{}@example.org"}}"#, "a".repeat(4000));
    let (status, answer) = post(server.addr, LOOPBACK, "/api/notify", "", &huge).await;
    assert_eq!((status, answer["error"].as_str()), (413, Some("too_large")));

    // The page's own origin is welcome.
    let own = format!("Origin: http://{}\r\n", server.addr);
    let (status, _) = post(
        server.addr,
        LOOPBACK,
        "/api/notify",
        &own,
        r#"{"email":"ok@example.org"}"#,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(export(&db, &key, "news"), vec!["ok@example.org"]);
    assert!(export(&db, &key, "rules").is_empty());

    // The recorder is the test process's, shared with tests running beside this one: at least
    // this test's own requests are counted.
    let metrics = server.metrics().await;
    for (action, result, at_least) in [
        ("sign_up", "invalid_email", 3),
        ("sign_up", "bad_request", 3),
        ("sign_up", "unknown_topic", 1),
        ("sign_up", "forbidden_origin", 1),
        ("sign_up", "unsupported_type", 1),
        ("sign_up", "too_large", 1),
        ("sign_up", "accepted", 1),
        ("delete", "invalid_email", 1),
    ] {
        let series =
            format!("ephemera_notify_requests_total{{action=\"{action}\",result=\"{result}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .unwrap_or_else(|| panic!("{series} is not in:\n{metrics}"))
            .parse()
            .unwrap();
        assert!(count >= at_least, "{series}{count}");
    }
}

/// A body announced and never sent (or trickled) does not hold its request: 408 after the
/// request timeout, and the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_is_given_up_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (db, key) = list_files("slow-body");
    let server = spawn_server(Settings {
        http_request_timeout_seconds: 1.0,
        ..with_list(&db, &key)
    });
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/notify HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"email\":",
        server.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(EXPECT_WITHIN, stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"timeout\""), "{answer}");
    assert!(export(&db, &key, "news").is_empty());
}

/// A chunked body (which no browser sends here) is refused on any route, and its connection
/// closed: one that never ended used to hold its connection for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_is_refused_and_its_connection_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (db, key) = list_files("chunked");
    let server = spawn_server(with_list(&db, &key));
    for (method, path) in [("POST", "/api/notify"), ("GET", "/healthz")] {
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{{\"ema\r\n",
            server.addr
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        // Never finishing the body: the server must still answer and close.
        tokio::time::timeout(EXPECT_WITHIN, stream.read_to_end(&mut answer))
            .await
            .expect("the connection is closed")
            .ok();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 411"), "{path}: {answer}");
    }
    assert!(server
        .metrics()
        .await
        .contains("ephemera_refusals_total{reason=\"chunked_body\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ups_are_rate_limited_per_client_and_say_when_to_come_back() {
    let (db, key) = list_files("rate");
    let server = spawn_server(Settings {
        max_notify_requests_per_minute: 3,
        ..with_list(&db, &key)
    });
    let body = r#"{"email":"ann@example.org"}"#;
    let first: IpAddr = [127, 0, 40, 1].into();
    for _ in 0..3 {
        assert_eq!(
            post(server.addr, first, "/api/notify", "", body).await.0,
            202
        );
    }
    let (status, headers, answer) =
        http_post_json(server.addr, first, "/api/notify", "", body).await;
    assert_eq!(status, 429, "{answer}");
    let retry_after: u64 = headers
        .lines()
        .find_map(|line| line.strip_prefix("retry-after: "))
        .expect("Retry-After is sent")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Deletions share the budget; another client has its own.
    let (status, _) = post(server.addr, first, "/api/notify/delete", "", body).await;
    assert_eq!(status, 429);
    let other: IpAddr = [127, 0, 40, 2].into();
    assert_eq!(
        post(server.addr, other, "/api/notify", "", body).await.0,
        202
    );
}

/// Many clients sign up at once; the server is killed with SIGKILL in the middle. Every
/// address it answered 202 for is in the file afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_burst_loses_no_acknowledged_sign_up() {
    let (db, key) = list_files("kill");
    let spawned = spawn_binary(
        std::process::Command::new(server_binary())
            .args(["--listen-addr", "127.0.0.1:0", "--log-level", "warn"])
            .env("EPHEMERA_NOTIFY_DB_PATH", &db)
            .env("EPHEMERA_NOTIFY_MASTER_KEY_PATH", &key)
            .env("EPHEMERA_MAX_NOTIFY_REQUESTS_PER_MINUTE", "0"),
    );
    let addr = spawned.addr;
    let server = Arc::new(parking_lot::Mutex::new(KillOnDrop(spawned.child)));
    let acknowledged = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let answered = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..16u32 {
        let (acknowledged, answered, killed) =
            (acknowledged.clone(), answered.clone(), killed.clone());
        senders.push(tokio::spawn(async move {
            for n in 0.. {
                if killed.load(Ordering::SeqCst) {
                    break;
                }
                let email = format!("burst{sender}x{n}@example.org");
                let body = format!(r#"{{"email":"{email}"}}"#);
                let attempt = tokio::spawn(http_post_json(
                    addr,
                    LOOPBACK,
                    "/api/notify",
                    "",
                    body.leak(),
                ));
                match attempt.await {
                    Ok((202, _, _)) => {
                        acknowledged.lock().push(email);
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    // Refused or cut off by the kill: not acknowledged, so not promised.
                    _ => break,
                }
            }
        }));
    }
    while answered.load(Ordering::SeqCst) < 600 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Mid-burst: requests are in flight, some in a commit being synced.
    unsafe { libc::kill(server.lock().id() as i32, libc::SIGKILL) };
    killed.store(true, Ordering::SeqCst);
    for sender in senders {
        let _ = sender.await;
    }
    drop(server);
    let acknowledged = acknowledged.lock().clone();
    assert!(acknowledged.len() >= 600);
    let stored: std::collections::HashSet<String> = export(&db, &key, "news").into_iter().collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|email| !stored.contains(*email))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged sign-ups lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

/// 10,000 sign-ups through HTTP from many clients, with duplicates among them; count and
/// export run while the server is still up, then a key rotation while it keeps writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sign_ups_then_count_export_and_a_rotation_beside_the_running_server() {
    let (db, key) = list_files("ten-thousand");
    let spawned = spawn_binary(
        std::process::Command::new(server_binary())
            .args(["--listen-addr", "127.0.0.1:0", "--log-level", "warn"])
            .env("EPHEMERA_NOTIFY_DB_PATH", &db)
            .env("EPHEMERA_NOTIFY_MASTER_KEY_PATH", &key)
            .env("EPHEMERA_NOTIFY_TOPICS", "news,rules"),
    );
    let addr = spawned.addr;
    let _server = KillOnDrop(spawned.child);
    const PEOPLE: usize = 10_000;
    const SENDERS: usize = 32;
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        senders.push(tokio::spawn(async move {
            // Distinct source addresses, as many clients are; each stays under the default
            // rate limit (10 a minute) by using a fresh address every few requests.
            for (round, n) in (sender..PEOPLE).step_by(SENDERS).enumerate() {
                let source: IpAddr = [
                    127,
                    1 + sender as u8,
                    (round / 8 / 250) as u8,
                    1 + (round / 8 % 250) as u8,
                ]
                .into();
                let body = format!(r#"{{"email":"person{n}@Example.org"}}"#);
                let (status, _, answer) =
                    http_post_json(addr, source, "/api/notify", "", &body).await;
                assert_eq!(status, 202, "{answer}");
                if n % 10 == 0 {
                    // The same person again, written differently: still one row.
                    let body = format!(r#"{{"email":" person{n}@EXAMPLE.ORG "}}"#);
                    let (status, _, _) =
                        http_post_json(addr, source, "/api/notify", "", &body).await;
                    assert_eq!(status, 202);
                }
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let (ok, counts, err) = notify_command(&db, &key, &["count"]);
    assert!(ok, "{err}");
    assert_eq!(counts, format!("news {PEOPLE}\nrules 0\n"));
    let mut expected: Vec<String> = (0..PEOPLE)
        .map(|n| format!("person{n}@example.org"))
        .collect();
    expected.sort();
    assert_eq!(export(&db, &key, "news"), expected);

    // Rotate while the server keeps taking sign-ups; afterwards everyone is readable, the old
    // key is gone from the file, and a returning person still makes no second row.
    let writer = tokio::spawn(async move {
        for n in 0..200 {
            let source: IpAddr = [127, 100, (n / 8) as u8, 1].into();
            let body = format!(r#"{{"email":"late{n}@example.org","topic":"rules"}}"#);
            let (status, _, answer) = http_post_json(addr, source, "/api/notify", "", &body).await;
            assert_eq!(status, 202, "{answer}");
        }
    });
    let (ok, said, err) = notify_command(&db, &key, &["rotate-key"]);
    assert!(ok, "{err}");
    assert!(said.starts_with("key version 2:"), "{said}");
    writer.await.unwrap();
    let again = r#"{"email":"person7@example.org"}"#;
    assert_eq!(
        post(addr, [127, 101, 0, 1].into(), "/api/notify", "", again)
            .await
            .0,
        202
    );
    let key_file = std::fs::read_to_string(&key).unwrap();
    assert!(
        key_file
            .lines()
            .filter(|l| !l.starts_with('#'))
            .all(|l| l.starts_with("2 ")),
        "{key_file}"
    );
    let (_, counts, _) = notify_command(&db, &key, &["count"]);
    assert_eq!(counts, format!("news {PEOPLE}\nrules 200\n"));
    assert_eq!(export(&db, &key, "news"), expected);
    assert_eq!(export(&db, &key, "rules").len(), 200);
}

/// Two rotations started together take turns: both succeed, every address stays readable,
/// and the key file keeps the key the rows are under.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rotations_at_once_leave_every_address_readable() {
    let (db, key) = list_files("double-rotation");
    let server = spawn_server(Settings {
        max_notify_requests_per_minute: 0,
        ..with_list(&db, &key)
    });
    for n in 0..300 {
        let body = format!(r#"{{"email":"p{n}@example.org"}}"#);
        assert_eq!(sign_up(server.addr, &body).await.0, 202);
    }
    let rotation = || {
        std::process::Command::new(server_binary())
            .args(["notify", "rotate-key"])
            .env("EPHEMERA_NOTIFY_DB_PATH", &db)
            .env("EPHEMERA_NOTIFY_MASTER_KEY_PATH", &key)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut first, mut second) = (rotation(), rotation());
    assert!(first.wait().unwrap().success() && second.wait().unwrap().success());
    assert_eq!(export(&db, &key, "news").len(), 300);
    let key_file = std::fs::read_to_string(&key).unwrap();
    let versions: Vec<&str> = key_file
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(versions, vec!["3"], "{key_file}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_others_can_read_or_a_wrong_key_stops_everything_with_the_reason() {
    use std::os::unix::fs::PermissionsExt as _;
    let (db, key) = list_files("key-checks");
    // The server creates both files, private, on its first start.
    let server = spawn_server(with_list(&db, &key));
    assert_eq!(
        sign_up(server.addr, r#"{"email":"ann@example.org"}"#)
            .await
            .0,
        202
    );
    drop(server);
    for file in [&db, &key] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = std::process::Command::new(server_binary())
        .args([
            "--listen-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("EPHEMERA_NOTIFY_DB_PATH", &db)
        .env("EPHEMERA_NOTIFY_MASTER_KEY_PATH", &key)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(said.contains("chmod 600"), "{said}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Another key file: the export names the problem, prints nothing, and does not panic.
    let other = key.with_file_name("other.key");
    let fresh = spawn_server(with_list(&key.with_file_name("other.db"), &other));
    drop(fresh);
    let (ok, out, err) = notify_command(&db, &other, &["export", "--topic", "news"]);
    assert!(!ok);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("wrong notify_master_key_path"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(export(&db, &key, "news"), vec!["ann@example.org"]);
}

//! Security headers on every response, and no core dumps unless allowed.

use crate::helpers::*;

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let server = spawn_server(test_settings());
    for path in [
        "/",
        "/static/app.js",
        "/static/style.css",
        "/stats",
        "/healthz",
        "/nope",
    ] {
        let (_, headers, _) = http_get_with_headers(server.addr, path).await;
        let csp = headers
            .lines()
            .find_map(|line| line.strip_prefix("content-security-policy: "))
            .unwrap_or_else(|| panic!("{path} has no Content-Security-Policy"));
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(
            csp.contains("script-src 'self';"),
            "{path}: no script from elsewhere"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains('*'),
            "{path}: {csp}"
        );
        for expected in [
            "referrer-policy: no-referrer",
            "x-content-type-options: nosniff",
            "permissions-policy: camera=(self), microphone=(self)",
        ] {
            assert!(headers.contains(expected), "{path} lacks {expected}");
        }
        assert!(!headers.contains("set-cookie"), "{path} sets a cookie");
    }
}

/// Reads the core-size limit of a running copy of the binary started with `args`, after
/// raising the limit it inherits, so only the binary itself can have lowered it.
fn core_limit_of_binary(args: &[&str]) -> String {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    let mut command = Command::new(env!("CARGO_BIN_EXE_ephemera"));
    command
        .args(["--listen-addr", "127.0.0.1:0", "--workers", "1"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_CORE, &mut limit);
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_CORE, &limit);
            Ok(())
        });
    }
    let mut child = spawn_binary(&mut command).child;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    limits
        .lines()
        .find(|line| line.starts_with("Max core file size"))
        .unwrap()
        .split_whitespace()
        .nth(4)
        .unwrap()
        .to_owned()
}

#[test]
fn the_server_turns_core_dumps_off_unless_allowed() {
    let inherited = core_limit_of_binary(&["--allow-core-dumps", "true"]);
    assert_ne!(
        inherited, "0",
        "the test could not raise the inherited limit"
    );
    assert_eq!(core_limit_of_binary(&[]), "0");
}

#[tokio::test]
async fn the_privacy_page_follows_the_running_settings() {
    let server = spawn_server(ephemera::settings::Settings {
        resume_grace_seconds: 42.0,
        rematch_cooldown_seconds: 300.0,
        max_text_chars: 1234,
        ..test_settings()
    });
    let (status, page) = server.get("/privacy").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("42 seconds after your connection drops"),
        "{page}"
    );
    assert!(page.contains("5 minutes, so you are not matched"));
    assert!(page.contains("Messages up to 1234 characters"));
    assert!(page.contains("No STUN or TURN server"));
    assert!(
        page.contains("replaced every 24 hours"),
        "salt rotation is described"
    );
    assert!(page.contains("nothing by location"), "no country database");
    assert!(
        page.contains("your last interests"),
        "what the browser keeps is listed"
    );
    let (_, home) = server.get("/").await;
    assert!(
        home.contains("href=\"/privacy\""),
        "the lobby links the privacy page"
    );

    // With a country database, the page says sessions are counted by country.
    let with_geo = spawn_server(ephemera::settings::Settings {
        geoip_db_path: concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/geoip/GeoLite2-Country-Test.mmdb"
        )
        .into(),
        ..test_settings()
    });
    let (_, page) = with_geo.get("/privacy").await;
    assert!(!page.contains("nothing by location"), "{page}");
    assert!(page.contains("counted by country and continent"));
}

/// The chat path writes nothing to disk: the server runs as an unprivileged user in a
/// read-only working directory, a whole chat goes through, and afterwards the directory is
/// still empty and the process holds no regular file open.
#[tokio::test]
async fn a_chat_writes_nothing_to_disk() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    let dir = std::env::temp_dir().join(format!("ephemera-ro-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ephemera"));
    command
        .current_dir(&dir)
        .args(["--listen-addr", "127.0.0.1:0", "--workers", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: getuid/setgid/setuid are async-signal-safe, as pre_exec requires.
    unsafe {
        command.pre_exec(|| {
            // Root may write anywhere; as `nobody` the directory's mode is what holds.
            if libc::getuid() == 0 && (libc::setgid(65534) != 0 || libc::setuid(65534) != 0) {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let SpawnedBinary {
        mut child, addr, ..
    } = spawn_binary(&mut command);

    let url = format!("ws://{addr}/ws");
    let mut a = Client::connect(&url).await;
    let mut b = Client::connect(&url).await;
    a.send(serde_json::json!({"type":"find","adult":true,"nick":"Disk"}))
        .await;
    a.expect("waiting").await;
    b.send(find_text()).await;
    b.expect("waiting").await;
    a.expect("matched").await;
    b.expect("matched").await;
    a.say("nothing of this touches a disk").await;
    a.expect("msg").await;
    b.expect("msg").await;
    b.send(serde_json::json!({"type":"media","kind":"image","mime":"image/png","data":"aGk="}))
        .await;
    a.expect("media").await;

    let open_files: Vec<_> = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.is_absolute() && target.is_file())
        .collect();
    a.close().await;
    b.close().await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        open_files.is_empty(),
        "the server holds files open: {open_files:?}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing was written"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_client_too_slow_to_send_its_request_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = spawn_server(ephemera::settings::Settings {
        http_request_timeout_seconds: 1.0,
        ..test_settings()
    });
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // The headers never finish; the server gives up on its own.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(EXPECT_WITHIN, slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server closed the slow connection");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // Everyone else is still served.
    assert_eq!(server.get("/healthz").await.0, 200);
}

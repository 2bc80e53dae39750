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
    use std::io::{BufRead, BufReader};
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
    let mut child = command.spawn().unwrap();
    let mut banner = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
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
    assert!(page.contains("no STUN or TURN server"));
    assert!(
        page.contains("replaced every 24 hours"),
        "salt rotation is described"
    );
    let (_, home) = server.get("/").await;
    assert!(
        home.contains("href=\"/privacy\""),
        "the lobby links the privacy page"
    );
}

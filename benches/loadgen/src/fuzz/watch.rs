//! Watching the server while it is fuzzed: its process is alive (`/proc/<pid>`), it answers
//! `GET /healthz` with 200, and how far its resident memory (VmRSS) has grown; and, at the
//! end, its log holds no panic.

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::client::rss_kib;

/// How often memory is sampled: a spike shorter than this can go unseen.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// How often the process and `/healthz` are checked.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(1);

/// A health check unanswered within this long fails.
const HEALTH_WITHIN: Duration = Duration::from_secs(5);

/// Whether process `pid` still runs: `/proc/<pid>` exists and is not a zombie (a server
/// started by a test stays a zombie until the test reaps it).
pub(crate) fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: `1234 (ephemera) S …`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// `GET /healthz` from a loopback address of its own; `Ok` only for a 200.
pub(crate) async fn health_check(
    target: SocketAddr,
    host: &str,
    attempt: u32,
) -> Result<(), String> {
    let request = async {
        // 127.3.0.x: neither a fuzzer's address nor a normal client's.
        let source = Ipv4Addr::new(127, 3, 0, (attempt % 250 + 1) as u8);
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind(SocketAddr::new(IpAddr::V4(source), 0))
            .map_err(|e| e.to_string())?;
        let mut stream = socket.connect(target).await.map_err(|e| e.to_string())?;
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = [0u8; 12];
        stream
            .read_exact(&mut head)
            .await
            .map_err(|e| e.to_string())?;
        match &head[9..12] {
            b"200" => Ok(()),
            status => Err(format!("status {}", String::from_utf8_lossy(status))),
        }
    };
    tokio::time::timeout(HEALTH_WITHIN, request)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", HEALTH_WITHIN.as_secs())))
}

pub(crate) struct ServerWatch {
    pub(crate) pid: Option<u32>,
    pub(crate) target: SocketAddr,
    pub(crate) host: String,
}

#[derive(Default)]
pub(crate) struct WatchReport {
    pub(crate) health_checks: u64,
    pub(crate) health_failures: u64,
    pub(crate) first_health_failure: Option<String>,
    /// Seconds into the watch when the process was first seen gone.
    pub(crate) died_after_seconds: Option<f64>,
    pub(crate) rss_peak_kib: Option<u64>,
}

/// Watches until `stop` turns true; sets `dead` as soon as the process is gone, so the run
/// can stop early.
pub(crate) async fn watch_server(
    server: Arc<ServerWatch>,
    mut stop: watch::Receiver<bool>,
    dead: Arc<AtomicBool>,
) -> WatchReport {
    let started = Instant::now();
    let memory = {
        let (pid, mut stop) = (server.pid, stop.clone());
        tokio::spawn(async move {
            let mut peak = rss_kib(pid);
            loop {
                if let Some(rss) = rss_kib(pid) {
                    peak = peak.max(Some(rss));
                }
                tokio::select! {
                    _ = stop.wait_for(|stopped| *stopped) => return peak,
                    _ = tokio::time::sleep(RSS_SAMPLE_EVERY) => {}
                }
            }
        })
    };
    let mut report = WatchReport::default();
    loop {
        if let Some(pid) = server.pid {
            if report.died_after_seconds.is_none() && !process_alive(pid) {
                report.died_after_seconds = Some(started.elapsed().as_secs_f64());
                dead.store(true, Ordering::Relaxed);
            }
        }
        report.health_checks += 1;
        if let Err(error) =
            health_check(server.target, &server.host, report.health_checks as u32).await
        {
            report.health_failures += 1;
            report.first_health_failure.get_or_insert(format!(
                "after {:.1} s: {error}",
                started.elapsed().as_secs_f64()
            ));
        }
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            _ = tokio::time::sleep(HEALTH_CHECK_EVERY) => {}
        }
    }
    report.rss_peak_kib = memory.await.unwrap_or(None);
    report
}

/// Lines of the server's log that report a panic (Rust prints `thread '…' panicked at …`).
pub(crate) fn panics_in_log(path: &Path) -> Result<(u64, Vec<String>), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (mut count, mut first) = (0, Vec::new());
    // Read as bytes: a log may hold anything, and a line that is not UTF-8 must not stop
    // the scan.
    for line in std::io::BufReader::new(file).split(b'\n') {
        let line = line.map_err(|e| e.to_string())?;
        if line.windows(8).any(|window| window == b"panicked") {
            count += 1;
            if first.len() < 5 {
                first.push(String::from_utf8_lossy(&line).into_owned());
            }
        }
    }
    Ok((count, first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_process_that_never_was_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX));
    }

    #[test]
    fn a_panic_line_is_found_in_a_log() {
        let path = std::env::temp_dir().join(format!("loadgen-log-{}", std::process::id()));
        std::fs::write(
            &path,
            b"INFO listening\n\xff\xfe not utf-8\nthread 'w' panicked at src/x.rs:1:1:\nboom\n",
        )
        .unwrap();
        let (count, first) = panics_in_log(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(count, 1);
        assert!(first[0].contains("panicked at src/x.rs"));
    }
}

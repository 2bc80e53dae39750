//! The `fuzz` scenario against the real server binary (EPHEMERA_TEST_BINARY; ops/test.sh
//! sets it to target/release/ephemera): ten seconds of every kind of mutation from 50
//! connections, with 10 normal pairs chatting beside them, must leave the server alive and
//! panic-free and the normal pairs unhurt.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// A child process killed when the test lets go of it, even when the test fails halfway.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A file in the temporary directory, removed when the test lets go of it.
struct TempFile(PathBuf);

impl TempFile {
    fn named(what: &str) -> Self {
        Self(std::env::temp_dir().join(format!(
            "ephemera-loadgen-fuzz-{}-{what}",
            std::process::id()
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn server_binary() -> PathBuf {
    std::env::var_os("EPHEMERA_TEST_BINARY")
        .map(PathBuf::from)
        .expect(
            "set EPHEMERA_TEST_BINARY to the server binary to fuzz (ops/test.sh builds \
             target/release/ephemera and sets it)",
        )
}

/// Starts the server on 127.0.0.1, port 0, with the bench profile (no per-address rate
/// limits or session bound, so the fuzzers' reconnections are not refused), its log in
/// `log`; returns it and the address from the banner it prints on stdout.
fn spawn_server(log: &Path) -> (KillOnDrop, String) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ops/bench.toml");
    let stderr = std::fs::File::create(log).expect("the server log can be created");
    let mut child = Command::new(server_binary())
        .arg("--config")
        .arg(config)
        .args(["--listen-addr", "127.0.0.1:0"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("the server binary starts");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
    let server = KillOnDrop(child);
    let mut banner = String::new();
    stdout
        .read_line(&mut banner)
        .expect("the server prints a banner");
    let addr = banner
        .split_whitespace()
        .find_map(|word| word.strip_prefix("http://"))
        .map(|rest| rest.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| panic!("the banner names the address: {banner:?}"));
    // Whatever else it prints is read and dropped, so the server never blocks on stdout.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    (server, addr)
}

#[test]
fn ten_seconds_of_fuzzing_leave_the_server_alive_and_the_normal_pairs_unhurt() {
    let log = TempFile::named("server.log");
    let json = TempFile::named("summary.json");
    let (server, addr) = spawn_server(&log.0);
    let output = Command::new(env!("CARGO_BIN_EXE_ephemera-loadgen"))
        .args(["--url", &format!("ws://{addr}/ws")])
        .args(["--server-pid", &server.0.id().to_string()])
        .arg("--json")
        .arg(&json.0)
        .args(["fuzz", "--connections", "50", "--pairs", "10"])
        .args(["--duration-seconds", "10", "--settle-seconds", "0"])
        .arg("--server-log")
        .arg(&log.0)
        .output()
        .expect("the load generator runs");
    let server_log = std::fs::read_to_string(&log.0).unwrap_or_default();
    assert!(
        output.status.success(),
        "the fuzz run failed:\n{}\n{}\nserver log (tail):\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        &server_log[server_log.len().saturating_sub(4000)..]
    );
    let summary: Value = serde_json::from_slice(
        &std::fs::read(&json.0).expect("the load generator wrote its summary"),
    )
    .expect("the summary is JSON");

    assert_eq!(summary["passed"], true, "{summary:#}");
    assert_eq!(summary["failures"], serde_json::json!([]));
    let kinds = summary["frames_sent_by_kind"]
        .as_object()
        .expect("frames by kind");
    assert!(kinds.len() >= 25, "every kind is listed: {kinds:?}");
    for (kind, count) in kinds {
        assert!(
            count.as_u64().unwrap_or(0) > 0,
            "no {kind} mutation was sent: {kinds:?}"
        );
    }
    assert!(summary["connections_opened"].as_u64().unwrap_or(0) > 50);
    // Text that is not UTF-8 and frames over the limit fail the connection with their codes.
    for code in ["1007", "1009"] {
        assert!(
            summary["closes_by_code"][code].as_u64().unwrap_or(0) > 0,
            "no close with {code}: {}",
            summary["closes_by_code"]
        );
    }

    let normal = &summary["normal"];
    assert!(normal["messages_delivered"].as_u64().unwrap_or(0) > 0);
    for unhurt in [
        "lost",
        "doubled",
        "reordered",
        "corrupted",
        "members_disconnected",
    ] {
        assert_eq!(normal[unhurt], 0, "normal pairs: {normal:#}");
    }
    assert_eq!(normal["members_matched"], 20);

    let server_summary = &summary["server"];
    assert_eq!(server_summary["alive"], true);
    assert_eq!(server_summary["health_failures"], 0);
    assert_eq!(server_summary["log_panics"], 0);
    let growth = server_summary["max_rss_growth_mib"]
        .as_f64()
        .expect("memory is read with --server-pid");
    let bound = server_summary["max_memory_growth_bound_mib"]
        .as_f64()
        .expect("the bound is stated");
    assert!(
        growth <= bound,
        "memory grew {growth} MiB, bound {bound} MiB"
    );
    drop(server);
}

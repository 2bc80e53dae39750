//! The `fuzz` scenario: many connections send random and mutated frames for a while, and
//! reconnect whenever the server closes them, while normal pairs chat beside them. It fails on
//! a dead server or a panic in its log, a normal pair that lost, doubled or reordered a message
//! or was cut off, or server memory grown past a stated bound.
//!
//! Layout:
//! - `rng`: the seeded generator; `--seed` replays a run.
//! - `mutations`: every kind of mutation, as the bytes and pauses it sends.
//! - `raw_ws`: a hand-written WebSocket client that can send any bytes.
//! - `fuzzer`: one fuzz worker's connections.
//! - `normal`: the polite pairs and their exactly-once checks.
//! - `watch`: the server's process, `/healthz`, memory and log.

mod fuzzer;
mod mutations;
mod normal;
mod raw_ws;
mod rng;
mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use indicatif::ProgressBar;
use serde::Serialize;
use tokio::sync::Barrier;

use crate::client::{rss_kib, ws_target};
use crate::Cli;
use fuzzer::{fuzz_worker, FuzzPlan, FuzzProgress, FuzzStats, RecentAction};
use mutations::Kind;
use normal::{normal_member, summarise_normal, NormalPlan, NormalSummary};
use watch::{health_check, panics_in_log, process_alive, watch_server, ServerWatch};

#[derive(Args, Clone)]
pub(crate) struct FuzzArgs {
    /// Fuzz connections at once, from the --source-addresses addresses (127.1.x.y); each
    /// reconnects whenever the server closes it, until the run ends.
    #[arg(long, default_value_t = 100)]
    pub(crate) connections: usize,
    /// Normal pairs chatting beside the fuzzers, each member from an address of its own
    /// (127.2.x.y), so limits the fuzzers exhaust per address never touch them.
    #[arg(long, default_value_t = 20)]
    pub(crate) pairs: usize,
    /// Seconds the fuzzers run; the normal pairs chat as long.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration_seconds: f64,
    /// Most the server's resident memory (VmRSS, needs --server-pid) may grow above its value
    /// at the start, in MiB. Default: 128 + 6 × connections. Each fuzz connection may
    /// legitimately make the server hold one frame being read (max_frame_bytes, 2 MiB) and a
    /// copy while it is put together and parsed (2 MiB more); fuzzers that match each other
    /// hold a chat log of up to event_log_max_bytes (4 MiB a chat, 2 MiB a connection). The
    /// 128 MiB cover the runtime, the normal pairs, sessions waiting out their resume grace
    /// and the allocator's slack.
    #[arg(long)]
    pub(crate) max_memory_growth_mib: Option<u64>,
    /// Seed of the fuzzers' generator (default: from the clock). Printed at the start and in
    /// the summary; the same seed and --connections make each fuzz worker send the same
    /// sequence of mutations again (where the server's closes cut it may vary with timing).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// The server's log (its stderr); scanned at the end, and the run fails on any line with
    /// "panicked".
    #[arg(long)]
    pub(crate) server_log: Option<PathBuf>,
    /// Mutations each fuzz connection sends per second, on average (each is one frame or a
    /// short sequence of frames).
    #[arg(long, default_value_t = 20.0)]
    pub(crate) actions_per_second_each: f64,
    /// Messages each normal member sends per second, one at a time (below the server's
    /// default max_messages_per_second of 5, so a polite client is never refused; a
    /// `rate_limited` answer is waited out and the message sent again).
    #[arg(long, default_value_t = 4.0)]
    pub(crate) normal_messages_per_second: f64,
    /// Seconds to wait after the run before reading the server's memory once more (it gives
    /// freed memory back every memory_trim_interval_seconds, 5 by default).
    #[arg(long, default_value_t = 6.0)]
    pub(crate) settle_seconds: f64,
}

/// The memory bound when --max-memory-growth-mib is not given (see its help).
pub(crate) fn default_memory_growth_mib(connections: usize) -> u64 {
    128 + 6 * connections as u64
}

#[derive(Serialize)]
pub(crate) struct ServerSummary {
    pub(crate) pid: Option<u32>,
    /// The process lived (if --server-pid was given) and answered /healthz at the end.
    pub(crate) alive: bool,
    pub(crate) died_after_seconds: Option<f64>,
    pub(crate) health_checks: u64,
    pub(crate) health_failures: u64,
    pub(crate) first_health_failure: Option<String>,
    pub(crate) rss_start_kib: Option<u64>,
    pub(crate) rss_peak_kib: Option<u64>,
    pub(crate) rss_end_kib: Option<u64>,
    pub(crate) rss_after_settle_kib: Option<u64>,
    pub(crate) max_rss_growth_mib: Option<f64>,
    pub(crate) max_memory_growth_bound_mib: u64,
    /// Lines with "panicked" in --server-log (absent without it).
    pub(crate) log_panics: Option<u64>,
    pub(crate) first_panic_lines: Vec<String>,
}

#[derive(Serialize)]
pub(crate) struct FuzzSummary {
    pub(crate) scenario: &'static str,
    pub(crate) seed: u64,
    pub(crate) passed: bool,
    pub(crate) failures: Vec<String>,
    pub(crate) duration_seconds: f64,
    pub(crate) fuzz_connections: usize,
    /// Mutations sent, by kind (`resume_url`: connections opened with a resume URL).
    pub(crate) frames_sent_by_kind: BTreeMap<&'static str, u64>,
    /// WebSocket frames those mutations wrote, whole or cut short.
    pub(crate) frames_sent_total: u64,
    pub(crate) bytes_sent_mib: f64,
    pub(crate) connections_opened: u64,
    pub(crate) connect_failures: u64,
    pub(crate) first_connect_failure: Option<String>,
    pub(crate) upgrades_refused_by_status: BTreeMap<String, u64>,
    pub(crate) closes_by_code: BTreeMap<String, u64>,
    pub(crate) closes_after_kind: BTreeMap<&'static str, BTreeMap<String, u64>>,
    pub(crate) not_closed_after_required_close: BTreeMap<&'static str, u64>,
    pub(crate) connections_ended_by_fuzzer: u64,
    pub(crate) write_stalls: u64,
    pub(crate) server_events_by_type: BTreeMap<String, u64>,
    pub(crate) server_errors_by_code: BTreeMap<String, u64>,
    pub(crate) malformed_server_frames: u64,
    pub(crate) normal: NormalSummary,
    pub(crate) server: ServerSummary,
    /// When the run failed: the last mutations sent before it, to replay by hand.
    pub(crate) last_actions_before_failure: Vec<RecentAction>,
}

/// `ws://host:port/path` split into what the raw client needs: the `Host` header and path.
fn host_and_path(url: &str) -> (String, String) {
    let rest = url.strip_prefix("ws://").unwrap_or(url);
    match rest.find('/') {
        Some(slash) => (rest[..slash].to_owned(), rest[slash..].to_owned()),
        None => (rest.to_owned(), "/ws".to_owned()),
    }
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |since| since.as_nanos() as u64)
}

pub(crate) async fn run_fuzz(cli: &Cli, args: &FuzzArgs) -> FuzzSummary {
    let bound_mib = args
        .max_memory_growth_mib
        .unwrap_or_else(|| default_memory_growth_mib(args.connections));
    let mut failures = Vec::new();
    let target = match ws_target(&cli.url).await {
        Ok(target) if target.ip().is_loopback() => target,
        Ok(target) => {
            // The fuzzers' traffic is abuse by design: never aimed at another machine.
            eprintln!("the fuzz scenario only targets loopback addresses, not {target}");
            std::process::exit(2);
        }
        Err(error) => {
            eprintln!("cannot resolve {}: {error}", cli.url);
            std::process::exit(2);
        }
    };
    let seed = args.seed.unwrap_or_else(seed_from_clock);
    eprintln!("fuzz seed {seed} (replay with --seed {seed})");
    let (host, path) = host_and_path(&cli.url);
    if let Err(error) = health_check(target, &host, 0).await {
        failures.push(format!(
            "the server does not answer /healthz at the start: {error}"
        ));
    }
    let rss_start_kib = rss_kib(cli.server_pid);
    let started = tokio::time::Instant::now();

    let (stop_watch, stopped) = tokio::sync::watch::channel(false);
    let dead = Arc::new(AtomicBool::new(false));
    let server = Arc::new(ServerWatch {
        pid: cli.server_pid,
        target,
        host: host.clone(),
    });
    let watcher = tokio::spawn(watch_server(server, stopped, dead.clone()));

    // Normal pairs are matched before any fuzzer starts, so none can be matched with one.
    let (send_until_tx, send_until) = tokio::sync::watch::channel(None);
    let delivered = Arc::new(AtomicU64::new(0));
    let normal_plan = Arc::new(NormalPlan {
        url: cli.url.clone(),
        messages_per_second: args.normal_messages_per_second,
        send_until,
        delivered: delivered.clone(),
    });
    let all_matched = Arc::new(Barrier::new(args.pairs * 2 + 1));
    let members: Vec<_> = (0..args.pairs)
        .flat_map(|pair| {
            let pair_done = Arc::new(Barrier::new(2));
            [pair * 2, pair * 2 + 1].map(|member| {
                tokio::spawn(normal_member(
                    normal_plan.clone(),
                    member,
                    all_matched.clone(),
                    pair_done.clone(),
                ))
            })
        })
        .collect();
    all_matched.wait().await;
    let fuzz_started = tokio::time::Instant::now();
    let until = fuzz_started + Duration::from_secs_f64(args.duration_seconds);
    let _ = send_until_tx.send(Some(until));

    let progress = Arc::new(FuzzProgress::default());
    let plan = Arc::new(FuzzPlan {
        target,
        host: host.clone(),
        path,
        sources: cli.source_addresses,
        connections: args.connections,
        seed,
        actions_per_second_each: args.actions_per_second_each,
        until,
        stop: dead.clone(),
        started,
        progress: progress.clone(),
    });
    let workers: Vec<_> = (0..args.connections)
        .map(|worker| tokio::spawn(fuzz_worker(plan.clone(), worker)))
        .collect();
    let bar = ProgressBar::new_spinner();
    let spinner = show_progress(bar.clone(), progress, delivered, fuzz_started);

    let mut stats = FuzzStats::default();
    for worker in workers {
        if let Ok(worker_stats) = worker.await {
            stats.merge(worker_stats);
        }
    }
    let mut reports = Vec::with_capacity(args.pairs * 2);
    for member in members {
        if let Ok(report) = member.await {
            reports.push(report);
        }
    }
    spinner.abort();
    bar.finish_and_clear();
    let fuzzed_for = fuzz_started.elapsed().as_secs_f64();
    let _ = stop_watch.send(true);
    let watched = watcher.await.unwrap_or_default();

    // Final checks, after the load.
    let pid_alive = cli.server_pid.is_none_or(process_alive);
    let final_health = health_check(target, &host, 251).await;
    let rss_end_kib = rss_kib(cli.server_pid);
    tokio::time::sleep(Duration::from_secs_f64(args.settle_seconds)).await;
    let rss_after_settle_kib = rss_kib(cli.server_pid);
    let rss_peak_kib = [watched.rss_peak_kib, rss_end_kib, rss_after_settle_kib]
        .into_iter()
        .flatten()
        .max();
    let max_rss_growth_mib = rss_start_kib
        .zip(rss_peak_kib)
        .map(|(start, peak)| peak.saturating_sub(start) as f64 / 1024.0);

    if let Some(died) = watched.died_after_seconds.filter(|_| !pid_alive) {
        failures.push(format!("the server process died {died:.1} s into the run"));
    } else if !pid_alive {
        failures.push("the server process died after the run".to_owned());
    }
    if let Err(error) = &final_health {
        failures.push(format!(
            "the server does not answer /healthz after the run: {error}"
        ));
    }
    if watched.health_failures > 0 {
        failures.push(format!(
            "/healthz failed {} of {} checks during the run (first {})",
            watched.health_failures,
            watched.health_checks,
            watched.first_health_failure.as_deref().unwrap_or("")
        ));
    }
    if let Some(growth) = max_rss_growth_mib.filter(|growth| *growth > bound_mib as f64) {
        failures.push(format!(
            "server memory grew by {growth:.0} MiB, past the bound of {bound_mib} MiB"
        ));
    }
    let (log_panics, first_panic_lines) = match &args.server_log {
        None => (None, Vec::new()),
        Some(path) => match panics_in_log(path) {
            Ok((count, lines)) => (Some(count), lines),
            Err(error) => {
                failures.push(format!("cannot read the server log: {error}"));
                (None, Vec::new())
            }
        },
    };
    if let Some(count) = log_panics.filter(|count| *count > 0) {
        failures.push(format!("the server log reports {count} panics"));
    }
    let normal = summarise_normal(args.pairs, &reports);
    if normal.members_matched < args.pairs * 2 {
        failures.push(format!(
            "only {} of {} normal members were matched",
            normal.members_matched,
            args.pairs * 2
        ));
    }
    if normal.lost + normal.doubled + normal.reordered + normal.corrupted > 0 {
        failures.push(format!(
            "normal pairs: {} messages lost, {} doubled, {} reordered, {} corrupted",
            normal.lost, normal.doubled, normal.reordered, normal.corrupted
        ));
    }
    if normal.members_disconnected > 0 || normal.errors > 0 {
        failures.push(format!(
            "normal pairs hurt: {} members cut off, {} errors (first: {})",
            normal.members_disconnected,
            normal.errors,
            normal.first_errors.first().map_or("", String::as_str)
        ));
    }
    if args.connections > 0 && stats.connections_opened == 0 {
        failures.push("no fuzz connection could be opened".to_owned());
    }

    let mut frames_sent_by_kind: BTreeMap<&'static str, u64> =
        Kind::ALL.iter().map(|kind| (kind.name(), 0)).collect();
    for (kind, count) in &stats.actions_by_kind {
        *frames_sent_by_kind.entry(kind).or_default() += count;
    }
    let passed = failures.is_empty();
    let mut last_actions_before_failure = Vec::new();
    if !passed {
        let mut recent: Vec<RecentAction> = stats.recent.iter().cloned().collect();
        recent.sort_by_key(|action| action.at_ms);
        last_actions_before_failure = recent.split_off(recent.len().saturating_sub(40));
    }
    FuzzSummary {
        scenario: "fuzz",
        seed,
        passed,
        failures,
        duration_seconds: fuzzed_for,
        fuzz_connections: args.connections,
        frames_sent_by_kind,
        frames_sent_total: stats.frames_sent,
        bytes_sent_mib: stats.bytes_sent as f64 / (1 << 20) as f64,
        connections_opened: stats.connections_opened,
        connect_failures: stats.connect_failures,
        first_connect_failure: stats.first_connect_failure,
        upgrades_refused_by_status: stats.refused_by_status,
        closes_by_code: stats.closes_by_code,
        closes_after_kind: stats.closes_after_kind,
        not_closed_after_required_close: stats.not_closed_after_required_close,
        connections_ended_by_fuzzer: stats.ended_by_fuzzer,
        write_stalls: stats.write_stalls,
        server_events_by_type: stats.server_events_by_type,
        server_errors_by_code: stats.server_errors_by_code,
        malformed_server_frames: stats.malformed_server_frames,
        normal,
        server: ServerSummary {
            pid: cli.server_pid,
            alive: pid_alive && final_health.is_ok(),
            died_after_seconds: watched.died_after_seconds,
            health_checks: watched.health_checks,
            health_failures: watched.health_failures,
            first_health_failure: watched.first_health_failure,
            rss_start_kib,
            rss_peak_kib,
            rss_end_kib,
            rss_after_settle_kib,
            max_rss_growth_mib,
            max_memory_growth_bound_mib: bound_mib,
            log_panics,
            first_panic_lines,
        },
        last_actions_before_failure,
    }
}

/// A spinner line with the run's totals, redrawn twice a second until aborted.
fn show_progress(
    bar: ProgressBar,
    progress: Arc<FuzzProgress>,
    delivered: Arc<AtomicU64>,
    started: tokio::time::Instant,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            bar.set_message(format!(
                "fuzzing {:.0} s: {} mutations, {} connections; {} normal messages delivered",
                started.elapsed().as_secs_f64(),
                progress.actions.load(Ordering::Relaxed),
                progress.connections.load(Ordering::Relaxed),
                delivered.load(Ordering::Relaxed),
            ));
            bar.tick();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

//! One fuzz worker: opens a connection, sends mutations (`mutations.rs`) until the server
//! closes it (a correct answer to garbage) or the connection has lived its span, counts what
//! the server answered, and opens the next, until the run ends.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::mutations::{build, pick_kind, resume_query, Kind, MutationContext, Step};
use super::raw_ws::{opcode, OpenError, RawConnection, RawFrame, ServerClose, WriteOutcome};
use super::rng::SplitMix64;
use crate::client::loopback_source;

/// The frame limit assumed until `hello` says otherwise (protocol v1's default).
const DEFAULT_MAX_FRAME_BYTES: usize = 2 << 20;

/// How long a write may wait for the server to read before the connection counts as stalled.
const WRITE_WITHIN: Duration = Duration::from_secs(10);

/// How long the server has to close a connection after a frame that requires it.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Actions each worker remembers, to show what came just before a failure.
const RECENT_ACTIONS_KEPT: usize = 8;

pub(crate) struct FuzzPlan {
    pub(crate) target: SocketAddr,
    /// `Host` header value.
    pub(crate) host: String,
    /// The WebSocket path, `/ws`.
    pub(crate) path: String,
    pub(crate) sources: u32,
    pub(crate) connections: usize,
    pub(crate) seed: u64,
    pub(crate) actions_per_second_each: f64,
    pub(crate) until: tokio::time::Instant,
    /// Set when the server died: nothing more to learn, every worker stops.
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) started: tokio::time::Instant,
    pub(crate) progress: Arc<FuzzProgress>,
}

impl FuzzPlan {
    fn running(&self) -> bool {
        tokio::time::Instant::now() < self.until && !self.stop.load(Ordering::Relaxed)
    }
}

/// Totals over all workers while the run goes, for the progress line.
#[derive(Default)]
pub(crate) struct FuzzProgress {
    pub(crate) actions: AtomicU64,
    pub(crate) connections: AtomicU64,
}

/// One action as the summary shows it when the run failed.
#[derive(Serialize, Clone)]
pub(crate) struct RecentAction {
    pub(crate) worker: usize,
    /// The worker's connection number (1 for its first).
    pub(crate) connection: u64,
    pub(crate) kind: &'static str,
    pub(crate) bytes: u64,
    pub(crate) at_ms: u64,
}

#[derive(Default)]
pub(crate) struct FuzzStats {
    pub(crate) actions_by_kind: BTreeMap<&'static str, u64>,
    pub(crate) frames_sent: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) connections_opened: u64,
    /// TCP connect or upgrade failures without an HTTP answer.
    pub(crate) connect_failures: u64,
    pub(crate) first_connect_failure: Option<String>,
    /// Upgrades answered with another status than 101.
    pub(crate) refused_by_status: BTreeMap<String, u64>,
    /// How the server ended connections: a close code, or no close frame.
    pub(crate) closes_by_code: BTreeMap<String, u64>,
    /// The same, by the kind of the last action before the close.
    pub(crate) closes_after_kind: BTreeMap<&'static str, BTreeMap<String, u64>>,
    /// Actions after which the protocol requires a close that did not come within 5 s.
    pub(crate) not_closed_after_required_close: BTreeMap<&'static str, u64>,
    /// Connections the fuzzer ended itself (a reset, or its span was over).
    pub(crate) ended_by_fuzzer: u64,
    /// Writes the server did not take within 10 s.
    pub(crate) write_stalls: u64,
    pub(crate) server_events_by_type: BTreeMap<String, u64>,
    pub(crate) server_errors_by_code: BTreeMap<String, u64>,
    pub(crate) malformed_server_frames: u64,
    pub(crate) recent: VecDeque<RecentAction>,
}

fn add_all<K: Ord + Clone>(into: &mut BTreeMap<K, u64>, from: &BTreeMap<K, u64>) {
    for (key, count) in from {
        *into.entry(key.clone()).or_default() += count;
    }
}

impl FuzzStats {
    pub(crate) fn merge(&mut self, other: FuzzStats) {
        add_all(&mut self.actions_by_kind, &other.actions_by_kind);
        self.frames_sent += other.frames_sent;
        self.bytes_sent += other.bytes_sent;
        self.connections_opened += other.connections_opened;
        self.connect_failures += other.connect_failures;
        if self.first_connect_failure.is_none() {
            self.first_connect_failure = other.first_connect_failure;
        }
        add_all(&mut self.refused_by_status, &other.refused_by_status);
        add_all(&mut self.closes_by_code, &other.closes_by_code);
        for (kind, codes) in &other.closes_after_kind {
            add_all(self.closes_after_kind.entry(kind).or_default(), codes);
        }
        add_all(
            &mut self.not_closed_after_required_close,
            &other.not_closed_after_required_close,
        );
        self.ended_by_fuzzer += other.ended_by_fuzzer;
        self.write_stalls += other.write_stalls;
        add_all(
            &mut self.server_events_by_type,
            &other.server_events_by_type,
        );
        add_all(
            &mut self.server_errors_by_code,
            &other.server_errors_by_code,
        );
        self.malformed_server_frames += other.malformed_server_frames;
        self.recent.extend(other.recent);
    }

    fn count(&mut self, plan: &FuzzPlan, worker: usize, connection: u64, kind: Kind, bytes: u64) {
        *self.actions_by_kind.entry(kind.name()).or_default() += 1;
        plan.progress.actions.fetch_add(1, Ordering::Relaxed);
        if self.recent.len() == RECENT_ACTIONS_KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back(RecentAction {
            worker,
            connection,
            kind: kind.name(),
            bytes,
            at_ms: plan.started.elapsed().as_millis() as u64,
        });
    }
}

/// How a connection's actions stopped.
struct ConnectionEnd {
    last_kind: Kind,
    /// Reset the TCP connection rather than shutting it down.
    reset: bool,
}

pub(crate) async fn fuzz_worker(plan: Arc<FuzzPlan>, worker: usize) -> FuzzStats {
    let mut rng = SplitMix64::for_worker(plan.seed, worker);
    let mut stats = FuzzStats::default();
    // A token of this worker's last session that dropped without a close frame: the server
    // keeps such a session for the resume grace, so resuming it takes the real resume path.
    let mut earlier_token: Option<String> = None;
    let mut connection_number = 0u64;
    while plan.running() {
        connection_number += 1;
        // Each connection from the next source address, so per-address limits spread.
        let source = loopback_source(
            worker + connection_number as usize * plan.connections,
            plan.sources,
        );
        let mut path = plan.path.clone();
        if rng.one_in(4) {
            path.push_str(&resume_query(&mut rng, earlier_token.as_deref()));
            stats.count(&plan, worker, connection_number, Kind::ResumeUrl, 0);
        }
        let mut connection = match RawConnection::open(plan.target, &plan.host, source, &path).await
        {
            Ok(connection) => connection,
            Err(OpenError::Status(status)) => {
                *stats
                    .refused_by_status
                    .entry(status.to_string())
                    .or_default() += 1;
                tokio::time::sleep(Duration::from_millis(rng.between(100, 500) as u64)).await;
                continue;
            }
            Err(OpenError::Io(error)) => {
                stats.connect_failures += 1;
                stats.first_connect_failure.get_or_insert(error);
                tokio::time::sleep(Duration::from_millis(rng.between(100, 1000) as u64)).await;
                continue;
            }
        };
        stats.connections_opened += 1;
        plan.progress.connections.fetch_add(1, Ordering::Relaxed);
        // Most connections wait for `hello`; some send their first frame before it arrives.
        if !rng.one_in(8) {
            connection.wait_for_hello(Duration::from_secs(5)).await;
        }
        let end = run_connection(
            &plan,
            &mut rng,
            &mut connection,
            &mut stats,
            earlier_token.take(),
            (worker, connection_number),
        )
        .await;
        let live = connection.live();
        match live.closed {
            Some(close) => {
                let label = close.label();
                *stats.closes_by_code.entry(label.clone()).or_default() += 1;
                *stats
                    .closes_after_kind
                    .entry(end.last_kind.name())
                    .or_default()
                    .entry(label)
                    .or_default() += 1;
            }
            None => {
                stats.ended_by_fuzzer += 1;
                // Dropped without a close frame: the session waits for a resume.
                earlier_token = live.session_token.clone();
            }
        }
        let counts = connection.end(end.reset).await;
        add_all(&mut stats.server_events_by_type, &counts.events_by_type);
        add_all(&mut stats.server_errors_by_code, &counts.errors_by_code);
        stats.malformed_server_frames += counts.malformed_server_frames;
        if live.closed == Some(ServerClose::Code(1013)) {
            // Refused for the connection rate: wait as asked (at most 5 s) before the next.
            let wait_ms = live.retry_after_ms.unwrap_or(1000).min(5000);
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
    }
    stats
}

async fn run_connection(
    plan: &FuzzPlan,
    rng: &mut SplitMix64,
    connection: &mut RawConnection,
    stats: &mut FuzzStats,
    earlier_token: Option<String>,
    (worker, connection_number): (usize, u64),
) -> ConnectionEnd {
    let mean_pause_seconds = 1.0 / plan.actions_per_second_each.max(0.001);
    // Connections the server never closes end after a random span of actions, so sessions
    // come and go as they would with real clients.
    let span = rng.between(5, 200);
    let mut last_kind = Kind::ValidFrame;
    // An unfinished fragmented message on this connection: what the server must do with the
    // next frames depends on it, so required closes are not checked past this point.
    let mut message_open = false;
    for index in 0..span {
        if !plan.running() || connection.closed().is_some() {
            break;
        }
        let kind = if index == 0 && rng.one_in(4) {
            Kind::ResumeFrameFirst
        } else {
            pick_kind(rng)
        };
        let max_frame_bytes = connection
            .live()
            .max_frame_bytes
            .unwrap_or(DEFAULT_MAX_FRAME_BYTES);
        let context = MutationContext {
            max_frame_bytes,
            earlier_token: earlier_token.as_deref(),
        };
        let action = build(kind, rng, &context);
        stats.count(plan, worker, connection_number, kind, action.bytes);
        stats.frames_sent += action.frames;
        stats.bytes_sent += action.bytes;
        last_kind = kind;
        let mut broken = false;
        for step in action.steps {
            match step {
                Step::Send(bytes) => match connection.write(&bytes, WRITE_WITHIN).await {
                    WriteOutcome::Written => {}
                    WriteOutcome::Failed => {
                        broken = true;
                        break;
                    }
                    WriteOutcome::Stalled => {
                        stats.write_stalls += 1;
                        return ConnectionEnd {
                            last_kind,
                            reset: true,
                        };
                    }
                },
                Step::Pause(pause) => tokio::time::sleep(pause).await,
                Step::Reset => {
                    return ConnectionEnd {
                        last_kind,
                        reset: true,
                    }
                }
            }
        }
        if broken {
            // The server closed while we wrote; give the reader a moment to see how.
            connection.wait_for_close(Duration::from_secs(2)).await;
            break;
        }
        message_open |= action.leaves_message_open;
        if action.must_close && !message_open {
            if connection.wait_for_close(CLOSE_WITHIN).await.is_none() {
                *stats
                    .not_closed_after_required_close
                    .entry(kind.name())
                    .or_default() += 1;
                return ConnectionEnd {
                    last_kind,
                    reset: true,
                };
            }
            break;
        }
        let pause = mean_pause_seconds * 2.0 * (rng.below(1000) as f64 / 1000.0);
        tokio::time::sleep(Duration::from_secs_f64(pause)).await;
    }
    if connection.closed().is_none() && rng.one_in(2) {
        // Half of the connections still open say goodbye properly; the others just go.
        let close = RawFrame::new(
            opcode::CLOSE,
            1000u16.to_be_bytes().to_vec(),
            rng.next_u64() as u32,
        );
        if let WriteOutcome::Written = connection.write(&close.encode(), WRITE_WITHIN).await {
            connection.wait_for_close(Duration::from_secs(3)).await;
        }
    }
    ConnectionEnd {
        last_kind,
        reset: false,
    }
}

//! The chat core's Prometheus series. Handles are registered once, when the hub starts, so
//! the hot path increments a counter without building a key. Labels come from small fixed
//! sets; nothing here can identify a person.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use metrics::{counter, gauge, histogram, Counter, Histogram};

use crate::protocol::{ErrorCode, Mode, ReportReason};

/// Why the server refused a client's frame, connection or request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ServerBusy,
    BadRequest,
    TooLarge,
    NotChatting,
    AlreadyChatting,
    AgeRequired,
    /// The chat's mailbox was full: the client sends faster than its chat can take.
    ChatBusy,
    /// The matchmaker's mailbox was full.
    QueueBusy,
    /// The client already holds `max_sessions_per_client`.
    ClientSessions,
    /// Over a rate limit.
    RateLimited,
    /// Banned after reports.
    Banned,
    /// A missing or wrong proof-of-work nonce.
    ProofOfWork,
    /// A /ws request from a page on another site.
    Origin,
    /// A typing indicator past `max_typing_per_second`, dropped without an answer.
    TypingDropped,
    /// A ping or pong past `max_control_frames_per_second`.
    ControlFrames,
    /// An HTTP request the framework could not parse (answered 400 or 431 by it).
    MalformedHttp,
    /// A request on a connection whose earlier responses lie unread (pipelining without
    /// reading); the connection is closed.
    UnreadResponses,
    /// An HTTP request with a chunked body (`Transfer-Encoding`): nothing here takes one, and
    /// an endless one would hold its connection.
    ChunkedBody,
}

impl Refusal {
    /// Its place in `ALL` (an exhaustive match: a new reason cannot be forgotten).
    fn index(self) -> usize {
        match self {
            Refusal::ServerBusy => 0,
            Refusal::BadRequest => 1,
            Refusal::TooLarge => 2,
            Refusal::NotChatting => 3,
            Refusal::AlreadyChatting => 4,
            Refusal::AgeRequired => 5,
            Refusal::ChatBusy => 6,
            Refusal::QueueBusy => 7,
            Refusal::ClientSessions => 8,
            Refusal::RateLimited => 9,
            Refusal::Banned => 10,
            Refusal::ProofOfWork => 11,
            Refusal::Origin => 12,
            Refusal::TypingDropped => 13,
            Refusal::ControlFrames => 14,
            Refusal::MalformedHttp => 15,
            Refusal::UnreadResponses => 16,
            Refusal::ChunkedBody => 17,
        }
    }
    pub const ALL: [Refusal; 18] = [
        Refusal::ServerBusy,
        Refusal::BadRequest,
        Refusal::TooLarge,
        Refusal::NotChatting,
        Refusal::AlreadyChatting,
        Refusal::AgeRequired,
        Refusal::ChatBusy,
        Refusal::QueueBusy,
        Refusal::ClientSessions,
        Refusal::RateLimited,
        Refusal::Banned,
        Refusal::ProofOfWork,
        Refusal::Origin,
        Refusal::TypingDropped,
        Refusal::ControlFrames,
        Refusal::MalformedHttp,
        Refusal::UnreadResponses,
        Refusal::ChunkedBody,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::ServerBusy => "server_busy",
            Refusal::BadRequest => "bad_request",
            Refusal::TooLarge => "too_large",
            Refusal::NotChatting => "not_chatting",
            Refusal::AlreadyChatting => "already_chatting",
            Refusal::AgeRequired => "age_required",
            Refusal::ChatBusy => "chat_busy",
            Refusal::QueueBusy => "queue_busy",
            Refusal::ClientSessions => "client_sessions",
            Refusal::RateLimited => "rate_limited",
            Refusal::Banned => "banned",
            Refusal::ProofOfWork => "proof_of_work",
            Refusal::Origin => "origin",
            Refusal::TypingDropped => "typing_dropped",
            Refusal::ControlFrames => "control_frames",
            Refusal::MalformedHttp => "malformed_http",
            Refusal::UnreadResponses => "unread_responses",
            Refusal::ChunkedBody => "chunked_body",
        }
    }
}

/// Why a session's connection was closed by the server or lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    CloseFrame,
    Dropped,
    ClientTimeout,
    SlowConsumer,
    ProtocolErrors,
    /// A frame that broke RFC 6455 (closed with 1002 or 1007).
    ProtocolViolation,
    FrameTooLarge,
    ResumedElsewhere,
    Shutdown,
    /// The peer acknowledged nothing while bytes waited for `write_stall_timeout_seconds`.
    WriteStalled,
}

impl Disconnect {
    /// Its place in `ALL` (an exhaustive match: a new reason cannot be forgotten).
    fn index(self) -> usize {
        match self {
            Disconnect::CloseFrame => 0,
            Disconnect::Dropped => 1,
            Disconnect::ClientTimeout => 2,
            Disconnect::SlowConsumer => 3,
            Disconnect::ProtocolErrors => 4,
            Disconnect::ProtocolViolation => 5,
            Disconnect::FrameTooLarge => 6,
            Disconnect::ResumedElsewhere => 7,
            Disconnect::Shutdown => 8,
            Disconnect::WriteStalled => 9,
        }
    }
    pub const ALL: [Disconnect; 10] = [
        Disconnect::CloseFrame,
        Disconnect::Dropped,
        Disconnect::ClientTimeout,
        Disconnect::SlowConsumer,
        Disconnect::ProtocolErrors,
        Disconnect::ProtocolViolation,
        Disconnect::FrameTooLarge,
        Disconnect::ResumedElsewhere,
        Disconnect::Shutdown,
        Disconnect::WriteStalled,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Disconnect::CloseFrame => "close_frame",
            Disconnect::Dropped => "dropped",
            Disconnect::ClientTimeout => "client_timeout",
            Disconnect::SlowConsumer => "slow_consumer",
            Disconnect::ProtocolErrors => "protocol_errors",
            Disconnect::ProtocolViolation => "protocol_violation",
            Disconnect::FrameTooLarge => "frame_too_large",
            Disconnect::ResumedElsewhere => "resumed_elsewhere",
            Disconnect::Shutdown => "shutdown",
            Disconnect::WriteStalled => "write_stalled",
        }
    }
}

/// What kind of series a catalogue entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported series: its name, kind, help text and label names.
#[derive(Debug)]
pub struct Series {
    pub name: &'static str,
    pub kind: SeriesKind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

const fn series(
    name: &'static str,
    kind: SeriesKind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Series {
    Series {
        name,
        kind,
        help,
        labels,
    }
}

use SeriesKind::{Counter as C, Gauge as G, Histogram as H};

/// Every series the server exports, in one place: a projection of what the actors do, each
/// with its help text. docs/metrics.md lists the same names, and a test fails on any exported
/// series or label that is not here. (The `process_*` series come from `metrics-process`.)
pub const SERIES: &[Series] = &[
    series("ephemera_build_info", G, &["version"], "Always 1; the version label says which build runs."),
    series("ephemera_sessions", G, &["state", "mode"], "Sessions now: state online (mode any), waiting or chatting (by mode)."),
    series("ephemera_sessions_started_total", C, &[], "Sessions started (fresh, not resumed)."),
    series("ephemera_sessions_started_by_country_total", C, &["country", "continent"], "Sessions started, by the country and continent of the client's address (ISO codes, or unknown)."),
    series("ephemera_sessions_resumed_total", C, &[], "Resumes that found their session."),
    series("ephemera_sessions_expired_total", C, &[], "Sessions whose resume grace ran out."),
    series("ephemera_matches_total", C, &["mode", "interests"], "Chats begun, by mode and whether the two shared an interest (shared or none)."),
    series("ephemera_match_wait_seconds", H, &["mode"], "Seconds from joining the queue to being matched."),
    series("ephemera_chat_duration_seconds", H, &["mode"], "Seconds from a chat's start to its end."),
    series("ephemera_chats_ended_total", C, &[], "Chats ended."),
    series("ephemera_chat_events_total", C, &["kind"], "Messages (kind msg) and images or voice notes (kind media) relayed."),
    series("ephemera_chat_event_bytes_total", C, &["kind"], "Bytes of messages and media relayed (as logged, before framing)."),
    series("ephemera_relayed_total", C, &["kind"], "Typing indicators and WebRTC signals passed to a stranger, unlogged."),
    series("ephemera_relayed_bytes_total", C, &["kind"], "Bytes of typing indicators and signals passed on."),
    series("ephemera_event_log_evictions_total", C, &[], "Chat events evicted from (or too large for) a chat's replay log."),
    series("ephemera_replayed_events_total", C, &[], "Chat events replayed to resuming clients."),
    series("ephemera_resent_messages_total", C, &[], "Messages sent again with an id the chat held: answered with the first echo, relayed to no one."),
    series("ephemera_reports_total", C, &["reason"], "Reports filed, by reason."),
    series("ephemera_errors_sent_total", C, &["code"], "error frames sent to clients, by code."),
    series("ephemera_refusals_total", C, &["reason"], "Frames, connections or requests refused, by reason."),
    series("ephemera_disconnects_total", C, &["reason"], "Connections closed or lost, by reason (slow_consumer: cut off for not reading)."),
    series("ephemera_purge_tick_seconds", H, &[], "Seconds one purge tick took (grace and cooldown expiry, key and limiter pruning)."),
    series("ephemera_mqtt_publishes_total", C, &["result"], "Statistics snapshots for the MQTT broker (mqtt_url): ok when written to the broker's connection, failed when dropped because it was away or still busy with the previous one."),
    series("ephemera_cluster_relay_dropped_total", C, &[], "Messages between cluster nodes dropped: the relay's queue was full (Redis away), or a chat's mailbox was (its sender is told rate_limited). Their senders send again (by message id)."),
    series("ephemera_cluster_session_moves_total", C, &["result"], "Resumes of a session held by another node: ok when it moved here, failed when that node handed nothing over (gone, shutting down, or no answer within 3 s: the client gets a fresh session)."),
    series("ephemera_notify_requests_total", C, &["action", "result"], "Requests to the e-mail list (notify_db_path), by action (sign_up, delete) and result (accepted, or the error code: invalid_email, unknown_topic, bad_request, unsupported_type, too_large, forbidden_origin, rate_limited, timeout, unavailable). Accepted says nothing of whether an address was new."),
];

/// A message for another node that the relay could not take (its queue full while Redis is
/// away), or one from another node that the chat's mailbox could not take.
pub fn count_relay_refused() {
    metrics::counter!("ephemera_cluster_relay_dropped_total").increment(1);
}

/// A resume here of a session another node held: whether the session moved here.
pub fn count_session_move(moved: bool) {
    let result = if moved { "ok" } else { "failed" };
    metrics::counter!("ephemera_cluster_session_moves_total", "result" => result).increment(1);
}

/// Histogram buckets, in seconds: the queue wait (sub-second to ten minutes) and chat lengths
/// (a second to four hours).
pub const MATCH_WAIT_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
pub const CHAT_DURATION_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
];
pub const PURGE_TICK_BUCKETS: &[f64] = &[
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1,
];

/// Gives every series of `SERIES` its help text (and unit) with the installed recorder.
pub fn describe_all() {
    for entry in SERIES {
        let unit = if entry.name.ends_with("_seconds") {
            Some(metrics::Unit::Seconds)
        } else if entry.name.ends_with("_bytes_total") {
            Some(metrics::Unit::Bytes)
        } else {
            None
        };
        match (entry.kind, unit) {
            (SeriesKind::Counter, Some(unit)) => {
                metrics::describe_counter!(entry.name, unit, entry.help)
            }
            (SeriesKind::Counter, None) => metrics::describe_counter!(entry.name, entry.help),
            (SeriesKind::Gauge, _) => metrics::describe_gauge!(entry.name, entry.help),
            (SeriesKind::Histogram, Some(unit)) => {
                metrics::describe_histogram!(entry.name, unit, entry.help)
            }
            (SeriesKind::Histogram, None) => metrics::describe_histogram!(entry.name, entry.help),
        }
    }
}

/// One handle per mode, in the order of `Mode::index`.
type PerMode<T> = [T; 2];

fn per_mode<T>(make: impl Fn(&'static str) -> T) -> PerMode<T> {
    [make(Mode::Text.as_str()), make(Mode::Video.as_str())]
}

#[derive(Clone)]
pub struct ChatMetrics {
    pub sessions_started: Counter,
    pub sessions_resumed: Counter,
    pub sessions_expired: Counter,
    /// By mode, then whether the two shared an interest.
    matches: PerMode<[Counter; 2]>,
    match_wait: PerMode<Histogram>,
    pub replayed_events: Counter,
    pair: PairCounters,
    /// One handle per reason, in the order of `Refusal::ALL`.
    refusals: Vec<Counter>,
    /// One handle per reason, in the order of `Disconnect::ALL`.
    disconnects: Vec<Counter>,
    /// One handle per code, in the order of `ErrorCode::ALL`.
    errors_sent: Vec<Counter>,
    pub purge_tick: Histogram,
    /// The matches and messages so far, readable (unlike the handles above) for the MQTT
    /// snapshot's per-interval counts. Shared with every pair's `PairCounters`.
    totals: Arc<ActivityTotals>,
}

/// Chats begun and messages relayed since the hub started. The `metrics` crate's handles
/// cannot be read back, so these mirror two of them: one relaxed add beside each increment,
/// no lock. Relaxed suffices: a reader wants a recent count, not an order among them.
#[derive(Debug, Default)]
pub struct ActivityTotals {
    matches: AtomicU64,
    messages: AtomicU64,
}

/// A reading of `ActivityTotals`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActivityCounts {
    pub matches: u64,
    pub messages: u64,
}

impl ActivityTotals {
    pub fn read(&self) -> ActivityCounts {
        ActivityCounts {
            matches: self.matches.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
        }
    }
}

impl ActivityCounts {
    /// What was added between `earlier` and this reading.
    pub fn since(self, earlier: ActivityCounts) -> ActivityCounts {
        ActivityCounts {
            matches: self.matches.saturating_sub(earlier.matches),
            messages: self.messages.saturating_sub(earlier.messages),
        }
    }
}

impl ChatMetrics {
    /// Registers every series with the global recorder; call after the recorder is installed.
    pub fn register() -> Self {
        describe_all();
        gauge!("ephemera_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        let totals = Arc::new(ActivityTotals::default());
        Self {
            sessions_started: counter!("ephemera_sessions_started_total"),
            sessions_resumed: counter!("ephemera_sessions_resumed_total"),
            sessions_expired: counter!("ephemera_sessions_expired_total"),
            matches: per_mode(|mode| {
                [
                    counter!("ephemera_matches_total", "mode" => mode, "interests" => "none"),
                    counter!("ephemera_matches_total", "mode" => mode, "interests" => "shared"),
                ]
            }),
            match_wait: per_mode(|mode| histogram!("ephemera_match_wait_seconds", "mode" => mode)),
            replayed_events: counter!("ephemera_replayed_events_total"),
            pair: PairCounters {
                messages: counter!("ephemera_chat_events_total", "kind" => "msg"),
                media: counter!("ephemera_chat_events_total", "kind" => "media"),
                message_bytes: counter!("ephemera_chat_event_bytes_total", "kind" => "msg"),
                media_bytes: counter!("ephemera_chat_event_bytes_total", "kind" => "media"),
                typing: counter!("ephemera_relayed_total", "kind" => "typing"),
                signals: counter!("ephemera_relayed_total", "kind" => "signal"),
                typing_bytes: counter!("ephemera_relayed_bytes_total", "kind" => "typing"),
                signal_bytes: counter!("ephemera_relayed_bytes_total", "kind" => "signal"),
                chats_ended: counter!("ephemera_chats_ended_total"),
                chat_duration: per_mode(
                    |mode| histogram!("ephemera_chat_duration_seconds", "mode" => mode),
                ),
                event_log_evictions: counter!("ephemera_event_log_evictions_total"),
                reports: ReportReason::ALL
                    .map(|reason| counter!("ephemera_reports_total", "reason" => reason.as_str())),
                resent_messages: counter!("ephemera_resent_messages_total"),
                totals: totals.clone(),
            },
            refusals: Refusal::ALL
                .iter()
                .map(|r| counter!("ephemera_refusals_total", "reason" => r.label()))
                .collect(),
            disconnects: Disconnect::ALL
                .iter()
                .map(|d| counter!("ephemera_disconnects_total", "reason" => d.label()))
                .collect(),
            errors_sent: ErrorCode::ALL
                .iter()
                .map(|code| counter!("ephemera_errors_sent_total", "code" => code.as_str()))
                .collect(),
            purge_tick: histogram!("ephemera_purge_tick_seconds"),
            totals,
        }
    }

    /// Matches and messages since the hub started (for the MQTT snapshot).
    pub fn activity_totals(&self) -> ActivityCounts {
        self.totals.read()
    }

    /// The handles a pair actor updates.
    pub fn pair_counters(&self) -> PairCounters {
        self.pair.clone()
    }

    /// A chat began in `mode` after the joiner waited `waited`.
    pub fn matched(&self, mode: Mode, shared_interest: bool, waited: [std::time::Duration; 2]) {
        self.matches[mode.index()][usize::from(shared_interest)].increment(1);
        self.totals.matches.fetch_add(1, Ordering::Relaxed);
        for wait in waited {
            self.match_wait[mode.index()].record(wait.as_secs_f64());
        }
    }

    pub fn refused(&self, refusal: Refusal) {
        self.refusals[refusal.index()].increment(1);
    }

    pub fn disconnected(&self, disconnect: Disconnect) {
        self.disconnects[disconnect.index()].increment(1);
    }

    /// A fresh session started for a client in `region`.
    pub fn session_started_in(&self, region: crate::client_key::Region) {
        counter!(
            "ephemera_sessions_started_by_country_total",
            "country" => region.country().to_owned(),
            "continent" => region.continent().to_owned()
        )
        .increment(1);
    }

    /// An `error` frame with `code` went to a client.
    pub fn error_sent(&self, code: ErrorCode) {
        self.errors_sent[code.index()].increment(1);
    }
}

/// The sessions gauges (`ephemera_sessions{state,mode}`), set from the registry's counts when
/// metrics are scraped.
pub fn set_session_gauges(online: u64, waiting: PerMode<u64>, chatting: PerMode<u64>) {
    gauge!("ephemera_sessions", "state" => "online", "mode" => "any").set(online as f64);
    for mode in [Mode::Text, Mode::Video] {
        let label = mode.as_str();
        gauge!("ephemera_sessions", "state" => "waiting", "mode" => label)
            .set(waiting[mode.index()] as f64);
        gauge!("ephemera_sessions", "state" => "chatting", "mode" => label)
            .set(chatting[mode.index()] as f64);
    }
}

/// The series a chat updates, cloned into each pair actor.
#[derive(Clone)]
pub struct PairCounters {
    pub messages: Counter,
    pub media: Counter,
    pub message_bytes: Counter,
    pub media_bytes: Counter,
    pub typing: Counter,
    pub signals: Counter,
    pub typing_bytes: Counter,
    pub signal_bytes: Counter,
    pub chats_ended: Counter,
    chat_duration: PerMode<Histogram>,
    pub event_log_evictions: Counter,
    reports: [Counter; 5],
    pub resent_messages: Counter,
    totals: Arc<ActivityTotals>,
}

impl PairCounters {
    /// A `msg` of `bytes` (shared part, as logged) was relayed.
    pub fn message_relayed(&self, bytes: u64) {
        self.messages.increment(1);
        self.message_bytes.increment(bytes);
        self.totals.messages.fetch_add(1, Ordering::Relaxed);
    }

    pub fn chat_ended(&self, mode: Mode, lasted: std::time::Duration) {
        self.chats_ended.increment(1);
        self.chat_duration[mode.index()].record(lasted.as_secs_f64());
    }

    pub fn reported(&self, reason: ReportReason) {
        self.reports[reason.index()].increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_place_and_label() {
        for (place, refusal) in Refusal::ALL.iter().enumerate() {
            assert_eq!(refusal.index(), place, "{refusal:?}");
        }
        for (place, disconnect) in Disconnect::ALL.iter().enumerate() {
            assert_eq!(disconnect.index(), place, "{disconnect:?}");
        }
        let labels: std::collections::HashSet<_> = Refusal::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Refusal::ALL.len());
        for (place, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), place, "{code:?}");
        }
        for (place, reason) in ReportReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), place, "{reason:?}");
        }
    }
}

//! Logs and metrics set-up. Logs are structured facts and never carry an address, a message,
//! a nickname, an interest or a token; metrics are aggregate counts from small label sets.
//!
//! The frameworks under us (actix-http, actix-web, rustls, …) log what a client sent when it
//! is malformed (`illegal Content-Length: "…"`), and a client can make them log at will. So
//! their events never reach the output as they are: a malformed HTTP request is counted
//! (`ephemera_refusals_total{reason="malformed_http"}`), and a warning or error from them
//! becomes one line of ours naming only where it came from, at most once per
//! `FRAMEWORK_LINE_INTERVAL` per source, with how many were withheld.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ephemera_actors::metrics::Refusal;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::Mutex;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::{EnvFilter, FilterExt as _};
use tracing_subscriber::layer::{Context, Filter, Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// At most one line per framework source in this time.
const FRAMEWORK_LINE_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("invalid log_level {filter:?}: {reason}")]
pub struct LogFilterError {
    filter: String,
    reason: String,
}

/// Installs the process's logger: our own events through `filter` (refused at start if it
/// does not parse), framework events through the guard described above.
pub fn init_logging(filter: &str) -> Result<(), LogFilterError> {
    check_log_filter(filter)?;
    let env_filter = EnvFilter::builder()
        .with_regex(false)
        .parse(filter)
        .map_err(|err| LogFilterError {
            filter: filter.to_owned(),
            reason: err.to_string(),
        })?;
    let ours = tracing_subscriber::fmt::layer()
        .with_target(false)
        // Colour codes only for a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_filter(
            tracing_subscriber::filter::filter_fn(|meta| is_ours(meta.target())).and(env_filter),
        );
    let _ = tracing_subscriber::registry()
        .with(ours)
        .with(FrameworkGuard::default().with_filter(FrameworkEvents))
        .try_init();
    Ok(())
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Refuses a filter an operator most likely mistyped. tracing's syntax reads a bare word as a
/// target to log at every level (so `verbose` would silently turn everything else off), and
/// accepts span filters no operator of this server needs; here each comma-separated directive
/// must be a level, or `target=level`.
pub fn check_log_filter(filter: &str) -> Result<(), LogFilterError> {
    let refuse = |reason: &str| LogFilterError {
        filter: filter.to_owned(),
        reason: reason.to_owned(),
    };
    let is_level = |word: &str| LEVELS.contains(&word.trim().to_ascii_lowercase().as_str());
    let directives: Vec<&str> = filter.split(',').map(str::trim).collect();
    if directives.iter().all(|d| d.is_empty()) {
        return Err(refuse("it is empty; use a level such as info"));
    }
    for directive in directives.into_iter().filter(|d| !d.is_empty()) {
        let fine = match directive.split_once('=') {
            None => is_level(directive),
            Some((target, level)) => {
                !target.is_empty()
                    && target
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_:-".contains(&b))
                    && is_level(level)
            }
        };
        if !fine {
            return Err(refuse(&format!(
                "{directive:?} is neither a level ({}) nor target=level",
                LEVELS.join(", ")
            )));
        }
    }
    Ok(())
}

fn is_ours(target: &str) -> bool {
    target == "ephemera" || target.starts_with("ephemera::") || target.starts_with("ephemera_")
}

/// What a framework event means to us, decided once per call site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameworkEvent {
    /// actix-http could not parse a request and answers 400 or 431 by itself.
    MalformedRequest,
    /// actix-http reports the error our own `CuttableBody` raises to drop a connection.
    ConnectionCutOff,
    /// Any other warning or error.
    Problem,
}

/// actix-http's dispatcher logs a malformed request at TRACE ("parse error …", "request head
/// was too big …") and our deliberate cut-offs at ERROR ("Response payload stream error").
/// Call sites are told apart by line, which is fixed by the locked version; the malformed-
/// request test fails if an upgrade moves them.
fn classify(meta: &Metadata<'_>) -> Option<FrameworkEvent> {
    if is_ours(meta.target()) {
        return None;
    }
    let in_dispatcher = meta.target() == "actix_http::h1::dispatcher";
    match (in_dispatcher, meta.line()) {
        (true, Some(1023 | 1043)) => Some(FrameworkEvent::MalformedRequest),
        (true, Some(725 | 782)) => Some(FrameworkEvent::ConnectionCutOff),
        _ if *meta.level() <= Level::WARN => Some(FrameworkEvent::Problem),
        _ => None,
    }
}

/// Lets through only the framework call sites `classify` knows, decided once per call site, so
/// the frameworks' hot-path trace events stay disabled.
struct FrameworkEvents;

impl<S: Subscriber> Filter<S> for FrameworkEvents {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        meta.is_event() && classify(meta).is_some()
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if meta.is_event() && classify(meta).is_some() {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
}

#[derive(Default)]
struct FrameworkGuard {
    /// Per source: when a line was last written, and how many events were withheld since.
    lines: Mutex<HashMap<&'static str, (Option<Instant>, u64)>>,
}

impl<S: Subscriber> Layer<S> for FrameworkGuard {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        match classify(meta) {
            Some(FrameworkEvent::MalformedRequest) => {
                metrics::counter!("ephemera_refusals_total", "reason" => Refusal::MalformedHttp.label())
                    .increment(1);
                self.line(meta, "malformed http request refused");
            }
            Some(FrameworkEvent::Problem) => self.line(meta, "framework reported a problem"),
            Some(FrameworkEvent::ConnectionCutOff) | None => {}
        }
    }
}

impl FrameworkGuard {
    /// Writes one line of ours for the event's source, unless one was written recently. The
    /// event's own message and fields are never read: they may hold what a client sent.
    fn line(&self, meta: &'static Metadata<'static>, what: &'static str) {
        let now = Instant::now();
        let withheld = {
            let mut lines = self.lines.lock();
            let entry = lines.entry(meta.target()).or_insert((None, 0));
            if entry
                .0
                .is_some_and(|last| now.duration_since(last) < FRAMEWORK_LINE_INTERVAL)
            {
                entry.1 += 1;
                return;
            }
            let withheld = entry.1;
            *entry = (Some(now), 0);
            withheld
        };
        tracing::warn!(
            source = meta.target(),
            level = %meta.level(),
            withheld_since_last_line = withheld,
            "{what} (details withheld: they may hold client data)"
        );
    }
}

/// The process-wide Prometheus recorder, installed on first use. Several servers in one
/// process (as in tests) share it.
pub fn prometheus_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            use ephemera_actors::metrics as catalogue;
            let buckets = [
                ("ephemera_match_wait_seconds", catalogue::MATCH_WAIT_BUCKETS),
                (
                    "ephemera_chat_duration_seconds",
                    catalogue::CHAT_DURATION_BUCKETS,
                ),
                ("ephemera_purge_tick_seconds", catalogue::PURGE_TICK_BUCKETS),
            ];
            let mut builder = PrometheusBuilder::new();
            for (name, bounds) in buckets {
                // Only an empty bucket list is refused, and these are constants.
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(name.to_owned()), bounds)
                    .expect("bucket lists are not empty");
            }
            let handle = builder.install_recorder().ok();
            process_collector().describe();
            if let Some(handle) = handle.clone() {
                // Without upkeep, histogram samples pile up between scrapes (and for good on
                // a server nobody scrapes): drain them into their buckets now and then.
                std::thread::Builder::new()
                    .name("metrics-upkeep".into())
                    .spawn(move || loop {
                        std::thread::sleep(Duration::from_secs(5));
                        handle.run_upkeep();
                    })
                    .expect("a thread can be started");
            }
            handle
        })
        .clone()
}

/// The process's memory, CPU time and file descriptors (`process_*`), read from the OS by
/// metrics-process.
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Updates the `process_*` series; called on each scrape.
pub fn collect_process_metrics() {
    process_collector().collect();
}

#[cfg(test)]
mod tests {
    use super::check_log_filter;

    #[test]
    fn levels_and_target_levels_pass_and_mistyped_filters_are_refused() {
        for good in [
            "info",
            "DEBUG",
            "warn,ephemera=debug",
            "ephemera_actors=trace, info",
            "off",
        ] {
            assert!(check_log_filter(good).is_ok(), "{good}");
        }
        for bad in [
            "verbose",
            "nonsense level!!",
            "info,actix=[",
            "",
            " , ",
            "ephemera=loud",
        ] {
            let error = check_log_filter(bad).unwrap_err();
            assert!(
                error.to_string().contains("invalid log_level"),
                "{bad}: {error}"
            );
        }
    }
}

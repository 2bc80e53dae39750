//! ephemera-loadgen: drives any server that speaks protocol v1 over real WebSocket, from many
//! loopback source addresses, and checks what it gets back. Scenarios:
//! - `chat`: pairs send messages (at a rate, or as fast as a window of unacknowledged messages
//!   allows); reports delivered messages per second and end-to-end latency, and fails on any
//!   lost, doubled, reordered or misdelivered message.
//! - `idle`: holds many sessions, some chatting; reports server memory per session.
//! - `churn`: connect, find, chat briefly, next, leave, disconnect, over and over; reports
//!   matches per second and failures.
//! - `slow`: normal pairs chat while some clients stop reading and their strangers flood them;
//!   reports server memory growth, cut-off slow clients and the normal pairs' latency.
//! - `fuzz`: many connections send random and mutated frames while normal pairs chat beside
//!   them; fails on a dead or panicking server, a hurt normal pair, or memory past a bound.
//!
//! Point it at Ephemera run with `--config ops/bench.toml`, or at any other server.

mod chat;
mod churn;
mod client;
mod fuzz;
mod idle;
mod slow;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::Value;

use chat::{run_chat, ChatPlan};
use churn::run_churn;
use client::raise_fd_limit;
use fuzz::{run_fuzz, FuzzArgs};
use idle::run_idle;
use slow::run_slow;

#[derive(Parser)]
#[command(version, about = "Load generator for protocol v1 chat servers")]
pub(crate) struct Cli {
    /// The server's WebSocket endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub(crate) url: String,
    /// How many loopback source addresses (127.1.0.1 and up) to spread connections over.
    #[arg(long, default_value_t = 64)]
    pub(crate) source_addresses: u32,
    /// The server's process id, to read its memory from /proc.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) scenario: Scenario,
}

#[derive(Subcommand, Clone)]
pub(crate) enum Scenario {
    Chat {
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Messages per second each member sends (0: as fast as the window allows).
        #[arg(long, default_value_t = 0.0)]
        rate_per_member: f64,
        /// Unacknowledged messages a member may have in flight.
        #[arg(long, default_value_t = 8)]
        window: usize,
        #[arg(long, default_value_t = 100)]
        message_bytes: usize,
        #[arg(long, default_value_t = 10.0)]
        duration_seconds: f64,
    },
    Idle {
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// Share of sessions that pair up and chat (the rest stay connected and idle).
        #[arg(long, default_value_t = 0.5)]
        chatting_share: f64,
        #[arg(long, default_value_t = 5.0)]
        hold_seconds: f64,
    },
    Churn {
        /// Clients cycling at once.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        #[arg(long, default_value_t = 10.0)]
        duration_seconds: f64,
    },
    Slow {
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Pairs in which one member stops reading while the other floods it.
        #[arg(long, default_value_t = 100)]
        slow_pairs: usize,
        /// Bytes of chat sent to each non-reading client.
        #[arg(long, default_value_t = 10 << 20)]
        slow_bytes_each: usize,
        #[arg(long, default_value_t = 10.0)]
        rate_per_member: f64,
        #[arg(long, default_value_t = 10.0)]
        duration_seconds: f64,
    },
    /// Random and mutated frames from many connections while normal pairs chat beside them.
    Fuzz(FuzzArgs),
}

fn print_table(value: &Value) {
    if let Value::Object(fields) = value {
        for (key, field) in fields {
            match field {
                Value::Object(_) => {
                    println!("{key}:");
                    for line in serde_json::to_string_pretty(field)
                        .unwrap_or_default()
                        .lines()
                    {
                        println!("  {line}");
                    }
                }
                other => println!("{key:>28}  {other}"),
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    raise_fd_limit();
    let summary = match &cli.scenario {
        Scenario::Chat {
            pairs,
            rate_per_member,
            window,
            message_bytes,
            duration_seconds,
        } => {
            let plan = ChatPlan {
                url: cli.url.clone(),
                sources: cli.source_addresses,
                rate_per_member: *rate_per_member,
                window: (*window).max(1),
                message_bytes: *message_bytes,
                send_for: Duration::from_secs_f64(*duration_seconds),
                epoch: Instant::now(),
            };
            serde_json::to_value(run_chat(&cli, *pairs, plan).await)
        }
        Scenario::Idle {
            sessions,
            chatting_share,
            hold_seconds,
        } => serde_json::to_value(
            run_idle(
                &cli,
                *sessions,
                *chatting_share,
                Duration::from_secs_f64(*hold_seconds),
            )
            .await,
        ),
        Scenario::Churn {
            concurrency,
            duration_seconds,
        } => serde_json::to_value(
            run_churn(
                &cli,
                *concurrency,
                Duration::from_secs_f64(*duration_seconds),
            )
            .await,
        ),
        slow @ Scenario::Slow { .. } => serde_json::to_value(run_slow(&cli, slow.clone()).await),
        Scenario::Fuzz(args) => serde_json::to_value(run_fuzz(&cli, args).await),
    }
    .expect("summaries serialise");
    print_table(&summary);
    if let Some(path) = &cli.json {
        if let Err(error) = std::fs::write(
            path,
            serde_json::to_vec_pretty(&summary).unwrap_or_default(),
        ) {
            eprintln!("cannot write {}: {error}", path.display());
        }
    }
    let failed = summary["lost"].as_u64().unwrap_or(0) > 0
        || summary["errors"].as_u64().unwrap_or(0) > 0
        || summary["normal_with_slow"]["lost"].as_u64().unwrap_or(0) > 0;
    if failed {
        eprintln!("FAILED: messages were lost, doubled or misdelivered");
        std::process::exit(1);
    }
    // The fuzz scenario states each of its failures (a dead server, a hurt normal pair,
    // memory past its bound, a panic in the log).
    if let Some(failures) = summary["failures"].as_array().filter(|f| !f.is_empty()) {
        for failure in failures {
            eprintln!("FAILED: {}", failure.as_str().unwrap_or_default());
        }
        if let Some(seed) = summary["seed"].as_u64() {
            eprintln!("replay with --seed {seed}");
        }
        std::process::exit(1);
    }
}

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
//!
//! Point it at Ephemera run with `--config ops/bench.toml`, or at any other server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Parser)]
#[command(version, about = "Load generator for protocol v1 chat servers")]
struct Cli {
    /// The server's WebSocket endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// How many loopback source addresses (127.1.0.1 and up) to spread connections over.
    #[arg(long, default_value_t = 64)]
    source_addresses: u32,
    /// The server's process id, to read its memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Clone, Copy)]
enum Scenario {
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
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a connection from the `index`-th loopback source address.
async fn connect(url: &str, index: usize, sources: u32) -> Result<Ws, String> {
    let target = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or("only ws:// URLs are supported")?;
    let target: SocketAddr = tokio::net::lookup_host(target)
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let n = (index as u32) % sources.max(1);
    let source = IpAddr::V4(Ipv4Addr::new(127, 1, (n >> 8) as u8, (n & 0xff) as u8 + 1));
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| e.to_string())?;
    let stream = socket.connect(target).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// The next JSON frame, or `None` on close, error or timeout.
async fn next_frame(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.ok()?? {
            Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

async fn expect(ws: &mut Ws, frame_type: &str, within: Duration) -> Result<Value, String> {
    loop {
        let frame = next_frame(ws, within)
            .await
            .ok_or_else(|| format!("no {frame_type}"))?;
        if frame["type"] == frame_type {
            return Ok(frame);
        }
        if frame["type"] == "error" {
            return Err(format!("error while waiting for {frame_type}: {frame}"));
        }
    }
}

/// Connects, solves proof of work if asked, finds, and waits for a match.
async fn matched_client(url: &str, index: usize, sources: u32) -> Result<Ws, String> {
    matched_client_with(url, index, sources, None).await
}

/// Like `matched_client`, with one interest: two clients that share a unique interest are
/// matched with each other, not with whoever else is queueing at the time.
async fn matched_client_with(
    url: &str,
    index: usize,
    sources: u32,
    interest: Option<String>,
) -> Result<Ws, String> {
    let mut ws = connect(url, index, sources).await?;
    let hello = expect(&mut ws, "hello", Duration::from_secs(30)).await?;
    let mut find = json!({"type":"find","adult":true});
    if let Some(interest) = interest {
        find["interests"] = json!([interest]);
    }
    if let Some(challenge) = hello["pow"]["challenge"].as_str() {
        let bits = hello["pow"]["difficulty"].as_u64().unwrap_or(0) as u32;
        let nonce = ephemera_actors::pow::solve(challenge, bits).ok_or("unreadable challenge")?;
        find["pow"] = json!(nonce);
    }
    send(&mut ws, &find).await?;
    expect(&mut ws, "matched", Duration::from_secs(60)).await?;
    Ok(ws)
}

async fn send(ws: &mut Ws, frame: &Value) -> Result<(), String> {
    ws.send(Message::Text(frame.to_string()))
        .await
        .map_err(|e| e.to_string())
}

fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar
}

// ---------------------------------------------------------------------------------------------
// chat
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct ChatReport {
    id: usize,
    partner: Option<usize>,
    sent: u64,
    echoed: u64,
    received: u64,
    errors: Vec<String>,
    latency: Option<Histogram<u64>>,
}

struct ChatPlan {
    url: String,
    sources: u32,
    rate_per_member: f64,
    window: usize,
    message_bytes: usize,
    send_for: Duration,
    epoch: Instant,
}

/// One chatting member: sends `id:n:sent_at_us:` padded to size, checks everything back.
async fn chat_member(plan: Arc<ChatPlan>, id: usize, all_matched: Arc<Barrier>) -> ChatReport {
    let mut report = ChatReport {
        id,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).ok(),
        ..ChatReport::default()
    };
    let mut ws = match matched_client(&plan.url, id, plan.sources).await {
        Ok(ws) => ws,
        Err(error) => {
            report.errors.push(error);
            all_matched.wait().await;
            return report;
        }
    };
    all_matched.wait().await;
    let started = Instant::now();
    let (mut last_seq, mut next_from_partner) = (1u64, 0u64);
    let interval =
        (plan.rate_per_member > 0.0).then(|| Duration::from_secs_f64(1.0 / plan.rate_per_member));
    let mut next_send = tokio::time::Instant::now();
    loop {
        let sending = started.elapsed() < plan.send_for;
        let window_open = report.sent - report.echoed < plan.window as u64;
        let due = interval.is_none() || tokio::time::Instant::now() >= next_send;
        if sending && window_open && due {
            let at_us = plan.epoch.elapsed().as_micros();
            let mut text = format!("{id}:{}:{at_us}:", report.sent);
            while text.len() < plan.message_bytes {
                text.push('x');
            }
            if let Err(error) = send(&mut ws, &json!({"type":"msg","text":text})).await {
                report.errors.push(error);
                break;
            }
            report.sent += 1;
            if let Some(interval) = interval {
                next_send += interval;
            }
            continue;
        }
        if !sending && report.echoed == report.sent {
            // Everything acknowledged; stay a little for the stranger's last messages.
            let quiet = Duration::from_millis(500);
            match next_frame(&mut ws, quiet).await {
                // The stranger finished first and left: normal once sending is over.
                Some(frame) if frame["type"] == "ended" => break,
                Some(frame) => check_chat_frame(
                    &frame,
                    &mut report,
                    &mut last_seq,
                    &mut next_from_partner,
                    &plan,
                ),
                None => break,
            }
            continue;
        }
        let wait = if sending && interval.is_some() && window_open {
            next_send.saturating_duration_since(tokio::time::Instant::now())
        } else {
            Duration::from_secs(10)
        };
        match tokio::time::timeout(wait, next_frame(&mut ws, Duration::from_secs(10))).await {
            Ok(Some(frame)) if !sending && frame["type"] == "ended" => break,
            Ok(Some(frame)) => check_chat_frame(
                &frame,
                &mut report,
                &mut last_seq,
                &mut next_from_partner,
                &plan,
            ),
            Ok(None) => {
                report
                    .errors
                    .push("connection lost or silent for 10 s".to_owned());
                break;
            }
            Err(_) => {}
        }
    }
    let _ = ws.close(None).await;
    report
}

fn check_chat_frame(
    frame: &Value,
    report: &mut ChatReport,
    last_seq: &mut u64,
    next_from_partner: &mut u64,
    plan: &ChatPlan,
) {
    if frame["type"] != "msg" {
        if frame["type"] == "error" || frame["type"] == "ended" {
            report.errors.push(format!("unexpected {frame}"));
        }
        return;
    }
    let seq = frame["seq"].as_u64().unwrap_or(0);
    if seq != *last_seq + 1 {
        report
            .errors
            .push(format!("seq {seq} after {last_seq}: a gap or a duplicate"));
    }
    *last_seq = seq;
    let text = frame["text"].as_str().unwrap_or_default();
    let mut parts = text.splitn(4, ':');
    let (Some(sender), Some(n), Some(at_us)) = (parts.next(), parts.next(), parts.next()) else {
        report.errors.push("a message that was not ours".to_owned());
        return;
    };
    let (sender, n, at_us): (usize, u64, u128) = (
        sender.parse().unwrap_or(usize::MAX),
        n.parse().unwrap_or(u64::MAX),
        at_us.parse().unwrap_or(0),
    );
    if frame["from"] == "you" {
        if sender != report.id || n != report.echoed {
            report
                .errors
                .push(format!("echo {sender}:{n} out of order"));
        }
        report.echoed += 1;
        return;
    }
    if *report.partner.get_or_insert(sender) != sender {
        report
            .errors
            .push(format!("message from {sender}, not from the stranger"));
    }
    if n != *next_from_partner {
        report.errors.push(format!(
            "stranger's message {n} where {next_from_partner} was due"
        ));
    }
    *next_from_partner = n + 1;
    report.received += 1;
    let latency_us = plan.epoch.elapsed().as_micros().saturating_sub(at_us) as u64;
    if let Some(histogram) = report.latency.as_mut() {
        let _ = histogram.record(latency_us.max(1));
    }
}

#[derive(Serialize)]
struct ChatSummary {
    scenario: &'static str,
    members: usize,
    sent: u64,
    delivered: u64,
    lost: u64,
    errors: usize,
    first_errors: Vec<String>,
    delivered_per_second: f64,
    latency_p50_us: u64,
    latency_p99_us: u64,
    latency_p999_us: u64,
}

async fn run_chat(cli: &Cli, pairs: usize, plan: ChatPlan) -> ChatSummary {
    let members = pairs * 2;
    let plan = Arc::new(plan);
    let all_matched = Arc::new(Barrier::new(members));
    let bar = progress(members as u64, "chatting");
    let tasks: Vec<_> = (0..members)
        .map(|id| tokio::spawn(chat_member(plan.clone(), id, all_matched.clone())))
        .collect();
    let mut reports = Vec::with_capacity(members);
    for task in tasks {
        reports.push(task.await.unwrap_or_default());
        bar.inc(1);
    }
    bar.finish_and_clear();
    summarise_chat(&reports, plan.send_for, cli)
}

fn summarise_chat(reports: &[ChatReport], send_for: Duration, _cli: &Cli) -> ChatSummary {
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut errors = Vec::new();
    let (mut sent, mut delivered, mut lost) = (0, 0, 0);
    for report in reports {
        sent += report.sent;
        delivered += report.received;
        errors.extend(report.errors.iter().cloned());
        if let Some(histogram) = &report.latency {
            let _ = latency.add(histogram);
        }
        // What my stranger sent me must all have arrived.
        if let Some(partner) = report
            .partner
            .and_then(|p| reports.iter().find(|r| r.id == p))
        {
            lost += partner.sent.saturating_sub(report.received);
            if partner.partner != Some(report.id) {
                errors.push(format!(
                    "{} and {} disagree on who they talk to",
                    report.id, partner.id
                ));
            }
        }
    }
    ChatSummary {
        scenario: "chat",
        members: reports.len(),
        sent,
        delivered,
        lost,
        errors: errors.len(),
        first_errors: errors.into_iter().take(5).collect(),
        delivered_per_second: delivered as f64 / send_for.as_secs_f64(),
        latency_p50_us: latency.value_at_quantile(0.5),
        latency_p99_us: latency.value_at_quantile(0.99),
        latency_p999_us: latency.value_at_quantile(0.999),
    }
}

// ---------------------------------------------------------------------------------------------
// idle
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct IdleSummary {
    scenario: &'static str,
    sessions: usize,
    connected: usize,
    chatting: usize,
    server_rss_before_kib: Option<u64>,
    server_rss_after_kib: Option<u64>,
    server_bytes_per_session: Option<f64>,
}

async fn run_idle(cli: &Cli, sessions: usize, chatting_share: f64, hold: Duration) -> IdleSummary {
    let before = rss_kib(cli.server_pid);
    let chatting = ((sessions as f64 * chatting_share) as usize / 2) * 2;
    let bar = progress(sessions as u64, "connecting");
    let connected = Arc::new(AtomicU64::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let all_up = Arc::new(Barrier::new(sessions + 1));
    let mut tasks = Vec::with_capacity(sessions);
    for index in 0..sessions {
        let (url, sources) = (cli.url.clone(), cli.source_addresses);
        let (connected, release, all_up, bar) = (
            connected.clone(),
            release.clone(),
            all_up.clone(),
            bar.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let ws = if index < chatting {
                matched_client(&url, index, sources).await
            } else {
                match connect(&url, index, sources).await {
                    Ok(mut ws) => expect(&mut ws, "hello", Duration::from_secs(30))
                        .await
                        .map(|_| ws),
                    Err(error) => Err(error),
                }
            };
            if ws.is_ok() {
                connected.fetch_add(1, Ordering::Relaxed);
            }
            bar.inc(1);
            let notified = release.notified();
            all_up.wait().await;
            // Keep reading (and so answering pings) until released.
            if let Ok(mut ws) = ws {
                tokio::select! {
                    _ = notified => {}
                    _ = async { while let Some(Ok(_)) = ws.next().await {} } => {}
                }
                let _ = ws.close(None).await;
            }
        }));
    }
    all_up.wait().await;
    bar.finish_and_clear();
    tokio::time::sleep(hold).await;
    let after = rss_kib(cli.server_pid);
    release.notify_waiters();
    for task in tasks {
        let _ = task.await;
    }
    let connected = connected.load(Ordering::Relaxed) as usize;
    IdleSummary {
        scenario: "idle",
        sessions,
        connected,
        chatting,
        server_rss_before_kib: before,
        server_rss_after_kib: after,
        server_bytes_per_session: before
            .zip(after)
            .map(|(b, a)| (a.saturating_sub(b) * 1024) as f64 / connected.max(1) as f64),
    }
}

// ---------------------------------------------------------------------------------------------
// churn
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct ChurnSummary {
    scenario: &'static str,
    cycles: u64,
    matches: u64,
    failures: u64,
    matches_per_second: f64,
}

async fn run_churn(cli: &Cli, concurrency: usize, duration: Duration) -> ChurnSummary {
    let (cycles, matched, failures) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let started = Instant::now();
    let bar = ProgressBar::new_spinner();
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (url, sources) = (cli.url.clone(), cli.source_addresses);
            let (cycles, matched, failures, bar) = (
                cycles.clone(),
                matched.clone(),
                failures.clone(),
                bar.clone(),
            );
            tokio::spawn(async move {
                let mut round = 0;
                while started.elapsed() < duration {
                    let index = worker + round * concurrency;
                    round += 1;
                    let outcome = async {
                        let mut ws = matched_client(&url, index, sources).await?;
                        matched.fetch_add(1, Ordering::Relaxed);
                        send(&mut ws, &json!({"type":"msg","text":"hi"})).await?;
                        send(&mut ws, &json!({"type":"next"})).await?;
                        send(&mut ws, &json!({"type":"leave"})).await?;
                        let _ = ws.close(None).await;
                        Ok::<_, String>(())
                    };
                    match tokio::time::timeout(Duration::from_secs(30), outcome).await {
                        Ok(Ok(())) => {}
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    cycles.fetch_add(1, Ordering::Relaxed);
                    bar.set_message(format!("{} cycles", cycles.load(Ordering::Relaxed)));
                    bar.tick();
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    // Each match is seen by both of its members.
    let matches = matched.load(Ordering::Relaxed) / 2;
    ChurnSummary {
        scenario: "churn",
        cycles: cycles.load(Ordering::Relaxed),
        matches,
        failures: failures.load(Ordering::Relaxed),
        matches_per_second: matches as f64 / elapsed,
    }
}

// ---------------------------------------------------------------------------------------------
// slow
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct SlowSummary {
    scenario: &'static str,
    normal_alone: ChatSummary,
    normal_with_slow: ChatSummary,
    slow_pairs: usize,
    slow_cut_off: u64,
    server_rss_before_kib: Option<u64>,
    server_rss_peak_kib: Option<u64>,
    p99_ratio_with_slow: f64,
}

async fn run_slow(cli: &Cli, scenario: Scenario) -> SlowSummary {
    let Scenario::Slow {
        pairs,
        slow_pairs,
        slow_bytes_each,
        rate_per_member,
        duration_seconds,
    } = scenario
    else {
        unreachable!("run_slow is called with the slow scenario")
    };
    let plan = |offset| ChatPlan {
        url: cli.url.clone(),
        sources: cli.source_addresses,
        rate_per_member,
        window: 64,
        message_bytes: 100,
        send_for: Duration::from_secs_f64(duration_seconds / 2.0),
        epoch: Instant::now() - Duration::from_millis(offset),
    };
    let normal_alone = run_chat(cli, pairs, plan(0)).await;
    let before = rss_kib(cli.server_pid);
    let peak = Arc::new(AtomicU64::new(before.unwrap_or(0)));
    let cut_off = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let sampler = {
        let (peak, pid, stop) = (peak.clone(), cli.server_pid, stop.clone());
        tokio::spawn(async move {
            loop {
                if let Some(rss) = rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::select! {
                    _ = stop.notified() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        })
    };
    // Every flood pair is matched (reader with its own flooder, by a unique interest) before
    // the normal pairs queue, so that no normal client is paired with a flood client.
    let (matched_tx, mut matched_rx) = tokio::sync::mpsc::channel::<()>(slow_pairs.max(1));
    let floods: Vec<_> = (0..slow_pairs)
        .map(|pair| {
            let (url, sources, cut_off) = (cli.url.clone(), cli.source_addresses, cut_off.clone());
            let matched_tx = matched_tx.clone();
            tokio::spawn(async move {
                let base = 1_000_000 + pair * 2;
                let interest = format!("slow-{pair}");
                let (reader, flooder) = tokio::join!(
                    matched_client_with(&url, base, sources, Some(interest.clone())),
                    matched_client_with(&url, base + 1, sources, Some(interest))
                );
                let _ = matched_tx.send(()).await;
                drop(matched_tx);
                let (Ok(_not_reading), Ok(flooder)) = (reader, flooder) else {
                    return;
                };
                let text = "f".repeat(1900);
                let mut sent = 0;
                let (mut sink, mut stream) = flooder.split();
                let watch = async {
                    while let Some(Ok(Message::Text(frame))) = stream.next().await {
                        if frame.contains("\"stranger_away\"") || frame.contains("\"ended\"") {
                            cut_off.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                };
                let flood = async {
                    while sent < slow_bytes_each {
                        let frame = json!({"type":"msg","text":text}).to_string();
                        if sink.send(Message::Text(frame)).await.is_err() {
                            return;
                        }
                        sent += text.len();
                    }
                    std::future::pending::<()>().await
                };
                let _ = tokio::time::timeout(Duration::from_secs_f64(duration_seconds), async {
                    tokio::select! { _ = watch => {}, _ = flood => {} }
                })
                .await;
                // `_not_reading` is dropped here, after the flood: it never read a frame.
            })
        })
        .collect();
    drop(matched_tx);
    while matched_rx.recv().await.is_some() {}
    let normal_with_slow = run_chat(cli, pairs, plan(0)).await;
    for flood in floods {
        let _ = flood.await;
    }
    stop.notify_waiters();
    let _ = sampler.await;
    let p99_ratio_with_slow =
        normal_with_slow.latency_p99_us as f64 / normal_alone.latency_p99_us.max(1) as f64;
    SlowSummary {
        scenario: "slow",
        normal_alone,
        normal_with_slow,
        slow_pairs,
        slow_cut_off: cut_off.load(Ordering::Relaxed),
        server_rss_before_kib: before,
        server_rss_peak_kib: cli.server_pid.map(|_| peak.load(Ordering::Relaxed)),
        p99_ratio_with_slow,
    }
}

// ---------------------------------------------------------------------------------------------

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
    let summary = match cli.scenario {
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
                rate_per_member,
                window: window.max(1),
                message_bytes,
                send_for: Duration::from_secs_f64(duration_seconds),
                epoch: Instant::now(),
            };
            serde_json::to_value(run_chat(&cli, pairs, plan).await)
        }
        Scenario::Idle {
            sessions,
            chatting_share,
            hold_seconds,
        } => serde_json::to_value(
            run_idle(
                &cli,
                sessions,
                chatting_share,
                Duration::from_secs_f64(hold_seconds),
            )
            .await,
        ),
        Scenario::Churn {
            concurrency,
            duration_seconds,
        } => serde_json::to_value(
            run_churn(&cli, concurrency, Duration::from_secs_f64(duration_seconds)).await,
        ),
        slow @ Scenario::Slow { .. } => serde_json::to_value(run_slow(&cli, slow).await),
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
}

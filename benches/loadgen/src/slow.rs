//! The `slow` scenario: readers that stop reading while their strangers flood them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::chat::{run_chat, ChatPlan, ChatSummary};
use crate::client::{matched_client_with, rss_kib};
use crate::{Cli, Scenario};

#[derive(Serialize)]
pub(crate) struct SlowSummary {
    pub(crate) scenario: &'static str,
    pub(crate) normal_alone: ChatSummary,
    pub(crate) normal_with_slow: ChatSummary,
    pub(crate) slow_pairs: usize,
    pub(crate) slow_cut_off: u64,
    pub(crate) server_rss_before_kib: Option<u64>,
    pub(crate) server_rss_peak_kib: Option<u64>,
    p99_ratio_with_slow: f64,
}

pub(crate) async fn run_slow(cli: &Cli, scenario: Scenario) -> SlowSummary {
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

//! The `idle` scenario: many sessions held open, some chatting; memory per session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::Barrier;

use crate::client::{connect, expect, matched_client, progress, rss_kib};
use crate::Cli;

#[derive(Serialize)]
pub(crate) struct IdleSummary {
    pub(crate) scenario: &'static str,
    pub(crate) sessions: usize,
    pub(crate) connected: usize,
    pub(crate) chatting: usize,
    pub(crate) server_rss_before_kib: Option<u64>,
    pub(crate) server_rss_after_kib: Option<u64>,
    pub(crate) server_bytes_per_session: Option<f64>,
}

pub(crate) async fn run_idle(
    cli: &Cli,
    sessions: usize,
    chatting_share: f64,
    hold: Duration,
) -> IdleSummary {
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

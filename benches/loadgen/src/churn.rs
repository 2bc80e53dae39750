//! The `churn` scenario: connect, find, chat, next, leave, disconnect, over and over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::json;

use crate::client::{matched_client, send};
use crate::Cli;

#[derive(Serialize)]
pub(crate) struct ChurnSummary {
    pub(crate) scenario: &'static str,
    pub(crate) cycles: u64,
    pub(crate) matches: u64,
    pub(crate) failures: u64,
    pub(crate) matches_per_second: f64,
}

pub(crate) async fn run_churn(cli: &Cli, concurrency: usize, duration: Duration) -> ChurnSummary {
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

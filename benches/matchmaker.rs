//! Matchmaker throughput: pairs made per second while 10,000 sessions wait, with and without
//! interests, through the real matchmaker, session and pair actors (no sockets). The baseline
//! is the same arrivals into an empty queue, so the ratio is what a full queue costs.
//!
//! `cargo bench --bench matchmaker` (env WAITING, PAIRS to change the load).

use std::time::{Duration, Instant};

use ephemera_actors::connection::ClientFrame;
use ephemera_actors::{ChatConfig, Hub};

mod support;
use support::{env_or, LOOPBACK};

/// Connects a session that sends `find` with `interests`; keeps its channels alive.
async fn join(hub: &std::sync::Arc<Hub>, interests: &str, keep: &mut Vec<Box<dyn std::any::Any>>) {
    let client = hub.connect_in_process(LOOPBACK, 4).await;
    let frames = client.frames.clone();
    let find = format!(r#"{{"type":"find","adult":true,"interests":[{interests}]}}"#);
    frames.send(ClientFrame::Text(find.into())).await.unwrap();
    keep.push(Box::new(client));
}

/// Pairs per second for `pairs` arriving pairs while `waiting` unmatchable sessions wait.
fn pairs_per_second(waiting: usize, pairs: usize, with_interests: bool) -> f64 {
    actix_rt::System::new().block_on(async move {
        let hub = Hub::start(ChatConfig {
            // The waiting crowd never opens up to strangers during the run.
            interest_timeout: Duration::from_secs(3600),
            ..ChatConfig::unlimited()
        });
        let mut keep = Vec::new();
        for i in 0..waiting {
            // Each waits for an interest nobody else has.
            join(&hub, &format!("\"lonely{i}\""), &mut keep).await;
        }
        while hub.matchmaker().waiting().await < waiting {
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        for i in 0..pairs {
            let interests = if with_interests {
                format!("\"topic{}\",\"common\"", i % 50)
            } else {
                String::new()
            };
            join(&hub, &interests, &mut keep).await;
            join(&hub, &interests, &mut keep).await;
        }
        while hub.stats().chatting < (pairs * 2) as u64 {
            tokio::task::yield_now().await;
        }
        let elapsed = started.elapsed();
        assert_eq!(
            hub.matchmaker().waiting().await,
            waiting,
            "only the arrivals matched"
        );
        pairs as f64 / elapsed.as_secs_f64()
    })
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let waiting = env_or("WAITING", if quick { 100 } else { 10_000 });
    let pairs = env_or("PAIRS", if quick { 100 } else { 5_000 });
    println!("matchmaker: {pairs} arriving pairs, {waiting} sessions waiting unmatched");
    for with_interests in [false, true] {
        let baseline = pairs_per_second(0, pairs, with_interests);
        let loaded = pairs_per_second(waiting, pairs, with_interests);
        let label = if with_interests {
            "with interests"
        } else {
            "no interests"
        };
        println!(
            "  {label:<15} empty queue {baseline:>9.0} pairs/s, {waiting} waiting {loaded:>9.0} pairs/s, ratio {:.2}",
            loaded / baseline
        );
    }
}

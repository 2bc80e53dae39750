//! Many sessions at once: everything delivered exactly once, in order, with gap-free seqs.

use std::collections::HashMap;

use std::sync::Arc;

use futures_util::future::join_all;
use serde_json::json;
use tokio::sync::Barrier;

use crate::helpers::*;
use ephemera::settings::Settings;

const SESSIONS: usize = 1000;
const MESSAGES_EACH: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_sessions_pair_and_chat_with_nothing_lost_or_doubled() {
    let server = spawn_server(Settings {
        heartbeat_interval_seconds: 60.0,
        ..test_settings()
    });
    let url = server.ws_url();
    let all_done = Arc::new(Barrier::new(SESSIONS));
    let clients = join_all((0..SESSIONS).map(|i| {
        let url = url.clone();
        let all_done = all_done.clone();
        tokio::spawn(async move { run_client(&url, i, &all_done).await })
    }))
    .await;

    let mut sent_to: HashMap<String, Vec<String>> = HashMap::new();
    let mut received_by: HashMap<String, Vec<String>> = HashMap::new();
    for client in clients {
        let report = client.expect("client task finishes");
        sent_to.insert(report.me.clone(), report.sent);
        received_by.insert(report.me, report.received_from_partner);
    }
    // Each client's partner received exactly what it sent, in order: compare by the
    // sender's id carried in every text.
    let mut delivered = 0;
    for (me, received) in &received_by {
        let Some(partner) = received
            .first()
            .map(|t| t.split(':').next().unwrap().to_owned())
        else {
            panic!("{me} received nothing");
        };
        assert_eq!(
            &sent_to[&partner], received,
            "what {partner} sent reached {me} intact"
        );
        delivered += received.len();
    }
    assert_eq!(delivered, SESSIONS * MESSAGES_EACH as usize);
}

struct Report {
    me: String,
    sent: Vec<String>,
    received_from_partner: Vec<String>,
}

async fn run_client(url: &str, index: usize, all_done: &Barrier) -> Report {
    let mut client = Client::connect(url).await;
    let me = format!("c{index}");
    client.send(json!({"type":"find","adult":true})).await;
    client.expect("waiting").await;
    let matched = client.expect("matched").await;
    assert_eq!(matched["seq"], 1);
    let mut next_seq = 2;
    let mut sent = Vec::new();
    let mut received = Vec::new();
    let mut echoes = 0;
    for n in 0..MESSAGES_EACH {
        let text = format!("{me}:{n}");
        client.say(&text).await;
        sent.push(text);
    }
    // Both members send; every chat event reaches both, so each sees 2 x MESSAGES_EACH
    // msgs with seqs 2, 3, … without a gap.
    while echoes < MESSAGES_EACH || (received.len() as u64) < MESSAGES_EACH {
        let frame = client.expect("msg").await;
        assert_eq!(frame["seq"], next_seq, "seqs are gap-free for {me}");
        next_seq += 1;
        let text = frame["text"].as_str().unwrap().to_owned();
        if frame["from"] == "you" {
            assert_eq!(text, sent[echoes as usize], "echoes come back in order");
            echoes += 1;
        } else {
            received.push(text);
        }
    }
    // Once everyone has all they expected, nothing more may arrive (no duplicate); only
    // then do clients start leaving, which would tell their strangers.
    all_done.wait().await;
    client
        .expect_nothing(std::time::Duration::from_millis(100))
        .await;
    all_done.wait().await;
    Report {
        me,
        sent,
        received_from_partner: received,
    }
}

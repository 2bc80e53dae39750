//! The matchmaker and the actor pipeline, driven through the hub with channel sinks and no
//! sockets, on a paused clock: timeouts pass when the test says so, not by sleeping.

use std::time::Duration;

use ephemera_actors::{ChatConfig, Hub};
use serde_json::json;

mod support;
use support::TestClient;

fn config() -> ChatConfig {
    ChatConfig {
        interest_timeout: Duration::from_secs(5),
        ..ChatConfig::unlimited()
    }
}

#[actix_rt::test]
async fn interests_are_matched_first_and_most_shared_wins() {
    let hub = Hub::start(config());
    let mut one = TestClient::connect(&hub).await;
    let mut two = TestClient::connect(&hub).await;
    let mut joiner = TestClient::connect(&hub).await;
    one.find(&["a", "x"]).await;
    two.find(&["b", "c"]).await;
    joiner.find(&["c", "b", "a"]).await;
    let matched = joiner.next().await;
    assert_eq!(matched["type"], "matched");
    assert_eq!(matched["common"], json!(["b", "c"]));
    assert_eq!(two.next().await["type"], "matched");
    one.nothing().await;
}

#[actix_rt::test]
async fn without_shared_interests_sessions_meet_only_after_the_interest_timeout() {
    tokio::time::pause();
    let hub = Hub::start(config());
    let mut a = TestClient::connect(&hub).await;
    let mut b = TestClient::connect(&hub).await;
    a.find(&["knitting"]).await;
    b.find(&["surfing"]).await;
    tokio::time::advance(Duration::from_millis(4900)).await;
    a.nothing().await;
    b.nothing().await;
    tokio::time::advance(Duration::from_millis(200)).await;
    let matched = a.next().await;
    assert_eq!(matched["type"], "matched");
    assert_eq!(matched["common"], json!([]));
    assert_eq!(b.next().await["type"], "matched");
}

#[actix_rt::test]
async fn modes_never_mix_and_cooldown_blocks_a_rematch() {
    let hub = Hub::start(config());
    let mut text = TestClient::connect(&hub).await;
    let mut video = TestClient::connect(&hub).await;
    text.find(&[]).await;
    video
        .send(json!({"type":"find","adult":true,"mode":"video"}))
        .await;
    assert_eq!(video.next().await["type"], "waiting");
    text.nothing().await;
    video.nothing().await;

    let mut other = TestClient::connect(&hub).await;
    other.find(&[]).await;
    assert_eq!(text.next().await["type"], "matched");
    assert_eq!(other.next().await["type"], "matched");
    text.send(json!({"type":"next"})).await;
    assert_eq!(text.next().await["reason"], "you_left");
    assert_eq!(text.next().await["type"], "waiting");
    assert_eq!(other.next().await["reason"], "stranger_left");
    other.find(&[]).await;
    text.nothing().await;
    other.nothing().await;
    assert_eq!(hub.matchmaker().waiting().await, 3);
}

#[actix_rt::test]
async fn many_chats_relay_every_message_once_with_gap_free_seqs() {
    const CHATS: usize = 50;
    const MESSAGES: usize = 40;
    let hub = Hub::start(config());
    let mut clients = Vec::new();
    for _ in 0..CHATS * 2 {
        let mut client = TestClient::connect(&hub).await;
        client.find(&[]).await;
        clients.push(client);
    }
    for client in &mut clients {
        assert_eq!(client.next().await["type"], "matched");
    }
    for n in 0..MESSAGES {
        for (i, client) in clients.iter().enumerate() {
            client
                .send(json!({"type":"msg","text":format!("{i}:{n}")}))
                .await;
        }
    }
    for client in &mut clients {
        let mut from_stranger = Vec::new();
        for expected_seq in 2..2 + 2 * MESSAGES as u64 {
            let frame = client.next().await;
            assert_eq!(frame["seq"], expected_seq);
            if frame["from"] == "stranger" {
                from_stranger.push(frame["text"].as_str().unwrap().to_owned());
            }
        }
        // The stranger's messages arrived in the order sent, each once.
        let sender = from_stranger[0].split(':').next().unwrap().to_owned();
        let expected: Vec<String> = (0..MESSAGES).map(|n| format!("{sender}:{n}")).collect();
        assert_eq!(from_stranger, expected);
        client.nothing().await;
    }
}

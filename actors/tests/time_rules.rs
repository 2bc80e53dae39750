//! The rules that depend on time, on a paused clock: the resume grace, the client timeout, the
//! rematch cooldown, rate limits, bans and automatic proof of work. Time passes when the test
//! advances it, so each rule is checked just before and just after its moment, without sleeps.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ephemera_actors::abuse::BanPolicy;
use ephemera_actors::{ChatConfig, Hub};
use serde_json::json;

mod support;
use support::TestClient;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 9, last))
}

async fn matched(hub: &std::sync::Arc<Hub>) -> (TestClient, TestClient) {
    let mut a = TestClient::connect_from(hub, ip(1)).await;
    let mut b = TestClient::connect_from(hub, ip(2)).await;
    a.find(&[]).await;
    b.find(&[]).await;
    a.expect("matched").await;
    b.expect("matched").await;
    (a, b)
}

/// Advances the paused clock by `by`, then lets the actors handle what came due.
async fn advance(by: Duration) {
    tokio::time::advance(by).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

#[actix_rt::test]
async fn a_dropped_session_is_kept_for_its_grace_and_ended_when_it_runs_out() {
    tokio::time::pause();
    let hub = Hub::start(ChatConfig {
        resume_grace: Duration::from_secs(30),
        purge_interval: Duration::from_secs(1),
        ..ChatConfig::unlimited()
    });
    let (a, mut b) = matched(&hub).await;
    a.drop_connection().await;
    b.expect("stranger_away").await;
    advance(Duration::from_secs(29)).await;
    b.nothing().await;
    assert_eq!(hub.stats().online, 2, "the away session is kept");
    advance(Duration::from_secs(2)).await;
    assert_eq!(b.expect("ended").await["reason"], "stranger_lost");
    assert_eq!(hub.stats().online, 1);
}

#[actix_rt::test]
async fn a_silent_connection_counts_as_dropped_after_the_client_timeout() {
    tokio::time::pause();
    let hub = Hub::start(ChatConfig {
        heartbeat_interval: Duration::from_secs(5),
        client_timeout: Duration::from_secs(15),
        ..ChatConfig::unlimited()
    });
    let (_silent, mut b) = matched(&hub).await;
    // B answers nothing either, but it is not the one checked here: keep it talking.
    for _ in 0..3 {
        advance(Duration::from_secs(5)).await;
        b.say("still here").await;
        assert_eq!(b.expect("msg").await["from"], "you");
    }
    advance(Duration::from_secs(5)).await;
    b.say("hello?").await;
    let mut saw_away = false;
    for _ in 0..2 {
        let frame = b.next().await;
        saw_away |= frame["type"] == "stranger_away";
    }
    assert!(saw_away, "the silent stranger's connection was given up");
}

#[actix_rt::test]
async fn strangers_who_chatted_meet_again_only_after_the_cooldown() {
    tokio::time::pause();
    let hub = Hub::start(ChatConfig {
        rematch_cooldown: Duration::from_secs(600),
        purge_interval: Duration::from_secs(1),
        ..ChatConfig::unlimited()
    });
    let (mut a, mut b) = matched(&hub).await;
    a.send(json!({"type":"leave"})).await;
    a.expect("ended").await;
    b.expect("ended").await;
    a.find(&[]).await;
    b.find(&[]).await;
    a.nothing().await;
    advance(Duration::from_secs(590)).await;
    a.send(json!({"type":"leave"})).await;
    a.find(&[]).await;
    a.nothing().await;
    b.nothing().await;
    advance(Duration::from_secs(11)).await;
    // Once the cooldown is over, the two still waiting meet: no one else has to arrive.
    a.expect("matched").await;
    b.expect("matched").await;
}

#[actix_rt::test]
async fn messages_past_the_rate_are_refused_until_the_rate_allows_again() {
    tokio::time::pause();
    let mut config = ChatConfig::unlimited();
    config.rate_limits.messages_per_second = 2;
    let hub = Hub::start(config);
    let (mut a, _b) = matched(&hub).await;
    a.say("one").await;
    a.say("two").await;
    a.say("three").await;
    // The refusal comes straight from the session, the echoes through the chat: any order.
    let mut echoes = Vec::new();
    let mut refused = serde_json::Value::Null;
    for _ in 0..3 {
        let frame = a.next().await;
        match frame["type"].as_str() {
            Some("msg") => echoes.push(frame["text"].as_str().unwrap().to_owned()),
            _ => refused = frame,
        }
    }
    assert_eq!(echoes, ["one", "two"]);
    assert_eq!(refused["code"], "rate_limited");
    let wait = refused["retry_after_ms"].as_u64().unwrap();
    assert!(wait > 0 && wait <= 500, "one message every 500 ms: {wait}");
    advance(Duration::from_millis(wait - 1)).await;
    a.say("too soon").await;
    assert_eq!(a.expect("error").await["code"], "rate_limited");
    advance(Duration::from_millis(2)).await;
    a.say("four").await;
    assert_eq!(a.expect("msg").await["text"], "four");
}

#[actix_rt::test]
async fn a_ban_holds_for_its_time_and_then_lifts() {
    tokio::time::pause();
    let hub = Hub::start(ChatConfig {
        ban_policy: BanPolicy {
            threshold: 2,
            window: Duration::from_secs(3600),
            first_ban: Duration::from_secs(60),
            multiplier: 2.0,
            max_ban: Duration::from_secs(3600),
        },
        rematch_cooldown: Duration::ZERO,
        ..ChatConfig::unlimited()
    });
    let mut target = TestClient::connect_from(&hub, ip(10)).await;
    for reporter_ip in [ip(11), ip(12)] {
        let mut reporter = TestClient::connect_from(&hub, reporter_ip).await;
        target.find(&[]).await;
        reporter.find(&[]).await;
        target.expect("matched").await;
        reporter.expect("matched").await;
        reporter
            .send(json!({"type":"report","reason":"spam"}))
            .await;
        assert_eq!(target.expect("ended").await["reason"], "stranger_left");
    }
    target.send(json!({"type":"find","adult":true})).await;
    let banned = target.expect("error").await;
    assert_eq!(banned["code"], "banned");
    assert_eq!(banned["retry_after_ms"], 60_000);
    advance(Duration::from_secs(59)).await;
    target.send(json!({"type":"find","adult":true})).await;
    assert_eq!(target.expect("error").await["code"], "banned");
    advance(Duration::from_secs(2)).await;
    target.find(&[]).await;
}

#[actix_rt::test]
async fn proof_of_work_is_asked_while_sessions_arrive_fast_and_not_after() {
    tokio::time::pause();
    let hub = Hub::start(ChatConfig {
        pow_auto_threshold_per_second: 3.0,
        pow_auto_difficulty_bits: 8,
        ..ChatConfig::unlimited()
    });
    let mut asked = Vec::new();
    for n in 0..5 {
        let client = TestClient::connect_from(&hub, ip(20 + n)).await;
        asked.push(!client.hello["pow"].is_null());
    }
    assert_eq!(asked, [false, false, false, true, true]);
    advance(Duration::from_secs(2)).await;
    // The first second after the flood still remembers its rate; a calm one after it does not.
    TestClient::connect_from(&hub, ip(30)).await;
    advance(Duration::from_secs(2)).await;
    let later = TestClient::connect_from(&hub, ip(31)).await;
    assert!(later.hello["pow"].is_null(), "the flood is over");
}

#[actix_rt::test]
async fn the_end_of_a_chat_is_remembered_for_the_resume_grace_and_then_forgotten() {
    tokio::time::pause();
    let hub = Hub::start(ChatConfig {
        resume_grace: Duration::from_secs(30),
        ..ChatConfig::unlimited()
    });
    let mut a = TestClient::connect_from(&hub, ip(1)).await;
    let mut b = TestClient::connect_from(&hub, ip(2)).await;
    a.find(&[]).await;
    b.find(&[]).await;
    let chat = a.expect("matched").await["chat"].clone();
    b.expect("matched").await;
    b.send(json!({"type":"leave"})).await;
    b.expect("ended").await;
    a.expect("ended").await;
    let token = a.hello["session"].clone();
    // A client that says it saw only `matched` of that chat is told of its end again...
    let resume = json!({"type":"resume","session":token,"chat":chat,"last_seq":1});
    advance(Duration::from_secs(29)).await;
    a.drop_connection().await;
    let mut back = TestClient::connect_from(&hub, ip(1)).await;
    back.send(resume.clone()).await;
    assert_eq!(back.expect("hello").await["resumed"], true);
    assert_eq!(back.expect("ended").await["reason"], "stranger_left");
    // ...within the grace after the end; after it the session keeps nothing of that chat.
    advance(Duration::from_secs(2)).await;
    back.drop_connection().await;
    let mut again = TestClient::connect_from(&hub, ip(1)).await;
    again.send(resume).await;
    assert_eq!(again.expect("hello").await["resumed"], true);
    again.nothing().await;
}

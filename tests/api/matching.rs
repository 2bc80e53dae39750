//! Matching: interests first with fallback, modes never mix, no rematch within the cooldown.

use std::time::Duration;

use ephemera::settings::Settings;
use serde_json::json;

use crate::helpers::*;

async fn shared_interests_are_matched_first() {
    let server = spawn_server(Settings {
        interest_timeout_seconds: 30.0,
        ..test_settings()
    });
    let mut music = server.waiting_client(find_with("text", &["music"])).await;
    let mut chess = server
        .waiting_client(find_with("text", &["chess", "go", "rust"]))
        .await;
    let mut joiner = server
        .waiting_client(find_with("text", &["Rust", "Go", "art"]))
        .await;
    // Interests are compared after trimming and lowercasing; both see the same list.
    let matched = joiner.expect("matched").await;
    assert_eq!(matched["common"], json!(["go", "rust"]));
    assert_eq!(
        chess.expect("matched").await["common"],
        json!(["go", "rust"])
    );
    music.expect_nothing(Duration::from_millis(200)).await;
}

async fn the_stranger_sharing_most_interests_wins() {
    let server = spawn_server(Settings {
        interest_timeout_seconds: 30.0,
        ..test_settings()
    });
    let mut one = server.waiting_client(find_with("text", &["a", "x"])).await;
    let mut two = server
        .waiting_client(find_with("text", &["b", "c", "y"]))
        .await;
    let mut joiner = server
        .waiting_client(find_with("text", &["a", "b", "c"]))
        .await;
    assert_eq!(joiner.expect("matched").await["common"], json!(["b", "c"]));
    two.expect("matched").await;
    one.expect_nothing(Duration::from_millis(200)).await;
}

async fn without_shared_interests_anyone_will_do_after_the_interest_timeout() {
    let server = spawn_server(test_settings());
    let mut a = server
        .waiting_client(find_with("text", &["knitting"]))
        .await;
    let mut b = server.waiting_client(find_with("text", &["surfing"])).await;
    // Not at once: each first waits for someone who shares an interest.
    a.expect_nothing(Duration::from_millis(150)).await;
    let matched = b.expect("matched").await;
    assert_eq!(matched["common"], json!([]));
    a.expect("matched").await;
}

async fn a_session_without_interests_meets_one_with_interests_only_after_its_timeout() {
    let server = spawn_server(test_settings());
    let mut with = server.waiting_client(find_with("text", &["film"])).await;
    let mut without = server.waiting_client(find_text()).await;
    with.expect_nothing(Duration::from_millis(150)).await;
    without.expect("matched").await;
    with.expect("matched").await;
}

async fn text_and_video_queues_never_mix() {
    let server = spawn_server(test_settings());
    let mut text = server.waiting_client(find_with("text", &[])).await;
    let mut video = server.waiting_client(find_with("video", &[])).await;
    text.expect_nothing(Duration::from_millis(300)).await;
    video.expect_nothing(Duration::from_millis(10)).await;
    let mut video2 = server.waiting_client(find_with("video", &[])).await;
    assert_eq!(video2.expect("matched").await["mode"], "video");
    assert_eq!(video.expect("matched").await["mode"], "video");
    text.expect_nothing(Duration::from_millis(50)).await;
}

async fn strangers_who_chatted_are_not_matched_again_within_the_cooldown() {
    let server = spawn_server(test_settings());
    let (mut a, mut b) = server.matched_pair().await;
    a.send(json!({"type":"next"})).await;
    a.expect("ended").await;
    a.expect("waiting").await;
    b.expect("ended").await;
    b.send(json!({"type":"next"})).await;
    b.expect("waiting").await;
    a.expect_nothing(Duration::from_millis(300)).await;
    b.expect_nothing(Duration::from_millis(10)).await;
    // Both are still waiting, and each can meet someone new.
    let mut c = server.waiting_client(find_text()).await;
    c.expect("matched").await;
    let mut d = server.waiting_client(find_text()).await;
    d.expect("matched").await;
    a.expect("matched").await;
    b.expect("matched").await;
}

async fn strangers_may_meet_again_once_the_cooldown_is_over() {
    let server = spawn_server(Settings {
        rematch_cooldown_seconds: 0.3,
        ..test_settings()
    });
    let (mut a, mut b) = server.matched_pair().await;
    a.send(json!({"type":"leave"})).await;
    a.expect("ended").await;
    b.expect("ended").await;
    // The real server runs on the real clock, so the 0.3 s cooldown must really pass; the rule
    // itself is tested on a paused clock in actors/tests/time_rules.rs.
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.send(find_text()).await;
    a.expect("waiting").await;
    b.send(find_text()).await;
    b.expect("waiting").await;
    a.expect("matched").await;
    b.expect("matched").await;
}

async fn the_cooldown_runs_from_the_chats_end_not_from_the_match() {
    let server = spawn_server(Settings {
        rematch_cooldown_seconds: 0.5,
        ..test_settings()
    });
    let (mut a, mut b) = server.matched_pair().await;
    // A chat longer than the cooldown: counted from the match, it would be over at the end.
    a.say("a long chat").await;
    a.expect("msg").await;
    b.expect("msg").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    a.send(json!({"type":"leave"})).await;
    a.expect("ended").await;
    b.expect("ended").await;
    a.send(find_text()).await;
    a.expect("waiting").await;
    b.send(find_text()).await;
    b.expect("waiting").await;
    a.expect_nothing(Duration::from_millis(250)).await;
    // Once it has run from the end, they may meet again (each queue asks again by itself).
    a.expect("matched").await;
    b.expect("matched").await;
}

on_one_node_and_on_three!(
    the_cooldown_runs_from_the_chats_end_not_from_the_match,
    shared_interests_are_matched_first,
    the_stranger_sharing_most_interests_wins,
    without_shared_interests_anyone_will_do_after_the_interest_timeout,
    a_session_without_interests_meets_one_with_interests_only_after_its_timeout,
    text_and_video_queues_never_mix,
    strangers_who_chatted_are_not_matched_again_within_the_cooldown,
    strangers_may_meet_again_once_the_cooldown_is_over,
);

//! Protocol v1.1 in the chat core: chat ids, resume by first frame, resume into a newer chat,
//! and message ids that make a resend safe. Clients are in-process (no sockets); the API tests
//! check the same over real WebSockets.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ephemera_actors::connection::Outgoing;
use ephemera_actors::{ChatConfig, Hub};
use serde_json::{json, Value};

mod support;
use support::TestClient;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 10, last))
}

/// Two clients in one chat; returns them with the `matched` each saw.
async fn matched(hub: &Arc<Hub>, a: u8, b: u8) -> (TestClient, TestClient, Value, Value) {
    let mut a = TestClient::connect_from(hub, ip(a)).await;
    let mut b = TestClient::connect_from(hub, ip(b)).await;
    a.find(&[]).await;
    b.find(&[]).await;
    let matched_a = a.expect("matched").await;
    let matched_b = b.expect("matched").await;
    (a, b, matched_a, matched_b)
}

/// A new connection from `ip` whose first frame resumes `token`; returns it past the second
/// `hello`, and that hello.
async fn resume_by_frame(hub: &Arc<Hub>, ip: IpAddr, resume: Value) -> (TestClient, Value) {
    let mut client = TestClient::connect_from(hub, ip).await;
    assert_eq!(
        client.hello["resumed"], false,
        "the first hello is a fresh session"
    );
    client.send(resume).await;
    let hello = client.expect("hello").await;
    (client, hello)
}

fn token(client: &TestClient) -> String {
    client.hello["session"].as_str().unwrap().to_owned()
}

#[actix_rt::test]
async fn both_members_get_the_same_random_chat_id_and_each_chat_its_own() {
    let hub = Hub::start(ChatConfig::unlimited());
    let (_a, _b, one_a, one_b) = matched(&hub, 1, 2).await;
    let (_c, _d, two, _) = matched(&hub, 3, 4).await;
    let chat = one_a["chat"].as_str().expect("matched carries chat");
    assert_eq!(chat.len(), 16);
    assert!(chat
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(one_a["chat"], one_b["chat"]);
    assert_ne!(one_a["chat"], two["chat"]);
}

#[actix_rt::test]
async fn a_resume_frame_hands_the_connection_to_the_session_it_names() {
    let hub = Hub::start(ChatConfig::unlimited());
    let (a, mut b, matched_a, _) = matched(&hub, 1, 2).await;
    a.drop_connection().await;
    b.expect("stranger_away").await;
    b.say("while you were away").await;
    b.expect("msg").await;

    let resume = json!({"type":"resume","session":token(&a),"chat":matched_a["chat"],"last_seq":1});
    let (mut back, hello) = resume_by_frame(&hub, ip(1), resume).await;
    assert_eq!(hello["resumed"], true);
    assert_eq!(hello["state"], "chatting");
    assert_eq!(
        hello["session"], a.hello["session"],
        "the resumed session's token"
    );
    let missed = back.expect("msg").await;
    assert_eq!(
        (missed["seq"].clone(), missed["from"].clone()),
        (json!(2), json!("stranger"))
    );
    b.expect("stranger_back").await;
    // The fresh session that greeted the connection first is gone; the resumed one is live.
    assert_eq!(hub.stats().online, 2);
    back.say("back").await;
    assert_eq!(b.expect("msg").await["text"], "back");
    assert_eq!(back.expect("msg").await["seq"], 3);
}

#[actix_rt::test]
async fn a_resume_frame_naming_nothing_usable_keeps_the_fresh_session_and_says_so() {
    let hub = Hub::start(ChatConfig::unlimited());
    let unknown = json!({"type":"resume","session":"AAAAAAAAAAAAAAAAAAAAAA","last_seq":3});
    let (mut client, hello) = resume_by_frame(&hub, ip(1), unknown).await;
    assert_eq!(hello["resumed"], false);
    assert_eq!(hello["state"], "idle");
    assert_eq!(
        hello["session"], client.hello["session"],
        "the fresh session's token"
    );
    // resume is for a connection's first frame only.
    client
        .send(json!({"type":"resume","session":token(&client)}))
        .await;
    assert_eq!(client.expect("error").await["code"], "bad_request");
    client.send(json!({"type":"leave"})).await;
    assert_eq!(
        client.expect("error").await["code"],
        "not_chatting",
        "alive, idle"
    );

    // A chat id that is not shaped like one is treated as absent in a fresh session, too.
    let (a, _b, _, _) = matched(&hub, 2, 3).await;
    a.drop_connection().await;
    let odd_chat = json!({"type":"resume","session":token(&a),"chat":"not a chat id"});
    let (_client, hello) = resume_by_frame(&hub, ip(2), odd_chat).await;
    assert_eq!(hello["resumed"], false);
    // Fields of the wrong type are a bad request, and the fresh session stays.
    let mut client = TestClient::connect_from(&hub, ip(4)).await;
    client
        .send(json!({"type":"resume","session":token(&a),"last_seq":"seven"}))
        .await;
    assert_eq!(client.expect("error").await["code"], "bad_request");
    client.find(&[]).await;
}

#[actix_rt::test]
async fn a_resume_frame_after_a_ping_still_counts_as_the_first_frame() {
    let hub = Hub::start(ChatConfig::unlimited());
    let (a, _b, matched_a, _) = matched(&hub, 1, 2).await;
    a.drop_connection().await;
    let mut back = TestClient::connect_from(&hub, ip(1)).await;
    back.connection
        .frames
        .send(ephemera_actors::connection::ClientFrame::Ping(
            bytes::Bytes::from_static(b"hi"),
        ))
        .await
        .unwrap();
    back.send(json!({"type":"resume","session":token(&a),"chat":matched_a["chat"],"last_seq":1}))
        .await;
    let hello = back.expect("hello").await;
    assert_eq!(hello["resumed"], true);
}

#[actix_rt::test]
async fn a_client_that_missed_an_end_and_a_new_match_gets_both_when_it_names_its_old_chat() {
    let hub = Hub::start(ChatConfig::unlimited());
    let (a, mut b, first, _) = matched(&hub, 1, 2).await;
    // A presses Next and its connection drops before it reads anything more.
    a.send(json!({"type":"next"})).await;
    a.drop_connection().await;
    assert_eq!(b.expect("ended").await["reason"], "stranger_left");
    // A is queued again while away, and matched with C.
    let mut c = TestClient::connect_from(&hub, ip(3)).await;
    c.find(&[]).await;
    let second = c.expect("matched").await;
    c.expect("stranger_away").await;
    c.say("hello new stranger").await;
    c.expect("msg").await;

    let resume = json!({"type":"resume","session":token(&a),"chat":first["chat"],"last_seq":1});
    let (mut back, hello) = resume_by_frame(&hub, ip(1), resume).await;
    assert_eq!(hello["state"], "chatting");
    let ended = back.expect("ended").await;
    assert_eq!(
        (ended["seq"].clone(), ended["reason"].clone()),
        (json!(2), json!("you_left"))
    );
    let matched = back.expect("matched").await;
    assert_eq!(matched["seq"], 1);
    assert_eq!(matched["chat"], second["chat"]);
    assert_ne!(matched["chat"], first["chat"]);
    let msg = back.expect("msg").await;
    assert_eq!(
        (msg["seq"].clone(), msg["text"].clone()),
        (json!(2), json!("hello new stranger"))
    );
    back.nothing().await;

    // Naming the current chat resumes after last_seq within it, as in v1.
    back.drop_connection().await;
    let resume = json!({"type":"resume","session":token(&a),"chat":second["chat"],"last_seq":1});
    let (mut again, _) = resume_by_frame(&hub, ip(1), resume).await;
    assert_eq!(again.expect("msg").await["seq"], 2);
    again.nothing().await;
}

#[actix_rt::test]
async fn an_idle_session_that_names_its_ended_chat_gets_that_end_once_more() {
    let hub = Hub::start(ChatConfig::unlimited());
    let (a, mut b, first, _) = matched(&hub, 1, 2).await;
    a.drop_connection().await;
    b.send(json!({"type":"leave"})).await;
    b.expect("stranger_away").await;
    b.expect("ended").await;
    let resume = json!({"type":"resume","session":token(&a),"chat":first["chat"],"last_seq":1});
    let (mut back, hello) = resume_by_frame(&hub, ip(1), resume).await;
    assert_eq!(hello["state"], "idle");
    let ended = back.expect("ended").await;
    assert_eq!(
        (ended["seq"].clone(), ended["reason"].clone()),
        (json!(2), json!("stranger_left"))
    );
    // A client that already saw the end (last_seq 2) is not told again.
    back.drop_connection().await;
    let resume = json!({"type":"resume","session":token(&a),"chat":first["chat"],"last_seq":2});
    let (mut again, _) = resume_by_frame(&hub, ip(1), resume).await;
    again.nothing().await;
}

#[actix_rt::test]
async fn a_message_sent_again_with_its_id_gets_its_first_echo_and_reaches_no_one_twice() {
    let hub = Hub::start(ChatConfig::unlimited());
    let (mut a, mut b, _, _) = matched(&hub, 1, 2).await;
    a.send(json!({"type":"msg","text":"once","id":"m-1"})).await;
    let echo = a.expect("msg").await;
    assert_eq!(
        (echo["seq"].clone(), echo["id"].clone()),
        (json!(2), json!("m-1"))
    );
    let seen = b.expect("msg").await;
    assert_eq!(seen["text"], "once");
    assert!(
        seen.get("id").is_none(),
        "the stranger never sees the id: {seen}"
    );

    a.send(json!({"type":"msg","text":"once","id":"m-1"})).await;
    let again = a.expect("msg").await;
    assert_eq!(again, echo, "the original echo, same seq");
    b.nothing().await;

    // Another id is another message; the stranger's own ids are its own.
    a.send(json!({"type":"msg","text":"twice","id":"m-2"}))
        .await;
    assert_eq!(a.expect("msg").await["seq"], 3);
    assert_eq!(b.expect("msg").await["seq"], 3);
    b.send(json!({"type":"msg","text":"mine","id":"m-1"})).await;
    assert_eq!(b.expect("msg").await["seq"], 4);
    assert_eq!(a.expect("msg").await["text"], "mine");

    // Media too, and ids are checked for length.
    let image =
        json!({"type":"media","kind":"image","mime":"image/png","data":"aGVsbG8=","id":"img"});
    a.send(image.clone()).await;
    let media_echo = a.expect("media").await;
    assert_eq!(media_echo["id"], "img");
    b.expect("media").await;
    a.send(image).await;
    assert_eq!(a.expect("media").await, media_echo);
    b.nothing().await;
    // A message naming an image's id is a new message, never that image again: the image's
    // rate limit is far below the message rate.
    a.send(json!({"type":"msg","text":"not an image","id":"img"}))
        .await;
    let new_message = a.expect("msg").await;
    assert_eq!(new_message["text"], "not an image");
    assert_eq!(b.expect("msg").await["text"], "not an image");
    for bad in [json!(""), json!("x".repeat(65)), json!(7)] {
        a.send(json!({"type":"msg","text":"odd id","id":bad})).await;
        assert_eq!(a.expect("error").await["code"], "bad_request", "{bad}");
    }
    b.nothing().await;
}

#[actix_rt::test]
async fn a_resend_after_a_drop_is_delivered_exactly_once_whether_or_not_the_server_had_it() {
    let hub = Hub::start(ChatConfig::unlimited());
    let (a, mut b, first, _) = matched(&hub, 1, 2).await;
    // The server got "got it" before the drop; "lost" never left the client.
    a.send(json!({"type":"msg","text":"got it","id":"p-1"}))
        .await;
    assert_eq!(b.expect("msg").await["text"], "got it");
    a.drop_connection().await;
    b.expect("stranger_away").await;

    let resume = json!({"type":"resume","session":token(&a),"chat":first["chat"],"last_seq":1});
    let (mut back, _) = resume_by_frame(&hub, ip(1), resume).await;
    // The replay already holds the echo; the client resends both pending lines anyway.
    let replayed = back.expect("msg").await;
    assert_eq!(
        (replayed["seq"].clone(), replayed["id"].clone()),
        (json!(2), json!("p-1"))
    );
    back.send(json!({"type":"msg","text":"got it","id":"p-1"}))
        .await;
    back.send(json!({"type":"msg","text":"lost","id":"p-2"}))
        .await;
    assert_eq!(back.expect("msg").await["seq"], 2);
    let echo = back.expect("msg").await;
    assert_eq!(
        (echo["seq"].clone(), echo["id"].clone()),
        (json!(3), json!("p-2"))
    );
    b.expect("stranger_back").await;
    assert_eq!(b.expect("msg").await["text"], "lost");
    b.nothing().await;
}

/// The first thing a connection gets after its greeting: a text frame's type, or a close code.
async fn first_answer(client: &TestClient) -> String {
    for _ in 0..100_000 {
        match client.connection.out.try_recv() {
            Some(Outgoing::Text(text)) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                return frame["type"].as_str().unwrap().to_owned();
            }
            Some(Outgoing::Close { code, .. }) => return format!("close {code}"),
            Some(_) => {}
            None => tokio::task::yield_now().await,
        }
    }
    panic!("no answer: the session is stuck");
}

#[actix_rt::test]
async fn two_fresh_sessions_that_name_each_other_at_once_are_never_stuck() {
    // Each hands its connection to the other; on two threads both may do so at the same
    // moment, and neither may then wait on the other's answer (that held both sessions, and
    // their sockets, for good). Whichever way it goes, every connection is answered.
    let hub = Hub::start(ChatConfig::unlimited());
    let other_thread = actix::Arbiter::new();
    for _ in 0..20 {
        let x = TestClient::connect_from(&hub, ip(1)).await;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let on_other = hub.clone();
        other_thread.spawn(async move {
            let _ = sender.send(TestClient::connect_from(&on_other, ip(2)).await);
        });
        let y = receiver.await.unwrap();
        let (token_x, token_y) = (token(&x), token(&y));
        tokio::join!(
            x.send(json!({"type":"resume","session":token_y})),
            y.send(json!({"type":"resume","session":token_x})),
        );
        let answers = [first_answer(&x).await, first_answer(&y).await];
        assert!(
            answers.iter().all(|a| a == "hello" || a == "close 4001"),
            "{answers:?}"
        );
        assert!(answers.contains(&"hello".to_owned()), "{answers:?}");
        for (client, answer) in [(x, &answers[0]), (y, &answers[1])] {
            if answer == "hello" {
                client.send(json!({"type":"leave"})).await;
                let mut client = client;
                assert_eq!(client.expect("error").await["code"], "not_chatting");
            }
        }
    }
}

//! The cluster queue against a real redis-server (Debian's, started here on a loopback port with
//! persistence off): matching by mode and interest hashes, most shared first, the open
//! fallback, the rematch cooldown, a dead node's sessions dropped, every key with a TTL, and
//! nothing but hashes and random ids on the wire (a MONITOR capture).

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ephemera_actors::cluster::heartbeat;
use ephemera_actors::cluster::queue::{ClusterQueue, JoinOutcome};
use ephemera_actors::cluster::secret::{random_node_id, ClusterKeys};
use redis::aio::ConnectionManager;
use redis::AsyncCommands as _;

const PREFIX: &str = "eph:";
const HEARTBEAT: Duration = Duration::from_secs(30);

/// redis-server on a free loopback port, with no persistence of any kind; killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_server_binary() -> std::path::PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([std::path::PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
        .expect("redis-server is installed (Debian's redis-server; the test command installs it)")
}

fn start_redis() -> RedisServer {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(redis_server_binary())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let stdout = child.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines() {
        if line.unwrap().contains("Ready to accept connections") {
            break;
        }
    }
    RedisServer { child, port }
}

async fn connect(redis: &RedisServer) -> ConnectionManager {
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", redis.port)).unwrap();
    ConnectionManager::new(client).await.unwrap()
}

struct Node {
    id: String,
    queue: ClusterQueue,
    redis: ConnectionManager,
}

async fn node(redis: &RedisServer, cooldown: Duration) -> Node {
    let id = random_node_id();
    let mut connection = connect(redis).await;
    heartbeat::beat(&mut connection, PREFIX, &id, 0, HEARTBEAT)
        .await
        .unwrap();
    Node {
        queue: ClusterQueue::new(
            connection.clone(),
            PREFIX,
            &id,
            Duration::from_secs(60),
            cooldown,
        ),
        id,
        redis: connection,
    }
}

fn keys() -> ClusterKeys {
    ClusterKeys::from_bytes(&[9; 32])
}

fn hashes(mode: &str, interests: &[&str]) -> Vec<String> {
    let keys = keys();
    interests
        .iter()
        .map(|interest| keys.interest_hash(mode, interest))
        .collect()
}

fn matched_with(outcome: JoinOutcome) -> (String, String, usize) {
    match outcome {
        JoinOutcome::Matched {
            partner,
            partner_node,
            shared,
        } => (partner, partner_node, shared),
        JoinOutcome::Waiting => panic!("expected a match"),
    }
}

#[tokio::test]
async fn strangers_on_two_nodes_meet_by_mode_and_most_shared_interests_first() {
    let redis = start_redis();
    let (a, b) = (
        node(&redis, Duration::from_secs(600)).await,
        node(&redis, Duration::from_secs(600)).await,
    );
    // Waiting on node a: one sharing a single interest (oldest), one sharing two.
    let one = hashes("text", &["chess"]);
    let two = hashes("text", &["go", "tea"]);
    assert_eq!(
        a.queue.join("s-one", "text", false, &one).await.unwrap(),
        JoinOutcome::Waiting
    );
    assert_eq!(
        a.queue.join("s-two", "text", false, &two).await.unwrap(),
        JoinOutcome::Waiting
    );
    // Another mode never matches.
    let video = hashes("video", &["chess", "go"]);
    assert_eq!(
        b.queue
            .join("s-video", "video", false, &video)
            .await
            .unwrap(),
        JoinOutcome::Waiting
    );
    // A joiner on node b sharing chess with one and go and tea with the other meets s-two.
    let joiner = hashes("text", &["tea", "chess", "go"]);
    let (partner, partner_node, shared) = matched_with(
        b.queue
            .join("s-joiner", "text", false, &joiner)
            .await
            .unwrap(),
    );
    assert_eq!(
        (partner.as_str(), partner_node.as_str(), shared),
        ("s-two", a.id.as_str(), 2)
    );
    // The next one sharing chess meets s-one; s-two is gone from every index.
    let chess = hashes("text", &["chess"]);
    let (partner, _, shared) =
        matched_with(b.queue.join("s-next", "text", false, &chess).await.unwrap());
    assert_eq!((partner.as_str(), shared), ("s-one", 1));
    assert!(
        !a.queue.leave("s-two").await.unwrap(),
        "matched: no longer waiting"
    );
}

#[tokio::test]
async fn the_open_fallback_takes_the_longest_waiting_and_the_cooldown_keeps_two_apart() {
    let redis = start_redis();
    let (a, b) = (
        node(&redis, Duration::from_secs(600)).await,
        node(&redis, Duration::from_secs(600)).await,
    );
    // An open session without interests, and one with an interest nobody shares.
    assert_eq!(
        a.queue.join("first", "text", true, &[]).await.unwrap(),
        JoinOutcome::Waiting
    );
    let lonely = hashes("text", &["origami"]);
    assert_eq!(
        b.queue.join("picky", "text", false, &lonely).await.unwrap(),
        JoinOutcome::Waiting
    );
    // Its interest timeout passes: joining again, open, it takes the open one.
    let (partner, _, shared) =
        matched_with(b.queue.join("picky", "text", true, &lonely).await.unwrap());
    assert_eq!((partner.as_str(), shared), ("first", 0));
    // Both look again (say, `next`): they met a moment ago, so they wait.
    assert_eq!(
        a.queue.join("first", "text", true, &[]).await.unwrap(),
        JoinOutcome::Waiting
    );
    assert_eq!(
        b.queue.join("picky", "text", true, &[]).await.unwrap(),
        JoinOutcome::Waiting,
        "picky met first a moment ago"
    );
    // A newcomer takes the longest-waiting of the two.
    let (partner, _, _) = matched_with(a.queue.join("third", "text", true, &[]).await.unwrap());
    assert_eq!(partner, "first");
    // A match whose claim failed was no chat: once its cooldown is forgotten, the two (now
    // both waiting again) may meet at once.
    a.queue.forget_cooldown("third", "first").await.unwrap();
    assert_eq!(
        a.queue.join("first", "text", true, &[]).await.unwrap(),
        JoinOutcome::Waiting
    );
    assert!(b.queue.leave("picky").await.unwrap());
    let (partner, _, _) = matched_with(a.queue.join("third", "text", true, &[]).await.unwrap());
    assert_eq!(partner, "first", "no cooldown keeps them apart");

    // With a cooldown of 50 ms, the same two meet again once it has passed.
    let quick = node(&redis, Duration::from_millis(50)).await;
    assert_eq!(
        quick.queue.join("p", "video", true, &[]).await.unwrap(),
        JoinOutcome::Waiting
    );
    matched_with(quick.queue.join("q", "video", true, &[]).await.unwrap());
    assert_eq!(
        quick.queue.join("p", "video", true, &[]).await.unwrap(),
        JoinOutcome::Waiting
    );
    assert_eq!(
        quick.queue.join("q", "video", true, &[]).await.unwrap(),
        JoinOutcome::Waiting
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(quick.queue.leave("q").await.unwrap());
    let (partner, _, _) = matched_with(quick.queue.join("q", "video", true, &[]).await.unwrap());
    assert_eq!(partner, "p");
}

#[tokio::test]
async fn a_dead_nodes_sessions_are_never_matched_and_vanish_from_the_queue() {
    let redis = start_redis();
    let (mut a, b) = (
        node(&redis, Duration::from_secs(600)).await,
        node(&redis, Duration::from_secs(600)).await,
    );
    assert_eq!(
        a.queue.join("ghost", "text", true, &[]).await.unwrap(),
        JoinOutcome::Waiting
    );
    heartbeat::depart(&mut a.redis, PREFIX, &a.id)
        .await
        .unwrap();
    assert_eq!(
        b.queue.join("alive", "text", true, &[]).await.unwrap(),
        JoinOutcome::Waiting
    );
    let mut redis_connection = b.redis.clone();
    let ghost: bool = redis_connection
        .exists(format!("{PREFIX}w:ghost"))
        .await
        .unwrap();
    assert!(!ghost, "met on the way and dropped");
    let (count_nodes, online) = heartbeat::cluster_online(&mut redis_connection, PREFIX)
        .await
        .unwrap();
    assert_eq!((count_nodes, online), (1, 0));
}

#[tokio::test]
async fn every_key_has_a_ttl_and_redis_sees_only_hashes_and_random_ids() {
    let redis = start_redis();
    // Capture everything Redis is told, as an operator or an intruder with MONITOR would.
    let mut monitor = Command::new(redis_server_binary().with_file_name("redis-cli"))
        .args(["-p", &redis.port.to_string(), "monitor"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli runs");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (a, b) = (
        node(&redis, Duration::from_secs(600)).await,
        node(&redis, Duration::from_secs(600)).await,
    );
    let keys = keys();
    let pseudonyms = [keys.session_name(&[1; 32]), keys.session_name(&[2; 32])];
    let mine = hashes("text", &["SecretInterestQ4", "chess"]);
    a.queue
        .join(&pseudonyms[0], "text", false, &mine)
        .await
        .unwrap();
    b.queue
        .join(
            "waiting-forever",
            "video",
            true,
            &hashes("video", &["SecretInterestQ4"]),
        )
        .await
        .unwrap();
    let theirs = hashes("text", &["SecretInterestQ4"]);
    let (partner, _, _) = matched_with(
        b.queue
            .join(&pseudonyms[1], "text", false, &theirs)
            .await
            .unwrap(),
    );
    assert_eq!(partner, pseudonyms[0]);

    let mut redis_connection = a.redis.clone();
    let all: Vec<String> = redis_connection.keys("*").await.unwrap();
    assert!(!all.is_empty());
    for key in &all {
        let ttl: i64 = redis_connection.pttl(key).await.unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = monitor.kill();
    let output = monitor.wait_with_output().unwrap();
    let captured = String::from_utf8_lossy(&output.stdout);
    assert!(
        captured.contains("EVALSHA") || captured.contains("EVAL"),
        "the capture worked"
    );
    assert!(!captured.to_lowercase().contains("secretinterestq4"));
    assert!(!captured.contains("chess"));
}

/// 2,000 sealed payloads from one node to another while every client connection to Redis is
/// killed again and again: all arrive, once each, in order; then the stream is gone.
#[tokio::test]
async fn the_relay_delivers_everything_once_in_order_across_connection_blips() {
    use ephemera_actors::cluster::{connect, link};
    let redis = start_redis();
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    let keys = ClusterKeys::from_bytes(&[5; 32]);
    let (a, b) = (random_node_id(), random_node_id());
    let sender = link::start_sender(
        connect(&url, Duration::from_millis(500)).await.unwrap(),
        &keys,
        PREFIX,
        &a,
        Duration::from_secs(60),
        4096,
    );
    let (deliver, mut inbox) = tokio::sync::mpsc::channel(64);
    let reader = link::start_reader(
        connect(&url, Duration::from_secs(5)).await.unwrap(),
        ClusterKeys::from_bytes(&[5; 32]),
        PREFIX,
        &b,
        deliver,
    );
    // Blips: kill every normal client connection (the sender's and the reader's) now and then.
    let killer_url = url.clone();
    let killer = tokio::spawn(async move {
        let client = redis::Client::open(killer_url).unwrap();
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(40)).await;
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
                let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("normal")
                    .arg("SKIPME")
                    .arg("yes")
                    .query_async(&mut connection)
                    .await;
            }
        }
    });
    const COUNT: u32 = 2000;
    for n in 0..COUNT {
        let payload = format!("PayloadMarker{n}").into_bytes();
        while sender.send(&b, payload.clone()).is_err() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if n % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for n in 0..COUNT {
        let (from, payload) = tokio::time::timeout(Duration::from_secs(20), inbox.recv())
            .await
            .expect("every payload arrives")
            .unwrap();
        assert_eq!(from, a);
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            format!("PayloadMarker{n}")
        );
    }
    killer.await.unwrap();
    // Nothing more, no double: a moment of quiet, then the stream is gone from Redis.
    let extra = tokio::time::timeout(Duration::from_millis(1500), inbox.recv()).await;
    assert!(extra.is_err(), "a payload arrived twice");
    let mut check = connect(&url, Duration::from_secs(1)).await.unwrap();
    let left: bool = check.exists(link::stream_key(PREFIX, &b)).await.unwrap();
    assert!(!left, "the emptied stream was removed");
    reader.abort();
}

mod two_nodes {
    use super::*;
    use ephemera_actors::hub::InProcessClient;
    use ephemera_actors::node::ClusterSettings;
    use ephemera_actors::{ChatConfig, Hub};
    use serde_json::{json, Value};

    fn settings(redis: &RedisServer) -> ClusterSettings {
        ClusterSettings {
            redis_url: format!("redis://127.0.0.1:{}/", redis.port),
            secret_hex: "ab".repeat(32).into(),
        }
    }

    async fn hub(redis: &RedisServer) -> std::sync::Arc<Hub> {
        Hub::start_in_cluster(ChatConfig::unlimited(), &settings(redis))
            .await
            .expect("the node joins")
            .0
    }

    async fn client(hub: &std::sync::Arc<Hub>, last_octet: u8) -> InProcessClient {
        let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 9, last_octet));
        let client = hub.connect_in_process(ip, 256).await;
        assert_eq!(frame(&client).await["type"], "hello");
        client
    }

    /// The client's next frame, waiting in real time (replies cross Redis).
    async fn frame(client: &InProcessClient) -> Value {
        for _ in 0..5000 {
            match client.out.try_recv() {
                Some(ephemera_actors::connection::Outgoing::Text(text)) => {
                    return serde_json::from_str(&text).unwrap()
                }
                Some(_) => {}
                None => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
        panic!("no frame within 10 s");
    }

    async fn until(client: &InProcessClient, frame_type: &str) -> Value {
        loop {
            let next = frame(client).await;
            if next["type"] == frame_type {
                return next;
            }
        }
    }

    async fn send(client: &InProcessClient, frame: Value) {
        client.send_text(&frame.to_string()).await;
    }

    #[actix_rt::test]
    async fn strangers_on_two_nodes_chat_with_every_event_once_and_in_order() {
        let redis = start_redis();
        let (north, south) = (hub(&redis).await, hub(&redis).await);
        let ann = client(&north, 1).await;
        let bo = client(&south, 2).await;
        send(
            &ann,
            json!({"type":"find","adult":true,"nick":"Ann","interests":["chess"]}),
        )
        .await;
        assert_eq!(frame(&ann).await["type"], "waiting");
        send(
            &bo,
            json!({"type":"find","adult":true,"nick":"Bo","interests":["chess","go"]}),
        )
        .await;
        assert_eq!(frame(&bo).await["type"], "waiting");
        let (to_ann, to_bo) = (until(&ann, "matched").await, until(&bo, "matched").await);
        assert_eq!(to_ann["chat"], to_bo["chat"]);
        assert_eq!(
            (to_ann["seq"].as_u64(), to_bo["seq"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(to_ann["stranger"]["nick"], "Bo");
        assert_eq!(to_bo["stranger"]["nick"], "Ann");
        assert_eq!(to_ann["common"], json!(["chess"]));
        assert_ne!(to_ann["initiator"], to_bo["initiator"]);

        // 100 lines each way, interleaved: one numbering, each line once, echoes carry ids.
        for n in 0..100 {
            send(
                &ann,
                json!({"type":"msg","text":format!("north {n}"),"id":format!("a{n}")}),
            )
            .await;
            send(
                &bo,
                json!({"type":"msg","text":format!("south {n}"),"id":format!("b{n}")}),
            )
            .await;
        }
        for (me, mine, theirs) in [(&ann, "north", "south"), (&bo, "south", "north")] {
            let (mut seen_mine, mut seen_theirs, mut last_seq) = (0, 0, 1);
            while seen_mine + seen_theirs < 200 {
                let line = until(me, "msg").await;
                let seq = line["seq"].as_u64().unwrap();
                assert!(seq > last_seq, "in order: {seq} after {last_seq}");
                last_seq = seq;
                let text = line["text"].as_str().unwrap();
                if line["from"] == "you" {
                    assert_eq!(text, format!("{mine} {seen_mine}"));
                    assert!(line["id"].is_string());
                    seen_mine += 1;
                } else {
                    assert_eq!(text, format!("{theirs} {seen_theirs}"));
                    assert!(line.get("id").is_none(), "ids stay with their sender");
                    seen_theirs += 1;
                }
            }
            assert_eq!(last_seq, 201);
        }
        // Typing crosses too; a leave ends the chat on both nodes.
        send(&bo, json!({"type":"typing","active":true})).await;
        assert_eq!(until(&ann, "typing").await["active"], true);
        send(&ann, json!({"type":"leave"})).await;
        assert_eq!(until(&ann, "ended").await["reason"], "you_left");
        assert_eq!(until(&bo, "ended").await["reason"], "stranger_left");
    }
}

//! Three nodes on one real Redis, behind a real HAProxy running ops/haproxy.cfg: strangers
//! connected round-robin meet across nodes and chat with one numbering, nothing lost or
//! doubled; Redis sees no message, nick or interest in clear; and a node killed with `kill -9`
//! costs only its own sessions.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// Fields drop in this order: the proxy and nodes before Redis, so no node is left talking
/// to a Redis that is gone.
struct Cluster {
    _proxy: KillOnDrop,
    proxy: SocketAddr,
    nodes: Vec<(KillOnDrop, SocketAddr)>,
    _redis: KillOnDrop,
    redis_port: u16,
}

fn start_node(redis_port: u16) -> (KillOnDrop, SocketAddr) {
    start_node_with(redis_port, "0.2")
}

fn start_node_with(redis_port: u16, interest_timeout_seconds: &str) -> (KillOnDrop, SocketAddr) {
    start_node_with_args(redis_port, interest_timeout_seconds, &[])
}

fn start_node_with_args(
    redis_port: u16,
    interest_timeout_seconds: &str,
    extra: &[&str],
) -> (KillOnDrop, SocketAddr) {
    let spawned = spawn_binary(
        std::process::Command::new(server_binary())
            .args(extra)
            .args(["--listen-addr", "127.0.0.1:0", "--log-level", "warn"])
            .args([
                "--config",
                concat!(env!("CARGO_MANIFEST_DIR"), "/ops/bench.toml"),
            ])
            .args(["--interest-timeout-seconds", interest_timeout_seconds])
            .args(["--resume-grace-seconds", "3"])
            .args(["--trusted-proxies", "127.0.0.1"])
            .env(
                "EPHEMERA_CLUSTER_REDIS_URL",
                format!("redis://127.0.0.1:{redis_port}/"),
            )
            .env("EPHEMERA_CLUSTER_SECRET", CLUSTER_SECRET),
    );
    (KillOnDrop(spawned.child), spawned.addr)
}

async fn start_cluster(count: usize) -> Cluster {
    let (redis, redis_port) = start_redis();
    let nodes: Vec<(KillOnDrop, SocketAddr)> = (0..count).map(|_| start_node(redis_port)).collect();
    let addresses: Vec<SocketAddr> = nodes.iter().map(|(_, addr)| *addr).collect();
    let (proxy_child, proxy) = start_proxy(&addresses);
    // HAProxy answers once its health checks see the nodes up.
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(proxy).await.is_ok() && stats_via(proxy).await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Cluster {
        _redis: redis,
        redis_port,
        nodes,
        _proxy: proxy_child,
        proxy,
    }
}

async fn stats_via(addr: SocketAddr) -> Option<Value> {
    let (status, _, body) =
        http_exchange(addr, [127, 0, 0, 1].into(), "GET", "/stats", "", b"").await;
    (status == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// Reads `lines` lines of its own (their echoes) and as many of its stranger's, each exactly
/// once, in order, with rising seqs after `matched` (1); returns the last seq.
async fn expect_both_sides(
    client: &mut Client,
    lines: usize,
    mine: impl Fn(usize) -> String,
    theirs: impl Fn(usize) -> String,
) -> u64 {
    let (mut own, mut stranger, mut last_seq) = (0, 0, 1);
    while own + stranger < 2 * lines {
        let frame = until(client, "msg").await;
        let seq = frame["seq"].as_u64().unwrap();
        assert!(seq > last_seq, "seq {seq} after {last_seq}");
        last_seq = seq;
        if frame["from"] == "you" {
            assert_eq!(frame["text"], mine(own));
            own += 1;
        } else {
            assert_eq!(frame["text"], theirs(stranger));
            stranger += 1;
        }
    }
    last_seq
}

/// A client on `node` waiting for a stranger who shares `interest`.
async fn waiting(node: SocketAddr, interest: &str) -> Client {
    let mut client = Client::connect(&format!("ws://{node}/ws")).await;
    client
        .send(json!({"type":"find","adult":true,"interests":[interest]}))
        .await;
    until(&mut client, "waiting").await;
    client
}

async fn until(client: &mut Client, frame_type: &str) -> Value {
    let mut skipped = Vec::new();
    loop {
        let frame = match client.next_frame(EXPECT_WITHIN).await {
            Some(Ok(frame)) => frame,
            other => panic!("waiting for {frame_type}, got {other:?} after {skipped:?}"),
        };
        if frame["type"] == frame_type {
            return frame;
        }
        skipped.push(frame);
    }
}

/// A client through the proxy, from a source address of its own (which the proxy forwards to
/// the node, and which must never reach Redis).
async fn through(proxy: SocketAddr, n: usize) -> Client {
    Client::connect_from(proxy, [127, 61, 0, 1 + n as u8].into()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_spread_over_three_nodes_meet_and_chat_exactly_once_and_in_order() {
    let cluster = start_cluster(3).await;
    // Redis's own view of the whole run, as anyone with access to it would have.
    let mut monitor = std::process::Command::new(system_binary("redis-cli"))
        .args(["-p", &cluster.redis_port.to_string(), "monitor"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    const PAIRS: usize = 6;
    let mut clients = Vec::new();
    for n in 0..PAIRS * 2 {
        let mut client = through(cluster.proxy, n).await;
        let find = json!({"type":"find","adult":true,"nick":format!("NickMarker{n}"),"interests":[format!("InterestMarker{}", n / 2)]});
        client.send(find).await;
        until(&mut client, "waiting").await;
        clients.push(client);
    }
    // Round-robin: every node holds some of them.
    for (_, node) in &cluster.nodes {
        let stats = stats_via(*node).await.expect("each node answers /stats");
        assert!(stats["online"].as_u64().unwrap() >= 1, "{stats}");
        assert_eq!(stats["cluster"]["nodes"], 3, "{stats}");
    }
    // Everyone is matched, with the stranger who shares its interest.
    let mut chats = std::collections::HashMap::new();
    for (n, client) in clients.iter_mut().enumerate() {
        let matched = until(client, "matched").await;
        assert_eq!(
            matched["common"],
            json!([format!("interestmarker{}", n / 2)]),
            "{matched}"
        );
        chats
            .entry(matched["chat"].as_str().unwrap().to_owned())
            .or_insert_with(Vec::new)
            .push(n);
    }
    assert_eq!(chats.len(), PAIRS);
    // 40 lines each way in every chat, then each member checks what it got.
    const LINES: usize = 40;
    for line in 0..LINES {
        for (n, client) in clients.iter_mut().enumerate() {
            let text = format!("MessageMarker {n} {line}");
            client
                .send(json!({"type":"msg","text":text,"id":format!("m{line}")}))
                .await;
        }
    }
    for (n, client) in clients.iter_mut().enumerate() {
        let stranger = n ^ 1;
        let last_seq = expect_both_sides(
            client,
            LINES,
            |line| format!("MessageMarker {n} {line}"),
            |line| format!("MessageMarker {stranger} {line}"),
        )
        .await;
        assert_eq!(last_seq, 1 + 2 * LINES as u64);
    }
    // Every client drops and resumes through the proxy, by first frame as the page does: most
    // land on another node, and their sessions move there through Redis.
    let tokens: Vec<String> = clients.iter().map(Client::token).collect();
    for (n, client) in clients.iter_mut().enumerate() {
        let (token, chat) = (client.token(), client.matched_chat());
        let old = std::mem::replace(client, through(cluster.proxy, n).await);
        old.drop_connection();
        let resume = json!({"type":"resume","session":token,"chat":chat,"last_seq":1 + 2 * LINES});
        client.send(resume).await;
        let hello = until(client, "hello").await;
        assert_eq!(hello["resumed"], true, "{hello}");
    }
    for client in clients.iter_mut() {
        client.send(json!({"type":"leave"})).await;
    }
    for client in clients.iter_mut() {
        until(client, "ended").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = monitor.kill();
    let captured =
        String::from_utf8_lossy(&monitor.wait_with_output().unwrap().stdout).into_owned();
    assert!(captured.contains("XADD"), "the capture saw the relay");
    for secret in [
        "MessageMarker",
        "NickMarker",
        "InterestMarker",
        "interestmarker",
        "127.61.",
    ] {
        assert!(!captured.contains(secret), "Redis saw {secret} in clear");
    }
    for token in &tokens {
        assert!(
            !captured.contains(token.as_str()),
            "Redis saw a resume token"
        );
    }
}

/// `kill -9` of one node mid-chat costs only its own sessions: a stranger of one of them hears
/// `stranger_away`, then `stranger_lost` once the heartbeat expires, whether the chat ran on
/// the dead node or on its own; a chat between two other nodes goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_chat_costs_only_its_own_sessions() {
    let (_redis, redis_port) = start_redis();
    // Matching by interest only (the fallback is far off), so the test chooses the pairs.
    let mut nodes: Vec<(KillOnDrop, SocketAddr)> =
        (0..3).map(|_| start_node_with(redis_port, "60")).collect();
    let at = |n: usize| nodes[n].1;
    // The chat of ann (node 0) and bo (node 1) runs on node 1, the joiner's; that of cy
    // (node 1) and di (node 2) runs on node 2; that of ed (node 0) and flo (node 2) on node 2.
    let mut ann = waiting(at(0), "one").await;
    let mut bo = waiting(at(1), "one").await;
    let mut cy = waiting(at(1), "two").await;
    let mut di = waiting(at(2), "two").await;
    let mut ed = waiting(at(0), "three").await;
    let mut flo = waiting(at(2), "three").await;
    for client in [&mut ann, &mut bo, &mut cy, &mut di, &mut ed, &mut flo] {
        until(client, "matched").await;
    }
    ann.say("before").await;
    until(&mut bo, "msg").await;

    // Node 1 dies without a word.
    let bo_token = bo.token();
    let (mut dead, _) = nodes.remove(1);
    dead.0.kill().unwrap();
    dead.0.wait().unwrap();
    drop(bo);
    drop(cy);
    // ann's chat ran on the dead node; di's stranger was on it.
    for survivor in [&mut ann, &mut di] {
        until(survivor, "stranger_away").await;
        let ended = until(survivor, "ended").await;
        assert_eq!(ended["reason"], "stranger_lost", "{ended}");
    }
    // bo's resume key outlives its node, but the node's heartbeat is gone: bo gets a fresh
    // session at once, without a hand-over asked of a dead node (which would wait 8 s).
    let asked = std::time::Instant::now();
    let first_node = nodes[0].1;
    let bo = Client::connect(&format!(
        "ws://{first_node}/ws?resume={bo_token}&last_seq=2"
    ))
    .await;
    assert_eq!(bo.hello["resumed"], false, "{}", bo.hello);
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "no wait for a dead node"
    );
    // ed and flo, on the two live nodes, go on as if nothing happened.
    ed.say("still here").await;
    let line = until(&mut flo, "msg").await;
    assert_eq!(line["text"], "still here");
    // And the survivors can chat again: ann and di find each other.
    ann.send(json!({"type":"find","adult":true,"interests":["again"]}))
        .await;
    di.send(json!({"type":"find","adult":true,"interests":["again"]}))
        .await;
    until(&mut ann, "matched").await;
    until(&mut di, "matched").await;
}

/// Redis restarted empty mid-run: the chat in progress goes on (its log lives on its node),
/// the waiting session is queued again by its node and still meets a newcomer, and once
/// everyone has left Redis holds nothing but the nodes' heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_empty_costs_no_chat_in_progress() {
    let (redis, redis_port) = start_redis();
    let args = [
        "--rematch-cooldown-seconds",
        "1",
        "--heartbeat-interval-seconds",
        "0.5",
    ];
    let nodes: Vec<(KillOnDrop, SocketAddr)> = (0..2)
        .map(|_| start_node_with_args(redis_port, "60", &args))
        .collect();
    let mut ann = waiting(nodes[0].1, "one").await;
    let mut bo = waiting(nodes[1].1, "one").await;
    until(&mut ann, "matched").await;
    until(&mut bo, "matched").await;
    let mut cy = waiting(nodes[0].1, "two").await;
    // bo's connection drops just before Redis goes.
    let (token, last_seq) = (bo.token(), bo.last_seq);
    bo.drop_connection();
    until(&mut ann, "stranger_away").await;

    drop(redis);
    let _redis = start_redis_on(redis_port);
    // The nodes reconnect by themselves and write their heartbeats again; bo's session,
    // away, writes where it is again too, so bo resumes on the other node.
    for _ in 0..200 {
        if redis_keys(redis_port, "eph:resume:*").len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("ws://{}/ws?resume={token}&last_seq={last_seq}", nodes[0].1);
    let mut bo = Client::connect(&url).await;
    assert_eq!(bo.hello["resumed"], true, "{}", bo.hello);
    until(&mut ann, "stranger_back").await;

    ann.say("after the restart").await;
    assert_eq!(until(&mut bo, "msg").await["text"], "after the restart");
    bo.say("still here").await;
    loop {
        let line = until(&mut ann, "msg").await;
        if line["from"] == "stranger" {
            assert_eq!(line["text"], "still here");
            break;
        }
    }
    // cy's place was lost with Redis; its node queued it again, so a newcomer finds it.
    let mut di = waiting(nodes[1].1, "two").await;
    until(&mut cy, "matched").await;
    until(&mut di, "matched").await;

    for client in [&mut ann, &mut cy] {
        client.send(json!({"type":"leave"})).await;
    }
    for client in [&mut ann, &mut bo, &mut cy, &mut di] {
        until(client, "ended").await;
    }
    // Everyone leaves; once the cooldowns (1 s here) have run out and the sessions have
    // ended, only the heartbeats are left.
    for client in [ann, bo, cy, di] {
        client.close().await;
    }
    let mut left: Vec<String> = Vec::new();
    for _ in 0..100 {
        left = redis_keys(redis_port, "*");
        if left.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter().all(|key| key.starts_with("eph:node:")),
        "{left:?}"
    );
}

/// A client whose connection dropped resumes on another node (as a load balancer without
/// sticky sessions sends it): by URL, and by first frame as the page does. It gets what it
/// missed, once, and chats on; its session moves to that node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_that_lands_on_another_node_finds_its_chat() {
    let (_redis, redis_port) = start_redis();
    let nodes: Vec<(KillOnDrop, SocketAddr)> =
        (0..2).map(|_| start_node_with(redis_port, "60")).collect();
    let url = |n: usize| format!("ws://{}/ws", nodes[n].1);
    let mut ann = Client::connect(&url(0)).await;
    let mut bo = Client::connect(&url(1)).await;
    for client in [&mut ann, &mut bo] {
        client
            .send(json!({"type":"find","adult":true,"interests":["resume"]}))
            .await;
        until(client, "waiting").await;
    }
    let chat = until(&mut ann, "matched").await["chat"]
        .as_str()
        .unwrap()
        .to_owned();
    until(&mut bo, "matched").await;

    // ann drops; bo says something meanwhile; ann comes back on bo's node, by URL.
    let token = ann.token();
    ann.drop_connection();
    until(&mut bo, "stranger_away").await;
    bo.say("while you were away").await;
    let mut ann =
        Client::connect(&format!("{}?resume={token}&last_seq=1&chat={chat}", url(1))).await;
    assert_eq!(ann.hello["resumed"], true, "{}", ann.hello);
    let missed = until(&mut ann, "msg").await;
    assert_eq!(missed["text"], "while you were away");
    until(&mut bo, "stranger_back").await;
    ann.say("back again").await;
    assert_eq!(until(&mut bo, "msg").await["text"], "back again");

    // Again, by first frame (the page's way), on the same other node; this time ann read no
    // further than seq 2, so the echo of its own "back again" (seq 3) is replayed too.
    let last_seq = 2;
    ann.drop_connection();
    until(&mut bo, "stranger_away").await;
    bo.say("second time").await;
    let mut first_frame = Client::connect(&url(1)).await;
    assert_eq!(first_frame.hello["resumed"], false);
    first_frame
        .send(json!({"type":"resume","session":token,"chat":chat,"last_seq":last_seq}))
        .await;
    let hello = until(&mut first_frame, "hello").await;
    assert_eq!(hello["resumed"], true, "{hello}");
    let mut texts = Vec::new();
    while texts.len() < 2 {
        let line = until(&mut first_frame, "msg").await;
        texts.push(line["text"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        texts,
        vec!["back again", "second time"],
        "each missed line once, in order"
    );
    first_frame.send(json!({"type":"leave"})).await;
    assert_eq!(until(&mut bo, "ended").await["reason"], "stranger_left");
}

/// A resume on a third node moves the session there: the node it left holds nothing of it
/// any more, so that node's death costs the chat nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_moves_to_its_new_node_and_outlives_the_old_one() {
    let (_redis, redis_port) = start_redis();
    let mut nodes: Vec<(KillOnDrop, SocketAddr)> =
        (0..3).map(|_| start_node_with(redis_port, "60")).collect();
    let url = |node: SocketAddr| format!("ws://{node}/ws");
    let addresses: Vec<SocketAddr> = nodes.iter().map(|(_, addr)| *addr).collect();
    let mut ann = Client::connect(&url(addresses[0])).await;
    let mut bo = Client::connect(&url(addresses[1])).await;
    let find = json!({"type":"find","adult":true,"nick":"Ann or Bo","interests":["move"]});
    ann.send(find.clone()).await;
    until(&mut ann, "waiting").await;
    // Once ann is in Redis's queue, bo's find makes the match, so the chat runs on bo's node.
    let deadline = tokio::time::Instant::now() + EXPECT_WITHIN;
    while redis_keys(redis_port, "eph:w:*").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ann never queued in Redis"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bo.send(find).await;
    until(&mut bo, "waiting").await;
    let chat = until(&mut ann, "matched").await["chat"]
        .as_str()
        .unwrap()
        .to_owned();
    until(&mut bo, "matched").await;
    ann.say("before the move").await;
    until(&mut bo, "msg").await;
    until(&mut ann, "msg").await;

    // ann drops and comes back on the third node, by first frame.
    let (token, last_seq) = (ann.token(), ann.last_seq);
    ann.drop_connection();
    until(&mut bo, "stranger_away").await;
    bo.say("while you moved").await;
    let mut ann = Client::connect(&url(addresses[2])).await;
    ann.send(json!({"type":"resume","session":token,"chat":chat,"last_seq":last_seq}))
        .await;
    let hello = until(&mut ann, "hello").await;
    assert_eq!(hello["resumed"], true, "{hello}");
    assert_eq!(hello["state"], "chatting", "{hello}");
    assert_eq!(until(&mut ann, "msg").await["text"], "while you moved");
    until(&mut bo, "stranger_back").await;
    // The first node holds nothing of ann now; the third holds ann (the doorway is gone).
    stats_until(addresses[0], "the old node let the session go", |s| {
        s["online"] == 0
    })
    .await;
    stats_until(addresses[2], "the new node holds the session", |s| {
        s["online"] == 1
    })
    .await;

    // The old node dies: the chat, on the second node, and ann, on the third, go on.
    nodes[0].0 .0.kill().unwrap();
    ann.say("after the old node died").await;
    assert_eq!(
        until(&mut bo, "msg").await["text"],
        "after the old node died"
    );
    bo.say("still here").await;
    assert_eq!(until(&mut bo, "msg").await["text"], "still here");
    assert_eq!(
        until(&mut ann, "msg").await["text"],
        "after the old node died"
    );
    assert_eq!(until(&mut ann, "msg").await["text"], "still here");
    // Once the dead node's heartbeat has expired, nothing in this chat hears of it: the next
    // frames on both sides are the next line and its echo.
    stats_until(addresses[1], "the dead node's heartbeat expired", |s| {
        s["cluster"]["nodes"] == 2
    })
    .await;
    ann.say("and later").await;
    assert_eq!(bo.expect("msg").await["text"], "and later");
    assert_eq!(ann.expect("msg").await["text"], "and later");
    ann.send(json!({"type":"leave"})).await;
    assert_eq!(until(&mut bo, "ended").await["reason"], "stranger_left");

    // The cooldown keeps the two apart though ann's session moved: it keeps its name in the
    // queue, and a newcomer is the one each of them meets.
    for client in [&mut ann, &mut bo] {
        client.send(find_text()).await;
        until(client, "waiting").await;
    }
    ann.expect_nothing(Duration::from_millis(300)).await;
    let mut cy = Client::connect(&url(addresses[1])).await;
    cy.send(find_text()).await;
    until(&mut cy, "matched").await;
}

/// 1,000 sessions through HAProxy over three nodes: 500 chats, most of them across nodes,
/// each line arriving once and in order on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sessions_across_three_nodes_each_line_once_and_in_order() {
    let cluster = start_cluster(3).await;
    const SESSIONS: usize = 1000;
    const LINES: usize = 5;
    let mut clients = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        let mut client = Client::connect(&format!("ws://{}/ws", cluster.proxy)).await;
        client.send(json!({"type":"find","adult":true})).await;
        clients.push(client);
    }
    let mut partner_of = vec![usize::MAX; SESSIONS];
    let mut by_chat: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (n, client) in clients.iter_mut().enumerate() {
        let chat = until(client, "matched").await["chat"]
            .as_str()
            .unwrap()
            .to_owned();
        if let Some(first) = by_chat.remove(&chat) {
            partner_of[n] = first;
            partner_of[first] = n;
        } else {
            by_chat.insert(chat, n);
        }
    }
    assert!(by_chat.is_empty(), "everyone found a stranger");
    for line in 0..LINES {
        for (n, client) in clients.iter_mut().enumerate() {
            client.say(&format!("{n}:{line}")).await;
        }
    }
    for (n, client) in clients.iter_mut().enumerate() {
        let partner = partner_of[n];
        expect_both_sides(
            client,
            LINES,
            |line| format!("{n}:{line}"),
            |line| format!("{partner}:{line}"),
        )
        .await;
    }
    let mut spread = Vec::new();
    for (_, node) in &cluster.nodes {
        spread.push(
            stats_via(*node).await.unwrap()["chatting"]
                .as_u64()
                .unwrap(),
        );
    }
    assert!(spread.iter().all(|&chatting| chatting > 0), "{spread:?}");
    assert_eq!(spread.iter().sum::<u64>(), SESSIONS as u64, "{spread:?}");
}

/// The harness the core tests run on three nodes with (`on_one_node_and_on_three!`) really
/// spreads clients: one on each node, and the first two meet across nodes.
#[tokio::test]
async fn the_three_node_harness_spreads_clients_over_every_node() {
    on_three_nodes(async {
        let server = spawn_server(test_settings());
        let (mut a, mut b) = server.matched_pair().await;
        let _third = server.client().await;
        let nodes = &server.cluster().nodes;
        for node in nodes {
            stats_until(node.addr, "one client on each node", |s| s["online"] == 1).await;
        }
        a.say("across").await;
        assert_eq!(b.expect("msg").await["text"], "across");
        assert_eq!(a.expect("msg").await["from"], "you");

        // a resumes on each node in turn: wherever its session is not, it moves there (at
        // least twice), and the chat goes on.
        let moves = || async {
            let body = server.metrics().await;
            body.lines()
                .find(|line| {
                    line.starts_with("ephemera_cluster_session_moves_total{result=\"ok\"}")
                })
                .and_then(|line| line.split_whitespace().last()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let before = moves().await;
        let mut a = a;
        for node in nodes {
            let (token, last_seq) = (a.token(), a.last_seq);
            a.drop_connection();
            let url = format!("ws://{}/ws?resume={token}&last_seq={last_seq}", node.addr);
            a = Client::connect(&url).await;
            assert_eq!(a.hello["resumed"], true, "{}", a.hello);
            assert_eq!(a.hello["state"], "chatting", "{}", a.hello);
        }
        assert!(moves().await >= before + 2, "the session moved");
        a.say("after three hops").await;
        let mut line = b.expect_any().await;
        while line["type"] != "msg" {
            line = b.expect_any().await;
        }
        assert_eq!(line["text"], "after three hops");
    })
    .await
}

//! Relayed events per second through the real session and pair actors (frames in, parse,
//! pair, fan-out to both members' sinks), without sockets, against the same fan-out over plain
//! crossbeam channels. Every event is checked delivered, with gap-free seqs.
//!
//! `cargo bench --bench actor_pipeline` (env CHATS, MESSAGES to change the load).

use std::sync::Arc;
use std::time::Instant;

use ephemera_actors::connection::{ChannelSinkReceiver, ClientFrame, Outgoing};
use ephemera_actors::{ChatConfig, Hub};
use tokio::sync::mpsc;

use ephemera::wiping_allocator::{WipingAllocator, WIPE_ON_FREE};

/// The server's allocator, so the figures include what wiping freed memory costs.
#[global_allocator]
static ALLOCATOR: WipingAllocator = WipingAllocator;

mod support;
use support::{env_or, LOOPBACK};

struct Member {
    frames: mpsc::Sender<ClientFrame>,
    out: ChannelSinkReceiver,
}

/// Drains a member's sink; returns the highest seq seen once `wanted` msg events arrived.
async fn drain(member: &Member, wanted: usize) -> u64 {
    let (mut seen, mut last_seq) = (0, 0);
    while seen < wanted {
        match member.out.try_recv() {
            Some(Outgoing::Text(text)) => {
                if text.starts_with(r#"{"type":"msg""#) {
                    let seq: u64 = text[20..text.find(",\"from").unwrap()].parse().unwrap();
                    assert_eq!(seq, last_seq + 1, "seqs are gap-free");
                    last_seq = seq;
                    seen += 1;
                } else if text.starts_with(r#"{"type":"matched""#) {
                    last_seq = 1;
                }
            }
            Some(_) => {}
            None => tokio::task::yield_now().await,
        }
    }
    last_seq
}

fn actor_pipeline(chats: usize, messages: usize) -> f64 {
    actix_rt::System::new().block_on(async move {
        let hub = Hub::start(ChatConfig {
            // The bench profile: no back-pressure refusals while flooding.
            pair_mailbox_capacity: 1 << 20,
            ..ChatConfig::unlimited()
        });
        let mut members = Vec::new();
        for _ in 0..chats * 2 {
            let client = hub.connect_in_process(LOOPBACK, 1024).await;
            let member = Member {
                frames: client.frames,
                out: client.out,
            };
            member
                .frames
                .send(ClientFrame::Text(r#"{"type":"find","adult":true}"#.into()))
                .await
                .unwrap();
            members.push(member);
        }
        // Wait until every member is matched.
        while hub.stats().chatting < (chats * 2) as u64 {
            tokio::task::yield_now().await;
        }
        let members = Arc::new(members);
        let frame: bytestring::ByteString =
            r#"{"type":"msg","text":"a hundred bytes of chat text, give or take, to look like a real message."}"#.into();
        let started = Instant::now();
        let mut senders = Vec::new();
        for i in 0..members.len() {
            let members = members.clone();
            let frame = frame.clone();
            senders.push(actix_rt::spawn(async move {
                for _ in 0..messages {
                    members[i].frames.send(ClientFrame::Text(frame.clone())).await.unwrap();
                }
            }));
        }
        let mut drains = Vec::new();
        for i in 0..members.len() {
            let members = members.clone();
            drains.push(actix_rt::spawn(async move { drain(&members[i], 2 * messages).await }));
        }
        for drain in drains {
            assert_eq!(drain.await.unwrap(), 1 + 2 * messages as u64);
        }
        let elapsed = started.elapsed();
        (chats * 2 * messages * 2) as f64 / elapsed.as_secs_f64()
    })
}

/// The same fan-out with plain channels: members push to their chat's relay thread, which
/// numbers each message and sends it to both members' channels.
fn crossbeam_baseline(chats: usize, messages: usize) -> f64 {
    use crossbeam_channel::{bounded, unbounded};
    let (relay_tx, relay_rx) = bounded::<(usize, usize, bytestring::ByteString)>(1024);
    let outputs: Vec<_> = (0..chats * 2)
        .map(|_| unbounded::<(u64, bytestring::ByteString)>())
        .collect();
    let senders: Vec<_> = outputs.iter().map(|(tx, _)| tx.clone()).collect();
    let started = Instant::now();
    let relay = std::thread::spawn(move || {
        let mut seqs = vec![1u64; chats];
        while let Ok((chat, side, text)) = relay_rx.recv() {
            seqs[chat] += 1;
            let rendered: bytestring::ByteString = format!(
                r#"{{"type":"msg","seq":{},"from":"x",{}"#,
                seqs[chat],
                &text[14..]
            )
            .into();
            senders[chat * 2 + side]
                .send((seqs[chat], rendered.clone()))
                .unwrap();
            senders[chat * 2 + 1 - side]
                .send((seqs[chat], rendered))
                .unwrap();
        }
    });
    let text: bytestring::ByteString =
        r#"{"type":"msg","text":"a hundred bytes of chat text, give or take, to look like a real message."}"#.into();
    let producer = std::thread::spawn(move || {
        for _ in 0..messages {
            for member in 0..chats * 2 {
                relay_tx
                    .send((member / 2, member % 2, text.clone()))
                    .unwrap();
            }
        }
    });
    for (_, rx) in &outputs {
        let mut last = 1;
        for _ in 0..2 * messages {
            let (seq, _) = rx.recv().unwrap();
            assert_eq!(seq, last + 1);
            last = seq;
        }
    }
    let elapsed = started.elapsed();
    producer.join().unwrap();
    relay.join().unwrap();
    (chats * 2 * messages * 2) as f64 / elapsed.as_secs_f64()
}

fn main() {
    // `cargo test` runs bench targets with --bench absent; keep that run short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let chats = env_or("CHATS", if quick { 10 } else { 1000 });
    let messages = env_or("MESSAGES", if quick { 10 } else { 100 });
    // Alternate the runs and keep the best of each, so warm-up and a noisy neighbour do not
    // land on one side only.
    let (mut baseline, mut unwiped, mut ours) = (0f64, 0f64, 0f64);
    for _ in 0..3 {
        WIPE_ON_FREE.store(false, std::sync::atomic::Ordering::SeqCst);
        baseline = baseline.max(crossbeam_baseline(chats, messages));
        unwiped = unwiped.max(actor_pipeline(chats, messages));
        WIPE_ON_FREE.store(true, std::sync::atomic::Ordering::SeqCst);
        ours = ours.max(actor_pipeline(chats, messages));
    }
    println!("actor_pipeline: {chats} chats x 2 members x {messages} msgs, each delivered twice");
    println!("  crossbeam baseline (no wiping): {baseline:>10.0} events/s");
    let ratio = ours / baseline;
    println!("  ephemera, wiping freed memory:  {ours:>10.0} events/s   ratio {ratio:.2}");
    let cost = (1.0 - ours / unwiped) * 100.0;
    println!(
        "  ephemera, wiping off:           {unwiped:>10.0} events/s   wiping costs {cost:.1}%"
    );
}

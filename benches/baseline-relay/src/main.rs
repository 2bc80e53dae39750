//! A minimal relay of protocol v1's core (hello, find, msg with echo, next, leave) on plain
//! tokio and tungstenite: no actors, no log, no limits, no checks beyond what it needs. It is
//! what the WebSocket path costs on this machine before Ephemera's design adds anything, and
//! the baseline that `benches/compare.sh` measures the server against.
//!
//! Usage: baseline-relay [ADDR] (default 127.0.0.1:8090). Prints the address once listening.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};
use tokio_tungstenite::tungstenite::Message;

type Outbox = mpsc::UnboundedSender<String>;
/// Tells a waiting connection which chat it joined, and as which member.
type Joined = mpsc::UnboundedSender<(Arc<Chat>, usize)>;

/// One chat: both members' outboxes, the next seq, and whether it has ended. The seq lock is
/// held while an event is numbered and queued to both, so both see one order.
struct Chat {
    members: [Outbox; 2],
    seq: std::sync::Mutex<u64>,
    ended: AtomicBool,
}

#[derive(Default)]
struct Relay {
    waiting: Option<(u64, Outbox, Joined)>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    println!(
        "baseline-relay listening on ws://{}/ws",
        listener.local_addr()?
    );
    let relay = Arc::new(Mutex::new(Relay::default()));
    let next_id = Arc::new(AtomicU64::new(1));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let relay = relay.clone();
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
                serve(ws, id, relay).await;
            }
        });
    }
}

async fn serve(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    id: u64,
    relay: Arc<Mutex<Relay>>,
) {
    let (mut sink, mut stream) = ws.split();
    let (outbox, mut queued) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(text) = queued.recv().await {
            if sink.send(Message::Text(text)).await.is_err() {
                break;
            }
        }
    });
    let _ = outbox.send(format!(
        r#"{{"type":"hello","protocol":1,"session":"baseline{id:014}","resumed":false,"state":"idle","online":0,"limits":{{}},"ice_servers":[],"pow":null}}"#
    ));
    let (matched_tx, mut matched_rx) = mpsc::unbounded_channel::<(Arc<Chat>, usize)>();
    let mut chat: Option<(Arc<Chat>, usize)> = None;
    loop {
        tokio::select! {
            Some(joined) = matched_rx.recv() => chat = Some(joined),
            frame = stream.next() => {
                let Some(Ok(Message::Text(text))) = frame else { break };
                let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
                match value["type"].as_str() {
                    Some("find") | Some("next") => {
                        end_chat(&mut chat, "you_left", "stranger_left");
                        let _ = outbox.send(r#"{"type":"waiting","online":0}"#.to_owned());
                        find(&relay, id, &outbox, &matched_tx).await;
                    }
                    Some("leave") => end_chat(&mut chat, "you_left", "stranger_left"),
                    Some("msg") => {
                        if chat.as_ref().is_some_and(|(c, _)| c.ended.load(Ordering::Relaxed)) {
                            chat = None;
                        }
                        if let Some((current, side)) = &chat {
                            let mut seq_guard = current.seq.lock().unwrap_or_else(|p| p.into_inner());
                            let seq = *seq_guard;
                            *seq_guard += 1;
                            let text = serde_json::to_string(&value["text"]).unwrap_or_default();
                            for (member, outbox) in current.members.iter().enumerate() {
                                let from = if member == *side { "you" } else { "stranger" };
                                let _ = outbox.send(format!(
                                    r#"{{"type":"msg","seq":{seq},"from":"{from}","text":{text}}}"#
                                ));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    end_chat(&mut chat, "you_left", "stranger_left");
    let mut relay = relay.lock().await;
    if relay.waiting.as_ref().is_some_and(|(w, _, _)| *w == id) {
        relay.waiting = None;
    }
    drop(relay);
    writer.abort();
}

async fn find(relay: &Mutex<Relay>, id: u64, outbox: &Outbox, matched: &Joined) {
    let mut relay = relay.lock().await;
    match relay.waiting.take() {
        Some((other, other_outbox, other_matched)) if other != id => {
            let chat = Arc::new(Chat {
                members: [other_outbox, outbox.clone()],
                seq: std::sync::Mutex::new(2),
                ended: AtomicBool::new(false),
            });
            for (side, (out, notify)) in [
                (&chat.members[0], &other_matched),
                (&chat.members[1], matched),
            ]
            .into_iter()
            .enumerate()
            {
                let _ = out.send(format!(
                    r#"{{"type":"matched","seq":1,"mode":"text","common":[],"stranger":{{"nick":null}},"initiator":{}}}"#,
                    side == 0
                ));
                let _ = notify.send((chat.clone(), side));
            }
        }
        _ => relay.waiting = Some((id, outbox.clone(), matched.clone())),
    }
}

fn end_chat(chat: &mut Option<(Arc<Chat>, usize)>, mine: &str, theirs: &str) {
    if let Some((current, side)) = chat.take() {
        if current.ended.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut seq_guard = current.seq.lock().unwrap_or_else(|p| p.into_inner());
        let seq = *seq_guard;
        *seq_guard += 1;
        for (member, outbox) in current.members.iter().enumerate() {
            let reason = if member == side { mine } else { theirs };
            let _ = outbox.send(format!(
                r#"{{"type":"ended","seq":{seq},"reason":"{reason}"}}"#
            ));
        }
    }
}

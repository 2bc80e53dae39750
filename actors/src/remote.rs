//! The remote ends of chats whose members live on different nodes of a cluster. A chat's pair
//! actor runs on one node; a member on another node is a `RemoteSession` to the pair, and the
//! pair is a `RemotePair` to that member's session. Both turn their calls into `Wire` messages
//! that `NodeRelay` seals into the other node's stream (`cluster::link`); the other node's
//! relay opens them and hands each to the actor it names, as the local message it stands for.
//!
//! Order and exactly-once come from the link (per sender node). What crosses is what the
//! actors pass each other anyway: rendered frames, nick and interests at a match; all sealed.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::cluster::link::{Inbound, LinkSender};
use crate::cluster::secret::{hex, ClusterKeys};
use crate::cluster_matchmaker::{ClaimAnswer, ClaimRequest, ClusterMatchmaker, Release};
use crate::connection::{close_code, ClientFrame, ClientSink, FrameStream, Outgoing};
use crate::context::{CarryAnswer, ChatContext, ClusterLink};
use crate::event_log::{EventKind, Side};
use crate::ids::ChatId;
use crate::pair::{
    EndCause, EndChat, MemberAway, MemberBack, Pair, PairHandle, Post, PostRefused, Relay,
    RelayKind,
};
use crate::protocol::ResumePoint;
use crate::protocol::{ChatBody, Mode, ReportReason};
use crate::registry::{hash_presented_token, Attach, ResumeToken, SessionCommand, TokenHash};
use crate::session::{ChatEnded, ChatEvent, ChatLost, ChatStarted, Session};

/// Everything one node tells another, as serialised inside a sealed envelope.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Wire {
    /// The sender matched `partner` (waiting here) with one of its sessions: hand it over.
    Claim {
        claim: u64,
        partner: String,
    },
    /// The partner of claim `claim`, handed over: what the pair needs of it.
    Claimed {
        claim: u64,
        partner: String,
        nick: Option<String>,
        interests: Vec<String>,
    },
    /// The partner had gone by the time the claim came.
    ClaimGone {
        claim: u64,
    },
    /// A claimed partner is not needed after all (its stranger left meanwhile): queue it again.
    Release {
        partner: String,
    },
    /// Pair → a member's session here.
    Started {
        session: String,
        chat: String,
        side: u8,
        mode: String,
    },
    Event {
        session: String,
        chat: String,
        seq: u64,
        frame: String,
    },
    Ended {
        session: String,
        chat: String,
        seq: u64,
        frame: String,
    },
    /// A member's session → its pair here.
    Post {
        chat: String,
        side: u8,
        kind: String,
        body: String,
        id_len: usize,
    },
    Relay {
        chat: String,
        side: u8,
        kind: String,
        frame: String,
    },
    End {
        chat: String,
        side: u8,
        cause: String,
    },
    Away {
        chat: String,
        side: u8,
    },
    Back {
        chat: String,
        side: u8,
        after_seq: u64,
    },
    /// A client resumed on the sender a session held here: carry its connection to it.
    Carry {
        conn: u64,
        token: String,
        chat: Option<String>,
        last_seq: u64,
    },
    /// Whether the session took the carried connection.
    Carried {
        conn: u64,
        ok: bool,
    },
    /// A frame from a carried connection's client, for the session here.
    In {
        conn: u64,
        frame: InFrame,
    },
    /// A frame from a session for its carried connection's client there.
    Out {
        conn: u64,
        frame: OutFrame,
    },
}

/// A client's frame, as it crosses to the node holding its session.
#[derive(Debug, Serialize, Deserialize)]
pub enum InFrame {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>),
    TooLarge,
    Invalid(u16),
    Dropped,
}

/// A session's frame, as it crosses to the node carrying its connection.
#[derive(Debug, Serialize, Deserialize)]
pub enum OutFrame {
    Text(String),
    Ping,
    Pong(Vec<u8>),
    Close(u16),
    Abort,
}

impl InFrame {
    fn of(frame: &ClientFrame) -> InFrame {
        match frame {
            ClientFrame::Text(text) => InFrame::Text(text.to_string()),
            ClientFrame::Binary => InFrame::Binary,
            ClientFrame::Ping(payload) => InFrame::Ping(payload.to_vec()),
            ClientFrame::Pong => InFrame::Pong,
            ClientFrame::Close(code) => InFrame::Close(*code),
            ClientFrame::TooLarge => InFrame::TooLarge,
            ClientFrame::Invalid { code, .. } => InFrame::Invalid(*code),
            ClientFrame::Dropped => InFrame::Dropped,
        }
    }

    fn into_frame(self) -> ClientFrame {
        match self {
            InFrame::Text(text) => ClientFrame::Text(text.into()),
            InFrame::Binary => ClientFrame::Binary,
            InFrame::Ping(payload) => ClientFrame::Ping(payload.into()),
            InFrame::Pong => ClientFrame::Pong,
            InFrame::Close(code) => ClientFrame::Close(code),
            InFrame::TooLarge => ClientFrame::TooLarge,
            InFrame::Invalid(code) => ClientFrame::Invalid {
                code,
                reason: if code == close_code::INVALID_PAYLOAD {
                    "text frames must be UTF-8"
                } else {
                    "protocol error"
                },
            },
            InFrame::Dropped => ClientFrame::Dropped,
        }
    }

    /// The connection's last frame: nothing follows it.
    fn ends(&self) -> bool {
        matches!(
            self,
            InFrame::Close(_) | InFrame::Invalid(_) | InFrame::Dropped
        )
    }
}

impl OutFrame {
    fn of(frame: &Outgoing) -> OutFrame {
        match frame {
            Outgoing::Text(text) => OutFrame::Text(text.to_string()),
            Outgoing::Ping => OutFrame::Ping,
            Outgoing::Pong(payload) => OutFrame::Pong(payload.to_vec()),
            Outgoing::Close { code, .. } => OutFrame::Close(*code),
        }
    }
}

/// The close reason a carried connection's client reads, by code (reasons are static text).
fn close_reason(code: u16) -> &'static str {
    match code {
        close_code::RESUMED_ELSEWHERE => "resumed on another connection",
        close_code::GOING_AWAY => "server shutting down",
        close_code::TRY_AGAIN_LATER => "try again later",
        close_code::POLICY_VIOLATION => "policy violation",
        _ => "closed",
    }
}

fn side_code(side: Side) -> u8 {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

fn side_of(code: u8) -> Option<Side> {
    match code {
        0 => Some(Side::A),
        1 => Some(Side::B),
        _ => None,
    }
}

fn mode_of(text: &str) -> Option<Mode> {
    match text {
        "text" => Some(Mode::Text),
        "video" => Some(Mode::Video),
        _ => None,
    }
}

fn cause_code(cause: EndCause) -> String {
    match cause {
        EndCause::Left => "left".into(),
        EndCause::Lost => "lost".into(),
        EndCause::Shutdown => "shutdown".into(),
        EndCause::Reported(reason) => format!("reported:{}", reason.as_str()),
    }
}

fn cause_of(text: &str) -> EndCause {
    match text {
        "lost" => EndCause::Lost,
        "shutdown" => EndCause::Shutdown,
        reported if reported.starts_with("reported:") => ReportReason::ALL
            .into_iter()
            .find(|reason| reported.ends_with(reason.as_str()))
            .map_or(EndCause::Left, EndCause::Reported),
        _ => EndCause::Left,
    }
}

/// This node's end of the relay: the sealed sender, and who here answers to which name.
pub struct NodeRelay {
    node: String,
    sender: LinkSender,
    /// Sessions here that a pair elsewhere may address, by pseudonym.
    sessions: Mutex<HashMap<String, Addr<Session>>>,
    /// Pairs here that members elsewhere may address, by chat.
    pairs: Mutex<HashMap<ChatId, Addr<Pair>>>,
    /// What hangs on other nodes staying alive, by node: members of chats here, and chats
    /// of sessions here. Watched on the heartbeat (`watch_nodes`).
    watched: Mutex<HashMap<String, Vec<Dependent>>>,
    keys: Arc<ClusterKeys>,
    /// For the resume keys (`<prefix>resume:<keyed token hash>` → node).
    commands: redis::aio::ConnectionManager,
    prefix: String,
    /// The sessions' shared context, once the hub has started.
    context: std::sync::OnceLock<Arc<ChatContext>>,
    next_conn: std::sync::atomic::AtomicU64,
    /// Connections carried from here to the node holding their session: that node, and the
    /// connection's sink.
    carrying: Mutex<HashMap<u64, CarryingConnection>>,
    /// This relay itself, for the futures and tasks it hands out.
    me: std::sync::Weak<NodeRelay>,
    /// Carries asked for and not yet answered.
    carry_answers: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<bool>>>,
    /// Connections other nodes carry to sessions here: where their client's frames go.
    carried: Mutex<HashMap<(String, u64), mpsc::Sender<ClientFrame>>>,
}

/// A connection carried from here: the node holding its session, and its sink.
type CarryingConnection = (String, Box<dyn ClientSink>);

/// Frames of a carried connection that may wait for its session; past it, the connection
/// is dropped (the client resumes again).
const CARRIED_FRAMES_AHEAD: usize = 64;
/// How long a node waits for another to take a carried connection.
const CARRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Something here that another node's death ends.
enum Dependent {
    /// A member (`side`) of a chat here lives on that node.
    Member {
        pair: Addr<Pair>,
        side: Side,
        away: bool,
    },
    /// A session here is in a chat whose pair runs on that node.
    Chat {
        chat: ChatId,
        session: Addr<Session>,
        away: bool,
    },
}

impl Dependent {
    fn is_live(&self) -> bool {
        match self {
            Dependent::Member { pair, .. } => pair.connected(),
            Dependent::Chat { session, .. } => session.connected(),
        }
    }
}

impl NodeRelay {
    pub fn new(
        node: &str,
        sender: LinkSender,
        keys: Arc<ClusterKeys>,
        commands: redis::aio::ConnectionManager,
        prefix: &str,
    ) -> Arc<NodeRelay> {
        Arc::new_cyclic(|me| NodeRelay {
            me: me.clone(),
            node: node.to_owned(),
            sender,
            sessions: Mutex::new(HashMap::new()),
            pairs: Mutex::new(HashMap::new()),
            watched: Mutex::new(HashMap::new()),
            keys,
            commands,
            prefix: prefix.to_owned(),
            context: std::sync::OnceLock::new(),
            next_conn: std::sync::atomic::AtomicU64::new(1),
            carrying: Mutex::new(HashMap::new()),
            carry_answers: Mutex::new(HashMap::new()),
            carried: Mutex::new(HashMap::new()),
        })
    }

    /// Hands the relay the sessions' context, once the hub has started.
    pub fn attach_context(&self, context: Arc<ChatContext>) {
        let _ = self.context.set(context);
    }

    fn resume_key(&self, token: &TokenHash) -> String {
        format!(
            "{}resume:{}",
            self.prefix,
            self.keys.token_hash(&hex(token))
        )
    }

    /// A session here takes a connection carried from `from` (its number there: `conn`).
    fn take_carried(self: &Arc<Self>, from: &str, conn: u64, token: String, point: ResumePoint) {
        let session = self
            .context
            .get()
            .and_then(|context| context.live_session(&token));
        let Some(session) = session else {
            self.send(from, &Wire::Carried { conn, ok: false });
            return;
        };
        let (frames_in, frames_out) = mpsc::channel(CARRIED_FRAMES_AHEAD);
        self.carried
            .lock()
            .insert((from.to_owned(), conn), frames_in);
        // When the relay lets go of the sender (the client's side ended, or sent faster than
        // its session reads), the session reads the connection's end.
        let frames: FrameStream = Box::pin(futures_util::stream::unfold(
            Some(frames_out),
            |receiver| async move {
                let mut receiver: mpsc::Receiver<ClientFrame> = receiver?;
                match receiver.recv().await {
                    Some(frame) => Some((frame, Some(receiver))),
                    None => Some((ClientFrame::Dropped, None)),
                }
            },
        ));
        let attach = Attach {
            sink: Box::new(CarriedSink {
                relay: self.clone(),
                node: from.to_owned(),
                conn,
                closed: false,
            }),
            frames,
            from: point,
            token: ResumeToken::presented(&token),
        };
        let (relay, from) = (self.clone(), from.to_owned());
        actix::spawn(async move {
            let ok = matches!(
                session.send(SessionCommand::Attach(attach)).await,
                Ok(Ok(()))
            );
            if !ok {
                relay.carried.lock().remove(&(from.clone(), conn));
            }
            relay.send(&from, &Wire::Carried { conn, ok });
        });
    }

    /// A frame a session elsewhere sends its client, whose connection is carried from here.
    fn deliver_out(&self, holder: &str, conn: u64, frame: OutFrame) {
        let mut carrying = self.carrying.lock();
        let Some((_, sink)) = carrying.get_mut(&conn) else {
            return;
        };
        let last = match frame {
            OutFrame::Text(text) => {
                sink.send(Outgoing::Text(text.into()));
                false
            }
            OutFrame::Ping => {
                sink.send(Outgoing::Ping);
                false
            }
            OutFrame::Pong(payload) => {
                sink.send(Outgoing::Pong(payload.into()));
                false
            }
            OutFrame::Close(code) => {
                sink.send(Outgoing::Close {
                    code,
                    reason: close_reason(code),
                });
                true
            }
            OutFrame::Abort => {
                sink.abort();
                true
            }
        };
        // The session there cannot see this outbox: the bound is kept here.
        let bound = self.context.get().map_or(usize::MAX, |context| {
            context.config().session_outbox_max_bytes
        });
        let over = !last && sink.unsent_bytes() > bound;
        if over {
            sink.abort();
        }
        if last || over {
            carrying.remove(&conn);
        }
        drop(carrying);
        if over {
            self.send(
                holder,
                &Wire::In {
                    conn,
                    frame: InFrame::Dropped,
                },
            );
        }
    }

    /// A frame from the client of a connection carried here from `from`.
    fn deliver_in(&self, from: &str, conn: u64, frame: InFrame) {
        let ends = frame.ends();
        let key = (from.to_owned(), conn);
        let mut carried = self.carried.lock();
        let Some(frames) = carried.get(&key) else {
            return;
        };
        if frames.try_send(frame.into_frame()).is_err() || ends {
            // Over the bound (or the end): letting go of the sender ends the stream.
            carried.remove(&key);
        }
    }

    /// A chat here has a member (`side`) on `node`.
    pub(crate) fn watch_member(&self, node: &str, pair: Addr<Pair>, side: Side) {
        let dependent = Dependent::Member {
            pair,
            side,
            away: false,
        };
        self.watched
            .lock()
            .entry(node.to_owned())
            .or_default()
            .push(dependent);
    }

    /// The nodes something here depends on.
    pub fn watched_nodes(&self) -> Vec<String> {
        let mut watched = self.watched.lock();
        watched.retain(|_, dependents| {
            dependents.retain(Dependent::is_live);
            !dependents.is_empty()
        });
        let mut nodes: Vec<String> = watched.keys().cloned().collect();
        for (holder, _) in self.carrying.lock().values() {
            if !nodes.contains(holder) {
                nodes.push(holder.clone());
            }
        }
        nodes
    }

    /// `node` missed a heartbeat: the strangers of its members here see them away; sessions
    /// here whose chat runs there see their stranger away.
    pub fn node_late(&self, node: &str) {
        let mut watched = self.watched.lock();
        for dependent in watched.get_mut(node).into_iter().flatten() {
            match dependent {
                Dependent::Member {
                    pair, side, away, ..
                } if !*away => {
                    *away = true;
                    pair.do_send(MemberAway { side: *side });
                }
                Dependent::Chat {
                    chat,
                    session,
                    away,
                } if !*away => {
                    *away = true;
                    session.do_send(ChatEvent {
                        chat: *chat,
                        seq: 0,
                        frame: ByteString::from_static(crate::protocol::fixed::STRANGER_AWAY),
                    });
                }
                _ => {}
            }
        }
    }

    /// `node` beats on time again after being late: its members are back.
    pub fn node_on_time(&self, node: &str) {
        let mut watched = self.watched.lock();
        for dependent in watched.get_mut(node).into_iter().flatten() {
            match dependent {
                Dependent::Member { pair, side, away } if *away => {
                    *away = false;
                    // Nothing is after seq u64::MAX: no replay, only `stranger_back`.
                    pair.do_send(MemberBack {
                        side: *side,
                        after_seq: u64::MAX,
                        push: true,
                    });
                }
                Dependent::Chat {
                    chat,
                    session,
                    away,
                } if *away => {
                    *away = false;
                    session.do_send(ChatEvent {
                        chat: *chat,
                        seq: 0,
                        frame: ByteString::from_static(crate::protocol::fixed::STRANGER_BACK),
                    });
                }
                _ => {}
            }
        }
    }

    /// `node`'s heartbeat expired: it is gone, and with it its sessions and the chats it ran.
    pub fn node_gone(&self, node: &str) {
        // Connections carried to a session there: it is gone; their clients resume afresh.
        self.carrying.lock().retain(|_, (holder, sink)| {
            if holder != node {
                return true;
            }
            sink.send(Outgoing::Close {
                code: close_code::GOING_AWAY,
                reason: "server shutting down",
            });
            false
        });
        let dependents = self.watched.lock().remove(node).unwrap_or_default();
        for dependent in dependents {
            match dependent {
                Dependent::Member { pair, side, .. } => pair.do_send(EndChat {
                    side,
                    cause: EndCause::Lost,
                }),
                Dependent::Chat { chat, session, .. } => session.do_send(ChatLost { chat }),
            }
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Sends `message` to `node`; `false` when the relay's queue is full (Redis away for long).
    pub fn send(&self, node: &str, message: &Wire) -> bool {
        // Serialising these plain enums cannot fail.
        let payload = serde_json::to_vec(message).expect("a wire message serialises");
        if self.sender.send(node, payload).is_err() {
            crate::metrics::count_relay_refused();
            return false;
        }
        true
    }

    pub fn register_session(&self, pseudonym: &str, addr: Addr<Session>) {
        self.sessions.lock().insert(pseudonym.to_owned(), addr);
    }

    pub(crate) fn pair_started(&self, chat: ChatId, addr: Addr<Pair>) {
        self.pairs.lock().insert(chat, addr);
    }

    pub(crate) fn pair_stopped(&self, chat: ChatId) {
        self.pairs.lock().remove(&chat);
    }

    /// Forgets sessions that have ended (called on the purge tick).
    pub fn prune(&self) {
        self.sessions.lock().retain(|_, addr| addr.connected());
    }

    /// How many sessions and pairs this node answers for, for tests.
    pub fn registered(&self) -> (usize, usize) {
        (self.sessions.lock().len(), self.pairs.lock().len())
    }

    fn session(&self, pseudonym: &str) -> Option<Addr<Session>> {
        self.sessions.lock().get(pseudonym).cloned()
    }

    fn pair(&self, chat: &str) -> Option<Addr<Pair>> {
        let chat = ChatId::parse(chat)?;
        self.pairs.lock().get(&chat).cloned()
    }

    /// Hands every message other nodes send this one to the actor it names, until `inbox`
    /// closes. Runs on the current arbiter.
    pub fn dispatch(
        self: &Arc<Self>,
        mut inbox: mpsc::Receiver<Inbound>,
        matchmaker: Addr<ClusterMatchmaker>,
    ) {
        let relay = self.clone();
        actix::spawn(async move {
            while let Some((from, payload)) = inbox.recv().await {
                match serde_json::from_slice::<Wire>(&payload) {
                    Ok(message) => relay.deliver(&from, message, &matchmaker),
                    // Sealed by a node with the secret, so only a version mismatch gets here.
                    Err(_) => {
                        tracing::warn!("a relay message from another node was not understood")
                    }
                }
            }
        });
    }

    fn deliver(self: &Arc<Self>, from: &str, message: Wire, matchmaker: &Addr<ClusterMatchmaker>) {
        match message {
            Wire::Claim { claim, partner } => matchmaker.do_send(ClaimRequest {
                from: from.to_owned(),
                claim,
                partner,
            }),
            Wire::Claimed {
                claim,
                partner,
                nick,
                interests,
            } => matchmaker.do_send(ClaimAnswer::Claimed {
                from: from.to_owned(),
                claim,
                partner,
                nick,
                interests,
            }),
            Wire::ClaimGone { claim } => matchmaker.do_send(ClaimAnswer::Gone { claim }),
            Wire::Release { partner } => matchmaker.do_send(Release { partner }),
            Wire::Started {
                session,
                chat,
                side,
                mode,
            } => {
                let (Some(chat_id), Some(side), Some(mode)) =
                    (ChatId::parse(&chat), side_of(side), mode_of(&mode))
                else {
                    return;
                };
                let Some(addr) = self.session(&session) else {
                    // Gone: the chat ends for the stranger as if it had left.
                    self.send(
                        from,
                        &Wire::End {
                            chat,
                            side: side_code(side),
                            cause: cause_code(EndCause::Left),
                        },
                    );
                    return;
                };
                let dependent = Dependent::Chat {
                    chat: chat_id,
                    session: addr.clone(),
                    away: false,
                };
                self.watched
                    .lock()
                    .entry(from.to_owned())
                    .or_default()
                    .push(dependent);
                addr.do_send(ChatStarted {
                    chat: chat_id,
                    pair: PairHandle::remote(RemotePair {
                        relay: self.clone(),
                        node: from.to_owned(),
                        chat: chat_id,
                    }),
                    side,
                    mode,
                });
            }
            Wire::Event {
                session,
                chat,
                seq,
                frame,
            } => {
                if let (Some(addr), Some(chat)) = (self.session(&session), ChatId::parse(&chat)) {
                    addr.do_send(ChatEvent {
                        chat,
                        seq,
                        frame: frame.into(),
                    });
                }
            }
            Wire::Ended {
                session,
                chat,
                seq,
                frame,
            } => {
                if let (Some(addr), Some(chat)) = (self.session(&session), ChatId::parse(&chat)) {
                    addr.do_send(ChatEnded {
                        chat,
                        seq,
                        frame: frame.into(),
                    });
                }
            }
            Wire::Post {
                chat,
                side,
                kind,
                body,
                id_len,
            } => {
                let kind = match kind.as_str() {
                    "msg" => EventKind::Msg,
                    "media" => EventKind::Media,
                    _ => return,
                };
                if let (Some(pair), Some(side)) = (self.pair(&chat), side_of(side)) {
                    let body = ChatBody {
                        bytes: body.into_bytes(),
                        id_len,
                    };
                    // Over the pair's mailbox bound: dropped, never echoed, so the client
                    // sends it again (by its id) and nothing acknowledged is lost.
                    if pair.try_send(Post { side, kind, body }).is_err() {
                        crate::metrics::count_relay_refused();
                    }
                }
            }
            Wire::Relay {
                chat,
                side,
                kind,
                frame,
            } => {
                let kind = match kind.as_str() {
                    "typing" => RelayKind::Typing,
                    "signal" => RelayKind::Signal,
                    _ => return,
                };
                if let (Some(pair), Some(side)) = (self.pair(&chat), side_of(side)) {
                    let _ = pair.try_send(Relay {
                        side,
                        kind,
                        frame: frame.into(),
                    });
                }
            }
            Wire::End { chat, side, cause } => {
                if let (Some(pair), Some(side)) = (self.pair(&chat), side_of(side)) {
                    pair.do_send(EndChat {
                        side,
                        cause: cause_of(&cause),
                    });
                }
            }
            Wire::Away { chat, side } => {
                if let (Some(pair), Some(side)) = (self.pair(&chat), side_of(side)) {
                    pair.do_send(MemberAway { side });
                }
            }
            Wire::Carry {
                conn,
                token,
                chat,
                last_seq,
            } => {
                let point = ResumePoint {
                    chat: chat.as_deref().and_then(ChatId::parse),
                    last_seq,
                };
                self.take_carried(from, conn, token, point);
            }
            Wire::Carried { conn, ok } => {
                if let Some(answer) = self.carry_answers.lock().remove(&conn) {
                    let _ = answer.send(ok);
                }
            }
            Wire::In { conn, frame } => self.deliver_in(from, conn, frame),
            Wire::Out { conn, frame } => self.deliver_out(from, conn, frame),
            Wire::Back {
                chat,
                side,
                after_seq,
            } => {
                if let (Some(pair), Some(side)) = (self.pair(&chat), side_of(side)) {
                    pair.do_send(MemberBack {
                        side,
                        after_seq,
                        push: true,
                    });
                }
            }
        }
    }
}

/// A member whose session lives on another node, as its pair sees it.
pub struct RemoteSession {
    pub relay: Arc<NodeRelay>,
    pub node: String,
    /// The session's pseudonym.
    pub session: String,
}

impl RemoteSession {
    pub(crate) fn started(&self, started: &ChatStarted) {
        self.relay.send(
            &self.node,
            &Wire::Started {
                session: self.session.clone(),
                chat: started.chat.as_str().to_owned(),
                side: side_code(started.side),
                mode: started.mode.as_str().to_owned(),
            },
        );
    }

    pub(crate) fn event(&self, event: &ChatEvent) {
        self.relay.send(
            &self.node,
            &Wire::Event {
                session: self.session.clone(),
                chat: event.chat.as_str().to_owned(),
                seq: event.seq,
                frame: event.frame.to_string(),
            },
        );
    }

    pub(crate) fn ended(&self, ended: &ChatEnded) {
        self.relay.send(
            &self.node,
            &Wire::Ended {
                session: self.session.clone(),
                chat: ended.chat.as_str().to_owned(),
                seq: ended.seq,
                frame: ended.frame.to_string(),
            },
        );
    }
}

/// A pair on another node, as a member's session here sees it.
#[derive(Clone)]
pub struct RemotePair {
    relay: Arc<NodeRelay>,
    node: String,
    chat: ChatId,
}

impl std::fmt::Debug for RemotePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotePair")
            .field("chat", &self.chat)
            .finish()
    }
}

impl RemotePair {
    fn chat(&self) -> String {
        self.chat.as_str().to_owned()
    }

    pub(crate) fn post(
        &self,
        side: Side,
        kind: EventKind,
        body: &ChatBody,
    ) -> Result<(), PostRefused> {
        let kind = match kind {
            EventKind::Msg => "msg",
            EventKind::Media => "media",
            EventKind::Matched => return Ok(()),
        };
        // Bodies are the JSON text the session parsed: UTF-8.
        let Ok(text) = std::str::from_utf8(&body.bytes) else {
            return Ok(());
        };
        let sent = self.relay.send(
            &self.node,
            &Wire::Post {
                chat: self.chat(),
                side: side_code(side),
                kind: kind.into(),
                body: text.to_owned(),
                id_len: body.id_len,
            },
        );
        if sent {
            Ok(())
        } else {
            Err(PostRefused::Busy)
        }
    }

    pub(crate) fn relay(
        &self,
        side: Side,
        kind: RelayKind,
        frame: &ByteString,
    ) -> Result<(), PostRefused> {
        let kind = match kind {
            RelayKind::Typing => "typing",
            RelayKind::Signal => "signal",
        };
        let message = Wire::Relay {
            chat: self.chat(),
            side: side_code(side),
            kind: kind.into(),
            frame: frame.to_string(),
        };
        if self.relay.send(&self.node, &message) {
            Ok(())
        } else {
            Err(PostRefused::Busy)
        }
    }

    pub(crate) fn end(&self, side: Side, cause: EndCause) {
        let message = Wire::End {
            chat: self.chat(),
            side: side_code(side),
            cause: cause_code(cause),
        };
        self.relay.send(&self.node, &message);
    }

    pub(crate) fn away(&self, side: Side) {
        self.relay.send(
            &self.node,
            &Wire::Away {
                chat: self.chat(),
                side: side_code(side),
            },
        );
    }

    pub(crate) fn back(&self, side: Side, after_seq: u64) {
        let message = Wire::Back {
            chat: self.chat(),
            side: side_code(side),
            after_seq,
        };
        self.relay.send(&self.node, &message);
    }
}

/// The sink of a connection carried to a session here from another node: what the session
/// sends crosses back to that node.
struct CarriedSink {
    relay: Arc<NodeRelay>,
    node: String,
    conn: u64,
    closed: bool,
}

impl CarriedSink {
    fn out(&mut self, frame: OutFrame) {
        let last = matches!(frame, OutFrame::Close(_) | OutFrame::Abort);
        self.relay.send(
            &self.node,
            &Wire::Out {
                conn: self.conn,
                frame,
            },
        );
        if last {
            self.closed = true;
            self.relay
                .carried
                .lock()
                .remove(&(self.node.clone(), self.conn));
        }
    }
}

impl ClientSink for CarriedSink {
    fn send(&mut self, frame: Outgoing) {
        self.out(OutFrame::of(&frame));
    }

    /// The carrying node keeps this connection's outbox, and its bound.
    fn unsent_bytes(&self) -> usize {
        0
    }

    fn abort(&mut self) {
        self.out(OutFrame::Abort);
    }

    fn close_at_once(&mut self, code: u16, _reason: &'static str) {
        self.out(OutFrame::Close(code));
    }
}

impl Drop for CarriedSink {
    /// A session that lets go of its connection without closing it (it stopped) ends it.
    fn drop(&mut self) {
        if !self.closed {
            self.out(OutFrame::Abort);
        }
    }
}

impl ClusterLink for NodeRelay {
    fn session_here(&self, token: &TokenHash, ttl: std::time::Duration) {
        let (key, node, mut commands) = (
            self.resume_key(token),
            self.node.clone(),
            self.commands.clone(),
        );
        let ttl_ms = ttl.as_millis().max(1) as u64;
        actix::spawn(async move {
            let _: redis::RedisResult<()> = redis::cmd("SET")
                .arg(&key)
                .arg(&node)
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut commands)
                .await;
        });
    }

    fn session_gone(&self, token: &TokenHash) {
        let (key, mut commands) = (self.resume_key(token), self.commands.clone());
        actix::spawn(async move {
            let _: redis::RedisResult<()> =
                redis::cmd("DEL").arg(&key).query_async(&mut commands).await;
        });
    }

    fn carry(
        &self,
        token: String,
        from: ResumePoint,
        sink: Box<dyn ClientSink>,
        frames: FrameStream,
    ) -> CarryAnswer {
        let relay = self.me.upgrade();
        Box::pin(async move {
            let Some(relay) = relay else {
                return Err((sink, frames));
            };
            let Some(hash) = hash_presented_token(&token) else {
                return Err((sink, frames));
            };
            let mut commands = relay.commands.clone();
            let holder: Option<String> = redis::cmd("GET")
                .arg(relay.resume_key(&hash))
                .query_async(&mut commands)
                .await
                .ok()
                .flatten();
            let Some(holder) = holder.filter(|holder| *holder != relay.node) else {
                return Err((sink, frames));
            };
            let conn = relay
                .next_conn
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (answer, answered) = tokio::sync::oneshot::channel();
            relay.carry_answers.lock().insert(conn, answer);
            // In place before the ask: the session's hello may come before its answer.
            relay.carrying.lock().insert(conn, (holder.clone(), sink));
            let asked = Wire::Carry {
                conn,
                token,
                chat: from.chat.map(|chat| chat.as_str().to_owned()),
                last_seq: from.last_seq,
            };
            let taken = relay.send(&holder, &asked)
                && matches!(
                    tokio::time::timeout(CARRY_TIMEOUT, answered).await,
                    Ok(Ok(true))
                );
            relay.carry_answers.lock().remove(&conn);
            if !taken {
                return match relay.carrying.lock().remove(&conn) {
                    Some((_, sink)) => Err((sink, frames)),
                    // Closed meanwhile by the other side: nothing to give back.
                    None => Ok(()),
                };
            }
            // The client's frames go to the holder until its connection ends.
            let forward = relay.clone();
            actix::spawn(async move {
                let mut frames = frames;
                let mut ended = false;
                while let Some(frame) = futures_util::StreamExt::next(&mut frames).await {
                    let frame = InFrame::of(&frame);
                    ended = frame.ends();
                    forward.send(&holder, &Wire::In { conn, frame });
                    if ended {
                        break;
                    }
                }
                if !ended {
                    forward.send(
                        &holder,
                        &Wire::In {
                            conn,
                            frame: InFrame::Dropped,
                        },
                    );
                }
                // A moment for the session's closing reply, then the sink goes.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                forward.carrying.lock().remove(&conn);
            });
            Ok(())
        })
    }
}

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

use crate::client_key::RemoteClient;
use crate::cluster::link::{Inbound, LinkSender};
use crate::cluster::secret::{hex, ClusterKeys};
use crate::cluster_matchmaker::{ClaimAnswer, ClaimRequest, ClusterMatchmaker, Release};
use crate::context::{Arriving, ChatContext, ClusterLink, TakeOverAnswer};
use crate::event_log::{EventKind, Side};
use crate::handover::{MovedSession, MovedState};
use crate::ids::ChatId;
use crate::matchmaker::MatchmakerHandle;
use crate::pair::{
    EndCause, EndChat, MemberAway, MemberBack, MemberGone, MemberLink, MovedHere, NodeLate,
    NodeOnTime, Pair, PairHandle, Post, PostRefused, Relay, RelayKind,
};
use crate::protocol::{ChatBody, Mode, ReportReason, ResumePoint};
use crate::purge::PurgeHandle;
use crate::registry::{hash_presented_token, SessionCommand, TokenHash};
use crate::session::{
    ArrivingChat, ChatEnded, ChatEvent, ChatLost, ChatStarted, PostBounced, ReportedHere, Session,
};

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
        /// Its client, as `ClientKey::for_other_nodes` tells of it (reports count under it).
        client: String,
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
        /// The member's session moved to the sender: its name there, and its client (as
        /// `ClientKey::for_other_nodes` tells of it).
        #[serde(default)]
        moved: Option<(String, String)>,
    },
    /// A client resumed on the sender with a session held here: move the session there.
    Move {
        conn: u64,
        token: String,
    },
    /// The session of move `conn`, written down; `None` when no session here had the token.
    Moved {
        conn: u64,
        session: Option<MovedSession>,
    },
    /// A member's post that its chat here could not take (its mailbox was full): the member
    /// is told, as on one node, and sends it again.
    Bounced {
        chat: String,
        side: u8,
    },
    /// Pair → a member's node: its stranger reported it; the report counts against its client
    /// there. The reporter: the node that knows its client, and what that node tells of it.
    Reported {
        session: String,
        reporter_node: String,
        reporter: String,
    },
    /// A member's message came for a chat that is no longer here. Its `ended` went before,
    /// in order, unless the member's session moved meanwhile and it went to the old node: then
    /// this ends the chat for the member (`stranger_lost`) instead of leaving it waiting.
    ChatGone {
        chat: String,
    },
    /// A chat's pair here sent to a member's session there that is gone (and did not move):
    /// the chat ends for the stranger as if the member's grace had run out.
    Gone {
        chat: String,
        session: String,
    },
}

pub(crate) fn side_code(side: Side) -> u8 {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

pub(crate) fn side_of(code: u8) -> Option<Side> {
    match code {
        0 => Some(Side::A),
        1 => Some(Side::B),
        _ => None,
    }
}

pub(crate) fn mode_of(text: &str) -> Option<Mode> {
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
    /// What sessions moving here start with, once the hub has started.
    hub: std::sync::OnceLock<HubParts>,
    next_move: std::sync::atomic::AtomicU64,
    /// This relay itself, for the futures and tasks it hands out.
    me: std::sync::Weak<NodeRelay>,
    /// Names of sessions that moved from here to another node, and when: what comes for them
    /// meanwhile is theirs to replay there, not a sign they are gone.
    moved_out: Mutex<HashMap<String, std::time::Instant>>,
    /// Moves asked of other nodes and not yet answered.
    move_answers: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<Option<MovedSession>>>>,
}

/// The hub's parts a session moving here starts with.
struct HubParts {
    context: Arc<ChatContext>,
    matchmaker: MatchmakerHandle,
    purge: PurgeHandle,
}

/// How long a node waits for another to hand over a session: longer than it takes the
/// cluster to call a silent node dead (a heartbeat TTL and a watch period, about 6 s), so a
/// holder that answers later than this has been taken for dead, and its chats ended, already.
const MOVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(8);
/// How long a node remembers that a session moved away from it.
const MOVED_OUT_KEPT: std::time::Duration = std::time::Duration::from_secs(60);

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
            hub: std::sync::OnceLock::new(),
            next_move: std::sync::atomic::AtomicU64::new(1),
            move_answers: Mutex::new(HashMap::new()),
            moved_out: Mutex::new(HashMap::new()),
        })
    }

    /// Hands the relay what sessions moving here start with, once the hub has started.
    pub fn attach_hub(
        &self,
        context: Arc<ChatContext>,
        matchmaker: MatchmakerHandle,
        purge: PurgeHandle,
    ) {
        let _ = self.hub.set(HubParts {
            context,
            matchmaker,
            purge,
        });
    }

    fn resume_key(&self, token: &TokenHash) -> String {
        format!(
            "{}resume:{}",
            self.prefix,
            self.keys.token_hash(&hex(token))
        )
    }

    /// `from` asks for the session holding `token` (its client resumed there): the session
    /// writes itself down and stops here, and the answer goes back.
    fn move_out(self: &Arc<Self>, from: &str, conn: u64, token: String) {
        let session = self
            .hub
            .get()
            .and_then(|hub| hub.context.live_session(&token));
        let Some(session) = session else {
            self.send(
                from,
                &Wire::Moved {
                    conn,
                    session: None,
                },
            );
            return;
        };
        // Marked before the session goes, so no frame for it can find it gone meanwhile.
        let name = hash_presented_token(&token).map(|hash| self.keys.session_name(&hash));
        if let Some(name) = &name {
            let now = std::time::Instant::now();
            self.moved_out.lock().insert(name.clone(), now);
        }
        let (relay, from) = (self.clone(), from.to_owned());
        actix::spawn(async move {
            let (answer, answered) = tokio::sync::oneshot::channel();
            let mut moved = match session.send(SessionCommand::MoveOut(answer)).await {
                Ok(_) => answered.await.ok().flatten(),
                Err(_) => None,
            };
            if let (None, Some(name)) = (&moved, &name) {
                relay.moved_out.lock().remove(name);
            }
            if let Some(MovedSession {
                state: MovedState::Chatting { pair_node, .. },
                ..
            }) = &mut moved
            {
                // A pair here is named by this node's id there.
                pair_node.get_or_insert_with(|| relay.node.clone());
            }
            relay.send(
                &from,
                &Wire::Moved {
                    conn,
                    session: moved,
                },
            );
        });
    }

    /// A session handed over after its client had been given up on (`MOVE_TIMEOUT`): its
    /// client has a fresh session by now. Its chat ends as if its grace had run out, so its
    /// stranger is not left waiting on no one.
    fn moved_too_late(self: &Arc<Self>, late: MovedSession) {
        let MovedState::Chatting {
            chat,
            pair_node: Some(node),
            side,
            ..
        } = late.state
        else {
            return;
        };
        if node != self.node {
            let cause = cause_code(EndCause::Lost);
            self.send(&node, &Wire::End { chat, side, cause });
        } else if let (Some(pair), Some(side)) = (self.pair(&chat), side_of(side)) {
            let cause = EndCause::Lost;
            pair.do_send(EndChat { side, cause });
        }
    }

    /// Starts a session that moved here from another node, with the client's connection.
    fn start_moved(
        self: &Arc<Self>,
        token: &str,
        from: ResumePoint,
        arriving: Arriving,
        moved: MovedSession,
    ) -> Result<(), Arriving> {
        let Some(hub) = self.hub.get() else {
            return Err(arriving);
        };
        let chat = match &moved.state {
            MovedState::Chatting {
                chat,
                pair_node: Some(node),
                ..
            } => ChatId::parse(chat).map(|chat| {
                if *node == self.node {
                    self.pair(chat.as_str()).map_or(ArrivingChat::Gone, |pair| {
                        ArrivingChat::Found(PairHandle::local(pair))
                    })
                } else {
                    ArrivingChat::Found(PairHandle::remote(RemotePair {
                        relay: self.clone(),
                        node: node.clone(),
                        chat,
                    }))
                }
            }),
            _ => None,
        };
        let remote_pair = match &chat {
            Some(ArrivingChat::Found(pair)) => pair.node().map(str::to_owned),
            _ => None,
        };
        let chat_id = match &moved.state {
            MovedState::Chatting { chat, .. } => ChatId::parse(chat),
            _ => None,
        };
        let Arriving { slot, sink, frames } = arriving;
        let session = Session::start_moved(
            hub.context.clone(),
            hub.matchmaker.clone(),
            hub.purge.clone(),
            slot,
            (sink, frames),
            token,
            from,
            moved,
            chat,
        );
        if let (Some(session), Some(node), Some(chat)) = (session, remote_pair, chat_id) {
            self.watch_chat(&node, chat, session);
        }
        Ok(())
    }

    /// A session here is in a chat whose pair runs on `node`.
    fn watch_chat(&self, node: &str, chat: ChatId, session: Addr<Session>) {
        let away = false;
        self.watch(
            node,
            Dependent::Chat {
                chat,
                session,
                away,
            },
        );
    }

    fn watch(&self, node: &str, dependent: Dependent) {
        let mut watched = self.watched.lock();
        watched.entry(node.to_owned()).or_default().push(dependent);
    }

    /// The pair of `chat`, if it runs here; else `from` is told the chat is gone.
    fn pair_or_gone(&self, from: &str, chat: &str) -> Option<Addr<Pair>> {
        // A pair that has stopped takes no message: the same as no pair.
        let pair = self.pair(chat).filter(|pair| pair.connected());
        if pair.is_none() {
            let chat = chat.to_owned();
            self.send(from, &Wire::ChatGone { chat });
        }
        pair
    }

    /// The sessions here in chat `chat`, whose pair runs on `node`.
    fn sessions_in(&self, node: &str, chat: ChatId) -> Vec<Addr<Session>> {
        let watched = self.watched.lock();
        let dependents = watched.get(node).into_iter().flatten();
        dependents
            .filter_map(|dependent| match dependent {
                Dependent::Chat {
                    chat: watched,
                    session,
                    ..
                } if *watched == chat => Some(session.clone()),
                _ => None,
            })
            .collect()
    }

    /// A member (`side`) of a chat here moved: to `node`, or (`None`) here.
    pub(crate) fn rewatch_member(&self, node: Option<&str>, pair: Addr<Pair>, side: Side) {
        {
            let mut watched = self.watched.lock();
            for dependents in watched.values_mut() {
                dependents.retain(|dependent| {
                    !matches!(dependent, Dependent::Member { pair: watched, side: s, .. }
                        if *watched == pair && *s == side)
                });
            }
        }
        if let Some(node) = node {
            self.watch_member(node, pair, side);
        }
    }

    /// A chat here has a member (`side`) on `node`.
    pub(crate) fn watch_member(&self, node: &str, pair: Addr<Pair>, side: Side) {
        let away = false;
        self.watch(node, Dependent::Member { pair, side, away });
    }

    /// The nodes something here depends on.
    pub fn watched_nodes(&self) -> Vec<String> {
        let mut watched = self.watched.lock();
        watched.retain(|_, dependents| {
            dependents.retain(Dependent::is_live);
            !dependents.is_empty()
        });
        watched.keys().cloned().collect()
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
                    pair.do_send(NodeLate { side: *side });
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
                    pair.do_send(NodeOnTime { side: *side });
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
        let now = std::time::Instant::now();
        self.moved_out
            .lock()
            .retain(|_, moved| now.duration_since(*moved) < MOVED_OUT_KEPT);
    }

    /// How many sessions and pairs this node answers for, for tests.
    pub fn registered(&self) -> (usize, usize) {
        (self.sessions.lock().len(), self.pairs.lock().len())
    }

    /// The live session here named `pseudonym` (a stopped one is as good as none).
    fn session(&self, pseudonym: &str) -> Option<Addr<Session>> {
        let sessions = self.sessions.lock();
        sessions
            .get(pseudonym)
            .filter(|addr| addr.connected())
            .cloned()
    }

    /// A chat's pair (on `from`) sent to a session here that is not (any more): unless it
    /// moved to another node (its chat hears from there), the pair is told it is gone.
    fn no_such_session(&self, from: &str, session: String, chat: String) {
        if !self.moved_out.lock().contains_key(&session) {
            self.send(from, &Wire::Gone { chat, session });
        }
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
                client,
            } => matchmaker.do_send(ClaimAnswer::Claimed {
                client: RemoteClient {
                    node: from.to_owned(),
                    client,
                },
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
                self.watch_chat(from, chat_id, addr.clone());
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
            } => match (self.session(&session), ChatId::parse(&chat)) {
                (Some(addr), Some(chat)) => addr.do_send(ChatEvent {
                    chat,
                    seq,
                    frame: frame.into(),
                }),
                (None, Some(_)) => self.no_such_session(from, session, chat),
                _ => {}
            },
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
                if let (Some(pair), Some(side)) = (self.pair_or_gone(from, &chat), side_of(side)) {
                    let body = ChatBody {
                        bytes: body.into_bytes(),
                        id_len,
                    };
                    // Over the pair's mailbox bound: refused, never echoed, and the member
                    // told so, as on one node.
                    if pair.try_send(Post { side, kind, body }).is_err() {
                        crate::metrics::count_relay_refused();
                        let side = side_code(side);
                        self.send(from, &Wire::Bounced { chat, side });
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
                if let (Some(pair), Some(side)) = (self.pair_or_gone(from, &chat), side_of(side)) {
                    let _ = pair.try_send(Relay {
                        side,
                        kind,
                        frame: frame.into(),
                    });
                }
            }
            Wire::End { chat, side, cause } => {
                if let (Some(pair), Some(side)) = (self.pair_or_gone(from, &chat), side_of(side)) {
                    pair.do_send(EndChat {
                        side,
                        cause: cause_of(&cause),
                    });
                }
            }
            Wire::Away { chat, side } => {
                if let (Some(pair), Some(side)) = (self.pair_or_gone(from, &chat), side_of(side)) {
                    pair.do_send(MemberAway { side });
                }
            }
            Wire::Move { conn, token } => self.move_out(from, conn, token),
            Wire::Moved { conn, session } => {
                let waiting = self.move_answers.lock().remove(&conn);
                match (waiting, session) {
                    (Some(answer), session) => {
                        if let Err(Some(late)) = answer.send(session) {
                            self.moved_too_late(late);
                        }
                    }
                    (None, Some(late)) => self.moved_too_late(late),
                    (None, None) => {}
                }
            }
            Wire::Bounced { chat, side } => {
                let (Some(chat), Some(side)) = (ChatId::parse(&chat), side_of(side)) else {
                    return;
                };
                for session in self.sessions_in(from, chat) {
                    session.do_send(PostBounced { chat, side });
                }
            }
            Wire::Reported {
                session,
                reporter_node,
                reporter,
            } => {
                if let Some(addr) = self.session(&session) {
                    let reporter = RemoteClient {
                        node: reporter_node,
                        client: reporter,
                    };
                    addr.do_send(ReportedHere { reporter });
                }
            }
            Wire::Gone { chat, session } => {
                if let Some(pair) = self.pair(&chat) {
                    pair.do_send(MemberGone {
                        node: from.to_owned(),
                        session,
                    });
                }
            }
            Wire::ChatGone { chat } => {
                let Some(chat) = ChatId::parse(&chat) else {
                    return;
                };
                for session in self.sessions_in(from, chat) {
                    session.do_send(ChatLost { chat });
                }
            }
            Wire::Back {
                chat,
                side,
                after_seq,
                moved,
            } => {
                let Some(side) = side_of(side) else { return };
                if let Some(pair) = self.pair_or_gone(from, &chat) {
                    pair.do_send(MemberBack {
                        side,
                        after_seq,
                        push: true,
                        moved: moved.map(|(session, client)| {
                            let link = MemberLink::Remote(RemoteSession {
                                relay: self.clone(),
                                node: from.to_owned(),
                                session,
                            });
                            let origin = RemoteClient {
                                node: from.to_owned(),
                                client,
                            };
                            (link, origin.key(), Some(origin))
                        }),
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

    pub(crate) fn reported(&self, reporter: RemoteClient) {
        self.relay.send(
            &self.node,
            &Wire::Reported {
                session: self.session.clone(),
                reporter_node: reporter.node,
                reporter: reporter.client,
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

    /// `moved`: the member's session just moved here.
    pub(crate) fn back(&self, side: Side, after_seq: u64, moved: Option<&MovedHere>) {
        let moved = moved.map(|moved| {
            let name = self.relay.keys.session_name(&moved.token);
            self.relay.register_session(&name, moved.session.clone());
            (name, moved.client.for_other_nodes())
        });
        let message = Wire::Back {
            chat: self.chat(),
            side: side_code(side),
            after_seq,
            moved,
        };
        self.relay.send(&self.node, &message);
    }

    /// The node the pair runs on.
    pub(crate) fn node(&self) -> &str {
        &self.node
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
            // Under load an answer can time out (the command may or may not have run); the
            // key would then stay until its TTL, so the DEL is tried again, a few times.
            for attempt in 0..3 {
                let deleted: redis::RedisResult<()> =
                    redis::cmd("DEL").arg(&key).query_async(&mut commands).await;
                if deleted.is_ok() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1 << attempt)).await;
            }
        });
    }

    fn take_over(&self, token: String, from: ResumePoint, arriving: Arriving) -> TakeOverAnswer {
        let relay = self.me.upgrade();
        Box::pin(async move {
            let Some(relay) = relay else {
                return Err(arriving);
            };
            let Some(hash) = hash_presented_token(&token) else {
                return Err(arriving);
            };
            let mut commands = relay.commands.clone();
            let holder: Option<String> = redis::cmd("GET")
                .arg(relay.resume_key(&hash))
                .query_async(&mut commands)
                .await
                .ok()
                .flatten();
            let Some(holder) = holder.filter(|holder| *holder != relay.node) else {
                return Err(arriving);
            };
            // A holder whose heartbeat is gone is dead (its key outlives it): no one to ask.
            let alive: bool = redis::cmd("EXISTS")
                .arg(crate::cluster::heartbeat::heartbeat_key(
                    &relay.prefix,
                    &holder,
                ))
                .query_async(&mut commands)
                .await
                .unwrap_or(false);
            if !alive {
                return Err(arriving);
            }
            let conn = relay
                .next_move
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (answer, answered) = tokio::sync::oneshot::channel();
            relay.move_answers.lock().insert(conn, answer);
            let asked = Wire::Move {
                conn,
                token: token.clone(),
            };
            let moved = if relay.send(&holder, &asked) {
                tokio::time::timeout(MOVE_TIMEOUT, answered)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten()
            } else {
                None
            };
            relay.move_answers.lock().remove(&conn);
            crate::metrics::count_session_move(moved.is_some());
            match moved {
                Some(moved) => relay.start_moved(&token, from, arriving, moved),
                None => Err(arriving),
            }
        })
    }
}

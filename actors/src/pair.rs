//! The pair actor: one per chat, started by the matchmaker on the first member's arbiter. It is
//! the only writer of the chat's event log: it numbers every chat event (`seq`), logs it, and
//! fans it out to both members' session actors; on resume it replays what a member missed;
//! when the chat ends it sends each member its `ended`, wipes the log and stops.

use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;
use tokio::time::Instant;
use zeroize::Zeroize;

use crate::abuse::AbuseDesk;
use crate::client_key::{ClientKey, RemoteClient};
use crate::event_log::{EventKind, EventLog, LogEntry, Side};
use crate::ids::{ChatId, SessionId};
use crate::matchmaker::{ChatFinished, MatchmakerHandle};
use crate::metrics::PairCounters;
use crate::protocol::{
    fixed, render_chat_event, render_ended, render_matched, ChatBody, EndedReason, MatchedFrame,
    Mode, ReportReason,
};
use crate::registry::TokenHash;
use crate::remote::{NodeRelay, RemotePair, RemoteSession};
use crate::session::{ChatEnded, ChatEvent, ChatStarted, Session};

/// Why a member ends the chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// `leave`, `next`, or a close frame.
    Left,
    Reported(ReportReason),
    /// The member's resume grace ran out.
    Lost,
    Shutdown,
}

/// One member as the pair knows it.
pub struct Member {
    /// Its session's id on this node (0 for a member on another node).
    pub session: SessionId,
    pub link: MemberLink,
    /// Whom a report against this member counts against.
    pub client: ClientKey,
    /// For a client of another node: that node, and what it told of the client.
    pub origin: Option<RemoteClient>,
    pub nick: Option<String>,
}

/// What the matchmaker decided about a new chat.
pub struct PairSpec {
    pub mode: Mode,
    pub members: [Member; 2],
    pub common: Vec<String>,
    pub initiator: Side,
    pub log_max_events: usize,
    pub log_max_bytes: usize,
    pub mailbox_capacity: usize,
    pub matchmaker: MatchmakerHandle,
    pub counters: PairCounters,
    pub abuse: Arc<AbuseDesk>,
    /// The relay to other nodes, when members may live there (a cluster).
    pub relay: Option<Arc<NodeRelay>>,
    /// The members' names in the cluster's queue, for the cooldown at the chat's end.
    pub queue_names: Option<[String; 2]>,
}

/// Where a member's session lives: here, or on another node of the cluster.
pub enum MemberLink {
    Local(Addr<Session>),
    Remote(RemoteSession),
}

impl MemberLink {
    fn started(&self, started: ChatStarted) {
        match self {
            MemberLink::Local(addr) => addr.do_send(started),
            MemberLink::Remote(remote) => remote.started(&started),
        }
    }

    fn event(&self, event: ChatEvent) {
        match self {
            MemberLink::Local(addr) => addr.do_send(event),
            MemberLink::Remote(remote) => remote.event(&event),
        }
    }

    fn ended(&self, ended: ChatEnded) {
        match self {
            MemberLink::Local(addr) => addr.do_send(ended),
            MemberLink::Remote(remote) => remote.ended(&ended),
        }
    }
}

pub struct Pair {
    chat: ChatId,
    mode: Mode,
    members: [Member; 2],
    away: [bool; 2],
    /// Away because the member's own connection dropped (not only its node being late).
    dropped: [bool; 2],
    common: Vec<String>,
    initiator: Side,
    log: EventLog,
    last_seq: u64,
    mailbox_capacity: usize,
    matchmaker: MatchmakerHandle,
    counters: PairCounters,
    abuse: Arc<AbuseDesk>,
    ended: bool,
    started: Instant,
    relay: Option<Arc<NodeRelay>>,
    queue_names: Option<[String; 2]>,
}

impl Pair {
    pub fn new(spec: PairSpec) -> Self {
        Self {
            chat: ChatId::generate(),
            mode: spec.mode,
            members: spec.members,
            away: [false; 2],
            dropped: [false; 2],
            common: spec.common,
            initiator: spec.initiator,
            log: EventLog::new(spec.log_max_events, spec.log_max_bytes),
            last_seq: 0,
            mailbox_capacity: spec.mailbox_capacity,
            matchmaker: spec.matchmaker,
            counters: spec.counters,
            abuse: spec.abuse,
            ended: false,
            started: Instant::now(),
            relay: spec.relay,
            queue_names: spec.queue_names,
        }
    }

    fn member(&self, side: Side) -> &Member {
        &self.members[side.index()]
    }

    fn send_to(&self, side: Side, seq: u64, frame: ByteString) {
        self.member(side).link.event(ChatEvent {
            chat: self.chat,
            seq,
            frame,
        });
    }

    /// Renders a logged event as `viewer` sees it: its sender's copy (the echo) carries the
    /// client's message id, the stranger's does not.
    fn render(&self, entry: &LogEntry, viewer: Side) -> ByteString {
        let (from_you, body) = if entry.side == viewer {
            (true, &entry.body[..])
        } else {
            (false, entry.shared_part())
        };
        match entry.kind {
            EventKind::Matched => render_matched(MatchedFrame {
                seq: entry.seq,
                chat: self.chat,
                mode: self.mode,
                common: &self.common,
                stranger_nick: self.member(viewer.other()).nick.as_deref(),
                initiator: self.initiator == viewer,
            }),
            EventKind::Media => render_chat_event("media", entry.seq, from_you, body),
            EventKind::Msg => render_chat_event("msg", entry.seq, from_you, body),
        }
    }

    /// Numbers, logs and fans out one chat event.
    fn emit(&mut self, kind: EventKind, side: Side, body: ChatBody) {
        let shared_bytes = (body.bytes.len() - body.id_len) as u64;
        match kind {
            EventKind::Msg => self.counters.message_relayed(shared_bytes),
            EventKind::Media => {
                self.counters.media.increment(1);
                self.counters.media_bytes.increment(shared_bytes);
            }
            EventKind::Matched => {}
        }
        self.last_seq += 1;
        let entry = LogEntry {
            seq: self.last_seq,
            kind,
            side,
            body: body.bytes,
            id_len: body.id_len,
        };
        for viewer in [Side::A, Side::B] {
            let frame = self.render(&entry, viewer);
            self.send_to(viewer, entry.seq, frame);
        }
        self.log.push(entry);
    }

    /// A member sent a message again with an id the log holds from it (its connection dropped
    /// before the echo came, v1.1): it gets the original echo, with its seq, and the stranger
    /// nothing. Returns false when the log holds no such message, which makes it a new one.
    fn echo_again(&self, side: Side, kind: EventKind, body: &ChatBody) -> bool {
        let Some(entry) = self
            .log
            .sent_with_id(side, kind, &body.bytes[..body.id_len])
        else {
            return false;
        };
        self.counters.resent_messages.increment(1);
        // Sent as seq 0, which the session passes on as it comes: the client may already
        // have seen this seq (in a replay), and must get the answer to what it just sent.
        self.send_to(side, 0, self.render(entry, side));
        true
    }

    fn end(&mut self, by: Side, cause: EndCause, ctx: &mut Context<Self>) {
        if self.ended {
            return;
        }
        self.ended = true;
        if let EndCause::Reported(reason) = cause {
            self.counters.reported(reason);
            let (reported, reporter) = (self.member(by.other()), self.member(by));
            match &reported.link {
                // The reported member's node knows its client: the report counts there.
                MemberLink::Remote(remote) => {
                    let reporter = reporter.origin.clone().unwrap_or_else(|| RemoteClient {
                        node: remote.relay.node().to_owned(),
                        client: reporter.client.for_other_nodes(),
                    });
                    remote.reported(reporter);
                }
                MemberLink::Local(_) => {
                    let origin = reporter.origin.as_ref().map(RemoteClient::origin);
                    let now = Instant::now();
                    let (reported, reporter) = (reported.client, reporter.client);
                    if self
                        .abuse
                        .report_from(reported, reporter, origin.as_deref(), now)
                    {
                        tracing::info!("a client key was banned after reports");
                    }
                }
            }
        }
        self.last_seq += 1;
        let seq = self.last_seq;
        let reasons = match cause {
            EndCause::Left => [Some(EndedReason::YouLeft), Some(EndedReason::StrangerLeft)],
            EndCause::Reported(_) => [
                Some(EndedReason::YouReported),
                Some(EndedReason::StrangerLeft),
            ],
            // The lost member's session is stopping; only the stranger hears of it.
            EndCause::Lost => [None, Some(EndedReason::StrangerLost)],
            EndCause::Shutdown => [
                Some(EndedReason::ServerShutdown),
                Some(EndedReason::ServerShutdown),
            ],
        };
        for (viewer, reason) in [by, by.other()].into_iter().zip(reasons) {
            if let Some(reason) = reason {
                self.member(viewer).link.ended(ChatEnded {
                    chat: self.chat,
                    seq,
                    frame: render_ended(seq, reason),
                });
            }
        }
        self.counters.chat_ended(self.mode, self.started.elapsed());
        self.counters
            .event_log_evictions
            .increment(self.log.evicted());
        self.matchmaker.chat_finished(ChatFinished {
            sessions: [self.members[0].session, self.members[1].session],
            queue_names: self.queue_names.take(),
        });
        ctx.stop();
    }
}

impl Actor for Pair {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        if let Some(relay) = &self.relay {
            relay.pair_started(self.chat, ctx.address());
            for side in [Side::A, Side::B] {
                if let MemberLink::Remote(remote) = &self.member(side).link {
                    relay.watch_member(&remote.node, ctx.address(), side);
                }
            }
        }
        for side in [Side::A, Side::B] {
            self.member(side).link.started(ChatStarted {
                chat: self.chat,
                pair: PairHandle {
                    link: PairLink::Local(ctx.address()),
                },
                side,
                mode: self.mode,
            });
        }
        let nothing = ChatBody {
            bytes: Vec::new(),
            id_len: 0,
        };
        self.emit(EventKind::Matched, self.initiator, nothing);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(relay) = &self.relay {
            relay.pair_stopped(self.chat);
        }
        // Nothing of the chat outlives it: the log's bodies and the nicks are zeroized.
        self.log.wipe();
        for member in &mut self.members {
            if let Some(nick) = member.nick.as_mut() {
                nick.zeroize();
            }
        }
        for interest in &mut self.common {
            interest.zeroize();
        }
    }
}

/// How sessions reach their chat's pair actor: one method per thing a member can do.
#[derive(Clone, Debug)]
pub struct PairHandle {
    link: PairLink,
}

/// Where the pair actor lives: here, or on another node of the cluster.
#[derive(Clone, Debug)]
enum PairLink {
    Local(Addr<Pair>),
    Remote(RemotePair),
}

/// A member's session that just moved to this node: what its pair must know of it.
pub struct MovedHere {
    pub session: Addr<Session>,
    /// Its token's hash, which names it in the cluster.
    pub token: TokenHash,
    pub client: ClientKey,
}

/// The answer to `PairHandle::back`: the replay, or (for a pair on another node) nothing here,
/// since that pair sends the replay itself, in order with what follows it.
pub type BackReplay = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<(u64, ByteString)>, MailboxError>>>,
>;

/// Why a `post` was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostRefused {
    /// The chat's mailbox is full: the member sends faster than the chat can take.
    Busy,
    /// The chat has ended; its `ended` is on the way to the member.
    Ended,
}

impl PairHandle {
    /// Whether the pair runs on another node (a cluster).
    pub fn is_remote(&self) -> bool {
        matches!(self.link, PairLink::Remote(_))
    }

    /// The handle of a pair on another node, for a member here.
    pub fn remote(remote: RemotePair) -> PairHandle {
        PairHandle {
            link: PairLink::Remote(remote),
        }
    }

    /// A `msg` or `media` to number, log and fan out (or, when the chat already holds it, to
    /// echo again). Bounded by the pair's mailbox (or the relay's queue).
    pub fn post(&self, side: Side, kind: EventKind, body: ChatBody) -> Result<(), PostRefused> {
        match &self.link {
            PairLink::Local(addr) => {
                addr.try_send(Post { side, kind, body })
                    .map_err(|err| match err {
                        SendError::Full(_) => PostRefused::Busy,
                        SendError::Closed(_) => PostRefused::Ended,
                    })
            }
            PairLink::Remote(remote) => remote.post(side, kind, &body),
        }
    }

    /// A `typing` or `signal` for the stranger, best effort: `Err` when the chat is busy.
    pub fn relay(&self, side: Side, kind: RelayKind, frame: ByteString) -> Result<(), PostRefused> {
        match &self.link {
            PairLink::Local(addr) => addr
                .try_send(Relay { side, kind, frame })
                .map_err(|_| PostRefused::Busy),
            PairLink::Remote(remote) => remote.relay(side, kind, &frame),
        }
    }

    /// `side` ends the chat (leave, next, report, grace over, shutdown). Never refused.
    pub fn end(&self, side: Side, cause: EndCause) {
        match &self.link {
            PairLink::Local(addr) => addr.do_send(EndChat { side, cause }),
            PairLink::Remote(remote) => remote.end(side, cause),
        }
    }

    /// `side`'s connection dropped. Never refused.
    pub fn away(&self, side: Side) {
        match &self.link {
            PairLink::Local(addr) => addr.do_send(MemberAway { side }),
            PairLink::Remote(remote) => remote.away(side),
        }
    }

    /// `side` is back; answers with every logged event after `after_seq`, rendered for it.
    pub fn back(&self, side: Side, after_seq: u64) -> BackReplay {
        match &self.link {
            PairLink::Local(addr) => Box::pin(addr.send(MemberBack {
                side,
                after_seq,
                push: false,
                moved: None,
            })),
            PairLink::Remote(remote) => {
                remote.back(side, after_seq, None);
                Box::pin(std::future::ready(Ok(Vec::new())))
            }
        }
    }

    /// `back` from a member whose session just moved here from another node (`session`, with
    /// its token's hash, which names it): the pair sends to it here from now on.
    pub fn back_moved(&self, side: Side, after_seq: u64, moved: MovedHere) -> BackReplay {
        match &self.link {
            PairLink::Local(addr) => Box::pin(addr.send(MemberBack {
                side,
                after_seq,
                push: false,
                moved: Some((MemberLink::Local(moved.session), moved.client, None)),
            })),
            PairLink::Remote(remote) => {
                remote.back(side, after_seq, Some(&moved));
                Box::pin(std::future::ready(Ok(Vec::new())))
            }
        }
    }

    /// The node the pair runs on, when it is another one than this (a cluster).
    pub fn node(&self) -> Option<&str> {
        match &self.link {
            PairLink::Local(_) => None,
            PairLink::Remote(remote) => Some(remote.node()),
        }
    }

    /// The handle of a pair on this node.
    pub(crate) fn local(addr: Addr<Pair>) -> PairHandle {
        PairHandle {
            link: PairLink::Local(addr),
        }
    }
}

/// A member said something that belongs in the log (`msg` or `media`). Sent by its session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Post {
    pub side: Side,
    pub kind: EventKind,
    pub body: ChatBody,
}

impl Handler<Post> for Pair {
    type Result = ();

    fn handle(&mut self, post: Post, _ctx: &mut Context<Self>) {
        if !self.ended && !self.echo_again(post.side, post.kind, &post.body) {
            self.emit(post.kind, post.side, post.body);
        }
    }
}

/// A frame passed to the stranger as it is and never logged (`typing`, `signal`). Sent by a
/// session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Relay {
    pub side: Side,
    pub kind: RelayKind,
    pub frame: ByteString,
}

/// What a relayed frame is, for the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayKind {
    Typing,
    Signal,
}

impl Handler<Relay> for Pair {
    type Result = ();

    fn handle(&mut self, relay: Relay, _ctx: &mut Context<Self>) {
        let stranger = relay.side.other();
        if !self.ended && !self.away[stranger.index()] {
            let (count, bytes) = match relay.kind {
                RelayKind::Typing => (&self.counters.typing, &self.counters.typing_bytes),
                RelayKind::Signal => (&self.counters.signals, &self.counters.signal_bytes),
            };
            count.increment(1);
            bytes.increment(relay.frame.len() as u64);
            self.send_to(stranger, 0, relay.frame);
        }
    }
}

/// A member's connection dropped; it may come back within its grace. Sent by its session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MemberAway {
    pub side: Side,
}

impl Handler<MemberAway> for Pair {
    type Result = ();

    fn handle(&mut self, away: MemberAway, _ctx: &mut Context<Self>) {
        self.dropped[away.side.index()] = true;
        self.mark_away(away.side);
    }
}

impl Pair {
    fn mark_away(&mut self, side: Side) {
        if !self.ended && !self.away[side.index()] {
            self.away[side.index()] = true;
            self.send_to(
                side.other(),
                0,
                ByteString::from_static(fixed::STRANGER_AWAY),
            );
        }
    }
}

/// A member's session on another node is gone (its node answered a frame for it so): the
/// chat ends as if its grace had run out. Sent by the relay.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MemberGone {
    pub node: String,
    pub session: String,
}

impl Handler<MemberGone> for Pair {
    type Result = ();

    fn handle(&mut self, gone: MemberGone, ctx: &mut Context<Self>) {
        let side = [Side::A, Side::B].into_iter().find(|side| {
            matches!(&self.member(*side).link, MemberLink::Remote(remote)
                if remote.node == gone.node && remote.session == gone.session)
        });
        if let Some(side) = side {
            self.end(side, EndCause::Lost, ctx);
        }
    }
}

/// The node of a member (`side`) is late with its heartbeat: the stranger sees it away.
/// Sent by the relay.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NodeLate {
    pub side: Side,
}

impl Handler<NodeLate> for Pair {
    type Result = ();

    fn handle(&mut self, late: NodeLate, _ctx: &mut Context<Self>) {
        self.mark_away(late.side);
    }
}

/// The node of a member (`side`) beats on time again: the member is back, unless its own
/// connection dropped meanwhile (then its resume brings it back). Sent by the relay.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NodeOnTime {
    pub side: Side,
}

impl Handler<NodeOnTime> for Pair {
    type Result = ();

    fn handle(&mut self, on_time: NodeOnTime, _ctx: &mut Context<Self>) {
        let side = on_time.side.index();
        if !self.ended && self.away[side] && !self.dropped[side] {
            self.away[side] = false;
            self.send_to(
                on_time.side.other(),
                0,
                ByteString::from_static(fixed::STRANGER_BACK),
            );
        }
    }
}

/// A member resumed; answered with every logged event after `after_seq`, rendered for it.
/// Sent by its session. With `push` (a member on another node), the pair sends the replay to
/// the member itself, before anything that follows, and answers nothing.
#[derive(Message)]
#[rtype(result = "Vec<(u64, ByteString)>")]
pub struct MemberBack {
    pub side: Side,
    pub after_seq: u64,
    pub push: bool,
    /// Where the member's session is now, and its client, when it moved (a cluster).
    pub moved: Option<(MemberLink, ClientKey, Option<RemoteClient>)>,
}

impl Handler<MemberBack> for Pair {
    type Result = MessageResult<MemberBack>;

    fn handle(&mut self, back: MemberBack, ctx: &mut Context<Self>) -> Self::Result {
        if let Some((link, client, origin)) = back.moved {
            if let Some(relay) = &self.relay {
                // Watched on the node it is on now, no longer on the one it left.
                let node = match &link {
                    MemberLink::Remote(remote) => Some(remote.node.as_str()),
                    MemberLink::Local(_) => None,
                };
                relay.rewatch_member(node, ctx.address(), back.side);
            }
            let member = &mut self.members[back.side.index()];
            member.link = link;
            // Reports against it count against its client, wherever it is now.
            member.client = client;
            member.origin = origin;
        }
        self.dropped[back.side.index()] = false;
        let replay: Vec<(u64, ByteString)> = self
            .log
            .replay_after(back.after_seq)
            .map(|entry| (entry.seq, self.render(entry, back.side)))
            .collect();
        let replay = if back.push {
            for (seq, frame) in replay {
                self.send_to(back.side, seq, frame);
            }
            Vec::new()
        } else {
            replay
        };
        if !self.ended && self.away[back.side.index()] {
            self.away[back.side.index()] = false;
            self.send_to(
                back.side.other(),
                0,
                ByteString::from_static(fixed::STRANGER_BACK),
            );
        }
        MessageResult(replay)
    }
}

/// A member ends the chat. Sent by its session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EndChat {
    pub side: Side,
    pub cause: EndCause,
}

impl Handler<EndChat> for Pair {
    type Result = ();

    fn handle(&mut self, end: EndChat, ctx: &mut Context<Self>) {
        self.end(end.side, end.cause, ctx);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::connection::ClientFrame;
    use crate::test_support::{expect, hub, matched, send};

    #[actix_rt::test]
    async fn both_members_see_one_numbering_and_the_sender_gets_the_same_seq_as_its_echo() {
        let hub = hub();
        let (a, b) = matched(&hub, "text").await;
        send(&a, json!({"type":"msg","text":"one"})).await;
        let echo = expect(&a, "msg").await;
        let seen = expect(&b, "msg").await;
        assert_eq!(
            (echo["seq"].clone(), echo["from"].clone()),
            (json!(2), json!("you"))
        );
        assert_eq!(
            (seen["seq"].clone(), seen["from"].clone()),
            (json!(2), json!("stranger"))
        );
        send(&b, json!({"type":"msg","text":"two"})).await;
        assert_eq!(expect(&a, "msg").await["seq"], 3);
        assert_eq!(expect(&b, "msg").await["seq"], 3);
    }

    #[actix_rt::test]
    async fn a_report_ends_the_chat_for_both_with_their_own_reasons_and_counts_once() {
        let hub = hub();
        let (a, b) = matched(&hub, "text").await;
        send(&a, json!({"type":"report","reason":"spam"})).await;
        let ended_a = expect(&a, "ended").await;
        let ended_b = expect(&b, "ended").await;
        assert_eq!(ended_a["reason"], "you_reported");
        assert_eq!(ended_b["reason"], "stranger_left");
        assert_eq!(
            ended_a["seq"], ended_b["seq"],
            "the end is one event of the chat"
        );
        let reported = hub.client_keys_for("127.0.8.2".parse().unwrap());
        assert_eq!(hub.privacy_report(&reported).abuse.reports_in_window, 1);
    }

    #[actix_rt::test]
    async fn a_member_who_drops_is_reported_away_and_the_chat_keeps_logging_for_it() {
        let hub = hub();
        let (a, b) = matched(&hub, "text").await;
        a.frames.send(ClientFrame::Dropped).await.unwrap();
        expect(&b, "stranger_away").await;
        // Typing is not logged and not relayed to an away member; a message is logged.
        send(&b, json!({"type":"typing","active":true})).await;
        send(&b, json!({"type":"msg","text":"are you there?"})).await;
        assert_eq!(expect(&b, "msg").await["seq"], 2);
        send(&b, json!({"type":"leave"})).await;
        assert_eq!(expect(&b, "ended").await["reason"], "you_left");
        assert_eq!(hub.stats().chatting, 0);
    }

    #[actix_rt::test]
    async fn the_readable_totals_count_the_match_and_each_message_but_not_media() {
        let hub = hub();
        let before = hub.activity_totals();
        let (a, b) = matched(&hub, "text").await;
        for text in ["one", "two"] {
            send(&a, json!({"type":"msg","text":text})).await;
            expect(&a, "msg").await;
            expect(&b, "msg").await;
        }
        let image = json!({"type":"media","kind":"image","mime":"image/png","data":"aGVsbG8="});
        send(&b, image).await;
        expect(&b, "media").await;
        expect(&a, "media").await;
        let added = hub.activity_totals().since(before);
        assert_eq!((added.matches, added.messages), (1, 2));
    }

    #[actix_rt::test]
    async fn signals_and_typing_pass_unlogged_and_do_not_take_a_seq() {
        let hub = hub();
        let (a, b) = matched(&hub, "video").await;
        send(&a, json!({"type":"signal","data":{"sdp":"offer"}})).await;
        let signal = expect(&b, "signal").await;
        assert_eq!(signal["data"]["sdp"], "offer");
        assert!(signal.get("seq").is_none());
        send(&a, json!({"type":"msg","text":"after"})).await;
        assert_eq!(expect(&b, "msg").await["seq"], 2);
    }
}

//! The session actor: one per client, from its first connection until it leaves or its resume
//! grace runs out. It parses the client's frames, enforces the limits, keeps the session's
//! state (idle, waiting, chatting) and its read position in the chat's log, and writes to the
//! client through a bounded `ClientSink`. Talks to the matchmaker (queueing), to its chat's
//! pair actor (everything said in a chat) and to the purge timer (resume grace).
//!
//! Layout: this file holds the actor, its lifecycle (connections, drops, resume) and its
//! messages; `requests` what a client asks of it; `policy` its rules as plain values.

mod moving;
mod policy;
mod requests;

pub use moving::ArrivingChat;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use actix::prelude::*;
use bytestring::ByteString;
use futures_util::StreamExt as _;

use crate::connection::{close_code, ClientFrame, ClientSink, FrameStream, Outgoing};
use crate::context::{Arriving, ChatContext};
use crate::event_log::Side;
use crate::ids::{ChatId, SessionId};
use crate::matchmaker::MatchmakerHandle;
use crate::metrics::{Disconnect, Refusal};
use crate::pair::{EndCause, MovedHere, PairHandle};
use crate::pow::Challenge;
use crate::protocol::{
    parse_client_frame, render_hello, ClientRequest, ErrorCode, FindRequest, HelloFrame, Mode,
    PowChallenge, ProtocolError, ResumePoint, ResumeRequest,
};
use crate::purge::PurgeHandle;
use crate::rate_limits::SessionLimiters;
use crate::registry::{
    hash_presented_token, Attach, AttachRejected, Occupancy, ResumeToken, SessionCommand,
    SessionSlot, TokenHash,
};
use policy::{ErrorBudget, OutboxBounds};

#[derive(Debug)]
enum State {
    Idle,
    Waiting {
        mode: Mode,
    },
    Chatting {
        chat: ChatId,
        pair: PairHandle,
        side: Side,
        mode: Mode,
    },
    /// This member asked to end the chat; the pair's `ended` is on its way.
    Ending {
        chat: ChatId,
        pair: PairHandle,
        side: Side,
        mode: Mode,
        requeue: bool,
    },
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Waiting { .. } => "waiting",
            State::Chatting { .. } | State::Ending { .. } => "chatting",
        }
    }

    fn occupancy(&self) -> Occupancy {
        match self {
            State::Idle => Occupancy::Idle,
            State::Waiting { mode } => Occupancy::Waiting(*mode),
            State::Chatting { mode, .. } | State::Ending { mode, .. } => Occupancy::Chatting(*mode),
        }
    }

    fn chat(&self) -> Option<(ChatId, &PairHandle, Side)> {
        match self {
            State::Chatting {
                chat, pair, side, ..
            }
            | State::Ending {
                chat, pair, side, ..
            } => Some((*chat, pair, *side)),
            State::Idle | State::Waiting { .. } => None,
        }
    }
}

struct Connection {
    sink: Box<dyn ClientSink>,
    /// What reads the connection's frames: its stream, or the wait for its first frame.
    frames: SpawnHandle,
}

/// The last chat's end, kept for the resume grace (v1.1) so that a client that was away when
/// it came still gets it, even when it resumes into a newer chat. Only these three things.
#[derive(Clone)]
struct LastEnded {
    chat: ChatId,
    seq: u64,
    /// The rendered `ended`: its seq and reason.
    frame: ByteString,
}

/// A frame from connection number `connection` of this session. A resume can replace a
/// connection whose last frames (its `Dropped`, say) are still on their way; the number tells
/// them apart so they cannot act on the new connection.
struct TaggedFrame {
    connection: u64,
    frame: ClientFrame,
}

pub struct Session {
    id: SessionId,
    token_hash: TokenHash,
    /// Handed to the client in the first `hello`, and wiped once the first connection's first
    /// frame is in (a `resume` there may need it for a second hello); resumes only ever see
    /// the hash.
    token: Option<ResumeToken>,
    context: Arc<ChatContext>,
    matchmaker: MatchmakerHandle,
    purge: PurgeHandle,
    /// This session's place under the session bounds; also says which client it is.
    slot: SessionSlot,
    connection: Option<Connection>,
    /// Number of the current (or last) connection; frames of earlier ones are ignored.
    connection_number: u64,
    /// Set between `start_new` and `started`, where the first connection is attached.
    pending_connection: Option<(Box<dyn ClientSink>, FrameStream)>,
    state: State,
    /// The last `find`, so that `next` queues again with the same preferences.
    preferences: Option<FindRequest>,
    /// The highest chat `seq` delivered on the current connection.
    delivered_seq: u64,
    /// The last chat's `ended`, for the resume grace after it.
    last_ended: Option<LastEnded>,
    /// The delivered seq at which a replay was last asked for a gap (pairs on other nodes).
    repair_asked_at: Option<u64>,
    last_heard: Instant,
    /// Bumped on every drop and resume, so a stale grace expiry is recognised.
    away_generation: u64,
    protocol_errors: ErrorBudget<Instant>,
    outbox_bounds: OutboxBounds,
    limits: SessionLimiters,
    /// The proof-of-work challenge this session must solve before its first `find`.
    pow: Option<Challenge>,
    shutting_down: bool,
    /// What the chat is told when this actor stops.
    stop_cause: EndCause,
    /// Moved to another node of the cluster: stopping here ends nothing.
    moved_away: bool,
    /// Moved here: the first resume tells the chat where its member is now.
    moved_in: bool,
    /// A moved session's start, taken up once the actor runs.
    arriving: Option<moving::MoveIn>,
}

impl Session {
    /// Starts a session for a new client on the current arbiter.
    pub fn start_new(
        context: Arc<ChatContext>,
        matchmaker: MatchmakerHandle,
        purge: PurgeHandle,
        slot: SessionSlot,
        sink: Box<dyn ClientSink>,
        frames: FrameStream,
    ) -> Addr<Session> {
        let (token, token_hash) = ResumeToken::generate();
        let pow = match context.pow_difficulty_for_new_session(Instant::now()) {
            0 => None,
            bits => Some(Challenge::new(bits)),
        };
        let mut session = Session::new(context, matchmaker, purge, slot, token_hash, Some(token));
        session.pending_connection = Some((sink, frames));
        session.pow = pow;
        session.start()
    }

    /// A session with nothing yet: no connection, no state, no proof of work owed.
    fn new(
        context: Arc<ChatContext>,
        matchmaker: MatchmakerHandle,
        purge: PurgeHandle,
        slot: SessionSlot,
        token_hash: TokenHash,
        token: Option<ResumeToken>,
    ) -> Session {
        Session {
            id: context.next_session_id(),
            token_hash,
            token,
            slot,
            connection: None,
            connection_number: 0,
            pending_connection: None,
            state: State::Idle,
            preferences: None,
            delivered_seq: 0,
            last_ended: None,
            repair_asked_at: None,
            last_heard: Instant::now(),
            away_generation: 0,
            protocol_errors: ErrorBudget::new(
                context.config().max_protocol_errors_per_minute,
                Duration::from_secs(60),
            ),
            outbox_bounds: OutboxBounds {
                max_bytes: context.config().session_outbox_max_bytes,
                fair_share_bytes: context.config().outbox_fair_share_bytes,
            },
            limits: SessionLimiters::new(&context.config().rate_limits, &context.config().limits),
            pow: None,
            shutting_down: false,
            stop_cause: EndCause::Left,
            moved_away: false,
            moved_in: false,
            arriving: None,
            context,
            matchmaker,
            purge,
        }
    }

    fn set_state(&mut self, state: State) {
        self.context
            .session_moved(self.state.occupancy(), state.occupancy());
        self.state = state;
    }

    fn attach(&mut self, sink: Box<dyn ClientSink>, frames: FrameStream, ctx: &mut Context<Self>) {
        self.connection_number += 1;
        let frames = self.read_frames(frames, ctx);
        self.connection = Some(Connection { sink, frames });
        self.last_heard = Instant::now();
    }

    /// Handles every frame of the current connection as it comes.
    fn read_frames(&mut self, frames: FrameStream, ctx: &mut Context<Self>) -> SpawnHandle {
        let connection = self.connection_number;
        ctx.add_stream(frames.map(move |frame| TaggedFrame { connection, frame }))
    }

    /// A new session's first connection: its first frame may be a `resume` (v1.1), which
    /// hands the connection to the session it names, so that frame is read on its own and the
    /// stream stays this actor's to give away until then.
    fn attach_first(
        &mut self,
        sink: Box<dyn ClientSink>,
        frames: FrameStream,
        ctx: &mut Context<Self>,
    ) {
        self.connection_number += 1;
        let frames = self.await_first_frame(frames, ctx);
        self.connection = Some(Connection { sink, frames });
        self.last_heard = Instant::now();
    }

    fn await_first_frame(&mut self, frames: FrameStream, ctx: &mut Context<Self>) -> SpawnHandle {
        let connection = self.connection_number;
        let first = frames.into_future().into_actor(self);
        ctx.spawn(first.map(move |(frame, rest), session, ctx| {
            if connection != session.connection_number || session.connection.is_none() {
                return;
            }
            session.first_frame(frame.unwrap_or(ClientFrame::Dropped), rest, ctx);
        }))
    }

    fn first_frame(&mut self, frame: ClientFrame, rest: FrameStream, ctx: &mut Context<Self>) {
        let reads_on = match frame {
            ClientFrame::Text(text) => {
                self.last_heard = Instant::now();
                match parse_client_frame(&text, &self.context.config().limits) {
                    Ok(ClientRequest::Resume(request)) => {
                        return self.resume_elsewhere(request, rest, ctx);
                    }
                    Ok(request) => self.handle_request(request, ctx),
                    Err(error) => self.refuse(error, ctx),
                }
                true
            }
            // Control frames come before any text frame and are not what "first" means.
            control @ (ClientFrame::Ping(_) | ClientFrame::Pong) => {
                self.handle_frame(control, ctx);
                if self.connection.is_some() {
                    let reader = self.await_first_frame(rest, ctx);
                    self.set_reader(reader);
                }
                return;
            }
            ClientFrame::Binary => {
                self.handle_frame(frame, ctx);
                true
            }
            // The connection's last frame: nothing follows it.
            last => {
                self.handle_frame(last, ctx);
                false
            }
        };
        self.token = None;
        if reads_on {
            self.read_on(rest, ctx);
        }
    }

    /// Reads the rest of the current connection's frames as they come.
    fn read_on(&mut self, rest: FrameStream, ctx: &mut Context<Self>) {
        if self.connection.is_some() {
            let reader = self.read_frames(rest, ctx);
            self.set_reader(reader);
        }
    }

    fn set_reader(&mut self, reader: SpawnHandle) {
        if let Some(connection) = self.connection.as_mut() {
            connection.frames = reader;
        }
    }

    /// A resume of a session this node does not hold: in a cluster, another node may hold it,
    /// and it moves here with this connection (into this client's place: this session was
    /// only its doorway); else this session stays, as a fresh one.
    fn take_over_elsewhere(
        &mut self,
        token: String,
        point: ResumePoint,
        rest: FrameStream,
        ctx: &mut Context<Self>,
    ) {
        let Some(cluster) = self.context.cluster().cloned() else {
            return self.stay_fresh(rest, ctx);
        };
        let Some(connection) = self.connection.take() else {
            return;
        };
        ctx.cancel_future(connection.frames);
        let arriving = Arriving {
            slot: self.slot.pass_on(),
            sink: connection.sink,
            frames: rest,
        };
        let taken = cluster.take_over(token, point, arriving).into_actor(self);
        ctx.spawn(taken.map(|answer, session, ctx| match answer {
            // This fresh session was only the doorway.
            Ok(()) if session.connection.is_none() => ctx.stop(),
            Ok(()) => {}
            // No node holds it: this session stays, as a fresh one.
            Err(back) => {
                session.connection = Some(Connection {
                    sink: back.sink,
                    frames: SpawnHandle::default(),
                });
                session.stay_fresh(back.frames, ctx);
            }
        }));
    }

    /// A `resume` frame (v1.1) as this fresh session's first: hands the connection to the
    /// session it names, and this one ends. When that session is gone (or the frame named it
    /// unusably), this one stays and says so in a second hello, as a fresh session.
    fn resume_elsewhere(
        &mut self,
        request: Option<ResumeRequest>,
        rest: FrameStream,
        ctx: &mut Context<Self>,
    ) {
        let Some(ResumeRequest { token, point }) = request else {
            return self.stay_fresh(rest, ctx);
        };
        if hash_presented_token(&token) == Some(self.token_hash) {
            // The client named this very session: it is alive, and here.
            let token = ResumeToken::presented(&token);
            self.token = None;
            self.send_hello(&token, true, ctx);
            return self.read_on(rest, ctx);
        }
        let Some(target) = self.context.live_session(&token) else {
            return self.take_over_elsewhere(token, point, rest, ctx);
        };
        let Some(connection) = self.connection.take() else {
            return;
        };
        let attach = Attach {
            sink: connection.sink,
            frames: rest,
            from: point,
            token: ResumeToken::presented(&token),
        };
        let handover = target.send(SessionCommand::Attach(attach)).into_actor(self);
        // Spawned, not awaited with `ctx.wait`: two fresh sessions that name each other would
        // each wait for the other's answer forever. Meanwhile this one has no connection.
        ctx.spawn(handover.map(|answer, session, ctx| {
            let resumed_meanwhile = session.connection.is_some();
            match answer {
                // The connection is the other session's now; this one was only its doorway,
                // unless its own token brought it a connection meanwhile.
                Ok(Ok(())) | Err(_) if !resumed_meanwhile => ctx.stop(),
                Ok(Ok(())) | Err(_) => {}
                // That session is shutting down: keep the connection, as a fresh session.
                Ok(Err(AttachRejected { sink, frames })) if !resumed_meanwhile => {
                    session.connection = Some(Connection {
                        sink,
                        frames: session.read_frames(frames, ctx),
                    });
                    session.say_fresh_hello(ctx);
                }
                Ok(Err(AttachRejected { mut sink, .. })) => sink.send(Outgoing::Close {
                    code: close_code::TRY_AGAIN_LATER,
                    reason: "try again later",
                }),
            }
        }));
    }

    /// A `resume` that names nothing usable: this stays the client's fresh session, and says
    /// so in a second hello.
    fn stay_fresh(&mut self, rest: FrameStream, ctx: &mut Context<Self>) {
        self.say_fresh_hello(ctx);
        self.read_on(rest, ctx);
    }

    fn say_fresh_hello(&mut self, ctx: &mut Context<Self>) {
        if let Some(token) = self.token.take() {
            self.send_hello(&token, false, ctx);
        }
    }

    /// Detaches the current connection without a close frame (its peer is gone or too slow).
    fn detach(&mut self, ctx: &mut Context<Self>) {
        if let Some(mut connection) = self.connection.take() {
            ctx.cancel_future(connection.frames);
            connection.sink.abort();
        }
    }

    fn send_hello(&mut self, token: &ResumeToken, resumed: bool, ctx: &mut Context<Self>) {
        let online = self.context.stats().online;
        let context = self.context.clone();
        let state = self.state.name();
        let challenge = self.pow.as_ref().map(|c| (c.encoded(), c.difficulty));
        let ice_servers = context.config().ice.servers();
        let frame = render_hello(HelloFrame {
            token: token.as_str(),
            resumed,
            state,
            online,
            limits: &context.config().limits,
            ice_servers: &ice_servers,
            relay_only: context.config().ice.relay_only,
            pow: challenge
                .as_ref()
                .map(|(challenge, difficulty)| PowChallenge {
                    algorithm: "sha256",
                    challenge,
                    difficulty: *difficulty,
                }),
        });
        self.push(frame, ctx);
    }

    /// Queues a text frame for the client.
    fn push(&mut self, frame: ByteString, ctx: &mut Context<Self>) {
        self.send(Outgoing::Text(frame), ctx);
    }

    /// Queues a frame for the client. Every frame counts against the outbox bounds, control
    /// frames included. A client whose outbox passes its bound, or holds more than a fair share
    /// while the server-wide bound is passed, is cut off as if its connection had dropped, so a
    /// reader that stopped reading costs bounded memory.
    fn send(&mut self, frame: Outgoing, ctx: &mut Context<Self>) {
        let Some(connection) = self.connection.as_mut() else {
            return;
        };
        let just_queued = frame.weight();
        connection.sink.send(frame);
        let unsent = connection.sink.unsent_bytes();
        if self
            .outbox_bounds
            .must_cut_off(unsent, just_queued, self.context.outboxes_over_budget())
        {
            self.context
                .metrics()
                .disconnected(Disconnect::SlowConsumer);
            tracing::debug!(reason = "slow consumer", "connection cut off");
            self.go_away(ctx);
        }
    }

    fn close(&mut self, code: u16, reason: &'static str) {
        if let Some(connection) = self.connection.as_mut() {
            connection.sink.send(Outgoing::Close { code, reason });
        }
    }

    /// The connection dropped without a close frame: keep the session (and its place in a
    /// chat or the queue) for the resume grace.
    fn go_away(&mut self, ctx: &mut Context<Self>) {
        self.detach(ctx);
        self.away_generation += 1;
        if let Some(cluster) = self.context.cluster() {
            cluster.session_here(&self.token_hash, self.context.config().resume_grace);
        }
        if let Some((_, pair, side)) = self.state.chat() {
            pair.away(side);
        }
        self.purge.track_away(
            self.id,
            self.away_generation,
            Instant::now() + self.context.config().resume_grace,
            ctx.address(),
        );
    }

    fn handle_frame(&mut self, frame: ClientFrame, ctx: &mut Context<Self>) {
        self.last_heard = Instant::now();
        match frame {
            ClientFrame::Text(text) => {
                match parse_client_frame(&text, &self.context.config().limits) {
                    Ok(request) => self.handle_request(request, ctx),
                    Err(error) => self.refuse(error, ctx),
                }
            }
            ClientFrame::Binary => self.refuse(
                ProtocolError {
                    code: ErrorCode::BadRequest,
                    message: "binary frames are not supported; send JSON text frames".into(),
                },
                ctx,
            ),
            ClientFrame::Ping(payload) => {
                if self.control_frame_allowed(ctx) {
                    self.send(Outgoing::Pong(payload), ctx);
                }
            }
            ClientFrame::Pong => {
                self.control_frame_allowed(ctx);
            }
            ClientFrame::Close(_) => {
                self.context.metrics().disconnected(Disconnect::CloseFrame);
                self.close(close_code::NORMAL, "bye");
                ctx.stop();
            }
            ClientFrame::TooLarge => {
                self.context
                    .metrics()
                    .disconnected(Disconnect::FrameTooLarge);
                self.context.metrics().refused(Refusal::TooLarge);
                let message = format!(
                    "frames may be at most {} bytes",
                    self.context.config().limits.max_frame_bytes
                );
                self.send_error(ErrorCode::TooLarge, &message, None, ctx);
                self.close(close_code::MESSAGE_TOO_BIG, "frame too large");
                ctx.stop();
            }
            ClientFrame::Invalid { code, reason } => {
                self.context
                    .metrics()
                    .disconnected(Disconnect::ProtocolViolation);
                self.context.metrics().refused(Refusal::BadRequest);
                self.close(code, reason);
                ctx.stop();
            }
            ClientFrame::Dropped => {
                self.context.metrics().disconnected(Disconnect::Dropped);
                self.go_away(ctx);
            }
        }
    }

    /// Pings and pongs from the client, within `control_frames_per_second`. Past it a ping is
    /// not answered, and each one counts as a protocol error, so a flood ends the connection.
    fn control_frame_allowed(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.limits.check_control_frame().is_ok() {
            return true;
        }
        self.context.metrics().refused(Refusal::ControlFrames);
        self.count_protocol_error(ctx);
        false
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.connection.is_none() {
            // Away: resumes on any node must still find it here, also after Redis restarted
            // empty (the key lasts the grace; the session ends by then, or comes back).
            if let Some(cluster) = self.context.cluster() {
                cluster.session_here(&self.token_hash, self.context.config().resume_grace);
            }
            return;
        }
        if self.last_heard.elapsed() > self.context.config().client_timeout {
            self.context
                .metrics()
                .disconnected(Disconnect::ClientTimeout);
            self.go_away(ctx);
        } else {
            self.send(Outgoing::Ping, ctx);
            self.tell_cluster_here();
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.context
            .session_started(self.token_hash, ctx.address().recipient());
        if let Some((sink, frames)) = self.pending_connection.take() {
            self.attach_first(sink, frames, ctx);
        }
        if let Some(token) = self.token.take() {
            self.send_hello(&token, false, ctx);
            self.token = Some(token);
        }
        ctx.run_interval(self.context.config().heartbeat_interval, Self::heartbeat);
        self.tell_cluster_here();
        if let Some(arriving) = self.arriving.take() {
            self.arrive(arriving, ctx);
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        match &self.state {
            State::Waiting { .. } => self.matchmaker.leave(self.id, &self.token_hash),
            State::Chatting { pair, side, .. } | State::Ending { pair, side, .. } => {
                pair.end(*side, self.stop_cause);
            }
            State::Idle => {}
        }
        self.set_state(State::Idle);
        if self.connection.is_none() {
            self.purge.untrack_away(self.id);
        }
        // Dropping the sink lets its writer send what is queued (a close frame included).
        self.connection = None;
        self.context.session_ended(&self.token_hash);
        // A session that moved lives on elsewhere, and its new node says so in Redis.
        if let (Some(cluster), false) = (self.context.cluster(), self.moved_away) {
            cluster.session_gone(&self.token_hash);
        }
    }
}

impl Session {
    /// In a cluster: resumes on any node find this session here until its connection could
    /// have dropped unnoticed and its grace run out (renewed with every heartbeat).
    fn tell_cluster_here(&self) {
        if let Some(cluster) = self.context.cluster() {
            let config = self.context.config();
            let ttl = config.heartbeat_interval + config.client_timeout + config.resume_grace;
            cluster.session_here(&self.token_hash, ttl);
        }
    }
}

impl StreamHandler<TaggedFrame> for Session {
    fn handle(&mut self, tagged: TaggedFrame, ctx: &mut Context<Self>) {
        if tagged.connection == self.connection_number && self.connection.is_some() {
            self.handle_frame(tagged.frame, ctx);
        }
    }

    /// A connection's stream ends after its `Dropped` or `Close` item, which were handled;
    /// the session itself lives on (the default would stop the actor).
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl Handler<SessionCommand> for Session {
    type Result = Result<(), AttachRejected>;

    fn handle(&mut self, command: SessionCommand, ctx: &mut Context<Self>) -> Self::Result {
        match command {
            SessionCommand::Attach(attach) => self.resume(attach, ctx),
            SessionCommand::Shutdown => {
                self.shut_down(ctx);
                Ok(())
            }
            SessionCommand::MoveOut(answer) => {
                let _ = answer.send(self.move_out(ctx));
                Ok(())
            }
        }
    }
}

impl Session {
    /// Closes the current connection (if any) for one that replaces it; whether there was one.
    /// What was queued for it is dropped at once: a client that takes over its own session
    /// again and again must not leave a replay behind on each connection it abandons.
    fn close_replaced_connection(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some(mut old) = self.connection.take() else {
            return false;
        };
        self.context
            .metrics()
            .disconnected(Disconnect::ResumedElsewhere);
        ctx.cancel_future(old.frames);
        old.sink.close_at_once(
            close_code::RESUMED_ELSEWHERE,
            "resumed on another connection",
        );
        true
    }

    /// A client resumed with this session's token: attach its new connection, say hello and
    /// replay what it missed.
    fn resume(&mut self, attach: Attach, ctx: &mut Context<Self>) -> Result<(), AttachRejected> {
        if self.shutting_down {
            return Err(AttachRejected {
                sink: attach.sink,
                frames: attach.frames,
            });
        }
        // The old connection has not been noticed dead yet; the new one wins.
        if !self.close_replaced_connection(ctx) {
            self.purge.untrack_away(self.id);
        }
        self.away_generation += 1;
        self.context.metrics().sessions_resumed.increment(1);
        // A fresh session resumed before its first frame came: its first hello is answered.
        self.token = None;
        self.attach(attach.sink, attach.frames, ctx);
        self.send_hello(&attach.token, true, ctx);
        let ResumePoint {
            chat: named,
            last_seq,
        } = attach.from;
        let current = self.state.chat().map(|(chat, _, _)| chat);
        // v1.1: a client that names a chat other than its current one missed that chat's
        // end, and perhaps the start of this one: it gets that end, then this chat from its
        // start. Without a name, `last_seq` counts in whatever chat the session is in (v1).
        let missed = named.filter(|named| Some(*named) != current);
        if let Some(ended) = &self.last_ended {
            let news = match named {
                None => current.is_none(),
                Some(named) => named == ended.chat && missed.is_some(),
            };
            if news && ended.seq > last_seq {
                let frame = ended.frame.clone();
                self.push(frame, ctx);
            }
        }
        let after = if missed.is_some() { 0 } else { last_seq };
        self.delivered_seq = after;
        if let Some((chat, pair, side)) = self.state.chat() {
            let moved_in = std::mem::take(&mut self.moved_in);
            let request = if moved_in {
                let moved = MovedHere {
                    session: ctx.address(),
                    token: self.token_hash,
                    client: self.slot.client(),
                };
                pair.back_moved(side, after, moved)
            } else {
                pair.back(side, after)
            };
            // Nothing else is handled until the replay is queued, so live events that
            // arrive meanwhile are filtered by `delivered_seq` and never doubled.
            ctx.wait(request.into_actor(self).map(move |replay, session, ctx| {
                let Ok(replay) = replay else {
                    // A session that just moved here finds its chat's pair gone: the chat
                    // ended meanwhile, and its `ended` went to the node the session left.
                    let current = session.state.chat().map(|(c, _, _)| c);
                    if moved_in && current == Some(chat) {
                        <Self as Handler<ChatLost>>::handle(session, ChatLost { chat }, ctx);
                    }
                    return;
                };
                if session.state.chat().map(|(c, _, _)| c) != Some(chat) {
                    return;
                }
                session
                    .context
                    .metrics()
                    .replayed_events
                    .increment(replay.len() as u64);
                for (seq, frame) in replay {
                    if seq > session.delivered_seq {
                        session.delivered_seq = seq;
                        session.push(frame, ctx);
                    }
                }
            }));
        }
        Ok(())
    }
}

/// Sent by a new pair actor to each member: you are now in chat `chat` as `side`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChatStarted {
    pub chat: ChatId,
    pub pair: PairHandle,
    pub side: Side,
    pub mode: Mode,
}

impl Handler<ChatStarted> for Session {
    type Result = ();

    fn handle(&mut self, started: ChatStarted, _ctx: &mut Context<Self>) {
        if !matches!(self.state, State::Waiting { .. }) || self.shutting_down {
            // This session left the queue while the match was being made.
            started.pair.end(started.side, EndCause::Left);
            return;
        }
        if self.connection.is_none() {
            started.pair.away(started.side);
        }
        self.delivered_seq = 0;
        self.set_state(State::Chatting {
            chat: started.chat,
            pair: started.pair,
            side: started.side,
            mode: started.mode,
        });
    }
}

/// Sent by the pair actor: one frame for this member. `seq` is 0 for frames passed on as they
/// come: ones that are not chat events (typing, signal, stranger_away/back), never logged or
/// replayed, and the repeated echo of a message sent again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChatEvent {
    pub chat: ChatId,
    pub seq: u64,
    pub frame: ByteString,
}

impl Handler<ChatEvent> for Session {
    type Result = ();

    fn handle(&mut self, event: ChatEvent, ctx: &mut Context<Self>) {
        let Some((chat, pair, side)) = self.state.chat() else {
            return;
        };
        if chat != event.chat {
            return;
        }
        if event.seq == 0 {
            self.push(event.frame, ctx);
        } else if event.seq > self.delivered_seq && self.connection.is_some() {
            if event.seq > self.delivered_seq + 1 && pair.is_remote() {
                // A pair on another node, and events lost on the way (Redis restarted empty
                // with them in a stream): the pair's log sends everything after the last one
                // delivered, in order, this one included. Asked once per gap.
                if self.repair_asked_at != Some(self.delivered_seq) {
                    self.repair_asked_at = Some(self.delivered_seq);
                    drop(pair.back(side, self.delivered_seq));
                }
                return;
            }
            self.delivered_seq = event.seq;
            self.push(event.frame, ctx);
        }
    }
}

/// Sent by the pair actor as its last word: the chat ended, here is this member's `ended`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChatEnded {
    pub chat: ChatId,
    pub seq: u64,
    pub frame: ByteString,
}

impl Handler<ChatEnded> for Session {
    type Result = ();

    fn handle(&mut self, ended: ChatEnded, ctx: &mut Context<Self>) {
        let requeue = match &self.state {
            State::Chatting { chat, .. } if *chat == ended.chat => false,
            State::Ending { chat, requeue, .. } if *chat == ended.chat => *requeue,
            _ => return,
        };
        if self.connection.is_some() && ended.seq > self.delivered_seq {
            self.delivered_seq = ended.seq;
            self.push(ended.frame.clone(), ctx);
        }
        self.remember_end(ended, ctx);
        self.set_state(State::Idle);
        if self.shutting_down {
            self.close(close_code::GOING_AWAY, "server shutting down");
            ctx.stop();
        } else if requeue {
            self.join_queue(ctx);
        }
    }
}

/// A post of this member's (`side`) that its chat's pair, on another node, could not take:
/// refused there as the chat's mailbox refuses it on one node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PostBounced {
    pub chat: ChatId,
    pub side: Side,
}

impl Handler<PostBounced> for Session {
    type Result = ();

    fn handle(&mut self, bounced: PostBounced, ctx: &mut Context<Self>) {
        if let State::Chatting { chat, side, .. } = &self.state {
            if *chat == bounced.chat && *side == bounced.side {
                self.chat_busy(ctx);
            }
        }
    }
}

/// This session's stranger, in a chat run on another node, reported it: the report counts
/// against this session's client here, where its key is known.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReportedHere {
    pub reporter: crate::client_key::RemoteClient,
}

impl Handler<ReportedHere> for Session {
    type Result = ();

    fn handle(&mut self, reported: ReportedHere, _ctx: &mut Context<Self>) {
        self.context
            .report_from_elsewhere(self.slot.client(), &reported.reporter);
    }
}

/// The node running this session's chat is gone (a cluster's node died): the chat ended with
/// it, and this member hears so as `stranger_lost`, numbered after what it was delivered.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChatLost {
    pub chat: ChatId,
}

impl Handler<ChatLost> for Session {
    type Result = ();

    fn handle(&mut self, lost: ChatLost, ctx: &mut Context<Self>) {
        let seq = self.delivered_seq + 1;
        let ended = ChatEnded {
            chat: lost.chat,
            seq,
            frame: crate::protocol::render_ended(seq, crate::protocol::EndedReason::StrangerLost),
        };
        <Self as Handler<ChatEnded>>::handle(self, ended, ctx);
    }
}

impl Session {
    /// Keeps a chat's end for the resume grace, and no longer.
    fn remember_end(&mut self, ended: ChatEnded, ctx: &mut Context<Self>) {
        let chat = ended.chat;
        self.last_ended = Some(LastEnded {
            chat,
            seq: ended.seq,
            frame: ended.frame,
        });
        self.forget_end_after_grace(chat, ctx);
    }

    fn forget_end_after_grace(&mut self, chat: ChatId, ctx: &mut Context<Self>) {
        ctx.run_later(self.context.config().resume_grace, move |session, _| {
            if session.last_ended.as_ref().map(|ended| ended.chat) == Some(chat) {
                session.last_ended = None;
            }
        });
    }
}

/// Sent by the purge timer when the resume grace of drop number `generation` ran out.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GraceExpired {
    pub generation: u64,
}

impl Handler<GraceExpired> for Session {
    type Result = ();

    fn handle(&mut self, expired: GraceExpired, ctx: &mut Context<Self>) {
        if self.connection.is_none() && expired.generation == self.away_generation {
            self.context.metrics().sessions_expired.increment(1);
            self.stop_cause = EndCause::Lost;
            ctx.stop();
        }
    }
}

impl Session {
    /// The server is shutting down: end the chat and close the connection.
    fn shut_down(&mut self, ctx: &mut Context<Self>) {
        self.shutting_down = true;
        self.stop_cause = EndCause::Shutdown;
        self.context.metrics().disconnected(Disconnect::Shutdown);
        match self.state.chat() {
            // The pair answers with `ended` `server_shutdown`; the session closes then.
            Some((_, pair, side)) if self.connection.is_some() => {
                pair.end(side, EndCause::Shutdown)
            }
            _ => {
                self.close(close_code::GOING_AWAY, "server shutting down");
                ctx.stop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::connection::{channel_sink, close_code};
    use crate::hub::InProcessClient;
    use crate::protocol::ResumePoint;
    use crate::test_support::{client, client_with_hello, closed_with, expect, hub, matched, send};

    #[actix_rt::test]
    async fn find_queues_and_leave_takes_the_session_out_again() {
        let hub = hub();
        let a = client(&hub, 1).await;
        send(&a, json!({"type":"find","adult":true})).await;
        expect(&a, "waiting").await;
        assert_eq!(hub.stats().waiting, 1);
        send(&a, json!({"type":"leave"})).await;
        send(&a, json!({"type":"leave"})).await;
        // Idle now: a second leave has nothing to leave.
        assert_eq!(expect(&a, "error").await["code"], "not_chatting");
        assert_eq!(hub.stats().waiting, 0);
    }

    #[actix_rt::test]
    async fn next_ends_the_chat_and_queues_again_while_find_is_refused_in_a_chat() {
        let hub = hub();
        let (a, b) = matched(&hub, "text").await;
        send(&a, json!({"type":"find","adult":true})).await;
        assert_eq!(expect(&a, "error").await["code"], "already_chatting");
        send(&a, json!({"type":"next"})).await;
        assert_eq!(expect(&a, "ended").await["reason"], "you_left");
        expect(&a, "waiting").await;
        assert_eq!(expect(&b, "ended").await["reason"], "stranger_left");
        assert_eq!(hub.stats().waiting, 1);
        assert_eq!(hub.stats().chatting, 0);
    }

    #[actix_rt::test]
    async fn a_resume_replaces_the_connection_and_the_old_ones_frames_are_ignored() {
        let hub = hub();
        let (old, hello) = client_with_hello(&hub, 1).await;
        let b = client(&hub, 2).await;
        for member in [&old, &b] {
            send(member, json!({"type":"find","adult":true})).await;
            expect(member, "waiting").await;
        }
        expect(&old, "matched").await;
        expect(&b, "matched").await;

        let (sink, out) = channel_sink();
        let (frames, mut rx) = tokio::sync::mpsc::channel(8);
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let keys = hub.client_keys_for("127.0.8.1".parse().unwrap());
        let token = hello["session"].as_str().unwrap().to_owned();
        let from = ResumePoint {
            chat: None,
            last_seq: 1,
        };
        hub.connect(keys, Some((&token, from)), Box::new(sink), Box::pin(stream))
            .await;
        let new = InProcessClient { frames, out };
        let resumed = expect(&new, "hello").await;
        assert_eq!(resumed["resumed"], true);
        assert_eq!(resumed["state"], "chatting");
        assert_eq!(closed_with(&old).await, Some(close_code::RESUMED_ELSEWHERE));
        // A late frame of the replaced connection must not act on the session.
        send(&old, json!({"type":"msg","text":"from the old connection"})).await;
        send(&new, json!({"type":"msg","text":"from the new one"})).await;
        assert_eq!(expect(&b, "msg").await["text"], "from the new one");
        assert_eq!(expect(&new, "msg").await["seq"], 2);
    }

    #[actix_rt::test]
    async fn more_protocol_errors_than_the_budget_close_the_connection_with_1008() {
        let hub = hub();
        let a = client(&hub, 1).await;
        let budget = hub.config().max_protocol_errors_per_minute;
        for _ in 0..=budget {
            send(&a, json!({"type":"nonsense"})).await;
        }
        for _ in 0..budget {
            assert_eq!(expect(&a, "error").await["code"], "bad_request");
        }
        assert_eq!(expect(&a, "error").await["code"], "bad_request");
        assert_eq!(closed_with(&a).await, Some(close_code::POLICY_VIOLATION));
    }
}

//! The session actor: one per client, from its first connection until it leaves or its resume
//! grace runs out. It parses the client's frames, enforces the limits, keeps the session's
//! state (idle, waiting, chatting) and its read position in the chat's log, and writes to the
//! client through a bounded `ClientSink`. Talks to the matchmaker (queueing), to its chat's
//! pair actor (everything said in a chat) and to the purge timer (resume grace).
//!
//! Layout: this file holds the actor, its lifecycle (connections, drops, resume) and its
//! messages; `requests` what a client asks of it; `policy` its rules as plain values.

mod policy;
mod requests;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use actix::prelude::*;
use bytestring::ByteString;
use futures_util::StreamExt as _;

use crate::connection::{close_code, ClientFrame, ClientSink, FrameStream, Outgoing};
use crate::context::ChatContext;
use crate::event_log::Side;
use crate::ids::{ChatId, SessionId};
use crate::matchmaker::MatchmakerHandle;
use crate::metrics::{Disconnect, Refusal};
use crate::pair::{EndCause, PairHandle};
use crate::pow::Challenge;
use crate::protocol::{
    parse_client_frame, render_error, render_hello, ErrorCode, FindRequest, HelloFrame, Mode,
    PowChallenge, ProtocolError,
};
use crate::purge::PurgeHandle;
use crate::rate_limits::SessionLimiters;
use crate::registry::{
    Attach, AttachRejected, Occupancy, ResumeToken, SessionCommand, SessionSlot, TokenHash,
};
use policy::{ErrorBudget, OutboxBounds};

#[derive(Debug)]
enum State {
    Idle,
    Waiting,
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
        requeue: bool,
    },
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Waiting => "waiting",
            State::Chatting { .. } | State::Ending { .. } => "chatting",
        }
    }

    fn occupancy(&self) -> Occupancy {
        match self {
            State::Idle => Occupancy::Idle,
            State::Waiting => Occupancy::Waiting,
            State::Chatting { .. } | State::Ending { .. } => Occupancy::Chatting,
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
            State::Idle | State::Waiting => None,
        }
    }
}

struct Connection {
    sink: Box<dyn ClientSink>,
    frames: SpawnHandle,
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
    /// Handed to the client in the first `hello`, then wiped; resumes only ever see the hash.
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
    /// The last chat's `ended`, kept so a client that was away when it came still gets it.
    last_ended: Option<(u64, ByteString)>,
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
        let session = Session {
            id: context.next_session_id(),
            token_hash,
            token: Some(token),
            slot,
            connection: None,
            connection_number: 0,
            pending_connection: Some((sink, frames)),
            state: State::Idle,
            preferences: None,
            delivered_seq: 0,
            last_ended: None,
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
            pow: match context.pow_difficulty_for_new_session(Instant::now()) {
                0 => None,
                bits => Some(Challenge::new(bits)),
            },
            shutting_down: false,
            stop_cause: EndCause::Left,
            context,
            matchmaker,
            purge,
        };
        session.start()
    }

    fn set_state(&mut self, state: State) {
        self.context
            .session_moved(self.state.occupancy(), state.occupancy());
        self.state = state;
    }

    fn attach(&mut self, sink: Box<dyn ClientSink>, frames: FrameStream, ctx: &mut Context<Self>) {
        self.connection_number += 1;
        let connection = self.connection_number;
        let frames = ctx.add_stream(frames.map(move |frame| TaggedFrame { connection, frame }));
        self.connection = Some(Connection { sink, frames });
        self.last_heard = Instant::now();
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
        connection.sink.send(frame);
        let unsent = connection.sink.unsent_bytes();
        if self
            .outbox_bounds
            .must_cut_off(unsent, self.context.outboxes_over_budget())
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
                self.push(render_error(ErrorCode::TooLarge, &message, None), ctx);
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
            return;
        }
        if self.last_heard.elapsed() > self.context.config().client_timeout {
            self.context
                .metrics()
                .disconnected(Disconnect::ClientTimeout);
            self.go_away(ctx);
        } else {
            self.send(Outgoing::Ping, ctx);
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.context
            .session_started(self.token_hash, ctx.address().recipient());
        if let Some((sink, frames)) = self.pending_connection.take() {
            self.attach(sink, frames, ctx);
        }
        if let Some(token) = self.token.take() {
            self.send_hello(&token, false, ctx);
        }
        ctx.run_interval(self.context.config().heartbeat_interval, Self::heartbeat);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        match &self.state {
            State::Waiting => self.matchmaker.leave(self.id),
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
        }
    }
}

impl Session {
    /// A client resumed with this session's token: attach its new connection, say hello and
    /// replay what it missed.
    fn resume(&mut self, attach: Attach, ctx: &mut Context<Self>) -> Result<(), AttachRejected> {
        if self.shutting_down {
            return Err(AttachRejected {
                sink: attach.sink,
                frames: attach.frames,
            });
        }
        if let Some(mut old) = self.connection.take() {
            // The old connection has not been noticed dead yet; the new one wins. What was
            // queued for it is dropped at once: a client that takes over its own session again
            // and again must not leave a replay behind on each connection it abandons.
            self.context
                .metrics()
                .disconnected(Disconnect::ResumedElsewhere);
            ctx.cancel_future(old.frames);
            old.sink.close_at_once(
                close_code::RESUMED_ELSEWHERE,
                "resumed on another connection",
            );
        } else {
            self.purge.untrack_away(self.id);
        }
        self.away_generation += 1;
        self.context.metrics().sessions_resumed.increment(1);
        self.attach(attach.sink, attach.frames, ctx);
        self.send_hello(&attach.token, true, ctx);
        self.delivered_seq = attach.last_seq;
        match self.state.chat() {
            Some((chat, pair, side)) => {
                let request = pair.back(side, attach.last_seq);
                // Nothing else is handled until the replay is queued, so live events that
                // arrive meanwhile are filtered by `delivered_seq` and never doubled.
                ctx.wait(request.into_actor(self).map(move |replay, session, ctx| {
                    let Ok(replay) = replay else { return };
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
            None => {
                if let Some((seq, frame)) = self.last_ended.clone() {
                    if seq > attach.last_seq {
                        self.push(frame, ctx);
                    }
                }
            }
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
        if !matches!(self.state, State::Waiting) || self.shutting_down {
            // This session left the queue while the match was being made.
            started.pair.end(started.side, EndCause::Left);
            return;
        }
        if self.connection.is_none() {
            started.pair.away(started.side);
        }
        self.delivered_seq = 0;
        self.last_ended = None;
        self.set_state(State::Chatting {
            chat: started.chat,
            pair: started.pair,
            side: started.side,
            mode: started.mode,
        });
    }
}

/// Sent by the pair actor: one frame for this member. `seq` is 0 for frames that are not
/// chat events (typing, signal, stranger_away/back), which are never logged or replayed.
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
        if self.state.chat().map(|(chat, _, _)| chat) != Some(event.chat) {
            return;
        }
        if event.seq == 0 {
            self.push(event.frame, ctx);
        } else if event.seq > self.delivered_seq && self.connection.is_some() {
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
        self.last_ended = Some((ended.seq, ended.frame));
        self.set_state(State::Idle);
        if self.shutting_down {
            self.close(close_code::GOING_AWAY, "server shutting down");
            ctx.stop();
        } else if requeue {
            self.join_queue(ctx);
        }
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
        hub.connect(keys, Some((&token, 1)), Box::new(sink), Box::pin(stream))
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

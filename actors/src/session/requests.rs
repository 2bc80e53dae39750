//! What a client asks of its session: the requests (`find`, `msg`, `next`, …) and the
//! refusals, with their counting and the protocol-error budget.

use std::time::Duration;

use tokio::time::Instant;

use actix::prelude::*;
use bytestring::ByteString;

use super::policy::refusal_for;
use super::{Session, State};
use crate::connection::close_code;
use crate::event_log::EventKind;
use crate::matchmaker::JoinQueue;
use crate::metrics::{Disconnect, Refusal};
use crate::pair::{EndCause, PostRefused, RelayKind};
use crate::protocol::{
    fixed, render_error, render_waiting, retry_after_ms, ChatBody, ClientRequest, ErrorCode,
    FindRequest, Mode, ProtocolError,
};

/// How long a client that was refused for a full chat mailbox should wait.
const CHAT_BUSY_RETRY_MS: u64 = 100;

impl Session {
    pub(super) fn refuse(&mut self, error: ProtocolError, ctx: &mut Context<Self>) {
        self.context.metrics().refused(refusal_for(error.code));
        self.send_error(error.code, &error.message, None, ctx);
        self.count_protocol_error(ctx);
    }

    /// Sends an `error` frame, counted by code.
    pub(super) fn send_error(
        &mut self,
        code: ErrorCode,
        message: &str,
        retry_after_ms: Option<u64>,
        ctx: &mut Context<Self>,
    ) {
        self.context.metrics().error_sent(code);
        self.push(render_error(code, message, retry_after_ms), ctx);
    }

    pub(super) fn count_protocol_error(&mut self, ctx: &mut Context<Self>) {
        if self.protocol_errors.record(Instant::now()) {
            self.context
                .metrics()
                .disconnected(Disconnect::ProtocolErrors);
            self.close(close_code::POLICY_VIOLATION, "too many protocol errors");
            ctx.stop();
        }
    }

    /// Refuses a frame over a rate limit. Refusals count towards the protocol-error budget,
    /// so a client that keeps going past its limit is disconnected.
    pub(super) fn rate_limited(&mut self, wait: Duration, what: &str, ctx: &mut Context<Self>) {
        self.context.metrics().refused(Refusal::RateLimited);
        let message = format!("you are sending {what} too fast; wait a little");
        let retry = Some(retry_after_ms(wait));
        self.send_error(ErrorCode::RateLimited, &message, retry, ctx);
        self.count_protocol_error(ctx);
    }

    /// Tells a banned client so (with how long is left) and returns true.
    pub(super) fn refused_as_banned(&mut self, ctx: &mut Context<Self>) -> bool {
        let banned = self
            .context
            .ban_remaining(self.slot.client(), Instant::now());
        let Some(left) = banned else {
            return false;
        };
        self.context.metrics().refused(Refusal::Banned);
        self.send_error(
            ErrorCode::Banned,
            "strangers reported you; you cannot chat for a while",
            Some(retry_after_ms(left)),
            ctx,
        );
        true
    }

    pub(super) fn not_chatting(&mut self, ctx: &mut Context<Self>) {
        self.refuse(
            ProtocolError {
                code: ErrorCode::NotChatting,
                message: "you are not in a chat".into(),
            },
            ctx,
        );
    }

    pub(super) fn handle_request(&mut self, request: ClientRequest, ctx: &mut Context<Self>) {
        match request {
            ClientRequest::Find(find) => self.find(find, ctx),
            ClientRequest::Msg { body } => match self.limits.check_message() {
                Ok(()) => self.post(EventKind::Msg, body, ctx),
                Err(wait) => self.rate_limited(wait, "messages", ctx),
            },
            ClientRequest::Media { body } => match self.limits.check_media() {
                Ok(()) => self.post(EventKind::Media, body, ctx),
                Err(wait) => self.rate_limited(wait, "images and voice notes", ctx),
            },
            ClientRequest::Typing { active } => {
                if self.limits.check_typing().is_err() {
                    // An indicator is a hint: past the rate it is dropped, without an answer.
                    return self.context.metrics().refused(Refusal::TypingDropped);
                }
                let frame = if active {
                    fixed::TYPING_ON
                } else {
                    fixed::TYPING_OFF
                };
                self.relay(RelayKind::Typing, ByteString::from_static(frame), ctx);
            }
            ClientRequest::Signal { frame } => self.signal(frame, ctx),
            ClientRequest::Next => self.next(ctx),
            ClientRequest::Leave => self.leave(ctx),
            ClientRequest::Report { reason } => match &self.state {
                State::Chatting { pair, side, .. } => {
                    pair.end(*side, EndCause::Reported(reason));
                    self.begin_ending(false);
                }
                _ => self.not_chatting(ctx),
            },
            // A connection's first frame is read on its own (`Session::first_frame`).
            ClientRequest::Resume(_) => self.refuse(
                ProtocolError {
                    code: ErrorCode::BadRequest,
                    message: "resume must be the first frame on a new connection".into(),
                },
                ctx,
            ),
        }
    }

    pub(super) fn find(&mut self, find: FindRequest, ctx: &mut Context<Self>) {
        if self.state.chat().is_some() {
            return self.refuse(
                ProtocolError {
                    code: ErrorCode::AlreadyChatting,
                    message: "you are already in a chat; send next or leave first".into(),
                },
                ctx,
            );
        }
        if !find.adult {
            return self.refuse(
                ProtocolError {
                    code: ErrorCode::AgeRequired,
                    message: "confirm that you are an adult (\"adult\":true) to chat".into(),
                },
                ctx,
            );
        }
        if self.refused_as_banned(ctx) {
            return;
        }
        if let Some(challenge) = &self.pow {
            let error = match find.pow.as_deref() {
                None => Some((
                    ErrorCode::PowRequired,
                    "solve the proof-of-work challenge in hello",
                )),
                Some(nonce) if !challenge.is_solved_by(nonce) => Some((
                    ErrorCode::PowInvalid,
                    "that nonce does not solve the challenge",
                )),
                Some(_) => None,
            };
            if let Some((code, message)) = error {
                return self.refuse(
                    ProtocolError {
                        code,
                        message: message.into(),
                    },
                    ctx,
                );
            }
            // Solved: the challenge is spent, and the session admitted.
            self.pow = None;
        }
        if let Err(wait) = self.context.spend_find(self.slot.client()) {
            return self.rate_limited(wait, "finds", ctx);
        }
        if matches!(self.state, State::Waiting { .. }) {
            self.matchmaker.leave(self.id, &self.token_hash);
        }
        self.preferences = Some(find);
        self.join_queue(ctx);
    }

    pub(super) fn join_queue(&mut self, ctx: &mut Context<Self>) {
        if self.preferences.is_none() {
            return self.not_chatting(ctx);
        }
        if self.enqueue(ctx) {
            let online = self.context.stats().online;
            self.push(render_waiting(online), ctx);
        }
    }

    /// Puts this session in the queue with its last `find`'s preferences; false (and the
    /// client told why) when the queue is busy.
    pub(super) fn enqueue(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some(preferences) = self.preferences.as_ref() else {
            return false;
        };
        let join = JoinQueue {
            session: self.id,
            token: self.token_hash,
            addr: ctx.address(),
            client: self.slot.client(),
            mode: preferences.mode,
            interests: preferences.interests.clone(),
            nick: preferences.nick.clone(),
            arbiter: Arbiter::current(),
        };
        if self.matchmaker.join(join).is_err() {
            self.context.metrics().refused(Refusal::QueueBusy);
            self.set_state(State::Idle);
            let message = "the queue is busy, try again";
            self.send_error(ErrorCode::ServerBusy, message, None, ctx);
            return false;
        }
        let mode = preferences.mode;
        self.set_state(State::Waiting { mode });
        true
    }

    pub(super) fn post(&mut self, kind: EventKind, body: ChatBody, ctx: &mut Context<Self>) {
        let State::Chatting { pair, side, .. } = &self.state else {
            return self.not_chatting(ctx);
        };
        match pair.post(*side, kind, body) {
            Ok(()) => {}
            Err(PostRefused::Busy) => self.chat_busy(ctx),
            // The chat just ended; its `ended` is already on the way to this session.
            Err(PostRefused::Ended) => self.not_chatting(ctx),
        }
    }

    /// A `msg` or `media` the chat could not take: the client is told to send it again.
    pub(super) fn chat_busy(&mut self, ctx: &mut Context<Self>) {
        self.context.metrics().refused(Refusal::ChatBusy);
        self.send_error(
            ErrorCode::RateLimited,
            "you are sending faster than the chat can take",
            Some(CHAT_BUSY_RETRY_MS),
            ctx,
        );
    }

    /// WebRTC signalling: only between members of a video chat, and rate limited, since each
    /// signal may carry up to `max_signal_bytes` to the stranger.
    pub(super) fn signal(&mut self, frame: ByteString, ctx: &mut Context<Self>) {
        match &self.state {
            State::Chatting {
                mode: Mode::Video, ..
            } => {}
            State::Chatting { .. } => {
                return self.refuse(
                    ProtocolError {
                        code: ErrorCode::BadRequest,
                        message: "signals are for video chats only".into(),
                    },
                    ctx,
                )
            }
            _ => return self.not_chatting(ctx),
        }
        match self.limits.check_signal() {
            Ok(()) => self.relay(RelayKind::Signal, frame, ctx),
            Err(wait) => self.rate_limited(wait, "signals", ctx),
        }
    }

    pub(super) fn relay(&mut self, kind: RelayKind, frame: ByteString, ctx: &mut Context<Self>) {
        let State::Chatting { pair, side, .. } = &self.state else {
            return self.not_chatting(ctx);
        };
        // Typing and signalling are best effort: dropped, and counted, when the chat is busy.
        if pair.relay(*side, kind, frame).is_err() {
            self.context.metrics().refused(Refusal::ChatBusy);
        }
    }

    pub(super) fn next(&mut self, ctx: &mut Context<Self>) {
        // `next` queues again, so it is refused to the banned and spends a find.
        if self.preferences.is_some() {
            if self.refused_as_banned(ctx) {
                return;
            }
            if let Err(wait) = self.context.spend_find(self.slot.client()) {
                return self.rate_limited(wait, "finds", ctx);
            }
        }
        match &mut self.state {
            State::Chatting { pair, side, .. } => {
                pair.end(*side, EndCause::Left);
                self.begin_ending(true);
            }
            State::Ending { requeue, .. } => *requeue = true,
            State::Waiting { .. } => {
                self.matchmaker.leave(self.id, &self.token_hash);
                self.join_queue(ctx);
            }
            State::Idle => self.join_queue(ctx),
        }
    }

    pub(super) fn leave(&mut self, ctx: &mut Context<Self>) {
        match &mut self.state {
            State::Chatting { pair, side, .. } => {
                pair.end(*side, EndCause::Left);
                self.begin_ending(false);
            }
            State::Ending { requeue, .. } => *requeue = false,
            State::Waiting { .. } => {
                self.matchmaker.leave(self.id, &self.token_hash);
                self.set_state(State::Idle);
            }
            State::Idle => self.not_chatting(ctx),
        }
    }

    pub(super) fn begin_ending(&mut self, requeue: bool) {
        if let State::Chatting {
            chat,
            pair,
            side,
            mode,
        } = &self.state
        {
            let ending = State::Ending {
                chat: *chat,
                pair: pair.clone(),
                side: *side,
                mode: *mode,
                requeue,
            };
            self.set_state(ending);
        }
    }
}

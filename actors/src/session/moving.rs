//! A session moving between nodes of a cluster. When a client resumes on a node that does not
//! hold its session, that node asks the holder for it (`remote::NodeRelay::take_over`): the
//! holder's session writes down what it is (`move_out`) and stops without ending anything,
//! and the new node starts it again from that (`start_moved`) with the client's connection.
//! Its chat learns where the member went from the resume's `back`, and replays what the
//! member missed; anything sent to the old node meanwhile is in that replay.
//!
//! What moves is what the protocol needs, no more: the state, the last `find`, the last
//! chat's `ended` and a proof-of-work still owed. Rate-limit buckets start afresh on the new
//! node (as they do for any new connection there, which the connection limit counts).

use std::sync::Arc;

use actix::prelude::*;

use super::{LastEnded, Session, State};
use crate::connection::{ClientSink, FrameStream};
use crate::context::ChatContext;
use crate::handover::{MovedFind, MovedSession, MovedState};
use crate::ids::ChatId;
use crate::matchmaker::MatchmakerHandle;
use crate::pair::PairHandle;
use crate::pow::Challenge;
use crate::protocol::{render_ended, EndedReason, FindRequest, ResumePoint};
use crate::purge::PurgeHandle;
use crate::registry::{hash_presented_token, Attach, ResumeToken, SessionSlot};
use crate::remote::{mode_of, side_code, side_of};

/// The new node's view of the chat a moving session is in.
pub enum ArrivingChat {
    /// Its pair, found (here or on another node).
    Found(PairHandle),
    /// Its pair ran here and is gone: the chat ended while the session moved.
    Gone,
}

impl Session {
    /// Writes this session down for another node and stops here without ending its chat or
    /// telling anyone it left: it lives on there. `None` when it cannot move (shutting down).
    pub(super) fn move_out(&mut self, ctx: &mut Context<Self>) -> Option<MovedSession> {
        if self.shutting_down {
            return None;
        }
        let state = match &self.state {
            State::Idle => MovedState::Idle,
            State::Waiting { mode } => {
                // The new node queues it again; its place here goes.
                self.matchmaker.leave(self.id, &self.token_hash);
                MovedState::Waiting {
                    mode: mode.as_str().to_owned(),
                }
            }
            State::Chatting {
                chat,
                pair,
                side,
                mode,
            }
            | State::Ending {
                chat,
                pair,
                side,
                mode,
                ..
            } => MovedState::Chatting {
                chat: chat.as_str().to_owned(),
                pair_node: pair.node().map(str::to_owned),
                side: side_code(*side),
                mode: mode.as_str().to_owned(),
                ending: match &self.state {
                    State::Ending { requeue, .. } => Some(*requeue),
                    _ => None,
                },
            },
        };
        let moved = MovedSession {
            state,
            find: self.preferences.as_ref().map(|find| MovedFind {
                adult: find.adult,
                mode: find.mode.as_str().to_owned(),
                interests: find.interests.clone(),
                nick: find.nick.clone(),
            }),
            last_ended: self.last_ended.as_ref().map(|ended| {
                (
                    ended.chat.as_str().to_owned(),
                    ended.seq,
                    ended.frame.to_string(),
                )
            }),
            pow_difficulty: self.pow.as_ref().map(|challenge| challenge.difficulty),
        };
        self.moved_away = true;
        self.set_state(State::Idle);
        // A connection not yet noticed dead: the client is on the other node now.
        self.close_replaced_connection(ctx);
        ctx.stop();
        Some(moved)
    }

    /// Starts a session that moved here from another node, with the client's new connection:
    /// it says hello as resumed, replays what the client missed, and tells its chat it is here.
    #[allow(clippy::too_many_arguments)]
    pub fn start_moved(
        context: Arc<ChatContext>,
        matchmaker: MatchmakerHandle,
        purge: PurgeHandle,
        slot: SessionSlot,
        connection: (Box<dyn ClientSink>, FrameStream),
        token: &str,
        from: ResumePoint,
        moved: MovedSession,
        chat: Option<ArrivingChat>,
    ) -> Option<Addr<Session>> {
        let token_hash = hash_presented_token(token)?;
        let token = ResumeToken::presented(token);
        let mut session = Session::new(context, matchmaker, purge, slot, token_hash, None);
        session.preferences = moved.find.and_then(|find| {
            Some(FindRequest {
                adult: find.adult,
                mode: mode_of(&find.mode)?,
                interests: find.interests,
                nick: find.nick,
                pow: None,
            })
        });
        session.last_ended = moved.last_ended.and_then(|(chat, seq, frame)| {
            Some(LastEnded {
                chat: ChatId::parse(&chat)?,
                seq,
                frame: frame.into(),
            })
        });
        session.pow = moved.pow_difficulty.map(Challenge::new);
        let state = match (moved.state, chat) {
            (MovedState::Waiting { mode }, _) => mode_of(&mode).map(|_| Arrival::Queue),
            (
                MovedState::Chatting {
                    chat,
                    side,
                    mode,
                    ending,
                    ..
                },
                Some(arriving),
            ) => (|| {
                let (chat, side, mode) = (ChatId::parse(&chat)?, side_of(side)?, mode_of(&mode)?);
                Some(match arriving {
                    ArrivingChat::Found(pair) => Arrival::Chat(match ending {
                        None => State::Chatting {
                            chat,
                            pair,
                            side,
                            mode,
                        },
                        Some(requeue) => State::Ending {
                            chat,
                            pair,
                            side,
                            mode,
                            requeue,
                        },
                    }),
                    ArrivingChat::Gone => Arrival::Lost {
                        chat,
                        seq: from.last_seq + 1,
                    },
                })
            })(),
            _ => None,
        };
        let (sink, frames) = connection;
        session.arriving = Some(MoveIn {
            attach: Attach {
                sink,
                frames,
                from,
                token,
            },
            arrival: state.unwrap_or(Arrival::Idle),
        });
        Some(session.start())
    }

    /// A moved session's first moments here (from `started`): it takes up its state, then
    /// resumes with the client's connection as any resume does.
    pub(super) fn arrive(&mut self, arriving: MoveIn, ctx: &mut Context<Self>) {
        match arriving.arrival {
            Arrival::Idle => {}
            Arrival::Queue => {
                self.enqueue(ctx);
            }
            Arrival::Chat(state) => {
                self.moved_in = true;
                self.set_state(state);
            }
            Arrival::Lost { chat, seq } => {
                // The chat ended while the session moved, and its end went to the old node.
                self.last_ended = Some(LastEnded {
                    chat,
                    seq,
                    frame: render_ended(seq, EndedReason::StrangerLost),
                });
            }
        }
        if let Some(ended) = self.last_ended.clone() {
            self.forget_end_after_grace(ended.chat, ctx);
        }
        let _ = self.resume(arriving.attach, ctx);
    }
}

/// A moved session's start, kept until the actor runs.
pub(super) struct MoveIn {
    attach: Attach,
    arrival: Arrival,
}

enum Arrival {
    Idle,
    /// It was waiting: it queues again here.
    Queue,
    Chat(State),
    Lost {
        chat: ChatId,
        seq: u64,
    },
}

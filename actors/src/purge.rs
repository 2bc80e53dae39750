//! The purge timer actor: on a fixed tick it ends sessions whose resume grace ran out and has
//! the matchmaker drop expired cooldowns, prunes the rate-limit and report stores, and rotates the salt behind client keys when due. Sessions register themselves when their connection
//! drops and unregister when they resume or stop.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use actix::prelude::*;

use std::sync::Arc;

use crate::abuse::AbuseDesk;
use crate::client_key::KeyRing;
use crate::ids::SessionId;
use crate::matchmaker::MatchmakerHandle;
use crate::rate_limits::ClientLimiters;
use crate::registry::KeyGenerationsInUse;
use crate::session::{GraceExpired, Session};

struct AwaySession {
    generation: u64,
    deadline: Instant,
    addr: Addr<Session>,
}

pub struct PurgeTimer {
    tick: Duration,
    away: HashMap<SessionId, AwaySession>,
    matchmaker: MatchmakerHandle,
    client_keys: Arc<KeyRing>,
    /// Which salt generations live sessions were keyed under, so rotation keeps them.
    sessions_key_generations: KeyGenerationsInUse,
    client_limits: Arc<ClientLimiters>,
    abuse: Arc<AbuseDesk>,
    /// How long each tick's own work takes (`ephemera_purge_tick_seconds`).
    tick_seconds: metrics::Histogram,
}

impl PurgeTimer {
    pub fn new(
        tick: Duration,
        matchmaker: MatchmakerHandle,
        client_keys: Arc<KeyRing>,
        sessions_key_generations: KeyGenerationsInUse,
        client_limits: Arc<ClientLimiters>,
        abuse: Arc<AbuseDesk>,
        tick_seconds: metrics::Histogram,
    ) -> Self {
        Self {
            tick_seconds,
            tick,
            away: HashMap::new(),
            matchmaker,
            client_keys,
            sessions_key_generations,
            client_limits,
            abuse,
        }
    }

    /// One tick. Infallible by construction: it only compares instants and sends messages
    /// whose failure (a session that already stopped) needs nothing done.
    fn purge(&mut self, now: Instant) {
        self.away.retain(|_, away| {
            if away.deadline > now {
                return true;
            }
            away.addr.do_send(GraceExpired {
                generation: away.generation,
            });
            false
        });
        self.matchmaker.purge_expired(now);
        self.client_limits.prune();
        self.abuse.prune(now);
        if self.client_keys.rotation_due(now) {
            // Salts stay while sessions or bans are keyed under them, so neither lapses.
            let mut in_use = self.sessions_key_generations.collect();
            in_use.extend(self.abuse.key_generations_in_use());
            if self.client_keys.rotate_if_due(now, &in_use) {
                tracing::info!(
                    generations_kept = self.client_keys.generations_kept(),
                    "client-key salt rotated"
                );
            }
        }
    }
}

impl Actor for PurgeTimer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.tick, |timer, _| {
            // The work's own duration, measured on the wall clock (tokio's may be paused).
            let began = std::time::Instant::now();
            timer.purge(Instant::now());
            timer.tick_seconds.record(began.elapsed().as_secs_f64());
        });
    }
}

/// How sessions reach the purge timer.
#[derive(Clone)]
pub struct PurgeHandle {
    addr: Addr<PurgeTimer>,
}

impl PurgeHandle {
    pub fn start(timer: PurgeTimer) -> Self {
        Self {
            addr: timer.start(),
        }
    }

    /// End `session` at `deadline` unless it comes back (its drop number `generation`).
    pub fn track_away(
        &self,
        session: SessionId,
        generation: u64,
        deadline: Instant,
        addr: Addr<Session>,
    ) {
        self.addr.do_send(TrackAway {
            session,
            generation,
            deadline,
            addr,
        });
    }

    /// `session` resumed or stopped: forget its deadline.
    pub fn untrack_away(&self, session: SessionId) {
        self.addr.do_send(UntrackAway { session });
    }
}

/// A session's connection dropped; end it at `deadline` unless it comes back. Sent by the
/// session through `PurgeHandle`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TrackAway {
    pub session: SessionId,
    pub generation: u64,
    pub deadline: Instant,
    pub addr: Addr<Session>,
}

impl Handler<TrackAway> for PurgeTimer {
    type Result = ();

    fn handle(&mut self, track: TrackAway, _ctx: &mut Context<Self>) {
        self.away.insert(
            track.session,
            AwaySession {
                generation: track.generation,
                deadline: track.deadline,
                addr: track.addr,
            },
        );
    }
}

/// A session resumed or stopped: forget it. Sent by the session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UntrackAway {
    pub session: SessionId,
}

impl Handler<UntrackAway> for PurgeTimer {
    type Result = ();

    fn handle(&mut self, untrack: UntrackAway, _ctx: &mut Context<Self>) {
        self.away.remove(&untrack.session);
    }
}

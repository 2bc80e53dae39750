//! The matchmaker actor: one queue per mode, interest matching with a fallback to anyone after
//! `interest_timeout`, and a rematch cooldown. Sessions reach it only through
//! `MatchmakerHandle`, so a clustered matchmaker could later stand behind the same handle.
//! When it pairs two sessions it starts their pair actor on the first one's arbiter.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use std::sync::Arc;

use actix::prelude::*;

use crate::abuse::AbuseDesk;
use crate::client_key::ClientKey;
use crate::cluster_matchmaker::{ClusterMatchmaker, CountWaitingHere, LeaveCluster, PruneCluster};

use crate::config::ChatConfig;
use crate::event_log::Side;
use crate::ids::SessionId;
use crate::metrics::ChatMetrics;
use crate::pair::{Member, MemberLink, Pair, PairSpec};
use crate::protocol::Mode;
use crate::registry::TokenHash;
use crate::session::Session;

/// The only way other actors reach the matchmaker: the seam a matchmaker shared by several
/// nodes will stand behind. An enum over the implementations rather than a trait object: each
/// method stays a plain call with typed messages (no boxed futures), and adding a variant
/// makes the compiler point at every place that must learn about it (docs/architecture.md).
#[derive(Clone)]
pub enum MatchmakerHandle {
    /// The in-process matchmaker actor of a single node.
    Local(Addr<Matchmaker>),
    /// This node's end of the matchmaker shared by a cluster's nodes through Redis.
    Cluster(Addr<ClusterMatchmaker>),
}

/// The matchmaker could not take the request now (its mailbox is full).
#[derive(Debug, thiserror::Error)]
#[error("matchmaker is busy")]
pub struct MatchmakerBusy;

impl MatchmakerHandle {
    /// Starts the local matchmaker on the current arbiter.
    pub fn start_local(config: &ChatConfig, metrics: ChatMetrics, abuse: Arc<AbuseDesk>) -> Self {
        MatchmakerHandle::Local(Matchmaker::new(config, metrics, abuse).start())
    }

    /// Queues a session. Bounded: refused when the matchmaker's mailbox is full.
    pub fn join(&self, join: JoinQueue) -> Result<(), MatchmakerBusy> {
        match self {
            MatchmakerHandle::Local(addr) => addr.try_send(join).map_err(|_| MatchmakerBusy),
            MatchmakerHandle::Cluster(addr) => addr.try_send(join).map_err(|_| MatchmakerBusy),
        }
    }

    /// Takes a session out of its queue, if it is still there. Never refused: a session must
    /// always be able to leave.
    pub fn leave(&self, session: SessionId, token: &TokenHash) {
        match self {
            MatchmakerHandle::Local(addr) => addr.do_send(LeaveQueue { session }),
            MatchmakerHandle::Cluster(addr) => addr.do_send(LeaveCluster {
                session,
                token: *token,
            }),
        }
    }

    pub fn chat_finished(&self, finished: ChatFinished) {
        match self {
            MatchmakerHandle::Local(addr) => addr.do_send(finished),
            MatchmakerHandle::Cluster(addr) => addr.do_send(finished),
        }
    }

    pub fn purge_expired(&self, now: Instant) {
        match self {
            MatchmakerHandle::Local(addr) => addr.do_send(PurgeExpired { now }),
            MatchmakerHandle::Cluster(addr) => addr.do_send(PruneCluster),
        }
    }

    /// How many sessions wait, for tests and benches.
    pub async fn waiting(&self) -> usize {
        match self {
            MatchmakerHandle::Local(addr) => addr.send(CountWaiting).await.unwrap_or(0),
            MatchmakerHandle::Cluster(addr) => addr.send(CountWaitingHere).await.unwrap_or(0),
        }
    }
}

struct Waiting {
    addr: Addr<Session>,
    client: ClientKey,
    mode: Mode,
    interests: Vec<String>,
    nick: Option<String>,
    arbiter: ArbiterHandle,
    /// Order of arrival; also tells a current entry from a stale index reference.
    ticket: u64,
    /// Accepts a stranger without shared interests (none given, or the timeout passed).
    open: bool,
    /// Has a reference in its mode's `open` deque.
    in_open_queue: bool,
    /// When it joined the queue (for the wait-time histogram).
    joined: Instant,
}

/// Per-mode indexes over the waiting sessions. Both hold `(session, ticket)` references that
/// may be stale (the entry left or was matched); stale ones are skipped and dropped lazily.
#[derive(Default)]
struct ModeQueue {
    open: VecDeque<(SessionId, u64)>,
    /// How many references in `open` are stale; past half the deque it is compacted, so a
    /// long-waiting session at the front cannot make stale references pile up behind it.
    stale_open: usize,
    by_interest: HashMap<String, Vec<(SessionId, u64)>>,
}

pub struct Matchmaker {
    waiting: HashMap<SessionId, Waiting>,
    queues: [ModeQueue; 2],
    /// Unordered pairs of sessions that chatted, until when they may not meet again.
    cooldowns: HashMap<(SessionId, SessionId), Instant>,
    next_ticket: u64,
    interest_timeout: Duration,
    rematch_cooldown: Duration,
    log_max_events: usize,
    log_max_bytes: usize,
    pair_mailbox_capacity: usize,
    mailbox_capacity: usize,
    metrics: ChatMetrics,
    /// Handed to every pair, which files reports there.
    abuse: Arc<AbuseDesk>,
    /// Handed to every pair it starts, so the pair can report the chat finished.
    addr: Option<Addr<Matchmaker>>,
}

fn pair_key(a: SessionId, b: SessionId) -> (SessionId, SessionId) {
    (a.min(b), a.max(b))
}

impl Matchmaker {
    pub fn new(config: &ChatConfig, metrics: ChatMetrics, abuse: Arc<AbuseDesk>) -> Self {
        Self {
            waiting: HashMap::new(),
            queues: Default::default(),
            cooldowns: HashMap::new(),
            next_ticket: 0,
            interest_timeout: config.interest_timeout,
            rematch_cooldown: config.rematch_cooldown,
            log_max_events: config.limits.event_log_max_events,
            log_max_bytes: config.limits.event_log_max_bytes,
            pair_mailbox_capacity: config.pair_mailbox_capacity,
            mailbox_capacity: config.matchmaker_mailbox_capacity.max(1),
            metrics,
            abuse,
            addr: None,
        }
    }

    fn in_cooldown(&self, a: SessionId, b: SessionId, now: Instant) -> bool {
        self.cooldowns
            .get(&pair_key(a, b))
            .is_some_and(|until| *until > now)
    }

    fn is_current(&self, (session, ticket): (SessionId, u64)) -> bool {
        self.waiting
            .get(&session)
            .is_some_and(|w| w.ticket == ticket)
    }

    /// The waiting session that shares most interests with `joiner` (oldest first on ties).
    fn best_by_interest(
        &self,
        joiner: SessionId,
        mode: Mode,
        interests: &[String],
    ) -> Option<SessionId> {
        let now = Instant::now();
        let queue = &self.queues[mode.index()];
        let mut shared: HashMap<SessionId, (usize, u64)> = HashMap::new();
        for interest in interests {
            let Some(holders) = queue.by_interest.get(interest) else {
                continue;
            };
            for &(session, ticket) in holders {
                if session != joiner
                    && self.is_current((session, ticket))
                    && !self.in_cooldown(joiner, session, now)
                {
                    shared.entry(session).or_insert((0, ticket)).0 += 1;
                }
            }
        }
        shared
            .into_iter()
            .max_by(|(_, (count_a, ticket_a)), (_, (count_b, ticket_b))| {
                count_a.cmp(count_b).then(ticket_b.cmp(ticket_a))
            })
            .map(|(session, _)| session)
    }

    /// The longest-waiting open session `joiner` may meet.
    fn first_open(&mut self, joiner: SessionId, mode: Mode) -> Option<SessionId> {
        let now = Instant::now();
        let queue = &self.queues[mode.index()];
        let found = queue.open.iter().copied().find(|&(session, ticket)| {
            session != joiner
                && self.is_current((session, ticket))
                && !self.in_cooldown(joiner, session, now)
        });
        // Stale references at the front are dropped here, so the deque stays proportional to
        // the number of open sessions.
        let waiting = &self.waiting;
        let queue = &mut self.queues[mode.index()];
        while let Some(&(session, ticket)) = queue.open.front() {
            if waiting.get(&session).is_some_and(|w| w.ticket == ticket) {
                break;
            }
            queue.open.pop_front();
            queue.stale_open = queue.stale_open.saturating_sub(1);
        }
        found.map(|(session, _)| session)
    }

    fn remove(&mut self, session: SessionId) -> Option<Waiting> {
        let waiting = self.waiting.remove(&session)?;
        let queue = &mut self.queues[waiting.mode.index()];
        if waiting.in_open_queue {
            queue.stale_open += 1;
            if queue.stale_open > 32 && queue.stale_open * 2 > queue.open.len() {
                let current = &self.waiting;
                queue
                    .open
                    .retain(|(s, t)| current.get(s).is_some_and(|w| w.ticket == *t));
                queue.stale_open = 0;
            }
        }
        // Interest lists are short-lived and small; removing here keeps them from filling
        // with stale references under churn.
        for interest in &waiting.interests {
            if let Some(holders) = queue.by_interest.get_mut(interest) {
                holders.retain(|&(s, _)| s != session);
                if holders.is_empty() {
                    queue.by_interest.remove(interest);
                }
            }
        }
        Some(waiting)
    }

    fn try_match(&mut self, session: SessionId) -> bool {
        let Some(joiner) = self.waiting.get(&session) else {
            return false;
        };
        let (mode, open) = (joiner.mode, joiner.open);
        let interests = joiner.interests.clone();
        let by_interest = if interests.is_empty() {
            None
        } else {
            self.best_by_interest(session, mode, &interests)
        };
        let partner = by_interest.or_else(|| {
            if open {
                self.first_open(session, mode)
            } else {
                None
            }
        });
        let Some(partner) = partner else {
            return false;
        };
        // Both are current entries: checked by the searches above.
        let (Some(first), Some(second)) = (self.remove(partner), self.remove(session)) else {
            return false;
        };
        self.start_chat(partner, first, session, second);
        true
    }

    fn start_chat(&mut self, a_id: SessionId, a: Waiting, b_id: SessionId, b: Waiting) {
        let now = Instant::now();
        // Recorded now, not only at the end, so `next` can never race back to the same
        // stranger before the pair reports the chat finished.
        self.cooldowns
            .insert(pair_key(a_id, b_id), now + self.rematch_cooldown);
        let common: Vec<String> = a
            .interests
            .iter()
            .filter(|interest| b.interests.contains(interest))
            .cloned()
            .collect();
        let shared_interest = !common.is_empty();
        let initiator = if a.ticket % 2 == 0 { Side::A } else { Side::B };
        let spec = PairSpec {
            mode: a.mode,
            members: [
                Member {
                    session: a_id,
                    link: MemberLink::Local(a.addr),
                    client: a.client,
                    origin: None,
                    nick: a.nick,
                },
                Member {
                    session: b_id,
                    link: MemberLink::Local(b.addr),
                    client: b.client,
                    origin: None,
                    nick: b.nick,
                },
            ],
            common,
            initiator,
            log_max_events: self.log_max_events,
            log_max_bytes: self.log_max_bytes,
            mailbox_capacity: self.pair_mailbox_capacity,
            matchmaker: MatchmakerHandle::Local(self.self_addr()),
            counters: self.metrics.pair_counters(),
            abuse: self.abuse.clone(),
            relay: None,
            queue_names: None,
        };
        self.metrics
            .matched(a.mode, shared_interest, [now - a.joined, now - b.joined]);
        // The chat lives on the arbiter of the member who waited, next to its session.
        Pair::start_in_arbiter(&a.arbiter, move |_| Pair::new(spec));
    }

    fn self_addr(&self) -> Addr<Matchmaker> {
        // Set in `started`, before any message is handled.
        self.addr
            .clone()
            .expect("the matchmaker knows its address once started")
    }
}

impl Actor for Matchmaker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Joins from every session land here; bound the mailbox so a flood is refused at the
        // sender (`MatchmakerHandle::join`) instead of queueing without limit.
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        self.addr = Some(ctx.address());
    }
}

/// Puts a session in its mode's queue. Sent by the session on `find` and `next`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JoinQueue {
    pub session: SessionId,
    /// Its token's hash, which names it in a cluster's queue.
    pub token: TokenHash,
    pub addr: Addr<Session>,
    pub client: ClientKey,
    pub mode: Mode,
    pub interests: Vec<String>,
    pub nick: Option<String>,
    /// Where the session runs; its chat will run there too.
    pub arbiter: ArbiterHandle,
}

impl Handler<JoinQueue> for Matchmaker {
    type Result = ();

    fn handle(&mut self, join: JoinQueue, ctx: &mut Context<Self>) {
        self.remove(join.session);
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let open = join.interests.is_empty() || self.interest_timeout.is_zero();
        self.waiting.insert(
            join.session,
            Waiting {
                addr: join.addr,
                client: join.client,
                mode: join.mode,
                interests: join.interests,
                nick: join.nick,
                arbiter: join.arbiter,
                ticket,
                open,
                in_open_queue: false,
                joined: Instant::now(),
            },
        );
        if self.try_match(join.session) {
            return;
        }
        // Inserted above and not matched, so it is there; if that ever breaks, the session
        // is left out of the indexes (it can still leave) and the fault is said, not hidden.
        let Some(waiting) = self.waiting.get(&join.session) else {
            tracing::error!("a joining session vanished before it was indexed");
            return;
        };
        let (mode, interests) = (waiting.mode, waiting.interests.clone());
        let queue = &mut self.queues[mode.index()];
        for interest in interests {
            queue
                .by_interest
                .entry(interest)
                .or_default()
                .push((join.session, ticket));
        }
        if open {
            queue.open.push_back((join.session, ticket));
            if let Some(waiting) = self.waiting.get_mut(&join.session) {
                waiting.in_open_queue = true;
            }
        } else {
            let session = join.session;
            ctx.run_later(self.interest_timeout, move |matchmaker, _| {
                matchmaker.open_up(session, ticket);
            });
        }
    }
}

impl Matchmaker {
    /// The interest timeout of `session` passed: it may now meet anyone.
    fn open_up(&mut self, session: SessionId, ticket: u64) {
        let Some(waiting) = self.waiting.get_mut(&session) else {
            return;
        };
        if waiting.ticket != ticket {
            return;
        }
        waiting.open = true;
        let mode = waiting.mode;
        if !self.try_match(session) {
            self.queues[mode.index()].open.push_back((session, ticket));
            if let Some(waiting) = self.waiting.get_mut(&session) {
                waiting.in_open_queue = true;
            }
        }
    }
}

/// Takes a session out of the queue. Sent by the session on `leave`, `next` and when it ends.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaveQueue {
    pub session: SessionId,
}

impl Handler<LeaveQueue> for Matchmaker {
    type Result = ();

    fn handle(&mut self, leave: LeaveQueue, _ctx: &mut Context<Self>) {
        self.remove(leave.session);
    }
}

/// A chat between these sessions ended; their cooldown starts now. Sent by the pair actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChatFinished {
    pub sessions: [SessionId; 2],
    /// The members' names in a cluster's queue (`None` on one node).
    pub queue_names: Option<[String; 2]>,
}

impl Handler<ChatFinished> for Matchmaker {
    type Result = ();

    fn handle(&mut self, finished: ChatFinished, _ctx: &mut Context<Self>) {
        let [a, b] = finished.sessions;
        self.cooldowns
            .insert(pair_key(a, b), Instant::now() + self.rematch_cooldown);
    }
}

/// Forget cooldowns that ran out, and match the waiting sessions that only a cooldown kept
/// apart: no arrival may come to prompt them. Sent by the purge timer on every tick.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PurgeExpired {
    pub now: Instant,
}

impl Handler<PurgeExpired> for Matchmaker {
    type Result = ();

    fn handle(&mut self, purge: PurgeExpired, _ctx: &mut Context<Self>) {
        let mut over = Vec::new();
        self.cooldowns.retain(|&sessions, until| {
            let running = *until > purge.now;
            if !running {
                over.push(sessions);
            }
            running
        });
        for (a, b) in over {
            if self.waiting.contains_key(&a) && self.waiting.contains_key(&b) && !self.try_match(a)
            {
                self.try_match(b);
            }
        }
    }
}

/// How many sessions are waiting. Sent by tests and benches through the handle.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CountWaiting;

impl Handler<CountWaiting> for Matchmaker {
    type Result = usize;

    fn handle(&mut self, _: CountWaiting, _ctx: &mut Context<Self>) -> usize {
        self.waiting.len()
    }
}

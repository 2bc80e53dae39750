//! The cluster's matchmaker on one node: the second implementation behind `MatchmakerHandle`.
//! The queue itself is in Redis (`cluster::queue`, matched atomically by `match.lua`); this
//! actor keeps what only this node may know of its waiting sessions (their address, nick,
//! plaintext interests), and turns a match into a chat:
//! - both members here: the pair starts here, as on one node;
//! - the partner on another node: that node is asked to hand it over (`Claim`); it answers
//!   with the partner's nick and interests (`Claimed`), or that it has gone (`ClaimGone`, and
//!   the joiner queues again). The pair then runs here, next to the joiner, and reaches the
//!   partner through the relay.
//!
//! Waiting sessions are queued again every `REFRESH` (idempotent: a session keeps its place),
//! so a Redis that restarted empty has its queue back within that time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use crate::abuse::AbuseDesk;
use crate::client_key::{ClientKey, RemoteClient};
use crate::cluster::queue::{ClusterQueue, JoinOutcome};
use crate::cluster::secret::ClusterKeys;
use crate::config::ChatConfig;
use crate::event_log::Side;
use crate::ids::SessionId;
use crate::matchmaker::{ChatFinished, JoinQueue, MatchmakerHandle};
use crate::metrics::ChatMetrics;
use crate::pair::{Member, MemberLink, Pair, PairSpec};
use crate::protocol::Mode;
use crate::registry::TokenHash;
use crate::remote::{NodeRelay, RemoteSession, Wire};
use crate::session::Session;

/// How often waiting sessions are queued again (renewing their entries' TTL, and restoring
/// them after Redis restarted empty).
const REFRESH: Duration = Duration::from_secs(5);
/// How long a claim may go unanswered (the partner's node died) before the joiner queues again.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a handed-over partner is kept, in case its stranger is gone and it is released.
const CLAIMED_KEPT: Duration = Duration::from_secs(10);
/// How long a waiting entry lives in Redis without renewal.
const WAIT_TTL: Duration = Duration::from_secs(30);

struct WaitingHere {
    session: SessionId,
    /// Its name in Redis (`ClusterKeys::session_name`).
    name: String,
    addr: Addr<Session>,
    client: ClientKey,
    mode: Mode,
    interests: Vec<String>,
    nick: Option<String>,
    arbiter: ArbiterHandle,
    joined: Instant,
    open: bool,
    /// Bumped on every join, so an answer to an older one is recognised.
    generation: u64,
}

pub struct ClusterMatchmaker {
    queue: ClusterQueue,
    keys: Arc<ClusterKeys>,
    relay: Arc<NodeRelay>,
    /// Sessions of this node in the cluster queue, by pseudonym.
    waiting: HashMap<String, WaitingHere>,
    /// Joiners whose partner on another node is being claimed, by claim number.
    /// Joiners whose partner on another node is being claimed, with that partner's name.
    claiming: HashMap<u64, (WaitingHere, String)>,
    /// Partners handed over to another node, until their chat surely started.
    claimed: HashMap<String, WaitingHere>,
    next_claim: u64,
    next_generation: u64,
    interest_timeout: Duration,
    log_max_events: usize,
    log_max_bytes: usize,
    pair_mailbox_capacity: usize,
    mailbox_capacity: usize,
    metrics: ChatMetrics,
    abuse: Arc<AbuseDesk>,
    /// Handed to every pair it starts; set when started.
    addr: Option<Addr<ClusterMatchmaker>>,
}

impl ClusterMatchmaker {
    pub fn new(
        config: &ChatConfig,
        metrics: ChatMetrics,
        abuse: Arc<AbuseDesk>,
        queue: ClusterQueue,
        keys: Arc<ClusterKeys>,
        relay: Arc<NodeRelay>,
    ) -> Self {
        ClusterMatchmaker {
            queue,
            keys,
            relay,
            waiting: HashMap::new(),
            claiming: HashMap::new(),
            claimed: HashMap::new(),
            next_claim: 0,
            next_generation: 0,
            interest_timeout: config.interest_timeout,
            log_max_events: config.limits.event_log_max_events,
            log_max_bytes: config.limits.event_log_max_bytes,
            pair_mailbox_capacity: config.pair_mailbox_capacity,
            mailbox_capacity: config.matchmaker_mailbox_capacity.max(1),
            metrics,
            abuse,
            addr: None,
        }
    }

    /// The wait TTL of entries in Redis, and the cooldown, for `ClusterQueue::new`.
    pub fn queue_timings(config: &ChatConfig) -> (Duration, Duration) {
        (WAIT_TTL, config.rematch_cooldown)
    }

    fn name(&self, token: &TokenHash) -> String {
        self.keys.session_name(token)
    }

    /// Asks Redis for a partner for `pseudonym` (or a place in the queue).
    fn ask(&mut self, pseudonym: String, ctx: &mut Context<Self>) {
        let Some(waiting) = self.waiting.get(&pseudonym) else {
            return;
        };
        let mode = waiting.mode;
        let hashes: Vec<String> = waiting
            .interests
            .iter()
            .map(|interest| self.keys.interest_hash(mode.as_str(), interest))
            .collect();
        let (open, generation) = (waiting.open, waiting.generation);
        let queue = self.queue.clone();
        let asked = pseudonym.clone();
        let join = async move { queue.join(&asked, mode.as_str(), open, &hashes).await };
        ctx.spawn(join.into_actor(self).map(move |outcome, matchmaker, ctx| {
            matchmaker.answered(pseudonym, generation, outcome, ctx);
        }));
    }

    fn answered(
        &mut self,
        pseudonym: String,
        generation: u64,
        outcome: redis::RedisResult<JoinOutcome>,
        ctx: &mut Context<Self>,
    ) {
        let current = self
            .waiting
            .get(&pseudonym)
            .is_some_and(|waiting| waiting.generation == generation);
        match outcome {
            Err(error) => {
                // Redis is away: the refresh asks again.
                tracing::warn!(%error, "the cluster queue did not answer");
            }
            Ok(JoinOutcome::Waiting) => {
                let open = self.waiting.get(&pseudonym).is_none_or(|w| w.open);
                if current && !open {
                    ctx.run_later(self.interest_timeout, move |matchmaker, ctx| {
                        matchmaker.open_up(pseudonym, generation, ctx);
                    });
                }
            }
            Ok(JoinOutcome::Matched {
                partner,
                partner_node,
                ..
            }) => {
                let joiner = if current {
                    self.waiting.remove(&pseudonym)
                } else {
                    None
                };
                let Some(joiner) = joiner else {
                    // It left (or joined again) while Redis matched it: the partner was taken
                    // out of the queue for nothing, so it goes back, free to meet it again.
                    self.forget_cooldown(&partner, &pseudonym, ctx);
                    return self.release(&partner, &partner_node, ctx);
                };
                if partner_node == self.relay.node() {
                    match self.waiting.remove(&partner) {
                        Some(first) => {
                            let member = Member {
                                session: first.session,
                                link: MemberLink::Local(first.addr),
                                client: first.client,
                                origin: None,
                                nick: first.nick,
                            };
                            let names = [partner, pseudonym];
                            self.start_chat(member, first.interests, first.joined, joiner, names);
                        }
                        None => self.requeue(pseudonym, joiner, ctx),
                    }
                } else {
                    self.next_claim += 1;
                    let claim = self.next_claim;
                    self.claiming.insert(claim, (joiner, partner.clone()));
                    let asked = Wire::Claim {
                        claim,
                        partner: partner.clone(),
                    };
                    if !self.relay.send(&partner_node, &asked) {
                        return self.claim_failed(claim, ctx);
                    }
                    ctx.run_later(CLAIM_TIMEOUT, move |matchmaker, ctx| {
                        matchmaker.claim_failed(claim, ctx);
                    });
                }
            }
        }
    }

    fn open_up(&mut self, pseudonym: String, generation: u64, ctx: &mut Context<Self>) {
        let Some(waiting) = self.waiting.get_mut(&pseudonym) else {
            return;
        };
        if waiting.generation != generation {
            return;
        }
        waiting.open = true;
        self.ask(pseudonym, ctx);
    }

    /// A joiner goes back in line (its partner was gone).
    fn requeue(&mut self, pseudonym: String, mut joiner: WaitingHere, ctx: &mut Context<Self>) {
        self.next_generation += 1;
        joiner.generation = self.next_generation;
        self.waiting.insert(pseudonym.clone(), joiner);
        self.ask(pseudonym, ctx);
    }

    fn claim_failed(&mut self, claim: u64, ctx: &mut Context<Self>) {
        if let Some((joiner, partner)) = self.claiming.remove(&claim) {
            let pseudonym = joiner.name.clone();
            // No chat began, so the cooldown `match.lua` set for the two does not hold.
            self.forget_cooldown(&pseudonym, &partner, ctx);
            self.requeue(pseudonym, joiner, ctx);
        }
    }

    /// Two sessions Redis matched never chatted: they may meet after all.
    fn forget_cooldown(&self, a: &str, b: &str, ctx: &mut Context<Self>) {
        let (queue, a, b) = (self.queue.clone(), a.to_owned(), b.to_owned());
        ctx.spawn(
            async move {
                let _ = queue.forget_cooldown(&a, &b).await;
            }
            .into_actor(self),
        );
    }

    /// A partner Redis took out of the queue goes back into it.
    fn release(&mut self, partner: &str, node: &str, ctx: &mut Context<Self>) {
        if node == self.relay.node() {
            if let Some(waiting) = self.waiting.remove(partner) {
                self.requeue(partner.to_owned(), waiting, ctx);
            }
        } else {
            self.relay.send(
                node,
                &Wire::Release {
                    partner: partner.to_owned(),
                },
            );
        }
    }

    /// Starts the chat on the joiner's arbiter. `first` waited longer; it is on this node or
    /// on another one (its link says which).
    fn start_chat(
        &mut self,
        first: Member,
        first_interests: Vec<String>,
        first_joined: Instant,
        joiner: WaitingHere,
        queue_names: [String; 2],
    ) {
        let now = Instant::now();
        let common: Vec<String> = first_interests
            .iter()
            .filter(|interest| joiner.interests.contains(interest))
            .cloned()
            .collect();
        self.metrics.matched(
            joiner.mode,
            !common.is_empty(),
            [now - first_joined, now - joiner.joined],
        );
        let initiator = if joiner.generation % 2 == 0 {
            Side::A
        } else {
            Side::B
        };
        let spec = PairSpec {
            mode: joiner.mode,
            members: [
                first,
                Member {
                    session: joiner.session,
                    link: MemberLink::Local(joiner.addr),
                    client: joiner.client,
                    origin: None,
                    nick: joiner.nick,
                },
            ],
            common,
            initiator,
            log_max_events: self.log_max_events,
            log_max_bytes: self.log_max_bytes,
            mailbox_capacity: self.pair_mailbox_capacity,
            matchmaker: MatchmakerHandle::Cluster(self.self_addr()),
            counters: self.metrics.pair_counters(),
            abuse: self.abuse.clone(),
            relay: Some(self.relay.clone()),
            queue_names: Some(queue_names),
        };
        Pair::start_in_arbiter(&joiner.arbiter, move |_| Pair::new(spec));
    }
}

impl ClusterMatchmaker {
    fn self_addr(&self) -> Addr<ClusterMatchmaker> {
        // Set in `started`, before any message is handled.
        self.addr
            .clone()
            .expect("the cluster matchmaker knows its address once started")
    }
}

impl Actor for ClusterMatchmaker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        self.addr = Some(ctx.address());
        ctx.run_interval(REFRESH, |matchmaker, ctx| {
            let waiting: Vec<String> = matchmaker.waiting.keys().cloned().collect();
            for pseudonym in waiting {
                matchmaker.ask(pseudonym, ctx);
            }
        });
    }
}

impl Handler<JoinQueue> for ClusterMatchmaker {
    type Result = ();

    fn handle(&mut self, join: JoinQueue, ctx: &mut Context<Self>) {
        let pseudonym = self.name(&join.token);
        self.relay.register_session(&pseudonym, join.addr.clone());
        self.next_generation += 1;
        let open = join.interests.is_empty() || self.interest_timeout.is_zero();
        self.waiting.insert(
            pseudonym.clone(),
            WaitingHere {
                session: join.session,
                name: pseudonym.clone(),
                addr: join.addr,
                client: join.client,
                mode: join.mode,
                interests: join.interests,
                nick: join.nick,
                arbiter: join.arbiter,
                joined: Instant::now(),
                open,
                generation: self.next_generation,
            },
        );
        self.ask(pseudonym, ctx);
    }
}

/// Takes a session out of the queue.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaveCluster {
    pub session: SessionId,
    pub token: TokenHash,
}

impl Handler<LeaveCluster> for ClusterMatchmaker {
    type Result = ();

    fn handle(&mut self, leave: LeaveCluster, ctx: &mut Context<Self>) {
        let pseudonym = self.name(&leave.token);
        let mut unclaimed = Vec::new();
        self.claiming.retain(|_, (joiner, partner)| {
            let leaving = joiner.session == leave.session;
            if leaving {
                unclaimed.push(std::mem::take(partner));
            }
            !leaving
        });
        for partner in unclaimed {
            self.forget_cooldown(&pseudonym, &partner, ctx);
        }
        if self.waiting.remove(&pseudonym).is_some() {
            let queue = self.queue.clone();
            ctx.spawn(
                async move {
                    let _ = queue.leave(&pseudonym).await;
                }
                .into_actor(self),
            );
        }
    }
}

/// A chat this node ran ended: its members' cooldown starts now, as on one node.
impl Handler<ChatFinished> for ClusterMatchmaker {
    type Result = ();

    fn handle(&mut self, finished: ChatFinished, ctx: &mut Context<Self>) {
        let Some([a, b]) = finished.queue_names else {
            return;
        };
        let queue = self.queue.clone();
        ctx.spawn(
            async move {
                if let Err(error) = queue.cool_down(&a, &b).await {
                    // The cooldown set at the match still holds, from the match.
                    tracing::warn!(%error, "the cluster queue did not take a cooldown");
                }
            }
            .into_actor(self),
        );
    }
}

/// Another node claims a session of this one that Redis matched.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClaimRequest {
    pub from: String,
    pub claim: u64,
    pub partner: String,
}

impl Handler<ClaimRequest> for ClusterMatchmaker {
    type Result = ();

    fn handle(&mut self, request: ClaimRequest, ctx: &mut Context<Self>) {
        let Some(partner) = self.waiting.remove(&request.partner) else {
            self.relay.send(
                &request.from,
                &Wire::ClaimGone {
                    claim: request.claim,
                },
            );
            return;
        };
        let handed = Wire::Claimed {
            claim: request.claim,
            partner: request.partner.clone(),
            nick: partner.nick.clone(),
            interests: partner.interests.clone(),
            client: partner.client.for_other_nodes(),
        };
        if !self.relay.send(&request.from, &handed) {
            self.waiting.insert(request.partner, partner);
            return;
        }
        let name = request.partner.clone();
        self.claimed.insert(request.partner, partner);
        ctx.run_later(CLAIMED_KEPT, move |matchmaker, _| {
            matchmaker.claimed.remove(&name);
        });
    }
}

/// The answer to a claim this node made.
#[derive(Message)]
#[rtype(result = "()")]
pub enum ClaimAnswer {
    Claimed {
        from: String,
        claim: u64,
        partner: String,
        nick: Option<String>,
        interests: Vec<String>,
        /// Its client, as its node tells of it.
        client: RemoteClient,
    },
    Gone {
        claim: u64,
    },
}

impl Handler<ClaimAnswer> for ClusterMatchmaker {
    type Result = ();

    fn handle(&mut self, answer: ClaimAnswer, ctx: &mut Context<Self>) {
        match answer {
            ClaimAnswer::Gone { claim } => self.claim_failed(claim, ctx),
            ClaimAnswer::Claimed {
                from,
                claim,
                partner,
                nick,
                interests,
                client: origin,
            } => {
                let Some((joiner, _)) = self.claiming.remove(&claim) else {
                    // The joiner left meanwhile: the partner goes back in line.
                    return self.release(&partner, &from, ctx);
                };
                // What the pair needs of a member it reaches through the relay: its nick and
                // interests (for `matched`), and a client key reports count against here.
                let first = Member {
                    session: 0,
                    link: MemberLink::Remote(RemoteSession {
                        relay: self.relay.clone(),
                        node: from,
                        session: partner.clone(),
                    }),
                    client: origin.key(),
                    origin: Some(origin),
                    nick,
                };
                let names = [partner, joiner.name.clone()];
                self.start_chat(first, interests, Instant::now(), joiner, names);
            }
        }
    }
}

/// A partner this node handed over is not needed after all: it queues again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release {
    pub partner: String,
}

impl Handler<Release> for ClusterMatchmaker {
    type Result = ();

    fn handle(&mut self, release: Release, ctx: &mut Context<Self>) {
        if let Some(waiting) = self.claimed.remove(&release.partner) {
            self.requeue(release.partner, waiting, ctx);
        }
    }
}

/// The purge tick: forget relay names of sessions that ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PruneCluster;

impl Handler<PruneCluster> for ClusterMatchmaker {
    type Result = ();

    fn handle(&mut self, _: PruneCluster, _ctx: &mut Context<Self>) {
        self.relay.prune();
    }
}

/// How many sessions of this node wait in the cluster queue.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CountWaitingHere;

impl Handler<CountWaitingHere> for ClusterMatchmaker {
    type Result = usize;

    fn handle(&mut self, _: CountWaitingHere, _ctx: &mut Context<Self>) -> usize {
        self.waiting.len()
    }
}

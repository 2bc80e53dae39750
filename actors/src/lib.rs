//! Ephemera's chat core: the actix actors that run anonymous random chats, and the ephemeral
//! event log each chat keeps. Nothing here knows of HTTP: a transport hands `Hub::connect` a
//! stream of `ClientFrame`s and a `ClientSink`, and the actors do the rest.
//!
//! Layout:
//! - `hub`: the front door: starts the actors, connects clients (new or resumed), shuts down.
//! - `config`: `ChatConfig`, the actors' view of the server's settings.
//! - `context`: `ChatContext`, what every session shares and reads (no actor in it).
//! - `ids`: the numbers that name sessions and chats.
//! - `session`: the session actor, one per client: frames in, limits, state, resume.
//! - `pair`: the pair actor, one per chat: sole writer of the chat's log, fan-out, replay.
//! - `matchmaker`: the matchmaker actor behind `MatchmakerHandle`: queues, interests, cooldown.
//! - `purge`: the purge timer actor: resume grace and cooldown expiry on a fixed tick.
//! - `event_log`: the bounded, wiped-on-end ring buffer of one chat's events.
//! - `protocol`: protocol v1 frames: parsing, validation, rendering.
//! - `connection`: the transport boundary (`ClientFrame`, `ClientSink`, a channel sink).
//! - `abuse`: reports and escalating bans by client key.
//! - `client_key`: salted, rotating keys that stand for a client's address (never stored).
//! - `ice`: STUN/TURN servers for WebRTC, TURN credentials minted per hello.
//! - `pow`: proof-of-work challenges, fixed or adaptive.
//! - `rate_limits`: GCRA limits per client key and per session.
//! - `registry`: live sessions by resume-token hash, the session bound, the /stats gauges.
//! - `metrics`: the Prometheus series of the core.
//! - `cluster`: what several nodes on one Redis share: secret, sealing, queue, heartbeats, relay.
//! - `cluster_matchmaker`: the matchmaker behind `MatchmakerHandle::Cluster`.
//! - `node`: joining a cluster: Redis connections, heartbeat, relay; starts the matchmaker.
//! - `remote`: the remote ends of chats across nodes (`RemoteSession`, `RemotePair`) and the
//!   node's relay that carries their messages.

pub mod abuse;
pub mod client_key;
pub mod cluster;
pub mod cluster_matchmaker;
pub mod config;
pub mod connection;
pub mod context;
pub mod event_log;
pub mod handover;
pub mod hub;
pub mod ice;
pub mod ids;
pub mod matchmaker;
pub mod metrics;
pub mod node;
pub mod pair;
pub mod pow;
pub mod protocol;
pub mod purge;
pub mod rate_limits;
pub mod registry;
pub mod remote;
pub mod session;
#[cfg(test)]
mod test_support;

pub use config::ChatConfig;
pub use connection::FrameStream;
pub use hub::Hub;

//! Groundwork for running several nodes on one Redis (`cluster_redis_url`; docs/cluster.md has
//! the design and what is still to come). What is here works and is tested against a real
//! redis-server, but the server does not use it yet: a chat between members on two nodes
//! needs the sealed relay between nodes, which is the next step.
//!
//! - `secret`: the cluster secret and what derives from it (interest hashes, session
//!   pseudonyms, token hashes, per-node sealing keys).
//! - `seal`: ChaCha20-Poly1305 envelopes for everything one node sends another through Redis.
//! - `queue` and `match.lua`: the cluster-wide waiting queue, matched atomically in Redis.
//! - `node`: heartbeats, liveness, and the cluster-wide online count.

pub mod node;
pub mod queue;
pub mod seal;
pub mod secret;

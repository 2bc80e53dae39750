//! The cluster-wide waiting queue: `match.lua` run atomically in Redis, behind typed calls.
//! One global queue per mode; matching by interest hashes (most shared first, oldest first
//! among equals), the open fallback, and the rematch cooldown, as the local matchmaker does.

use std::time::Duration;

use redis::aio::ConnectionManager;

/// How many waiting sessions one call looks at per interest and in the open queue: bounds the
/// script's work (it blocks Redis while it runs) whatever the queue's length.
pub const SCAN_LIMIT: usize = 64;

/// What a join came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Paired with `partner` (a pseudonym), who waits on `partner_node`; they share `shared`
    /// interests (the nodes resolve which, from their plaintext).
    Matched {
        partner: String,
        partner_node: String,
        shared: usize,
    },
    /// Queued; a later join (its own, once open, or a stranger's) will pair it.
    Waiting,
}

/// A node's handle on the cluster queue.
#[derive(Clone)]
pub struct ClusterQueue {
    redis: ConnectionManager,
    script: redis::Script,
    prefix: String,
    node: String,
    /// How long a waiting entry may live without being renewed (a join renews it).
    wait_ttl: Duration,
    cooldown: Duration,
}

impl ClusterQueue {
    pub fn new(
        redis: ConnectionManager,
        prefix: &str,
        node: &str,
        wait_ttl: Duration,
        cooldown: Duration,
    ) -> ClusterQueue {
        ClusterQueue {
            redis,
            script: redis::Script::new(include_str!("match.lua")),
            prefix: prefix.to_owned(),
            node: node.to_owned(),
            wait_ttl,
            cooldown,
        }
    }

    /// Pairs `session` with the best waiting stranger of `mode`, or queues it. Called again
    /// with `open` once its interest timeout passes (it keeps its place in line).
    pub async fn join(
        &self,
        session: &str,
        mode: &str,
        open: bool,
        interest_hashes: &[String],
    ) -> redis::RedisResult<JoinOutcome> {
        let mut invocation = self.script.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg("join")
            .arg(session)
            .arg(&self.node)
            .arg(mode)
            .arg(if open { "1" } else { "0" })
            .arg(millis(self.wait_ttl))
            .arg(millis(self.cooldown))
            .arg(SCAN_LIMIT)
            .arg(interest_hashes.len());
        for hash in interest_hashes {
            invocation.arg(hash);
        }
        let mut redis = self.redis.clone();
        let reply: Vec<redis::Value> = invocation.invoke_async(&mut redis).await?;
        let text = |value: &redis::Value| -> Option<String> {
            match value {
                redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
                redis::Value::SimpleString(text) => Some(text.clone()),
                _ => None,
            }
        };
        match reply.first().and_then(text).as_deref() {
            Some("matched") => {
                let partner = reply.get(1).and_then(text);
                let partner_node = reply.get(2).and_then(text);
                let shared = match reply.get(3) {
                    Some(redis::Value::Int(n)) => usize::try_from(*n).unwrap_or(0),
                    _ => 0,
                };
                match (partner, partner_node) {
                    (Some(partner), Some(partner_node)) => Ok(JoinOutcome::Matched {
                        partner,
                        partner_node,
                        shared,
                    }),
                    _ => Err(unexpected()),
                }
            }
            Some("waiting") => Ok(JoinOutcome::Waiting),
            _ => Err(unexpected()),
        }
    }

    /// Two sessions' chat ended: they are not matched again for the cooldown, from now (the
    /// key `match.lua` checks, as it names it).
    pub async fn cool_down(&self, a: &str, b: &str) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        redis::cmd("SET")
            .arg(self.cooldown_key(a, b))
            .arg("1")
            .arg("PX")
            .arg(millis(self.cooldown))
            .query_async(&mut redis)
            .await
    }

    /// Two sessions matched but never chatted (the claim failed): no cooldown between them.
    pub async fn forget_cooldown(&self, a: &str, b: &str) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        redis::cmd("DEL")
            .arg(self.cooldown_key(a, b))
            .query_async(&mut redis)
            .await
    }

    /// The key `match.lua` names the cooldown of two sessions with.
    fn cooldown_key(&self, a: &str, b: &str) -> String {
        let (low, high) = if a < b { (a, b) } else { (b, a) };
        format!("{}cool:{low}:{high}", self.prefix)
    }

    /// Takes `session` out of every queue; `true` if it was waiting.
    pub async fn leave(&self, session: &str) -> redis::RedisResult<bool> {
        let mut redis = self.redis.clone();
        let removed: i64 = self
            .script
            .arg(&self.prefix)
            .arg("leave")
            .arg(session)
            .invoke_async(&mut redis)
            .await?;
        Ok(removed == 1)
    }
}

fn millis(duration: Duration) -> u64 {
    (duration.as_millis() as u64).max(1)
}

fn unexpected() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply from the match script",
    ))
}

//! Who is connected: the resume-token index of live sessions, the session-count bound and the
//! aggregate gauges behind /stats. Sessions insert and remove themselves; the server looks
//! tokens up on resume and walks the index on shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::Addr;
use base64::Engine as _;
use parking_lot::RwLock;
use zeroize::Zeroize;

use crate::session::Session;

pub type SessionId = u64;

/// blake3 of a resume token. The index keeps only this, never the token itself, so a memory
/// dump of the index cannot be replayed to take over someone's session.
pub type TokenHash = [u8; 32];

/// A resume token as handed to the client once, in `hello`. Zeroized when dropped.
pub struct ResumeToken(String);

impl ResumeToken {
    /// A fresh random 128-bit token, base64url without padding (22 characters).
    pub fn generate() -> (Self, TokenHash) {
        let mut raw = [0u8; 16];
        // The OS random source failing leaves no safe way to mint tokens at all.
        getrandom::getrandom(&mut raw).expect("the operating system's random source works");
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        raw.zeroize();
        let hash = hash_token_str(&token);
        (Self(token), hash)
    }

    /// Wraps a token a client presented, so the copy is wiped too.
    pub fn presented(token: &str) -> Self {
        Self(token.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Drop for ResumeToken {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// The hash of a token a client presents, or `None` if it is not shaped like one of ours.
pub fn hash_presented_token(token: &str) -> Option<TokenHash> {
    let shaped = token.len() == 22
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    shaped.then(|| hash_token_str(token))
}

fn hash_token_str(token: &str) -> TokenHash {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// Aggregate, non-identifying counts of sessions by state.
#[derive(Debug, Default)]
pub struct Stats {
    pub online: AtomicI64,
    pub waiting: AtomicI64,
    pub chatting: AtomicI64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let read = |gauge: &AtomicI64| gauge.load(Ordering::Relaxed).max(0) as u64;
        StatsSnapshot {
            online: read(&self.online),
            waiting: read(&self.waiting),
            chatting: read(&self.chatting),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    pub online: u64,
    pub waiting: u64,
    pub chatting: u64,
}

/// Live sessions by token hash, with a bound on how many may exist at once.
pub struct Registry {
    sessions: RwLock<HashMap<TokenHash, Addr<Session>>>,
    reserved: Arc<AtomicUsize>,
    max_sessions: usize,
    next_id: AtomicU64,
}

/// A place under `max_sessions`, held by one session for its whole life.
pub struct SessionSlot(Arc<AtomicUsize>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Registry {
    pub fn new(max_sessions: usize) -> Self {
        Self {
            sessions: RwLock::new(HashMap::new()),
            reserved: Arc::new(AtomicUsize::new(0)),
            max_sessions,
            next_id: AtomicU64::new(1),
        }
    }

    /// Takes a place for a new session, or `None` when `max_sessions` are alive.
    pub fn try_reserve(&self) -> Option<SessionSlot> {
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_sessions).then_some(n + 1)
            })
            .ok()
            .map(|_| SessionSlot(self.reserved.clone()))
    }

    pub fn next_session_id(&self) -> SessionId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn insert(&self, token: TokenHash, session: Addr<Session>) {
        self.sessions.write().insert(token, session);
    }

    pub fn remove(&self, token: &TokenHash) {
        self.sessions.write().remove(token);
    }

    pub fn lookup(&self, token: &TokenHash) -> Option<Addr<Session>> {
        self.sessions.read().get(token).cloned()
    }

    pub fn len(&self) -> usize {
        self.sessions.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live session, for a broadcast such as shutdown.
    pub fn all(&self) -> Vec<Addr<Session>> {
        self.sessions.read().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_22_url_safe_chars_and_hash_consistently() {
        let (token, hash) = ResumeToken::generate();
        assert_eq!(token.as_str().len(), 22);
        assert_eq!(hash_presented_token(token.as_str()), Some(hash));
        let (other, other_hash) = ResumeToken::generate();
        assert_ne!(token.as_str(), other.as_str());
        assert_ne!(hash, other_hash);
    }

    #[test]
    fn malformed_tokens_are_not_looked_up() {
        assert_eq!(hash_presented_token("short"), None);
        assert_eq!(hash_presented_token("aaaaaaaaaaaaaaaaaaaaa="), None);
        assert_eq!(hash_presented_token("aaaaaaaaaaaaaaaaaaaaa/"), None);
    }

    #[test]
    fn reservations_stop_at_max_sessions_and_come_back_when_dropped() {
        let registry = Registry::new(2);
        let first = registry.try_reserve().expect("first place");
        let _second = registry.try_reserve().expect("second place");
        assert!(registry.try_reserve().is_none());
        drop(first);
        assert!(registry.try_reserve().is_some());
    }
}

//! Who is connected: the resume-token index of live sessions, the session-count bound and the
//! aggregate gauges behind /stats. Sessions insert and remove themselves; the server looks
//! tokens up on resume and walks the index on shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::Addr;
use base64::Engine as _;
use parking_lot::{Mutex, RwLock};
use zeroize::Zeroize;

use crate::client_key::ClientKey;
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

/// Live sessions by token hash, with bounds on how many may exist at once, in all and per
/// client key.
pub struct Registry {
    sessions: RwLock<HashMap<TokenHash, Addr<Session>>>,
    places: Arc<Places>,
    max_sessions: usize,
    max_sessions_per_client: usize,
    next_id: AtomicU64,
}

/// Sessions alive, in all and per client key.
#[derive(Default)]
struct Places {
    total: AtomicUsize,
    per_client: Mutex<HashMap<ClientKey, usize>>,
}

/// A place under `max_sessions` and the client's own bound, held by one session for its
/// whole life.
pub struct SessionSlot {
    places: Arc<Places>,
    client: ClientKey,
}

impl SessionSlot {
    pub fn client(&self) -> ClientKey {
        self.client
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.places.total.fetch_sub(1, Ordering::AcqRel);
        let mut per_client = self.places.per_client.lock();
        if let Some(count) = per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                per_client.remove(&self.client);
            }
        }
    }
}

/// Why no place was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPlace {
    /// `max_sessions` are alive.
    ServerFull,
    /// This client already holds `max_sessions_per_client`.
    ClientLimit,
}

impl Registry {
    pub fn new(max_sessions: usize, max_sessions_per_client: usize) -> Self {
        Self {
            sessions: RwLock::new(HashMap::new()),
            places: Arc::default(),
            max_sessions,
            max_sessions_per_client,
            next_id: AtomicU64::new(1),
        }
    }

    /// Takes a place for a new session of `client`. Sessions counted under the client's key
    /// from before the last salt rotation (`previous`) count too.
    pub fn try_reserve(
        &self,
        client: ClientKey,
        previous: Option<ClientKey>,
    ) -> Result<SessionSlot, NoPlace> {
        let mut per_client = self.places.per_client.lock();
        let held = per_client.get(&client).copied().unwrap_or(0)
            + previous
                .and_then(|key| per_client.get(&key).copied())
                .unwrap_or(0);
        if held >= self.max_sessions_per_client {
            return Err(NoPlace::ClientLimit);
        }
        self.places
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_sessions).then_some(n + 1)
            })
            .map_err(|_| NoPlace::ServerFull)?;
        *per_client.entry(client).or_insert(0) += 1;
        Ok(SessionSlot {
            places: self.places.clone(),
            client,
        })
    }

    /// Sessions alive for `client` (under its current key and, if given, its previous one).
    pub fn sessions_of(&self, client: ClientKey, previous: Option<ClientKey>) -> usize {
        let per_client = self.places.per_client.lock();
        [Some(client), previous]
            .into_iter()
            .flatten()
            .filter_map(|key| per_client.get(&key))
            .sum()
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

    fn keys() -> (ClientKey, ClientKey) {
        let ring = crate::client_key::KeyRing::new(std::time::Duration::MAX);
        (
            ring.keys("127.0.0.1".parse().unwrap()).0,
            ring.keys("127.0.0.2".parse().unwrap()).0,
        )
    }

    #[test]
    fn reservations_stop_at_max_sessions_and_come_back_when_dropped() {
        let (a, b) = keys();
        let registry = Registry::new(2, 10);
        let first = registry.try_reserve(a, None).expect("first place");
        let _second = registry.try_reserve(b, None).expect("second place");
        assert_eq!(
            registry.try_reserve(a, None).err(),
            Some(NoPlace::ServerFull)
        );
        drop(first);
        assert!(registry.try_reserve(a, None).is_ok());
    }

    #[test]
    fn each_client_has_its_own_bound_including_its_previous_key() {
        let (a, b) = keys();
        let registry = Registry::new(100, 2);
        let _one = registry.try_reserve(a, None).unwrap();
        let two = registry.try_reserve(a, None).unwrap();
        assert_eq!(
            registry.try_reserve(a, None).err(),
            Some(NoPlace::ClientLimit)
        );
        assert!(
            registry.try_reserve(b, None).is_ok(),
            "others are not affected"
        );
        // After a salt rotation the same client has key b; its sessions under a still count.
        assert_eq!(
            registry.try_reserve(b, Some(a)).err(),
            Some(NoPlace::ClientLimit)
        );
        assert_eq!(registry.sessions_of(a, None), 2);
        drop(two);
        assert_eq!(registry.sessions_of(a, None), 1);
    }
}

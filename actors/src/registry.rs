//! Who is connected: the resume-token index of live sessions, the session-count bound and the
//! aggregate gauges behind /stats. Sessions insert and remove themselves; the server looks
//! tokens up on resume and walks the index on shutdown. The index holds what the hub may ask of
//! a live session (`SessionCommand`), not the session actor's type, so nothing here depends on
//! the actors.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::{Message, Recipient};
use base64::Engine as _;
use parking_lot::{Mutex, RwLock};
use zeroize::Zeroize;

use crate::client_key::{ClientKey, ClientKeys};
use crate::connection::{ClientSink, FrameStream};

use crate::ids::SessionId;
use crate::protocol::{Mode, ResumePoint};

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

/// Where a session is, for the gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupancy {
    Idle,
    Waiting(Mode),
    Chatting(Mode),
}

/// What the hub asks of a live session. Sent by `Hub::connect` (attach) and `Hub::shutdown`.
#[derive(Message)]
#[rtype(result = "Result<(), AttachRejected>")]
pub enum SessionCommand {
    /// A client resumed with this session's token: take its new connection.
    Attach(Attach),
    /// The server is shutting down: end your chat and close your connection.
    Shutdown,
    /// Another node of the cluster takes this session over (a resume landed there): write
    /// yourself down for it, and stop here without ending anything.
    MoveOut(tokio::sync::oneshot::Sender<Option<crate::handover::MovedSession>>),
}

/// A new connection for an (usually away) session.
pub struct Attach {
    pub sink: Box<dyn ClientSink>,
    pub frames: FrameStream,
    /// Where the client was: the chat it names (v1.1) and the highest `seq` it saw.
    pub from: ResumePoint,
    /// The token the client presented, echoed in `hello`.
    pub token: ResumeToken,
}

/// The connection of a refused `Attach`, handed back so that a fresh session can use it.
pub struct AttachRejected {
    pub sink: Box<dyn ClientSink>,
    pub frames: FrameStream,
}

/// Aggregate, non-identifying counts of sessions waiting and chatting. How many are online is
/// the registry's count of live sessions, kept in one place.
#[derive(Debug, Default)]
pub struct Stats {
    /// By mode, in the order of `Mode::index`.
    waiting: [AtomicI64; 2],
    chatting: [AtomicI64; 2],
}

/// Sessions waiting and chatting, by mode (in the order of `Mode::index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModeCounts {
    pub waiting: [u64; 2],
    pub chatting: [u64; 2],
}

impl Stats {
    /// A session moved from `from` to `to`.
    pub fn moved(&self, from: Occupancy, to: Occupancy) {
        if from == to {
            return;
        }
        if let Some(gauge) = self.gauge(from) {
            gauge.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(gauge) = self.gauge(to) {
            gauge.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn gauge(&self, occupancy: Occupancy) -> Option<&AtomicI64> {
        match occupancy {
            Occupancy::Idle => None,
            Occupancy::Waiting(mode) => Some(&self.waiting[mode.index()]),
            Occupancy::Chatting(mode) => Some(&self.chatting[mode.index()]),
        }
    }

    pub fn snapshot(&self, online: usize) -> StatsSnapshot {
        let counts = self.by_mode();
        StatsSnapshot {
            online: online as u64,
            waiting: counts.waiting.iter().sum(),
            chatting: counts.chatting.iter().sum(),
        }
    }

    pub fn by_mode(&self) -> ModeCounts {
        let read = |gauges: &[AtomicI64; 2]| {
            gauges
                .each_ref()
                .map(|g| g.load(Ordering::Relaxed).max(0) as u64)
        };
        ModeCounts {
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
/// client.
pub struct Registry {
    sessions: RwLock<HashMap<TokenHash, Recipient<SessionCommand>>>,
    places: Arc<Places>,
    max_sessions: usize,
    max_sessions_per_client: usize,
    next_id: AtomicU64,
}

/// Sessions alive, in all and per client.
#[derive(Default)]
struct Places {
    total: AtomicUsize,
    clients: Mutex<Clients>,
}

/// One record per client with live sessions, found by its key. When a client connects under
/// a new salt generation, its record is found by its older key and moved to the new one, so
/// its sessions count together whichever salt each was made under.
#[derive(Default)]
struct Clients {
    by_key: HashMap<ClientKey, u64>,
    records: HashMap<u64, ClientRecord>,
    next_record: u64,
}

struct ClientRecord {
    /// The newest key the client was seen under.
    key: ClientKey,
    sessions: usize,
}

/// A place under `max_sessions` and the client's own bound, held by one session for its
/// whole life.
pub struct SessionSlot {
    places: Arc<Places>,
    record: u64,
}

impl SessionSlot {
    /// The client's newest key (it changes when the client reconnects after a salt rotation).
    pub fn client(&self) -> ClientKey {
        let clients = self.places.clients.lock();
        // A slot's record lives until the slot is dropped.
        clients.records[&self.record].key
    }
}

impl SessionSlot {
    /// A second place for the same client, for a session this one hands its client to and
    /// then stops (a `resume` frame's doorway, when the session it names moves here). Given
    /// past the bounds: the two places are one a moment later.
    pub(crate) fn pass_on(&self) -> SessionSlot {
        self.places.total.fetch_add(1, Ordering::AcqRel);
        let mut clients = self.places.clients.lock();
        if let Some(record) = clients.records.get_mut(&self.record) {
            record.sessions += 1;
        }
        SessionSlot {
            places: self.places.clone(),
            record: self.record,
        }
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.places.total.fetch_sub(1, Ordering::AcqRel);
        let mut clients = self.places.clients.lock();
        let Some(record) = clients.records.get_mut(&self.record) else {
            return;
        };
        record.sessions -= 1;
        if record.sessions == 0 {
            let key = record.key;
            clients.records.remove(&self.record);
            clients.by_key.remove(&key);
        }
    }
}

/// The salt generations sessions' client keys were made under, for the key ring's rotation.
#[derive(Clone)]
pub struct KeyGenerationsInUse(Arc<Places>);

impl KeyGenerationsInUse {
    pub fn collect(&self) -> HashSet<u32> {
        let clients = self.0.clients.lock();
        clients.by_key.keys().map(ClientKey::generation).collect()
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

    /// Takes a place for a new session of the client with `keys`. A record held under one of
    /// its older keys is moved to its current key first.
    pub fn try_reserve(&self, keys: &ClientKeys) -> Result<SessionSlot, NoPlace> {
        let mut clients = self.places.clients.lock();
        let clients = &mut *clients;
        let found = keys.all().find_map(|key| clients.by_key.get(&key).copied());
        if let Some(record) = found {
            let entry = clients
                .records
                .get_mut(&record)
                .expect("every key in the index names a live record");
            if entry.key != keys.current {
                clients.by_key.remove(&entry.key);
                clients.by_key.insert(keys.current, record);
                entry.key = keys.current;
            }
            if entry.sessions >= self.max_sessions_per_client {
                return Err(NoPlace::ClientLimit);
            }
        } else if self.max_sessions_per_client == 0 {
            return Err(NoPlace::ClientLimit);
        }
        self.places
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_sessions).then_some(n + 1)
            })
            .map_err(|_| NoPlace::ServerFull)?;
        let record = found.unwrap_or_else(|| {
            let record = clients.next_record;
            clients.next_record += 1;
            clients.by_key.insert(keys.current, record);
            clients.records.insert(
                record,
                ClientRecord {
                    key: keys.current,
                    sessions: 0,
                },
            );
            record
        });
        if let Some(entry) = clients.records.get_mut(&record) {
            entry.sessions += 1;
        }
        Ok(SessionSlot {
            places: self.places.clone(),
            record,
        })
    }

    /// Sessions alive for the client with `keys`.
    pub fn sessions_of(&self, keys: &ClientKeys) -> usize {
        let clients = self.places.clients.lock();
        keys.all()
            .find_map(|key| clients.by_key.get(&key))
            .and_then(|record| clients.records.get(record))
            .map_or(0, |record| record.sessions)
    }

    pub fn key_generations_in_use(&self) -> KeyGenerationsInUse {
        KeyGenerationsInUse(self.places.clone())
    }

    pub fn next_session_id(&self) -> SessionId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn insert(&self, token: TokenHash, session: Recipient<SessionCommand>) {
        self.sessions.write().insert(token, session);
    }

    pub fn remove(&self, token: &TokenHash) {
        self.sessions.write().remove(token);
    }

    pub fn lookup(&self, token: &TokenHash) -> Option<Recipient<SessionCommand>> {
        self.sessions.read().get(token).cloned()
    }

    pub fn len(&self) -> usize {
        self.sessions.read().len()
    }

    /// Sessions alive (every one holds a place from before it starts until it ends).
    pub fn live_sessions(&self) -> usize {
        self.places.total.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live session, for a broadcast such as shutdown.
    pub fn all(&self) -> Vec<Recipient<SessionCommand>> {
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

    fn ring() -> crate::client_key::KeyRing {
        crate::client_key::KeyRing::new(std::time::Duration::from_secs(60))
    }

    fn ip(text: &str) -> std::net::IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn reservations_stop_at_max_sessions_and_come_back_when_dropped() {
        let ring = ring();
        let (a, b) = (
            ring.client_keys(ip("127.0.0.1")),
            ring.client_keys(ip("127.0.0.2")),
        );
        let registry = Registry::new(2, 10);
        let first = registry.try_reserve(&a).expect("first place");
        let _second = registry.try_reserve(&b).expect("second place");
        assert_eq!(registry.try_reserve(&a).err(), Some(NoPlace::ServerFull));
        drop(first);
        assert!(registry.try_reserve(&a).is_ok());
    }

    #[test]
    fn each_client_has_its_own_bound_across_salt_rotations() {
        let ring = ring();
        let registry = Registry::new(100, 2);
        let start = tokio::time::Instant::now();
        let before = ring.client_keys(ip("127.0.0.1"));
        let _one = registry.try_reserve(&before).unwrap();
        assert!(registry
            .try_reserve(&ring.client_keys(ip("127.0.0.2")))
            .is_ok());
        // Two rotations: with sessions under it, the first salt is kept and still recognised.
        for n in 1..=2 {
            let in_use = registry.key_generations_in_use().collect();
            ring.rotate_if_due(start + std::time::Duration::from_secs(61 * n), &in_use);
        }
        let after = ring.client_keys(ip("127.0.0.1"));
        assert_ne!(after.current, before.current);
        let two = registry.try_reserve(&after).unwrap();
        assert_eq!(
            registry.try_reserve(&after).err(),
            Some(NoPlace::ClientLimit),
            "the session made under the old salt still counts"
        );
        assert_eq!(
            _one.client(),
            after.current,
            "the record moved to the new key"
        );
        assert_eq!(registry.sessions_of(&after), 2);
        drop(two);
        assert_eq!(registry.sessions_of(&after), 1);
    }
}

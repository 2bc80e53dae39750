//! Client keys: the only form in which the server remembers where a client comes from. A key
//! is a blake3 keyed hash of the client's IP address (for IPv6, its /64 prefix, which one
//! subscriber usually holds whole) under a random 32-byte salt that lives only in memory and
//! is replaced every `salt_rotation`. The raw address is used for this one computation and
//! never stored.
//!
//! Each salt is a generation. A new connection gets its key under every generation still
//! kept, so state held under an older key (a session, a ban) is recognised and moved to the
//! current key. A generation is destroyed at the first rotation after the one that replaced
//! it, unless something is still held under one of its keys: then bans and session bounds
//! would lapse, so it is kept until that state is gone or moved.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use parking_lot::RwLock;
use zeroize::Zeroize;

/// An opaque, salted identifier of a client's network origin, under one salt generation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey {
    hash: [u8; 32],
    generation: u32,
}

impl ClientKey {
    /// A short prefix for showing a client its own key (never enough to look anyone up).
    pub fn short(&self) -> String {
        self.hash[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The key a client of another node of a cluster counts under here (in reports, made or
    /// received): made of that node's id and what it told of the client (`for_other_nodes`),
    /// so each client of that node is one key here, whichever session it chats from.
    pub fn of_remote(node: &str, client: &str) -> ClientKey {
        let mut hasher = blake3::Hasher::new();
        hasher.update(node.as_bytes());
        hasher.update(&[0]);
        hasher.update(client.as_bytes());
        ClientKey {
            hash: *hasher.finalize().as_bytes(),
            generation: u32::MAX,
        }
    }

    /// What another node of a cluster is told of this client when it reported a member there:
    /// a hash of the key, never the key itself; that node makes its own key of it with
    /// `of_remote`, so the reporter counts as one reporter there.
    pub fn for_other_nodes(&self) -> String {
        let hash = crate::cluster::secret::hex(blake3::hash(&self.hash).as_bytes());
        format!("{}.{hash}", self.generation)
    }

    /// The salt generation this key was made under.
    pub fn generation(&self) -> u32 {
        self.generation
    }
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientKey({}…, gen {})", self.short(), self.generation)
    }
}

/// A client's key under the current salt, and under each older generation still kept, and
/// the coarse region of its address (looked up at the same moment, for counts only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKeys {
    pub current: ClientKey,
    /// Newest first.
    pub older: Vec<ClientKey>,
    pub region: Region,
}

/// A country and a continent, as ISO codes (two capital letters each), or unknown: the only
/// thing about where a client is that outlives its address, and only as a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Region {
    /// Zeroes: unknown.
    country: [u8; 2],
    continent: [u8; 2],
}

impl Region {
    pub const UNKNOWN: Region = Region {
        country: [0; 2],
        continent: [0; 2],
    };

    /// The region of these codes; either is unknown unless it is two capital letters.
    pub fn new(country: Option<&str>, continent: Option<&str>) -> Self {
        fn code(text: Option<&str>) -> [u8; 2] {
            match text.map(str::as_bytes) {
                Some(&[a, b]) if a.is_ascii_uppercase() && b.is_ascii_uppercase() => [a, b],
                _ => [0; 2],
            }
        }
        Region {
            country: code(country),
            continent: code(continent),
        }
    }

    pub fn country(&self) -> &str {
        Self::label(&self.country)
    }

    pub fn continent(&self) -> &str {
        Self::label(&self.continent)
    }

    fn label(code: &[u8; 2]) -> &str {
        // Only capital ASCII letters are stored (see `new`).
        std::str::from_utf8(code)
            .ok()
            .filter(|_| code[0] != 0)
            .unwrap_or("unknown")
    }
}

impl ClientKeys {
    /// Every key, the current one first.
    pub fn all(&self) -> impl Iterator<Item = ClientKey> + '_ {
        std::iter::once(self.current).chain(self.older.iter().copied())
    }
}

struct Salt([u8; 32]);

impl Salt {
    fn generate() -> Salt {
        let mut salt = [0u8; 32];
        // Without the OS random source no salt can be made safely at all.
        getrandom::getrandom(&mut salt).expect("the operating system's random source works");
        Salt(salt)
    }

    fn hash(&self, ip: IpAddr) -> [u8; 32] {
        let mut material = [0u8; 17];
        let used = match ip {
            IpAddr::V4(v4) => {
                material[0] = 4;
                material[1..5].copy_from_slice(&v4.octets());
                5
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => return self.hash(IpAddr::V4(v4)),
                None => {
                    material[0] = 6;
                    material[1..9].copy_from_slice(&v6.octets()[..8]);
                    9
                }
            },
        };
        let hash = *blake3::keyed_hash(&self.0, &material[..used]).as_bytes();
        material.zeroize();
        hash
    }
}

impl Drop for Salt {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

struct Generation {
    number: u32,
    salt: Salt,
}

impl Generation {
    fn key(&self, ip: IpAddr) -> ClientKey {
        ClientKey {
            hash: self.salt.hash(ip),
            generation: self.number,
        }
    }
}

struct Salts {
    /// Newest (current) first; never empty.
    generations: Vec<Generation>,
    rotated_at: Instant,
}

/// The salt generations, rotated on the purge tick.
pub struct KeyRing {
    salts: RwLock<Salts>,
    rotation: Duration,
}

impl KeyRing {
    pub fn new(rotation: Duration) -> Self {
        Self {
            salts: RwLock::new(Salts {
                generations: vec![Generation {
                    number: 0,
                    salt: Salt::generate(),
                }],
                rotated_at: Instant::now(),
            }),
            rotation,
        }
    }

    /// The client's keys under every generation kept; the address goes no further than this.
    pub fn client_keys(&self, ip: IpAddr) -> ClientKeys {
        let salts = self.salts.read();
        let mut generations = salts.generations.iter();
        let current = generations
            .next()
            .expect("there is always a current salt")
            .key(ip);
        ClientKeys {
            current,
            older: generations.map(|generation| generation.key(ip)).collect(),
            region: Region::UNKNOWN,
        }
    }

    /// Whether a rotation is due (cheap; lets the caller gather `in_use` only then).
    pub fn rotation_due(&self, now: Instant) -> bool {
        now.duration_since(self.salts.read().rotated_at) >= self.rotation
    }

    /// Rotates if the rotation period has passed: a new salt becomes current, the one it
    /// replaces is kept one period, and older ones are destroyed unless `in_use` says state is
    /// still held under their keys. Returns whether it rotated.
    pub fn rotate_if_due(&self, now: Instant, in_use: &HashSet<u32>) -> bool {
        if now.duration_since(self.salts.read().rotated_at) < self.rotation {
            return false;
        }
        let mut salts = self.salts.write();
        let number = salts.generations[0].number.wrapping_add(1);
        salts.generations.insert(
            0,
            Generation {
                number,
                salt: Salt::generate(),
            },
        );
        let mut index = 0;
        salts.generations.retain(|generation| {
            index += 1;
            index <= 2 || in_use.contains(&generation.number)
        });
        salts.rotated_at = now;
        true
    }

    /// How many salt generations are kept (the current one included).
    pub fn generations_kept(&self) -> usize {
        self.salts.read().generations.len()
    }
}

/// A client of another node of a cluster, as that node tells of it: its node's id and, from
/// `ClientKey::for_other_nodes`, the salt generation and a hash of its key there. Every node
/// makes the same key of it (`ClientKey::of_remote`), so reports made in chats on any node
/// count as one reporter.
#[derive(Clone, Debug)]
pub struct RemoteClient {
    pub node: String,
    pub client: String,
}

impl RemoteClient {
    pub fn key(&self) -> ClientKey {
        ClientKey::of_remote(&self.node, &self.client)
    }

    /// Under which node and salt generation the client was keyed: one address has one key
    /// per node and generation (see `AbuseDesk::report_from`).
    pub fn origin(&self) -> String {
        let generation = self.client.split('.').next().unwrap_or_default();
        format!("{}/{generation}", self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_address_gives_one_key_and_others_differ() {
        let ring = KeyRing::new(Duration::from_secs(3600));
        let keys = ring.client_keys(ip("127.0.0.2"));
        assert!(keys.older.is_empty());
        assert_eq!(ring.client_keys(ip("127.0.0.2")).current, keys.current);
        assert_ne!(ring.client_keys(ip("127.0.0.3")).current, keys.current);
        assert_eq!(
            ring.client_keys(ip("::ffff:127.0.0.2")).current,
            keys.current,
            "v4-mapped v6 is the v4 address"
        );
    }

    #[test]
    fn an_ipv6_64_prefix_is_one_client() {
        let ring = KeyRing::new(Duration::from_secs(3600));
        let key = ring.client_keys(ip("2001:db8:1:2:aaaa::1")).current;
        assert_eq!(ring.client_keys(ip("2001:db8:1:2:ffff:1:2:3")).current, key);
        assert_ne!(ring.client_keys(ip("2001:db8:1:3::1")).current, key);
    }

    #[test]
    fn rotation_changes_keys_and_keeps_the_previous_once() {
        let ring = KeyRing::new(Duration::from_secs(60));
        let nothing_held = HashSet::new();
        let start = Instant::now();
        let before = ring.client_keys(ip("10.1.2.3")).current;
        assert!(!ring.rotate_if_due(start, &nothing_held));
        assert!(ring.rotate_if_due(start + Duration::from_secs(61), &nothing_held));
        let keys = ring.client_keys(ip("10.1.2.3"));
        assert_ne!(keys.current, before, "a new salt gives a new key");
        assert_eq!(keys.older, vec![before], "the old key is still recognised");
        assert!(ring.rotate_if_due(start + Duration::from_secs(122), &nothing_held));
        let after = ring.client_keys(ip("10.1.2.3"));
        assert_eq!(after.older, vec![keys.current]);
        assert_eq!(ring.generations_kept(), 2, "the first salt is gone");
    }

    #[test]
    fn a_generation_with_state_under_it_is_kept_until_the_state_is_gone() {
        let ring = KeyRing::new(Duration::from_secs(60));
        let start = Instant::now();
        let first = ring.client_keys(ip("10.1.2.3")).current;
        let held = HashSet::from([first.generation()]);
        for n in 1..=3 {
            assert!(ring.rotate_if_due(start + Duration::from_secs(61 * n), &held));
        }
        let keys = ring.client_keys(ip("10.1.2.3"));
        assert_eq!(keys.older.len(), 2, "the previous one and the one in use");
        assert_eq!(keys.older.last(), Some(&first), "still recognised");
        assert!(ring.rotate_if_due(start + Duration::from_secs(61 * 4), &HashSet::new()));
        assert!(!ring
            .client_keys(ip("10.1.2.3"))
            .all()
            .any(|key| key == first));
    }

    #[test]
    fn two_rings_never_agree() {
        let (a, b) = (KeyRing::new(Duration::MAX), KeyRing::new(Duration::MAX));
        assert_ne!(
            a.client_keys(ip("127.0.0.1")).current,
            b.client_keys(ip("127.0.0.1")).current
        );
    }
}

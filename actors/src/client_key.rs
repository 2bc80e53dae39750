//! Client keys: the only form in which the server remembers where a client comes from. A key
//! is a blake3 keyed hash of the client's IP address (for IPv6, its /64 prefix, which one
//! subscriber usually holds whole) under a random 32-byte salt that lives only in memory and
//! is replaced every `salt_rotation`. The raw address is used for this one computation and
//! never stored. The previous salt is kept until the next rotation, so state held under a
//! client's old key can be moved to its new key once; then it is destroyed.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use zeroize::Zeroize;

/// An opaque, salted identifier of a client's network origin.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey([u8; 32]);

impl ClientKey {
    /// A short prefix for showing a client its own key (never enough to look anyone up).
    pub fn short(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientKey({}…)", self.short())
    }
}

/// A client's key under the current salt, and under the previous one while it is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientKeys {
    pub current: ClientKey,
    pub previous: Option<ClientKey>,
}

struct Salt([u8; 32]);

impl Salt {
    fn generate() -> Salt {
        let mut salt = [0u8; 32];
        // Without the OS random source no salt can be made safely at all.
        getrandom::getrandom(&mut salt).expect("the operating system's random source works");
        Salt(salt)
    }

    fn key(&self, ip: IpAddr) -> ClientKey {
        let mut material = [0u8; 17];
        let used = match ip {
            IpAddr::V4(v4) => {
                material[0] = 4;
                material[1..5].copy_from_slice(&v4.octets());
                5
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => return self.key(IpAddr::V4(v4)),
                None => {
                    material[0] = 6;
                    material[1..9].copy_from_slice(&v6.octets()[..8]);
                    9
                }
            },
        };
        let key = ClientKey(*blake3::keyed_hash(&self.0, &material[..used]).as_bytes());
        material.zeroize();
        key
    }
}

impl Drop for Salt {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

struct Salts {
    current: Salt,
    previous: Option<Salt>,
    rotated_at: Instant,
}

/// The current and previous salt, rotated on the purge tick.
pub struct KeyRing {
    salts: RwLock<Salts>,
    rotation: Duration,
}

impl KeyRing {
    pub fn new(rotation: Duration) -> Self {
        Self {
            salts: RwLock::new(Salts {
                current: Salt::generate(),
                previous: None,
                rotated_at: Instant::now(),
            }),
            rotation,
        }
    }

    /// The client's key under the current salt, and under the previous one if it is kept.
    pub fn keys(&self, ip: IpAddr) -> (ClientKey, Option<ClientKey>) {
        let salts = self.salts.read();
        (
            salts.current.key(ip),
            salts.previous.as_ref().map(|salt| salt.key(ip)),
        )
    }

    /// Both keys of the client at `ip`; the address goes no further than this call.
    pub fn client_keys(&self, ip: IpAddr) -> ClientKeys {
        let (current, previous) = self.keys(ip);
        ClientKeys { current, previous }
    }

    /// Rotates if the rotation period has passed: the previous salt is destroyed, the current
    /// one becomes previous, and a new one is made. Returns whether it rotated.
    pub fn rotate_if_due(&self, now: Instant) -> bool {
        if now.duration_since(self.salts.read().rotated_at) < self.rotation {
            return false;
        }
        let mut salts = self.salts.write();
        let old = std::mem::replace(&mut salts.current, Salt::generate());
        salts.previous = Some(old);
        salts.rotated_at = now;
        true
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
        let (a, previous) = ring.keys(ip("127.0.0.2"));
        assert_eq!(previous, None);
        assert_eq!(ring.keys(ip("127.0.0.2")).0, a);
        assert_ne!(ring.keys(ip("127.0.0.3")).0, a);
        assert_eq!(
            ring.keys(ip("::ffff:127.0.0.2")).0,
            a,
            "v4-mapped v6 is the v4 address"
        );
    }

    #[test]
    fn an_ipv6_64_prefix_is_one_client() {
        let ring = KeyRing::new(Duration::from_secs(3600));
        let key = ring.keys(ip("2001:db8:1:2:aaaa::1")).0;
        assert_eq!(ring.keys(ip("2001:db8:1:2:ffff:1:2:3")).0, key);
        assert_ne!(ring.keys(ip("2001:db8:1:3::1")).0, key);
    }

    #[test]
    fn rotation_changes_keys_and_keeps_the_previous_once() {
        let ring = KeyRing::new(Duration::from_secs(60));
        let start = Instant::now();
        let (before, _) = ring.keys(ip("10.1.2.3"));
        assert!(!ring.rotate_if_due(start));
        assert!(ring.rotate_if_due(start + Duration::from_secs(61)));
        let (after, previous) = ring.keys(ip("10.1.2.3"));
        assert_ne!(after, before, "a new salt gives a new key");
        assert_eq!(
            previous,
            Some(before),
            "the old key can still be recognised once"
        );
        assert!(ring.rotate_if_due(start + Duration::from_secs(122)));
        let (_, previous) = ring.keys(ip("10.1.2.3"));
        assert_eq!(previous, Some(after));
        assert_ne!(previous, Some(before), "the first salt is gone");
    }

    #[test]
    fn two_rings_never_agree() {
        let (a, b) = (KeyRing::new(Duration::MAX), KeyRing::new(Duration::MAX));
        assert_ne!(a.keys(ip("127.0.0.1")).0, b.keys(ip("127.0.0.1")).0);
    }
}

//! The cluster secret (`cluster_secret`, the same 32 bytes on every node) and what is derived
//! from it. Redis, and anyone watching it, sees only what these make: keyed hashes of
//! interests, pseudonyms of sessions, and sealed payloads.

use zeroize::Zeroizing;

const INTEREST_CONTEXT: &str = "Ephemera cluster 2026-11-24 interest hash key";
const PSEUDONYM_CONTEXT: &str = "Ephemera cluster 2026-11-24 session pseudonym key";
const TOKEN_CONTEXT: &str = "Ephemera cluster 2026-11-24 resume token key";
const SEALING_CONTEXT: &str = "Ephemera cluster 2026-11-24 sealing key";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "cluster_secret must be 64 hexadecimal digits (32 random bytes; e.g. `openssl rand -hex 32`)"
)]
pub struct BadSecret;

/// The keys every node derives from the cluster secret.
#[derive(Clone)]
pub struct ClusterKeys {
    interest: Zeroizing<[u8; 32]>,
    pseudonym: Zeroizing<[u8; 32]>,
    token: Zeroizing<[u8; 32]>,
    sealing: Zeroizing<[u8; 32]>,
}

impl ClusterKeys {
    /// From the setting's text: 64 hex digits.
    pub fn from_hex(secret: &str) -> Result<ClusterKeys, BadSecret> {
        let secret = secret.trim();
        if secret.len() != 64 || !secret.is_ascii() {
            return Err(BadSecret);
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        for (byte, pair) in bytes.iter_mut().zip(secret.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| BadSecret)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| BadSecret)?;
        }
        Ok(Self::from_bytes(&bytes))
    }

    pub fn from_bytes(secret: &[u8; 32]) -> ClusterKeys {
        ClusterKeys {
            interest: Zeroizing::new(blake3::derive_key(INTEREST_CONTEXT, secret)),
            pseudonym: Zeroizing::new(blake3::derive_key(PSEUDONYM_CONTEXT, secret)),
            token: Zeroizing::new(blake3::derive_key(TOKEN_CONTEXT, secret)),
            sealing: Zeroizing::new(blake3::derive_key(SEALING_CONTEXT, secret)),
        }
    }

    /// An interest as Redis holds it: 16 bytes of keyed hash, hex. Two nodes hashing the same
    /// (already normalised) interest agree; nobody without the secret can test a guess.
    pub fn interest_hash(&self, mode: &str, interest: &str) -> String {
        let mut hasher = blake3::Hasher::new_keyed(&self.interest);
        hasher.update(mode.as_bytes());
        hasher.update(&[0]);
        hasher.update(interest.as_bytes());
        hex(&hasher.finalize().as_bytes()[..16])
    }

    /// A session's name in Redis, from its token's hash: the same on whichever node the
    /// session is (it keeps it when it moves), and unlinkable to the token, to its resume key
    /// (`token_hash`, under another key) or to anything else without the secret.
    pub fn session_name(&self, token_hash: &[u8; 32]) -> String {
        hex(&blake3::keyed_hash(&self.pseudonym, token_hash).as_bytes()[..16])
    }

    /// A resume token's name in Redis (it maps to the node holding the session).
    pub fn token_hash(&self, token: &str) -> String {
        hex(blake3::keyed_hash(&self.token, token.as_bytes()).as_bytes())
    }

    /// The key that seals what `sender` publishes: each node has its own, so nonces (a counter
    /// per sender) never repeat under one key.
    pub fn sealing_key(&self, sender: &str) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(*blake3::keyed_hash(&self.sealing, sender.as_bytes()).as_bytes())
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[(byte >> 4) as usize] as char);
        text.push(DIGITS[(byte & 15) as usize] as char);
    }
    text
}

/// A random node id: 16 bytes, hex.
pub fn random_node_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("the operating system's random source works");
    hex(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn the_secret_is_64_hex_digits() {
        assert!(ClusterKeys::from_hex(SECRET).is_ok());
        assert_eq!(ClusterKeys::from_hex("abc").err(), Some(BadSecret));
        assert_eq!(
            ClusterKeys::from_hex(&"zz".repeat(32)).err(),
            Some(BadSecret)
        );
    }

    #[test]
    fn nodes_agree_on_hashes_and_the_secret_changes_them_all() {
        let a = ClusterKeys::from_hex(SECRET).unwrap();
        let b = ClusterKeys::from_hex(SECRET).unwrap();
        let other = ClusterKeys::from_bytes(&[7; 32]);
        assert_eq!(
            a.interest_hash("text", "chess"),
            b.interest_hash("text", "chess")
        );
        assert_ne!(
            a.interest_hash("text", "chess"),
            a.interest_hash("video", "chess")
        );
        assert_ne!(
            a.interest_hash("text", "chess"),
            other.interest_hash("text", "chess")
        );
        assert_eq!(a.interest_hash("text", "chess").len(), 32);
        assert_ne!(*a.sealing_key("n1"), *a.sealing_key("n2"));
        assert_ne!(a.session_name(&[1; 32]), a.session_name(&[2; 32]));
        assert_ne!(a.session_name(&[1; 32]), other.session_name(&[1; 32]));
        assert!(!a.token_hash("token").contains("token"));
    }
}

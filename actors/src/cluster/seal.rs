//! Sealing of everything one node sends another through Redis: ChaCha20-Poly1305 under the
//! sender's own key (derived from the cluster secret and its node id), with a 64-bit counter
//! as nonce, so a nonce never repeats under a key. The envelope names sender and counter in
//! clear (Redis must route nothing by them, but the receiver needs them to pick the key), and
//! binds the recipient as associated data, so a sealed payload copied to another node's stream
//! does not open there. A receiver refuses a counter it has already passed (a replay).

use std::collections::HashMap;

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};

use super::secret::ClusterKeys;

const VERSION: u8 = 1;
/// Node ids are 32 hex characters.
const NODE_ID_LEN: usize = 32;
const HEADER_LEN: usize = 1 + NODE_ID_LEN + 8;

/// Seals what this node sends.
pub struct Sealer {
    node: String,
    cipher: ChaCha20Poly1305,
    counter: u64,
}

/// Opens what other nodes sent this one.
pub struct Opener<'k> {
    node: String,
    keys: &'k ClusterKeys,
    /// Per sender: its cipher, and the last counter seen.
    senders: HashMap<String, (ChaCha20Poly1305, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("not a sealed envelope")]
    Malformed,
    #[error("the envelope fails authentication (another cluster secret, or altered)")]
    Forged,
    #[error("the envelope was opened before (a replay)")]
    Replayed,
}

fn nonce(counter: u64) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::from(nonce)
}

fn associated_data(header: &[u8], recipient: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(header.len() + recipient.len());
    data.extend_from_slice(header);
    data.extend_from_slice(recipient.as_bytes());
    data
}

impl Sealer {
    pub fn new(keys: &ClusterKeys, node: &str) -> Sealer {
        debug_assert_eq!(node.len(), NODE_ID_LEN);
        Sealer {
            node: node.to_owned(),
            cipher: ChaCha20Poly1305::new(keys.sealing_key(node).as_ref().into()),
            counter: 0,
        }
    }

    /// Seals `payload` for the node `recipient`.
    pub fn seal(&mut self, recipient: &str, payload: &[u8]) -> Vec<u8> {
        self.counter += 1;
        let mut envelope = Vec::with_capacity(HEADER_LEN + payload.len() + 16);
        envelope.push(VERSION);
        envelope.extend_from_slice(self.node.as_bytes());
        envelope.extend_from_slice(&self.counter.to_be_bytes());
        let sealed = self
            .cipher
            .encrypt(
                &nonce(self.counter),
                Payload {
                    msg: payload,
                    aad: &associated_data(&envelope, recipient),
                },
            )
            // Fails only past 256 GiB per message.
            .expect("a payload seals");
        envelope.extend_from_slice(&sealed);
        envelope
    }
}

impl<'k> Opener<'k> {
    pub fn new(keys: &'k ClusterKeys, node: &str) -> Opener<'k> {
        Opener {
            node: node.to_owned(),
            keys,
            senders: HashMap::new(),
        }
    }

    /// Opens an envelope sealed for this node; returns the sender and the payload.
    pub fn open(&mut self, envelope: &[u8]) -> Result<(String, Vec<u8>), OpenError> {
        if envelope.len() < HEADER_LEN + 16 || envelope[0] != VERSION {
            return Err(OpenError::Malformed);
        }
        let sender = std::str::from_utf8(&envelope[1..1 + NODE_ID_LEN])
            .ok()
            .filter(|id| id.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or(OpenError::Malformed)?
            .to_owned();
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&envelope[1 + NODE_ID_LEN..HEADER_LEN]);
        let counter = u64::from_be_bytes(counter);
        let keys = self.keys;
        let (cipher, last) = self.senders.entry(sender.clone()).or_insert_with(|| {
            (
                ChaCha20Poly1305::new(keys.sealing_key(&sender).as_ref().into()),
                0,
            )
        });
        if counter <= *last {
            return Err(OpenError::Replayed);
        }
        let payload = cipher
            .decrypt(
                &nonce(counter),
                Payload {
                    msg: &envelope[HEADER_LEN..],
                    aad: &associated_data(&envelope[..HEADER_LEN], &self.node),
                },
            )
            .map_err(|_| OpenError::Forged)?;
        *last = counter;
        Ok((sender, payload))
    }

    /// Forgets a sender (its node is gone), so the table stays as small as the cluster.
    pub fn forget(&mut self, sender: &str) {
        self.senders.remove(sender);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::secret::random_node_id;

    #[test]
    fn a_sealed_payload_opens_once_at_its_recipient_only() {
        let keys = ClusterKeys::from_bytes(&[1; 32]);
        let (a, b, c) = (random_node_id(), random_node_id(), random_node_id());
        let mut sealer = Sealer::new(&keys, &a);
        let envelope = sealer.seal(&b, b"hello there");
        assert!(!envelope.windows(5).any(|w| w == b"hello"), "no clear text");
        let mut at_c = Opener::new(&keys, &c);
        assert_eq!(at_c.open(&envelope), Err(OpenError::Forged), "not for c");
        let mut at_b = Opener::new(&keys, &b);
        assert_eq!(
            at_b.open(&envelope),
            Ok((a.clone(), b"hello there".to_vec()))
        );
        assert_eq!(at_b.open(&envelope), Err(OpenError::Replayed));
        let next = sealer.seal(&b, b"again");
        assert_eq!(at_b.open(&next).unwrap().1, b"again");
    }

    #[test]
    fn another_secret_or_a_flipped_bit_never_opens() {
        let (a, b) = (random_node_id(), random_node_id());
        let keys = ClusterKeys::from_bytes(&[1; 32]);
        let envelope = Sealer::new(&keys, &a).seal(&b, b"payload");
        let other = ClusterKeys::from_bytes(&[2; 32]);
        assert_eq!(
            Opener::new(&other, &b).open(&envelope),
            Err(OpenError::Forged)
        );
        for position in [0, 5, HEADER_LEN - 1, HEADER_LEN, envelope.len() - 1] {
            let mut altered = envelope.clone();
            altered[position] ^= 1;
            assert!(
                Opener::new(&keys, &b).open(&altered).is_err(),
                "bit at {position}"
            );
        }
        assert_eq!(
            Opener::new(&keys, &b).open(b"short"),
            Err(OpenError::Malformed)
        );
    }
}

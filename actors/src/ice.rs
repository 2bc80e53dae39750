//! ICE servers handed to each session in `hello`: plain STUN URLs, and TURN with credentials
//! minted per hello by the TURN REST scheme (the "use-auth-secret" of coturn and others):
//! username `<expiry unix seconds>:<random id>`, password base64(HMAC-SHA1(secret, username)).
//! The TURN server checks the HMAC with the same shared secret and refuses an expired username,
//! so a leaked credential is worth little, and nothing per user is stored on either server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use zeroize::Zeroizing;

use crate::protocol::IceServer;

/// Where clients find STUN and TURN, and how TURN credentials are minted.
#[derive(Clone, Default)]
pub struct IceConfig {
    /// STUN (or statically authenticated) URLs, handed out as they are.
    pub stun_urls: Vec<String>,
    /// TURN URLs that get per-session credentials.
    pub turn_urls: Vec<String>,
    /// The secret shared with the TURN server.
    pub turn_shared_secret: Zeroizing<String>,
    /// How long a minted credential is accepted.
    pub turn_credential_ttl: Duration,
    /// Tell clients to use relayed candidates only, so the stranger never sees their address.
    pub relay_only: bool,
}

impl std::fmt::Debug for IceConfig {
    // The shared secret must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceConfig")
            .field("stun_urls", &self.stun_urls)
            .field("turn_urls", &self.turn_urls)
            .field("turn_credential_ttl", &self.turn_credential_ttl)
            .field("relay_only", &self.relay_only)
            .finish_non_exhaustive()
    }
}

impl IceConfig {
    /// The ICE servers for one hello, TURN credentials minted now.
    pub fn servers(&self) -> Vec<IceServer> {
        let mut servers = Vec::with_capacity(2);
        if !self.stun_urls.is_empty() {
            servers.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if !self.turn_urls.is_empty() {
            let expiry = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .saturating_add(self.turn_credential_ttl);
            let (username, credential) = self.mint(expiry.as_secs());
            servers.push(IceServer {
                urls: self.turn_urls.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        servers
    }

    /// A TURN REST username and password valid until `expiry_unix_seconds`. The id after the
    /// colon is random: it keeps two sessions' allocations apart on the TURN server without
    /// naming the session.
    pub fn mint(&self, expiry_unix_seconds: u64) -> (String, String) {
        let mut id = [0u8; 9];
        getrandom::getrandom(&mut id).expect("the operating system's random source works");
        let username = format!("{expiry_unix_seconds}:{}", URL_SAFE_NO_PAD.encode(id));
        let credential = turn_rest_password(self.turn_shared_secret.as_bytes(), &username);
        (username, credential)
    }
}

/// base64(HMAC-SHA1(secret, username)): the password a TURN server with a shared secret expects.
pub fn turn_rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_matches_rfc_2202_hmac_sha1() {
        // RFC 2202 test case 2: key "Jefe", data "what do ya want for nothing?".
        let password = turn_rest_password(b"Jefe", "what do ya want for nothing?");
        let expected = [
            0xef, 0xfc, 0xdf, 0x6a, 0xe5, 0xeb, 0x2f, 0xa2, 0xd2, 0x74, 0x16, 0xd5, 0xf1, 0x84,
            0xdf, 0x9c, 0x25, 0x9a, 0x7c, 0x79,
        ];
        assert_eq!(password, STANDARD.encode(expected));
    }

    #[test]
    fn turn_credentials_are_fresh_per_hello_and_expire_after_the_ttl() {
        let config = IceConfig {
            stun_urls: vec!["stun:stun.example:3478".into()],
            turn_urls: vec!["turn:turn.example:3478?transport=udp".into()],
            turn_shared_secret: Zeroizing::new("s3cret".into()),
            turn_credential_ttl: Duration::from_secs(600),
            relay_only: false,
        };
        let first = config.servers();
        let second = config.servers();
        assert_eq!(first.len(), 2);
        assert!(first[0].username.is_none() && first[0].credential.is_none());
        let (user_a, pass_a) = (
            first[1].username.clone().unwrap(),
            first[1].credential.clone().unwrap(),
        );
        let user_b = second[1].username.clone().unwrap();
        assert_ne!(user_a, user_b, "each hello mints its own username");
        assert_eq!(pass_a, turn_rest_password(b"s3cret", &user_a));

        let expiry: u64 = user_a.split(':').next().unwrap().parse().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            (now + 599..=now + 601).contains(&expiry),
            "expiry {expiry}, now {now}"
        );
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let config = IceConfig {
            turn_shared_secret: Zeroizing::new("do-not-print".into()),
            ..IceConfig::default()
        };
        assert!(!format!("{config:?}").contains("do-not-print"));
    }
}

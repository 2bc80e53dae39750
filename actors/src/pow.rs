//! Proof of work, with no third party: when enabled (always, or adaptively while new sessions
//! arrive faster than a threshold), `hello` offers each new session a random challenge, and its
//! first `find` must carry a nonce such that SHA-256(challenge ‖ nonce) starts with
//! `difficulty` zero bits. Verifying is one hash, checked without early exit; a challenge is
//! bound to its session and used once: solving it admits the session.

use std::time::Duration;

use tokio::time::Instant;

use base64::Engine as _;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// Longest nonce accepted, so a verification stays one small hash.
pub const MAX_NONCE_BYTES: usize = 64;

/// A session's challenge.
pub struct Challenge {
    bytes: [u8; 16],
    pub difficulty: u32,
}

impl Challenge {
    pub fn new(difficulty: u32) -> Self {
        let mut bytes = [0u8; 16];
        // Without the OS random source no unpredictable challenge can be made at all.
        getrandom::getrandom(&mut bytes).expect("the operating system's random source works");
        Self { bytes, difficulty }
    }

    /// As sent in `hello`: base64url without padding.
    pub fn encoded(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.bytes)
    }

    /// Whether `nonce` solves this challenge.
    pub fn is_solved_by(&self, nonce: &str) -> bool {
        nonce.len() <= MAX_NONCE_BYTES && solves(&self.bytes, nonce, self.difficulty)
    }
}

/// Whether SHA-256(challenge ‖ nonce) starts with `difficulty` zero bits. Looks at every
/// bit of the hash, so the time taken does not depend on how close a wrong nonce came.
pub fn solves(challenge: &[u8], nonce: &str, difficulty: u32) -> bool {
    let hash = Sha256::new()
        .chain_update(challenge)
        .chain_update(nonce.as_bytes())
        .finalize();
    let mut leading_zeros = 0u32;
    let mut still_zero = 1u32;
    for byte in hash {
        for bit in (0..8).rev() {
            still_zero &= u32::from((byte >> bit) & 1 == 0);
            leading_zeros += still_zero;
        }
    }
    leading_zeros >= difficulty
}

/// The client's side: finds a nonce for a challenge as sent in `hello`. Returns `None` for a
/// challenge that is not base64url. Used by the tests and by load generators.
pub fn solve(challenge_encoded: &str, difficulty: u32) -> Option<String> {
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(challenge_encoded)
        .ok()?;
    (0u64..)
        .map(|n| n.to_string())
        .find(|nonce| solves(&challenge, nonce, difficulty))
}

/// Decides the difficulty for each new session: the configured one, or, when that is 0, the
/// automatic one while new sessions arrive faster than the threshold.
pub struct PowPolicy {
    fixed_bits: u32,
    auto_threshold_per_second: f64,
    auto_bits: u32,
    window: Mutex<ArrivalWindow>,
}

/// New sessions counted over one-second windows.
struct ArrivalWindow {
    started_at: Instant,
    /// Sessions started since `started_at`.
    sessions: u32,
    /// Sessions per second over the last full window.
    last_rate_per_second: f64,
}

impl PowPolicy {
    pub fn new(fixed_bits: u32, auto_threshold_per_second: f64, auto_bits: u32) -> Self {
        Self {
            fixed_bits,
            auto_threshold_per_second,
            auto_bits,
            window: Mutex::new(ArrivalWindow {
                started_at: Instant::now(),
                sessions: 0,
                last_rate_per_second: 0.0,
            }),
        }
    }

    /// Counts a new session and returns the difficulty it must solve (0: none).
    pub fn difficulty_for_new_session(&self, now: Instant) -> u32 {
        if self.fixed_bits > 0 {
            return self.fixed_bits;
        }
        if self.auto_threshold_per_second <= 0.0 {
            return 0;
        }
        let mut window = self.window.lock();
        let elapsed = now.saturating_duration_since(window.started_at);
        if elapsed >= Duration::from_secs(1) {
            window.last_rate_per_second = f64::from(window.sessions) / elapsed.as_secs_f64();
            window.started_at = now;
            window.sessions = 0;
        }
        window.sessions += 1;
        // The rate of the window in progress counts too, so a sudden flood is met at once.
        let current = f64::from(window.sessions);
        if window.last_rate_per_second.max(current) > self.auto_threshold_per_second {
            self.auto_bits
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solve(challenge: &Challenge) -> String {
        (0u64..)
            .map(|n| n.to_string())
            .find(|nonce| challenge.is_solved_by(nonce))
            .unwrap()
    }

    #[test]
    fn a_found_nonce_solves_its_challenge_and_not_another() {
        let challenge = Challenge::new(10);
        let nonce = solve(&challenge);
        assert!(challenge.is_solved_by(&nonce));
        let other = Challenge::new(10);
        // A different challenge is solved by the same nonce only by a 1-in-1024 chance; try
        // a few so the test cannot fail by luck.
        let others_solved = (0..5)
            .filter(|_| Challenge::new(10).is_solved_by(&nonce))
            .count();
        assert!(others_solved < 5);
        assert!(!other.is_solved_by(&"x".repeat(MAX_NONCE_BYTES + 1)));
    }

    #[test]
    fn leading_zero_bits_are_counted_exactly() {
        // SHA-256("abc") starts with 0xba (no leading zero bit).
        assert!(solves(b"ab", "c", 0));
        assert!(!solves(b"ab", "c", 1));
        let challenge = Challenge::new(12);
        let nonce = solve(&challenge);
        let hash = Sha256::new()
            .chain_update(challenge.bytes)
            .chain_update(nonce.as_bytes())
            .finalize();
        assert_eq!(hash[0], 0);
        assert!(hash[1] < 16);
    }

    #[test]
    fn automatic_difficulty_starts_when_sessions_arrive_too_fast() {
        let policy = PowPolicy::new(0, 3.0, 14);
        let now = Instant::now();
        assert_eq!(policy.difficulty_for_new_session(now), 0);
        assert_eq!(policy.difficulty_for_new_session(now), 0);
        assert_eq!(policy.difficulty_for_new_session(now), 0);
        assert_eq!(policy.difficulty_for_new_session(now), 14);
        // A quiet second later, the last window's rate (4/s) still asks for work…
        let later = now + Duration::from_millis(1100);
        assert_eq!(policy.difficulty_for_new_session(later), 14);
        // …and after a quiet window, none.
        let quiet = later + Duration::from_secs(2);
        assert_eq!(policy.difficulty_for_new_session(quiet), 0);
        assert_eq!(
            PowPolicy::new(9, 0.0, 14).difficulty_for_new_session(now),
            9
        );
        assert_eq!(
            PowPolicy::new(0, 0.0, 14).difficulty_for_new_session(now),
            0
        );
    }
}

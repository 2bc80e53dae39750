//! Proof of work: offered in hello when enabled (or when sessions arrive too fast), required
//! by the first find, verified, and single use.

use ephemera::settings::Settings;
use ephemera_actors::pow::solve;
use serde_json::json;

use crate::helpers::*;

fn find_with_pow(nonce: &str) -> serde_json::Value {
    json!({"type":"find","adult":true,"pow":nonce})
}

#[tokio::test]
async fn with_pow_enabled_find_needs_a_valid_nonce_for_its_own_challenge() {
    let server = spawn_server(Settings {
        pow_difficulty_bits: 8,
        ..test_settings()
    });
    let mut a = server.client().await;
    let pow = a.hello["pow"].clone();
    assert_eq!(pow["algorithm"], "sha256");
    assert_eq!(pow["difficulty"], 8);
    let challenge = pow["challenge"].as_str().unwrap().to_owned();

    a.send(find_text()).await;
    a.expect_error("pow_required").await;
    // A nonce that does not solve it (searched for, so the test never passes by luck).
    let challenge_bytes = base64_decode(&challenge);
    let wrong = (0..)
        .map(|n: u32| format!("w{n}"))
        .find(|nonce| !ephemera_actors::pow::solves(&challenge_bytes, nonce, 8))
        .unwrap();
    a.send(find_with_pow(&wrong)).await;
    a.expect_error("pow_invalid").await;

    let nonce = solve(&challenge, 8).unwrap();
    // Another session's challenge is not solved by this nonce (almost surely; checked).
    let mut b = server.client().await;
    let other = b.hello["pow"]["challenge"].as_str().unwrap().to_owned();
    assert_ne!(other, challenge);
    if !ephemera_actors::pow::solves(&base64_decode(&other), &nonce, 8) {
        b.send(find_with_pow(&nonce)).await;
        b.expect_error("pow_invalid").await;
    }

    a.send(find_with_pow(&nonce)).await;
    a.expect("waiting").await;
    // Solved once, the session is admitted: leaving and finding again needs no new work.
    a.send(json!({"type":"leave"})).await;
    a.send(find_text()).await;
    a.expect("waiting").await;
}

#[tokio::test]
async fn pow_starts_by_itself_when_sessions_arrive_too_fast() {
    let server = spawn_server(Settings {
        pow_auto_threshold_per_second: 3.0,
        pow_auto_difficulty_bits: 6,
        ..test_settings()
    });
    let mut offered = Vec::new();
    for _ in 0..6 {
        let client = server.client().await;
        offered.push(!client.hello["pow"].is_null());
    }
    assert_eq!(
        &offered[..3],
        &[false, false, false],
        "a trickle needs no work"
    );
    assert!(offered[3..].iter().all(|&o| o), "a burst does: {offered:?}");
}

fn base64_decode(text: &str) -> Vec<u8> {
    // Test-side decoding of base64url without padding, to check a nonce independently.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let value = alphabet.iter().position(|&a| a == c).unwrap() as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}

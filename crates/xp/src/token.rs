//! Join tokens: `base64url(payload).base64url(hmac)`, signed with a key derived from the
//! cluster secret. The payload is readable (the joiner learns its node id from it) but cannot
//! be changed or made without the secret.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use xp_config::Secret;

type HmacSha256 = Hmac<Sha256>;

/// What a join token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinClaims {
    /// Format version.
    pub v: u32,
    pub cluster_id: String,
    /// The API URL of the leader that issued the token: where the joiner sends its request.
    pub leader_api_base_url: String,
    /// The fresh node id reserved for the joiner.
    pub node_id: u64,
    /// The member the joiner takes the place of, chosen by the admin who minted the token
    /// (a replaced disk): it leaves the voters when the joiner becomes one. Without it the
    /// joiner is added and nobody is removed, whatever URL it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<u64>,
    /// Single-use marker.
    pub nonce: String,
    /// Unix seconds after which the token is refused.
    pub expires_at: u64,
}

/// Why a token was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `payload.signature` in base64url, or the payload is not a token.
    #[error("join token is malformed: {0}")]
    Malformed(String),
    /// Signed with another key: forged, altered, or from another cluster.
    #[error("join token signature is invalid (forged, altered, or issued by another cluster)")]
    BadSignature,
    /// Past its expiry.
    #[error("join token expired {ago}s ago; create a new one on the leader")]
    Expired { ago: u64 },
}

/// Derives a purpose-specific key, so the raw secret is never used (or sent) directly.
pub fn derive_key(secret: &Secret, purpose: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes()).expect("any key length");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn mac(secret: &Secret) -> HmacSha256 {
    HmacSha256::new_from_slice(&derive_key(secret, "xp-join-token-v1")).expect("any key length")
}

pub fn sign(claims: &JoinClaims, secret: &Secret) -> String {
    let payload = serde_json::to_vec(claims).expect("claims serialize");
    let mut m = mac(secret);
    m.update(&payload);
    format!("{}.{}", B64.encode(&payload), B64.encode(m.finalize().into_bytes()))
}

/// Reads the claims without checking the signature (the joiner's view before it asks).
pub fn decode_unverified(token: &str) -> Result<JoinClaims, TokenError> {
    let (payload, _) = split(token)?;
    serde_json::from_slice(&payload).map_err(|e| TokenError::Malformed(e.to_string()))
}

/// Checks signature and expiry against `now` (unix seconds).
pub fn verify(token: &str, secret: &Secret, now: u64) -> Result<JoinClaims, TokenError> {
    let (payload, sig) = split(token)?;
    let mut m = mac(secret);
    m.update(&payload);
    m.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
    let claims: JoinClaims =
        serde_json::from_slice(&payload).map_err(|e| TokenError::Malformed(e.to_string()))?;
    if now >= claims.expires_at {
        return Err(TokenError::Expired { ago: now - claims.expires_at });
    }
    Ok(claims)
}

fn split(token: &str) -> Result<(Vec<u8>, Vec<u8>), TokenError> {
    let (p, s) = token.trim().split_once('.').ok_or_else(|| {
        TokenError::Malformed("expected two base64url parts joined by '.'".into())
    })?;
    let p = B64.decode(p).map_err(|e| TokenError::Malformed(format!("payload: {e}")))?;
    let s = B64.decode(s).map_err(|e| TokenError::Malformed(format!("signature: {e}")))?;
    Ok((p, s))
}

/// A random hex string of `bytes` bytes.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).expect("the OS has a random source");
    hex(&buf)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string; `None` unless it is an even number of hex digits.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// Compares two byte strings in time that depends on their length only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> JoinClaims {
        JoinClaims {
            v: 1,
            cluster_id: "c1".into(),
            leader_api_base_url: "http://node1:8080".into(),
            node_id: 4,
            replaces: None,
            nonce: "n".into(),
            expires_at: 1000,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let secret = Secret::new("0123456789abcdef");
        let t = sign(&claims(), &secret);
        assert_eq!(verify(&t, &secret, 999).unwrap(), claims());
        assert_eq!(decode_unverified(&t).unwrap(), claims());
        assert_eq!(verify(&t, &secret, 1005), Err(TokenError::Expired { ago: 5 }));
        assert_eq!(
            verify(&t, &Secret::new("another-secret-16"), 999),
            Err(TokenError::BadSignature)
        );
        // Change the node id in the payload, keep the signature.
        let mut forged = claims();
        forged.node_id = 1;
        let forged_payload = sign(&forged, &secret);
        let t2 = format!(
            "{}.{}",
            forged_payload.split('.').next().unwrap(),
            t.split('.').nth(1).unwrap()
        );
        assert_eq!(verify(&t2, &secret, 999), Err(TokenError::BadSignature));
        assert!(matches!(verify("garbage", &secret, 0), Err(TokenError::Malformed(_))));
    }
}

//! How nodes authenticate the Raft RPCs they send each other, with no secret on the wire.
//!
//! Every request carries an HMAC-SHA256, keyed from the cluster secret, over its method, path,
//! a timestamp, a random nonce, the SHA-256 of its body and every header the receiver acts on
//! (sender, target, cluster id, incarnations, generation). The receiver checks the MAC before
//! it reads the body, refuses a timestamp outside [`REPLAY_WINDOW`] and a nonce it already saw
//! within it, and then checks the body against its digest. So a peer, or anyone on the path,
//! that captures a request can neither reuse it on another route, node or body, nor replay it;
//! and a URL taken from a membership or an answer is sent nothing it could reuse.
//!
//! What this does not give: confidentiality (KV values travel in the clear without TLS), and
//! authenticity of *answers* (the eviction carries its own MAC). TLS covers both.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap as ClientHeaders, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use crate::token::{derive_key, hex, random_hex};
use xp_api::headers::{
    CLUSTER as CLUSTER_HEADER, FROM as FROM_HEADER, FROM_INCARNATION as FROM_INCARNATION_HEADER,
    GENERATION as GENERATION_HEADER, TO as TO_HEADER, TO_INCARNATION as TO_INCARNATION_HEADER,
};

type HmacSha256 = Hmac<Sha256>;

pub use xp_api::headers::BODY_DIGEST as BODY_DIGEST_HEADER;
pub use xp_api::headers::NONCE as NONCE_HEADER;
pub use xp_api::headers::SIGNATURE as SIGNATURE_HEADER;
pub use xp_api::headers::TIMESTAMP as TIMESTAMP_HEADER;

/// The headers a signature covers besides its own, in the order they are signed. A header the
/// sender leaves out is signed as empty.
pub const SIGNED_HEADERS: [&str; 6] = [
    FROM_HEADER,
    TO_HEADER,
    CLUSTER_HEADER,
    FROM_INCARNATION_HEADER,
    TO_INCARNATION_HEADER,
    GENERATION_HEADER,
];

/// How far a request's timestamp may be from the receiver's clock, either way: the nodes'
/// clocks must agree within this (NTP does by far), and a captured request is worthless after.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(30);

/// Most nonces taken in one [`NONCE_PERIOD`] (over 1 500 RPCs a second, sustained). Beyond
/// it, signed requests are refused with 503 until the period turns, rather than forgetting a
/// nonce that could then be replayed.
const MAX_NONCES: usize = 100_000;

/// Nonces are kept in two sets, the current and the previous period's, and the older set is
/// dropped when a period turns: a nonce is remembered for at least one period after it was
/// taken, and a request is fresh for at most two windows after it was taken, so a period of
/// two windows covers it. Checking and turning cost O(1).
const NONCE_PERIOD: Duration = Duration::from_secs(2 * REPLAY_WINDOW.as_secs());

#[derive(Default)]
struct Nonces {
    current: HashSet<String>,
    previous: HashSet<String>,
    /// When `current` began (unix ms).
    since: u64,
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing or malformed {0} header: Raft RPCs must be signed with the cluster key")]
    Missing(&'static str),
    #[error(
        "the request's timestamp is {skew_ms} ms off this node's clock (at most {} ms allowed): \
         a replay, or the nodes' clocks disagree (check NTP)",
        REPLAY_WINDOW.as_millis()
    )]
    Stale { skew_ms: u64 },
    #[error(
        "bad signature: the sender does not hold this cluster's secret, or the request was altered"
    )]
    BadSignature,
    #[error("replayed request: this nonce was already used")]
    Replayed,
    #[error("the body does not match its signed digest (altered in transit)")]
    BodyMismatch,
    #[error("too many signed requests in the replay window; retry shortly")]
    Busy,
}

impl AuthError {
    /// 503 for [`AuthError::Busy`] (retry), 401 for everything else.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Busy => 503,
            _ => 401,
        }
    }
}

/// The signed headers of one request, to hand to the receiver's check.
pub trait Headers {
    fn get_str(&self, name: &str) -> Option<&str>;
}

impl Headers for axum::http::HeaderMap {
    fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The node's RPC key and the nonces it has seen.
pub struct RpcAuth {
    key: Vec<u8>,
    nonces: Mutex<Nonces>,
    max_nonces: usize,
}

impl RpcAuth {
    pub fn new(secret: &xp_config::Secret) -> RpcAuth {
        RpcAuth {
            key: derive_key(secret, "xp-raft-rpc-v1"),
            nonces: Mutex::default(),
            max_nonces: MAX_NONCES,
        }
    }

    /// A key nobody else has: for a node that sends no RPC (`xp init`).
    pub fn unshared() -> RpcAuth {
        let key = crate::token::unhex(&random_hex(32)).expect("hex");
        RpcAuth { key, nonces: Mutex::default(), max_nonces: MAX_NONCES }
    }

    fn mac(&self, method: &str, path: &str, ts: &str, nonce: &str, digest: &str) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("any key length");
        for part in ["xp-rpc-v1", method, path, ts, nonce, digest] {
            m.update(part.as_bytes());
            m.update(b"\n");
        }
        m
    }

    /// The headers that sign a request of `method` to `path` with `body` and the given
    /// [`SIGNED_HEADERS`] values (`headers` must set every one of them it means to send).
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
        now_ms: u64,
    ) -> ClientHeaders {
        let ts = now_ms.to_string();
        let nonce = random_hex(16);
        let digest = hex(&Sha256::digest(body));
        let mut m = self.mac(method, path, &ts, &nonce, &digest);
        for name in SIGNED_HEADERS {
            let value = headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
            m.update(format!("{name}:{}\n", value.unwrap_or_default()).as_bytes());
        }
        let sig = hex(&m.finalize().into_bytes());
        let mut out = ClientHeaders::new();
        let mut put = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                out.insert(HeaderName::from_static(name), v);
            }
        };
        for (name, value) in headers {
            put(name, value.clone());
        }
        put(TIMESTAMP_HEADER, ts);
        put(NONCE_HEADER, nonce);
        put(BODY_DIGEST_HEADER, digest);
        put(SIGNATURE_HEADER, sig);
        out
    }

    /// Checks a request's signature, freshness and nonce (not its body: see
    /// [`RpcAuth::check_body`]). Returns the body digest the body must match.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        headers: &impl Headers,
        now_ms: u64,
    ) -> Result<String, AuthError> {
        let get = |name: &'static str| headers.get_str(name).ok_or(AuthError::Missing(name));
        let ts = get(TIMESTAMP_HEADER)?;
        let at: u64 = ts.parse().map_err(|_| AuthError::Missing(TIMESTAMP_HEADER))?;
        let skew_ms = now_ms.abs_diff(at);
        if skew_ms > REPLAY_WINDOW.as_millis() as u64 {
            return Err(AuthError::Stale { skew_ms });
        }
        let nonce = get(NONCE_HEADER)?;
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::Missing(NONCE_HEADER));
        }
        let digest = get(BODY_DIGEST_HEADER)?;
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::Missing(BODY_DIGEST_HEADER));
        }
        let sig = crate::token::unhex(get(SIGNATURE_HEADER)?)
            .ok_or(AuthError::Missing(SIGNATURE_HEADER))?;
        let mut m = self.mac(method, path, ts, nonce, digest);
        for name in SIGNED_HEADERS {
            m.update(format!("{name}:{}\n", headers.get_str(name).unwrap_or_default()).as_bytes());
        }
        m.verify_slice(&sig).map_err(|_| AuthError::BadSignature)?;
        // Only a signed request may take a place among the nonces.
        let mut n = self.nonces.lock().unwrap();
        let period = NONCE_PERIOD.as_millis() as u64;
        if now_ms >= n.since.saturating_add(period) {
            n.previous = std::mem::take(&mut n.current);
            if now_ms >= n.since.saturating_add(2 * period) {
                n.previous.clear();
            }
            n.since = now_ms;
        }
        if n.current.contains(nonce) || n.previous.contains(nonce) {
            return Err(AuthError::Replayed);
        }
        if n.current.len() >= self.max_nonces {
            return Err(AuthError::Busy);
        }
        n.current.insert(nonce.to_owned());
        Ok(digest.to_owned())
    }

    /// Checks a body against the digest [`RpcAuth::check`] returned.
    pub fn check_body(digest: &str, body: &[u8]) -> Result<(), AuthError> {
        let actual = hex(&Sha256::digest(body));
        match crate::token::constant_time_eq(
            actual.as_bytes(),
            digest.to_ascii_lowercase().as_bytes(),
        ) {
            true => Ok(()),
            false => Err(AuthError::BodyMismatch),
        }
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> RpcAuth {
        RpcAuth::new(&xp_config::Secret::new("test-cluster-secret-0123456789"))
    }

    fn headers(h: &ClientHeaders) -> axum::http::HeaderMap {
        let mut out = axum::http::HeaderMap::new();
        for (k, v) in h {
            out.insert(
                k.as_str().parse::<axum::http::HeaderName>().unwrap(),
                v.to_str().unwrap().parse().unwrap(),
            );
        }
        out
    }

    const NOW: u64 = 1_800_000_000_000;

    fn signed() -> axum::http::HeaderMap {
        let h = [(FROM_HEADER, "1".to_owned()), (TO_HEADER, "2".to_owned())];
        headers(&auth().sign("POST", "/raft/vote", &h, b"{\"x\":1}", NOW))
    }

    /// Each way of tampering with a signed request, and the refusal it gets.
    #[test]
    fn tampering_table() {
        type Tamper = fn(&mut axum::http::HeaderMap, &mut &str, &mut u64);
        let cases: Vec<(&str, Tamper, Result<(), AuthError>)> = vec![
            ("untouched", |_, _, _| {}, Ok(())),
            ("other path", |_, p, _| *p = "/raft/hold-elections", Err(AuthError::BadSignature)),
            (
                "other target",
                |h, _, _| {
                    h.insert(TO_HEADER, "3".parse().unwrap());
                },
                Err(AuthError::BadSignature),
            ),
            (
                "other sender",
                |h, _, _| {
                    h.insert(FROM_HEADER, "9".parse().unwrap());
                },
                Err(AuthError::BadSignature),
            ),
            (
                "added generation",
                |h, _, _| {
                    h.insert(GENERATION_HEADER, "5".parse().unwrap());
                },
                Err(AuthError::BadSignature),
            ),
            (
                "other digest",
                |h, _, _| {
                    h.insert(BODY_DIGEST_HEADER, "0".repeat(64).parse().unwrap());
                },
                Err(AuthError::BadSignature),
            ),
            (
                "no signature",
                |h, _, _| {
                    h.remove(SIGNATURE_HEADER);
                },
                Err(AuthError::Missing(SIGNATURE_HEADER)),
            ),
            (
                "no timestamp",
                |h, _, _| {
                    h.remove(TIMESTAMP_HEADER);
                },
                Err(AuthError::Missing(TIMESTAMP_HEADER)),
            ),
            ("31 s later", |_, _, now| *now += 31_000, Err(AuthError::Stale { skew_ms: 31_000 })),
            ("29 s later", |_, _, now| *now += 29_000, Ok(())),
            ("31 s earlier", |_, _, now| *now -= 31_000, Err(AuthError::Stale { skew_ms: 31_000 })),
        ];
        for (what, tamper, want) in cases {
            let (mut h, mut path, mut now) = (signed(), "/raft/vote", NOW);
            tamper(&mut h, &mut path, &mut now);
            let got = auth().check("POST", path, &h, now).map(|_| ());
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn a_nonce_is_accepted_once_and_the_body_must_match() {
        let a = auth();
        let h = signed();
        let digest = a.check("POST", "/raft/vote", &h, NOW).unwrap();
        assert_eq!(a.check("POST", "/raft/vote", &h, NOW + 1), Err(AuthError::Replayed));
        assert_eq!(RpcAuth::check_body(&digest, b"{\"x\":1}"), Ok(()));
        assert_eq!(RpcAuth::check_body(&digest, b"{\"x\":2}"), Err(AuthError::BodyMismatch));
        // Another key (another cluster's secret) signs nothing this node accepts.
        let other = RpcAuth::new(&xp_config::Secret::new("another-cluster-secret-000"));
        assert_eq!(other.check("POST", "/raft/vote", &signed(), NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn nonces_are_remembered_past_the_window_and_bounded() {
        let a = RpcAuth { max_nonces: 100, ..auth() };
        let h = [(FROM_HEADER, "1".to_owned())];
        let sign = |at: u64| headers(&a.sign("POST", "/raft/vote", &h, b"", at));
        let first = sign(NOW);
        a.check("POST", "/raft/vote", &first, NOW).unwrap();
        for i in 1..100 {
            a.check("POST", "/raft/vote", &sign(NOW), NOW + i).unwrap();
        }
        assert_eq!(a.check("POST", "/raft/vote", &sign(NOW), NOW + 100), Err(AuthError::Busy));
        // A period later new nonces are taken again, and the first one is still known:
        // replayed as late as it is fresh (its timestamp + the window), it is refused.
        let period = NONCE_PERIOD.as_millis() as u64;
        a.check("POST", "/raft/vote", &sign(NOW + period), NOW + period).unwrap();
        let w = REPLAY_WINDOW.as_millis() as u64;
        assert_eq!(a.check("POST", "/raft/vote", &first, NOW + w), Err(AuthError::Replayed));
        // Two periods on, the first period's nonces are dropped.
        a.check("POST", "/raft/vote", &sign(NOW + 2 * period), NOW + 2 * period).unwrap();
        let n = a.nonces.lock().unwrap();
        assert_eq!((n.previous.len(), n.current.len()), (1, 1));
    }
}

//! The KV API: linearizable reads and writes through Raft, a follower redirecting to the
//! leader with the key re-encoded, and the value cap.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use xp_store::Request;

use crate::error::{require_not_fenced, ApiError};
use crate::App;
use xp_api::{KvPut, KvValue, KvWritten};

/// Body limit of `PUT /api/kv/{key}`: a value at the cap, JSON-escaped at worst (`\u0041` is 6
/// bytes for one), plus the envelope. The cap itself is checked on the decoded value.
pub fn kv_body_limit(max_value_bytes: u64) -> usize {
    6 * max_value_bytes as usize + 4096
}

/// A 307 to the same path on the leader, for KV requests that reached a follower.
pub fn redirect(e: ApiError, path: &str) -> ApiError {
    match e.leader_api_base_url.clone() {
        Some(url) if e.status == StatusCode::MISDIRECTED_REQUEST => ApiError {
            status: StatusCode::TEMPORARY_REDIRECT,
            location: Some(format!("{url}{path}")),
            ..e
        },
        _ => e,
    }
}

/// The path of `key`'s KV route, the key percent-encoded as one path segment: a redirect must
/// name the same key (`foo%3Fbar` decoded is `foo?bar`, which the leader would read as `foo`).
pub fn kv_path(key: &str) -> String {
    let mut out = String::from("/api/kv/");
    for b in key.bytes() {
        match b {
            // Not `.`: a key `.` or `..` would be a dot segment, which clients resolve away.
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > 256 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "key must be 1 to 256 bytes long"));
    }
    Ok(())
}

/// The length of `s` as a JSON string, without the quotes.
pub fn json_string_len(s: &str) -> usize {
    s.chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum()
}

pub async fn kv_put(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    body: Result<Json<KvPut>, JsonRejection>,
) -> Result<Json<KvWritten>, ApiError> {
    check_key(&key)?;
    let cap = app.config.max_value_bytes;
    let Json(body) = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            e.status(),
            format!(
                "request body too large: this route accepts at most {} bytes: a KV value may \
                 hold at most {cap} bytes (XP_MAX_VALUE_BYTES)",
                kv_body_limit(cap)
            ),
        ),
        _ => ApiError::new(e.status(), e.body_text()),
    })?;
    // The cap bounds what the value costs in every Raft message and file, i.e. as JSON: a
    // control character is 1 byte here but 6 there (1 MiB of them used to make 6 MiB entries
    // that slowed replication enough to cost elections).
    let encoded = json_string_len(&body.value);
    if encoded as u64 > cap {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the value is {} bytes, {encoded} as JSON; a KV value may take at most {cap} \
                 bytes as JSON (XP_MAX_VALUE_BYTES)",
                body.value.len()
            ),
        ));
    }
    require_not_fenced(&app)?;
    if app.transferring.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "leadership transfer in progress; retry in a moment",
        ));
    }
    let res = app
        .raft
        .client_write(Request::Set { key: key.clone(), value: body.value })
        .await
        .map_err(|e| redirect(ApiError::from_raft(e), &kv_path(&key)))?;
    Ok(Json(KvWritten { key, log_index: res.log_id.index }))
}

pub async fn kv_get(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
) -> Result<Json<KvValue>, ApiError> {
    check_key(&key)?;
    require_not_fenced(&app)?;
    app.raft
        .ensure_linearizable()
        .await
        .map_err(|e| redirect(ApiError::from_raft(e), &kv_path(&key)))?;
    let value = app.sm.read().unwrap().data.kv.get(&key).cloned();
    match value {
        Some(value) => Ok(Json(KvValue { key, value })),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no key {key:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_string_len_matches_serde_json() {
        for s in ["", "abc", "a\"b\\c", "\n\r\t\u{8}\u{c}", "\u{1}\u{1f}", "é€𝄞", "\u{7f}"] {
            let want = serde_json::to_string(s).unwrap().len() - 2;
            assert_eq!(json_string_len(s), want, "{s:?}");
        }
    }
}

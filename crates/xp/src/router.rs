//! The HTTP router: every route of the node, its handler, and its body limit.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;

use crate::auth::require_client_cert;
use crate::error::ApiError;
use crate::network::RAFT_BODY_LIMIT;
use crate::App;

/// Body limit of every route but the KV and the bulk Raft ones: their requests are a few
/// fields (admin, join, votes, probes).
pub const SMALL_BODY_LIMIT: usize = 64 * 1024;

pub fn router(app: Arc<App>) -> Router {
    let cap = app.config.max_value_bytes;
    let kv_limit = crate::kv::kv_body_limit(cap);
    let kv_why = format!("a KV value may hold at most {cap} bytes (XP_MAX_VALUE_BYTES)");
    // With TLS, these need a client certificate signed by the cluster CA (mTLS) on top of
    // their own credential: the admin token, or the request signature.
    let mtls = axum::middleware::from_fn_with_state(app.clone(), require_client_cert);
    let admin = Router::new()
        .route("/api/admin/cluster/join-tokens", post(crate::admin::create_join_token))
        .route("/api/admin/cluster/leader-transfer", post(crate::admin::transfer_leader))
        .route("/api/admin/cluster/remove-node", post(crate::admin::remove_node))
        .route("/api/admin/cluster/add-node", post(crate::admin::add_node))
        .route("/api/admin/cluster/backup", get(crate::backup::backup))
        // Raft routes read their body themselves, after the signature was checked.
        .route(
            "/raft/append",
            limited(post(crate::raft_rpc::raft_append), RAFT_BODY_LIMIT, String::new()),
        )
        .route("/raft/vote", post(crate::raft_rpc::raft_vote))
        .route(
            "/raft/snapshot",
            limited(post(crate::raft_rpc::raft_snapshot), RAFT_BODY_LIMIT, String::new()),
        )
        .route("/raft/hold-elections", post(crate::raft_rpc::raft_hold))
        .route("/raft/campaign", post(crate::raft_rpc::raft_campaign))
        .route("/raft/probe", post(crate::raft_rpc::raft_probe))
        .route("/raft/remove-member", post(crate::raft_rpc::raft_remove_member))
        .route_layer(mtls);
    Router::new()
        .route("/api/cluster/info", get(crate::info::cluster_info))
        .route("/api/cluster/status", get(crate::status::cluster_status))
        .route(
            "/api/kv/{key}",
            limited(get(crate::kv::kv_get).put(crate::kv::kv_put), kv_limit, kv_why),
        )
        .route("/api/cluster/join", post(crate::join::join))
        .merge(admin)
        // Every other route: small bodies only (a route's own limit, set above, wins).
        .layer(DefaultBodyLimit::max(SMALL_BODY_LIMIT))
        .layer(axum::middleware::map_response(|res: Response| async move {
            explain_too_large(res, SMALL_BODY_LIMIT, "")
        }))
        .with_state(app)
}

/// `route` with its own body limit, its `413` explained by `why`.
fn limited(route: MethodRouter<Arc<App>>, limit: usize, why: String) -> MethodRouter<Arc<App>> {
    let why: Arc<str> = why.into();
    route.layer(DefaultBodyLimit::max(limit)).layer(axum::middleware::map_response(
        move |res: Response| {
            let why = why.clone();
            async move { explain_too_large(res, limit, &why) }
        },
    ))
}

/// Turns axum's plain-text `413` (a body over the route's limit) into an [`ApiError`] naming
/// the limit; answers that already are JSON (ours) pass unchanged.
fn explain_too_large(res: Response, limit: usize, why: &str) -> Response {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if res.status() != StatusCode::PAYLOAD_TOO_LARGE || is_json {
        return res;
    }
    let why = if why.is_empty() { String::new() } else { format!(": {why}") };
    let message = format!("request body too large: this route accepts at most {limit} bytes{why}");
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message).into_response()
}

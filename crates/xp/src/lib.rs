//! The xp reference cluster node: an openraft node with on-disk state (`xp-store`), a cluster
//! HTTP API, join tokens and a small replicated key-value store.
//!
//! `main.rs` only parses flags and calls into [`node`] and [`commands`].

pub mod admin;
pub mod app;
pub mod auth;
pub mod backup;
pub mod commands;
pub mod error;
pub mod fence;
pub mod info;
pub mod join;
pub mod kv;
pub mod network;
pub mod node;
pub mod raft_rpc;
pub mod router;
pub mod rpc_auth;
pub mod status;
pub mod tls;
pub mod token;

pub use app::App;
pub use node::{NodeError, RunningNode};

/// The version string `/api/cluster/info` reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

//! Declarative chaos scenarios for Raft clusters.
//!
//! A scenario file is parsed ([`parse`]) into a typed model ([`model`]) against a cluster
//! profile ([`profile`]), whose target ([`target`]) says how to read the system's state. The
//! step engine ([`engine`]) runs it on a backend ([`backend`]: docker compose or local
//! processes), measures what happened ([`measure`]) and fills a report ([`report`]); [`run`]
//! owns one run from start to teardown, whatever ends it. Randomized campaigns ([`chaos`]) are
//! scenarios too. `cargo xtask scenario` is a thin command line over this crate.

pub mod backend;
pub mod chaos;
pub mod engine;
pub mod measure;
pub mod model;
pub mod parse;
pub mod profile;
pub mod report;
pub mod run;
pub mod target;
pub mod tls;

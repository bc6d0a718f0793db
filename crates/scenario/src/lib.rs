//! Declarative chaos scenarios for Raft clusters: the file format ([`format`]), cluster
//! profiles ([`profile`]), where clusters run ([`backend`]), the step engine ([`engine`]), reports
//! ([`report`]) and randomized campaigns ([`chaos`]). `cargo xtask scenario` is a thin command line over this crate.

pub mod backend;
pub mod chaos;
pub mod compare;
pub mod engine;
pub mod format;
pub mod generation;
pub mod html;
pub mod profile;
pub mod register;
pub mod report;
pub mod split_brain;
pub mod target;
pub mod tls;
pub mod workload;

//! What a run measures while the steps act: the role sampler
//! ([`sampler`]), the write workload ([`workload`]) judged by [`verify`] (RPO) and [`rto`]
//! (time to a leader, write outage), the register workload and its stale-read check
//! ([`register`]), split-brain detection ([`split_brain`]) and which nodes belong to a stale
//! generation of the cluster ([`generation`]).

pub mod generation;
pub mod register;
pub mod rto;
pub mod sampler;
pub mod split_brain;
pub mod verify;
pub mod workload;

pub use rto::{recovery_times, Measured, Recovery};
pub use sampler::{sample, Sample};
pub use verify::{tally, Verification};
pub use workload::{sized_value, write_loop, WorkloadSpec, WriteRecord};

//! xp-recovery

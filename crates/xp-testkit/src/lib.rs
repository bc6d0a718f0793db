//! xp-testkit

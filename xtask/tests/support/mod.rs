//! Shared pieces of the xtask integration tests.

pub mod fake_hub;
pub mod fake_model;

//! Helpers that more than one test suite of the workspace needs, kept in
//! one place so that a fix to one (a readiness check, a certificate field)
//! reaches every suite. A dev-dependency only.
//!
//! Every helper panics when it cannot do its job: it runs only inside
//! tests, where a panic with a message is how a test fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod net;
pub mod pki;
pub mod redis_server;
pub mod temp_dir;

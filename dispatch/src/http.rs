//! The `http` mode's settings. The mode itself — a copy proxy that parses
//! each request with the project's codec, routes it on its own, forwards
//! its bytes unchanged over pooled keep-alive connections and answers
//! 502/503/504 itself when no replica can — runs on one event loop: see
//! [`crate::proxy`].

use std::time::Duration;

/// A replica that sends no answer for this long gets its client a 504
/// (the default of `--answer-timeout`).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// A client idle this long between requests is closed.
pub const CLIENT_IDLE: Duration = Duration::from_secs(10);

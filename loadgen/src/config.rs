//! What a run is asked to do: [`LoadConfig`] (every `serverlab load`
//! option as a field), the target URL and the weighted path mix, and the
//! checks that refuse settings that cannot work.

use crate::LoadError;
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// How open-loop requests are spaced in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// Evenly spaced (wrk2): request k at `start + k / rate`.
    #[default]
    Uniform,
    /// A Poisson process: exponential gaps with mean `1 / rate`, the way
    /// independent users arrive.
    Poisson,
}

/// The server-side state mode a counter flow talks to: the servers' own
/// type (see [`servers::protocol`]).
pub use servers::protocol::StateMode;

/// A scripted session flow instead of independent requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "flow", content = "state")]
pub enum Flow {
    /// Each connection is one client incrementing its counter with
    /// `POST /counter`; every answer must be the previous one plus one.
    Counter(StateMode),
}

/// One weighted request path of a `--mix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MixEntry {
    /// Path and query sent in the request line, e.g. `/work?cpu=100us`.
    pub path: String,
    /// Relative weight (at least 1).
    pub weight: u32,
}

/// Every option of a run. `Default` gives wrk's defaults: 10 connections,
/// 2 threads, 10 seconds, closed loop, keep-alive, 2 s timeout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadConfig {
    /// `http://host[:port][/path]`. The path is used when `mix` is empty.
    pub url: String,
    /// Connections kept open (in total, spread over the threads).
    pub connections: usize,
    /// Threads, each running its own event loop.
    pub threads: usize,
    /// How long to measure, after the warmup. Ignored when `requests` is set.
    pub duration: Duration,
    /// Send exactly this many measured requests, then stop.
    pub requests: Option<u64>,
    /// Run this long first and discard what it measures.
    pub warmup: Duration,
    /// Open loop at this many requests per second in total; `None` is a
    /// closed loop (each connection sends as soon as it may).
    pub rate: Option<f64>,
    /// Spacing of open-loop requests.
    pub arrivals: Arrivals,
    /// Requests in flight per connection (1: no pipelining).
    pub pipeline: usize,
    /// `false`: a new connection for every request, sent with
    /// `Connection: close`.
    pub keepalive: bool,
    /// A request (or connect) without an answer after this long is a timeout
    /// error; its latency is still recorded and its connection reset.
    pub timeout: Duration,
    /// Weighted request paths; empty: the URL's path only.
    pub mix: Vec<MixEntry>,
    /// A session flow instead of plain GETs.
    pub flow: Option<Flow>,
    /// Write an HdrHistogram interval log (one corrected-latency histogram
    /// per interval) to this file while running.
    pub log: Option<PathBuf>,
    /// Keep-alive runs: after the warmup, wait up to this much longer until
    /// every connection has had an answer before measuring, so that a
    /// server's start-up (forking a process or a thread per connection)
    /// is not measured as its steady state. `None`: the warmup alone.
    pub settle: Option<Duration>,
    /// Length of one interval of the latency-over-time data and the log.
    pub interval: Duration,
    /// Open loop: how late a wake-up for a send may come, so that one
    /// wake-up sends several requests (see `serverlab load --send-slack`).
    /// Zero: every send on time.
    pub send_slack: Duration,
}

/// The most `send_slack` may be: beyond it, lateness would be a large part
/// of a fast server's latency.
pub const MAX_SEND_SLACK: Duration = Duration::from_millis(1);

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            url: "http://127.0.0.1:8080/".into(),
            connections: 10,
            threads: 2,
            duration: Duration::from_secs(10),
            requests: None,
            warmup: Duration::ZERO,
            rate: None,
            arrivals: Arrivals::Uniform,
            pipeline: 1,
            keepalive: true,
            timeout: Duration::from_secs(2),
            mix: Vec::new(),
            flow: None,
            log: None,
            interval: Duration::from_secs(1),
            settle: None,
            send_slack: Duration::ZERO,
        }
    }
}

/// Where the requests go, parsed from the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The address connected to (the first one the name resolves to).
    pub addr: SocketAddr,
    /// The `Host` header value (`host` or `host:port` as written).
    pub host: String,
    /// Path and query of the URL (`/` when absent).
    pub path: String,
}

impl Target {
    /// Parses `http://host[:port][/path]` and resolves the host. Only plain
    /// HTTP: TLS would measure the generator's crypto, not the server.
    pub fn parse(url: &str) -> Result<Target, LoadError> {
        let bad = |reason: &str| LoadError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => {
                return Err(bad(&format!(
                    "scheme {scheme:?} is not supported; use http://"
                )))
            }
            None => url,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        if authority.contains('@') {
            return Err(bad("user information is not supported"));
        }
        let with_port = if has_port(authority) {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|source| LoadError::Resolve {
                host: with_port.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| bad("the host resolves to no address"))?;
        Ok(Target {
            addr,
            host: authority.to_string(),
            path: path.to_string(),
        })
    }
}

/// Whether `authority` ends in `:port` (IPv6 literals are bracketed).
fn has_port(authority: &str) -> bool {
    match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    }
}

/// Parses `--mix 'PATH=WEIGHT,...'` (a missing `=WEIGHT` means 1).
pub fn parse_mix(text: &str) -> Result<Vec<MixEntry>, LoadError> {
    let mut mix = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        // Split at the last '=' so paths with query strings keep theirs.
        let (path, weight) = match item.rsplit_once('=') {
            Some((p, w)) if w.chars().all(|c| c.is_ascii_digit()) && !w.is_empty() => {
                let w: u32 = w
                    .parse()
                    .map_err(|_| LoadError::Config(format!("--mix: weight {w:?} is too large")))?;
                (p, w)
            }
            _ => (item, 1),
        };
        if !path.starts_with('/') {
            return Err(LoadError::Config(format!(
                "--mix: path {path:?} must start with '/'"
            )));
        }
        if path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(LoadError::Config(format!(
                "--mix: path {path:?} contains spaces or control characters"
            )));
        }
        if weight == 0 {
            return Err(LoadError::Config(format!("--mix: weight of {path:?} is 0")));
        }
        mix.push(MixEntry {
            path: path.to_string(),
            weight,
        });
    }
    if mix.is_empty() {
        return Err(LoadError::Config("--mix: no paths given".into()));
    }
    Ok(mix)
}

impl LoadConfig {
    /// Refuses settings that cannot work, with a message that says why and
    /// what to do instead.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |m: String| Err(LoadError::Config(m));
        if self.threads == 0 {
            return bad("--threads must be at least 1".into());
        }
        if self.connections < self.threads {
            return bad(format!(
                "{} connections cannot be spread over {} threads: every thread needs at least \
                 one connection; use --threads {} or more connections",
                self.connections,
                self.threads,
                self.connections.max(1)
            ));
        }
        if self.pipeline == 0 {
            return bad("--pipeline must be at least 1".into());
        }
        if !self.keepalive && self.pipeline > 1 {
            return bad(
                "--pipeline needs keep-alive: with --no-keepalive every connection \
                        carries one request"
                    .into(),
            );
        }
        if self.flow.is_some() && self.pipeline > 1 {
            return bad(
                "--flow counter cannot pipeline: each request needs the previous \
                        answer (cookie or token)"
                    .into(),
            );
        }
        if self.flow.is_some() && !self.mix.is_empty() {
            return bad("--flow counter always posts to /counter; drop --mix".into());
        }
        if let Some(rate) = self.rate {
            if !rate.is_finite() || rate <= 0.0 {
                return bad(format!("--rate {rate} must be a positive number"));
            }
            if rate < self.threads as f64 {
                return bad(format!(
                    "--rate {rate} is below the thread count ({}): each thread needs at least \
                     one request per second; lower --threads",
                    self.threads
                ));
            }
        }
        if !self.send_slack.is_zero() && self.rate.is_none() {
            return bad("--send-slack is for the open loop; give --rate too".into());
        }
        if self.send_slack > MAX_SEND_SLACK {
            return bad(format!(
                "--send-slack {:?} is over {MAX_SEND_SLACK:?}: sends that late would be much of the latency measured",
                self.send_slack
            ));
        }
        if self.requests == Some(0) {
            return bad("--requests must be at least 1".into());
        }
        if self.requests.is_none() && self.duration.is_zero() {
            return bad("--duration must be longer than 0".into());
        }
        if self.timeout.is_zero() {
            return bad("--timeout must be longer than 0".into());
        }
        if self.interval < Duration::from_millis(10) {
            return bad("the interval must be at least 10 ms".into());
        }
        Ok(())
    }

    /// The paths requested and their weights: the mix, or the URL's path.
    pub fn paths(&self, target: &Target) -> Vec<MixEntry> {
        match self.flow {
            Some(Flow::Counter(_)) => vec![MixEntry {
                path: "/counter".into(),
                weight: 1,
            }],
            None if self.mix.is_empty() => vec![MixEntry {
                path: target.path.clone(),
                weight: 1,
            }],
            None => self.mix.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("http://127.0.0.1:8081/hello?x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:8081");
        assert_eq!(t.path, "/hello?x=1");
        let t = Target::parse("127.0.0.1").unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.path, "/");
        let t = Target::parse("http://[::1]:9000").unwrap();
        assert_eq!(t.addr, "[::1]:9000".parse().unwrap());
        assert!(Target::parse("https://x/").is_err());
        assert!(Target::parse("http:///x").is_err());
    }

    #[test]
    fn mixes() {
        let m = parse_mix("/a=3, /b?x=1=1,/c").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].path.as_str(), m[0].weight), ("/a", 3));
        assert_eq!((m[1].path.as_str(), m[1].weight), ("/b?x=1", 1));
        assert_eq!((m[2].path.as_str(), m[2].weight), ("/c", 1));
        assert!(parse_mix("a=1").is_err());
        assert!(parse_mix("/a=0").is_err());
        assert!(parse_mix(" , ").is_err());
    }

    #[test]
    fn impossible_settings_are_refused() {
        let ok = LoadConfig::default();
        ok.validate().unwrap();
        let few_conns = LoadConfig {
            connections: 1,
            threads: 2,
            ..Default::default()
        };
        let msg = few_conns.validate().unwrap_err().to_string();
        assert!(
            msg.contains("1 connections cannot be spread over 2 threads"),
            "{msg}"
        );
        let low_rate = LoadConfig {
            rate: Some(1.0),
            threads: 2,
            ..Default::default()
        };
        let msg = low_rate.validate().unwrap_err().to_string();
        assert!(msg.contains("below the thread count"), "{msg}");
        let pipe_close = LoadConfig {
            pipeline: 4,
            keepalive: false,
            ..Default::default()
        };
        assert!(pipe_close.validate().is_err());
    }
}

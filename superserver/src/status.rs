//! What the super server has done, per service: readable while it runs
//! (`GET /status` on the `status` address, JSON) and printed as a table
//! by `serverlab superserver --status ADDR`.

use crate::config::{Service, Start};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Every service's counters, by name.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Status {
    pub services: BTreeMap<String, ServiceStatus>,
}

/// One service's counters since the super server started (kept across
/// `SIGHUP` for services that keep their name).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// `nowait`, `wait` or `builtin NAME`.
    pub mode: String,
    pub listen: Vec<String>,
    /// What it does now: `listening`, `at its instances limit`, `off
    /// (cps) for N s`, `handed to pid N`, `restarting in N s`.
    pub state: String,
    /// Connections accepted (nowait and builtin; a wait server accepts
    /// its own).
    pub accepted: u64,
    /// Processes started (or built-in connections served).
    pub started: u64,
    /// Running now.
    pub running: usize,
    pub refused_only_from: u64,
    pub refused_per_source: u64,
    /// Connections closed because they tripped `cps`.
    pub refused_cps: u64,
    /// Times the service was switched off by `cps`.
    pub cps_switch_offs: u64,
    /// Times it stopped accepting at its `instances` limit (connections
    /// then wait in the backlog).
    pub instance_limit_waits: u64,
    /// Forks or execs that failed.
    pub start_failures: u64,
    /// How its processes ended: exit code or signal, and how often.
    pub exits: BTreeMap<String, u64>,
}

impl ServiceStatus {
    /// Fills in what the configuration says.
    pub fn describe(&mut self, cfg: &Service) {
        self.mode = match &cfg.start {
            Start::Nowait(_) => "nowait".into(),
            Start::Wait(_) => "wait".into(),
            Start::Builtin(b) => format!("builtin {}", format!("{b:?}").to_lowercase()),
        };
        self.listen = cfg.listen.iter().map(|a| a.to_string()).collect();
    }
}

impl Status {
    /// A table for people.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "{:<14} {:<16} {:>9} {:>8} {:>7} {:>9} {:>10} {:>8} {:>9} {:>7}  {}\n",
            "service",
            "mode",
            "accepted",
            "started",
            "running",
            "only_from",
            "per_source",
            "cps",
            "instances",
            "failed",
            "state / exits"
        );
        for (name, s) in &self.services {
            let exits: Vec<String> = s.exits.iter().map(|(k, v)| format!("{k}×{v}")).collect();
            out += &format!(
                "{:<14} {:<16} {:>9} {:>8} {:>7} {:>9} {:>10} {:>8} {:>9} {:>7}  {} / {}\n",
                name,
                s.mode,
                s.accepted,
                s.started,
                s.running,
                s.refused_only_from,
                s.refused_per_source,
                format!("{}/{}", s.refused_cps, s.cps_switch_offs),
                s.instance_limit_waits,
                s.start_failures,
                s.state,
                if exits.is_empty() {
                    "-".to_string()
                } else {
                    exits.join(" ")
                }
            );
        }
        out
    }
}

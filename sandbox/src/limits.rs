//! What a user asks a container to be limited to, independent of the cgroup
//! version. Suites embed [`Limits`] in TOML (`cpus = 0.5`, `memory = "64M"`,
//! `cpu_burst = "20ms"`, `credits = { baseline = 0.2, cap = 30 }`).
//!
//! Weights use the cgroup v2 scale (1..=10000, default 100) for both CPU and
//! I/O; the v1 back end converts (see [`weight_to_shares`]).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// Resource limits of one container. `None` = not limited.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Hard CPU limit in CPUs (0.5 = half a CPU): quota = cpus × period.
    pub cpus: Option<f64>,
    /// The CFS period the quota is granted in (default 100 ms, the
    /// kernel's). A throttled group waits up to `period × (1 − cpus)` for
    /// its next quota, so a shorter period (say 10 ms) keeps a quota from
    /// adding tens of milliseconds to tail latency.
    #[serde(with = "opt_duration")]
    pub cpu_period: Option<Duration>,
    /// Proportional CPU share, cgroup v2 scale 1..=10000 (default 100).
    pub cpu_weight: Option<u64>,
    /// CFS burst: CPU time a quota-limited group may bank within periods.
    #[serde(with = "opt_duration")]
    pub cpu_burst: Option<Duration>,
    /// Burstable-instance CPU credits, enforced by a controller thread.
    pub credits: Option<Credits>,
    /// CPUs the container may run on, kernel list syntax (`0-1,3`).
    pub cpuset: Option<String>,
    /// Memory limit in bytes (swap off). TOML accepts `"64M"` too.
    #[serde(with = "opt_size")]
    pub memory: Option<u64>,
    /// Maximum number of tasks (processes and threads), the reaper included.
    pub pids: Option<u64>,
    /// Proportional block-I/O share, cgroup v2 scale 1..=10000 (default 100).
    pub io_weight: Option<u64>,
}

/// A burstable-instance CPU policy: run at `baseline` CPUs on average; time
/// spent below the baseline earns credits (CPU-seconds) up to `cap`, which
/// are spent running above it. The container starts with no credits.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credits {
    /// The sustained share, in CPUs (e.g. 0.2).
    pub baseline: f64,
    /// The most credit that can be banked, in CPU-seconds.
    pub cap: f64,
}

/// The CFS period serverlab uses for every quota (the kernel's default).
pub const CFS_PERIOD_US: u64 = 100_000;

impl Limits {
    /// Checks ranges before anything touches the kernel.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(c) = self.cpus {
            if !(c.is_finite() && c >= 0.01) {
                return Err(format!("cpus must be at least 0.01, got {c}"));
            }
        }
        for (name, w) in [
            ("cpu_weight", self.cpu_weight),
            ("io_weight", self.io_weight),
        ] {
            if let Some(w) = w {
                if !(1..=10_000).contains(&w) {
                    return Err(format!(
                        "{name} must be in 1..=10000 (cgroup v2 scale), got {w}"
                    ));
                }
            }
        }
        if let Some(p) = self.cpu_period {
            if self.cpus.is_none() {
                return Err("cpu_period only applies with a quota (cpus)".into());
            }
            if self.credits.is_some() {
                return Err("cpu_period does not combine with credits (their controller works in 100 ms periods)".into());
            }
            if p < Duration::from_millis(1) || p > Duration::from_secs(1) {
                return Err(format!("cpu_period must be between 1ms and 1s, got {p:?}"));
            }
        }
        if let Some(b) = self.cpu_burst {
            if self.cpus.is_none() && self.credits.is_none() {
                return Err("cpu_burst only applies with a quota (cpus or credits)".into());
            }
            if b.is_zero() {
                return Err("cpu_burst must be positive".into());
            }
        }
        if let Some(c) = self.credits {
            let ok =
                c.baseline.is_finite() && c.baseline >= 0.01 && c.cap.is_finite() && c.cap >= 0.0;
            if !ok {
                return Err(format!(
                    "credits need baseline >= 0.01 CPUs and cap >= 0 CPU-seconds, got {c:?}"
                ));
            }
        }
        if let Some(set) = &self.cpuset {
            parse_cpu_list(set)?;
        }
        if self.memory == Some(0) {
            return Err("memory must be positive".into());
        }
        if self.pids == Some(0) {
            return Err("pids must be at least 1".into());
        }
        Ok(())
    }

    /// The quota in µs per `period_us` for `cpus` (the kernel's least
    /// quota is 1 ms).
    pub fn quota_us(cpus: f64, period_us: u64) -> u64 {
        ((cpus * period_us as f64).round() as u64).max(1000)
    }

    /// The CFS period in µs: `cpu_period`, else [`CFS_PERIOD_US`].
    pub fn period_us(&self) -> u64 {
        self.cpu_period
            .map_or(CFS_PERIOD_US, |p| p.as_micros() as u64)
    }

    /// The quota to set at start, per [`Limits::period_us`] (credits start
    /// at their baseline; the controller moves it later).
    pub fn initial_quota_us(&self) -> Option<u64> {
        match (self.credits, self.cpus) {
            (Some(c), _) => Some(Limits::quota_us(c.baseline, CFS_PERIOD_US)),
            (None, Some(cpus)) => Some(Limits::quota_us(cpus, self.period_us())),
            (None, None) => None,
        }
    }
}

/// v2 weight → v1 `cpu.shares`, the linear formula systemd uses:
/// `shares = weight × 1024 / 100`, clamped to 2..=262144. Linear, so a
/// 2:1 ratio of weights stays 2:1 on either version (the OCI quadratic fit
/// maps 2→1, 1024→100, 262144→10000 too but bends ratios in between).
pub fn weight_to_shares(weight: u64) -> u64 {
    (weight * 1024 / 100).clamp(2, 262_144)
}

/// v1 `cpu.shares` → v2 weight, the inverse of [`weight_to_shares`]:
/// `weight = shares × 100 / 1024`, clamped to 1..=10000.
pub fn shares_to_weight(shares: u64) -> u64 {
    (shares * 100 / 1024).clamp(1, 10_000)
}

/// v2 I/O weight (1..=10000) → v1 CFQ `blkio.weight` (10..=1000), runc's
/// linear map. BFQ files (`blkio.bfq.weight`, `io.bfq.weight`) take
/// 1..=1000 with the same default 100, so they get the weight clamped.
pub fn io_weight_to_blkio(weight: u64) -> u64 {
    10 + (weight.clamp(1, 10_000) - 1) * 990 / 9999
}

/// Parses a kernel CPU list (`0-3,6`) into sorted, distinct CPU numbers.
pub fn parse_cpu_list(text: &str) -> Result<Vec<u32>, String> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.trim().is_empty()) {
        let bad = || format!("{text:?} is not a CPU list (e.g. 0-1,3)");
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            ),
            None => {
                let n: u32 = part.trim().parse().map_err(|_| bad())?;
                (n, n)
            }
        };
        if a > b || b > 4095 {
            return Err(bad());
        }
        cpus.extend(a..=b);
    }
    if cpus.is_empty() && !text.trim().is_empty() {
        return Err(format!("{text:?} is not a CPU list"));
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Parses a size as users write it: `67108864`, `64K`, `64M`, `1G`,
/// `512MiB` (binary units: K = 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (n, unit) = number_and_unit(text, "a size (try 64M)")?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("unknown unit {other:?} in {text:?} (use K, M, G)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses a cgroup time as users write it, whole microseconds or more:
/// `100ms`, `250us`, `1s`, or a bare number of microseconds.
pub fn parse_time(text: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(text, "a time (try 100ms)")?;
    let micros_per = match unit {
        "" | "us" | "µs" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use us, ms or s)"
            ))
        }
    };
    n.checked_mul(micros_per)
        .map(Duration::from_micros)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Splits `64M` into 64 and `"M"`; `what` completes "… is not …".
fn number_and_unit<'a>(text: &'a str, what: &str) -> Result<(u64, &'a str), String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n = number
        .parse()
        .map_err(|_| format!("{text:?} is not {what}"))?;
    Ok((n, unit.trim()))
}

/// Parses `BASELINE,CAP` (`0.2,30`) for `--credits`.
pub fn parse_credits(text: &str) -> Result<Credits, String> {
    let bad = || format!("{text:?}: expected BASELINE,CAP in CPUs and CPU-seconds, e.g. 0.2,30");
    let (b, c) = text.split_once(',').ok_or_else(bad)?;
    Ok(Credits {
        baseline: b.trim().parse().map_err(|_| bad())?,
        cap: c.trim().parse().map_err(|_| bad())?,
    })
}

/// Serde for `Option<Duration>`: `"20ms"` ([`parse_time`]) or a number of
/// microseconds.
mod opt_duration {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&format!("{}us", d.as_micros())),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Micros(u64),
        }
        Ok(match Option::<Raw>::deserialize(d)? {
            None => None,
            Some(Raw::Micros(us)) => Some(Duration::from_micros(us)),
            Some(Raw::Text(t)) => Some(parse_time(&t).map_err(serde::de::Error::custom)?),
        })
    }
}

/// Serde for `Option<u64>` sizes: `"64M"` or a number of bytes.
mod opt_size {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_u64(*n),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Bytes(u64),
        }
        Ok(match Option::<Raw>::deserialize(d)? {
            None => None,
            Some(Raw::Bytes(n)) => Some(n),
            Some(Raw::Text(t)) => Some(parse_size(&t).map_err(serde::de::Error::custom)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_formula_is_linear_and_round_trips_defaults() {
        assert_eq!(weight_to_shares(100), 1024);
        assert_eq!(weight_to_shares(200), 2048);
        assert_eq!(weight_to_shares(1), 10);
        assert_eq!(weight_to_shares(10_000), 102_400);
        assert_eq!(shares_to_weight(1024), 100);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(weight_to_shares(300)), 300);
    }

    #[test]
    fn cpu_period_scales_the_quota_and_needs_one() {
        let l: Limits = toml::from_str("cpus = 0.25\ncpu_period = \"10ms\"").unwrap();
        assert_eq!(l.validate(), Ok(()));
        assert_eq!((l.initial_quota_us(), l.period_us()), (Some(2500), 10_000));
        let plain: Limits = toml::from_str("cpus = 0.25").unwrap();
        assert_eq!(
            (plain.initial_quota_us(), plain.period_us()),
            (Some(25_000), 100_000)
        );
        let alone: Limits = toml::from_str("cpu_period = \"10ms\"").unwrap();
        assert!(alone
            .validate()
            .unwrap_err()
            .contains("only applies with a quota"));
        let tiny: Limits = toml::from_str("cpus = 1\ncpu_period = \"100us\"").unwrap();
        assert!(tiny.validate().unwrap_err().contains("between 1ms and 1s"));
    }

    #[test]
    fn io_weight_map() {
        assert_eq!(io_weight_to_blkio(1), 10);
        assert_eq!(io_weight_to_blkio(10_000), 1000);
        assert_eq!(io_weight_to_blkio(100), 19);
    }

    #[test]
    fn sizes_lists_credits() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_time("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_time("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_time("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_time("5000"), Ok(Duration::from_micros(5000)));
        assert!(parse_time("1.5ms").unwrap_err().contains("unknown unit"));
        assert!(parse_time("10 parsecs").is_err());
        assert_eq!(parse_cpu_list("0-2,5,1"), Ok(vec![0, 1, 2, 5]));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert_eq!(
            parse_credits("0.2,30"),
            Ok(Credits {
                baseline: 0.2,
                cap: 30.0
            })
        );
        assert!(parse_credits("0.2").is_err());
    }

    #[test]
    fn toml_form_deserialises_and_validates() {
        let l: Limits = toml::from_str(
            "cpus = 0.5\nmemory = \"64M\"\ncpu_burst = \"20ms\"\ncredits = { baseline = 0.2, cap = 30 }\n",
        )
        .unwrap();
        assert_eq!(l.cpus, Some(0.5));
        assert_eq!(l.memory, Some(64 << 20));
        assert_eq!(l.cpu_burst, Some(Duration::from_millis(20)));
        assert_eq!(
            l.credits,
            Some(Credits {
                baseline: 0.2,
                cap: 30.0
            })
        );
        assert!(l.validate().is_ok());
        assert!(
            toml::from_str::<Limits>("cpu = 1").is_err(),
            "unknown fields are rejected"
        );
        let bad = Limits {
            cpu_weight: Some(0),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let json = serde_json::to_string(&l).unwrap();
        assert_eq!(serde_json::from_str::<Limits>(&json).unwrap(), l);
    }
}

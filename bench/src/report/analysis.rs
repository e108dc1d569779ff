//! From run files to the answer: runs grouped by what they compare
//! (workload × limits × state), repetitions folded into a spread, and each
//! contestant's best sustainable point.
//!
//! "Sustainable" means every measured repetition at that load level met the
//! suite's latency objective (with < 1 % errors and, in open loop, at least
//! 95 % of the offered rate achieved). A contestant's best point is the
//! sustainable level with the highest mean throughput — among the open-loop
//! and auto levels when the group has any, since closed-loop latencies miss
//! the clients a server leaves waiting; its efficiency (requests per
//! CPU-second) and memory are read at that point.

use crate::results::{Metrics, RunRecord, Status};
use crate::suite::LoadLevel;
use std::collections::BTreeMap;

/// Mean, min and max of a value over repetitions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Mean.
    pub mean: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// How many values.
    pub n: usize,
}

impl Spread {
    /// The spread of `values`, `None` when empty.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        Some(Spread {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: v.len(),
        })
    }
}

/// The repetitions of one run (same key but for the repetition).
#[derive(Debug, Clone, Default)]
pub struct Cell<'a> {
    /// Every repetition, whatever its status.
    pub runs: Vec<&'a RunRecord>,
}

impl<'a> Cell<'a> {
    /// Metrics of the repetitions that were measured.
    pub fn metrics(&self) -> Vec<&'a Metrics> {
        self.runs
            .iter()
            .filter(|r| r.status == Status::Ok)
            .filter_map(|r| r.metrics.as_ref())
            .collect()
    }

    /// The spread of one metric over the measured repetitions.
    pub fn spread(&self, f: impl Fn(&Metrics) -> Option<f64>) -> Option<Spread> {
        Spread::of(self.metrics().into_iter().filter_map(f))
    }

    /// Whether every repetition was measured and met the objective.
    pub fn sustainable(&self) -> bool {
        !self.runs.is_empty()
            && self.runs.iter().all(|r| {
                r.status == Status::Ok && r.metrics.as_ref().is_some_and(|m| m.meets_objective)
            })
    }

    /// Repetitions that did not produce measurements, with their status.
    pub fn failures(&self) -> Vec<&'a RunRecord> {
        self.runs
            .iter()
            .copied()
            .filter(|r| r.status != Status::Ok)
            .collect()
    }
}

/// What a group compares: one workload under one limits entry and state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    /// Workload name.
    pub workload: String,
    /// Limits entry name.
    pub limits: String,
    /// State mode, `default` when none.
    pub state: String,
}

impl GroupKey {
    /// `hello`, or `hello · half-cpu · stateful` when those vary.
    pub fn title(&self, show_limits: bool, show_state: bool) -> String {
        let mut t = self.workload.clone();
        if show_limits {
            t.push_str(&format!(" · limits {}", self.limits));
        }
        if show_state {
            t.push_str(&format!(" · state {}", self.state));
        }
        t
    }
}

/// One group: contestant → load level → repetitions.
#[derive(Debug, Clone)]
pub struct Group<'a> {
    /// What it compares.
    pub key: GroupKey,
    /// The workload's path (for captions).
    pub path: String,
    /// Load levels present, in order (closed by connections, open by
    /// rate, auto last).
    pub loads: Vec<LoadLevel>,
    /// Contestants in order of first appearance, each with one cell per
    /// load level (same order as `loads`; empty when not run).
    pub contestants: Vec<(String, Vec<Cell<'a>>)>,
}

/// A contestant's best sustainable point in a group.
#[derive(Debug, Clone)]
pub struct Best {
    /// Contestant name.
    pub contestant: String,
    /// Index into the group's loads; `None`: nothing sustainable.
    pub load: Option<usize>,
    /// Throughput at that point.
    pub throughput: Option<Spread>,
    /// Latency at the objective's percentile there, ms.
    pub objective_latency: Option<Spread>,
    /// Requests per CPU-second there.
    pub per_cpu: Option<Spread>,
    /// Peak memory there, bytes.
    pub memory: Option<Spread>,
    /// Runs that failed, crashed, were OOM-killed or skipped (any level),
    /// then the caveats noted at the best point (generator-bound, ...).
    pub failures: Vec<String>,
}

/// Orders load levels: closed (by connections), open (by rate), auto.
pub fn load_order(l: &LoadLevel) -> (u8, f64) {
    match l {
        LoadLevel::Closed { connections } => (0, f64::from(*connections)),
        LoadLevel::Open { rate, .. } => (1, *rate),
        LoadLevel::Auto { .. } => (2, 0.0),
    }
}

/// Groups runs for the report.
pub fn groups(runs: &[RunRecord]) -> Vec<Group<'_>> {
    let mut by_key: BTreeMap<GroupKey, Vec<&RunRecord>> = BTreeMap::new();
    for r in runs {
        let key = GroupKey {
            workload: r.spec.workload.name.clone(),
            limits: r.spec.limits_name.clone(),
            state: r.spec.state.clone().unwrap_or_else(|| "default".into()),
        };
        by_key.entry(key).or_default().push(r);
    }
    by_key
        .into_iter()
        .map(|(key, runs)| {
            let mut loads: Vec<LoadLevel> = Vec::new();
            for r in &runs {
                if !loads.iter().any(|l| l.label() == r.spec.load.label()) {
                    loads.push(r.spec.load);
                }
            }
            loads.sort_by(|a, b| {
                load_order(a)
                    .partial_cmp(&load_order(b))
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            let mut contestants: Vec<(String, Vec<Cell>)> = Vec::new();
            for r in &runs {
                let name = r.spec.contestant.name().to_string();
                let i = match contestants.iter().position(|(n, _)| *n == name) {
                    Some(i) => i,
                    None => {
                        contestants.push((name, vec![Cell::default(); loads.len()]));
                        contestants.len() - 1
                    }
                };
                let li = loads
                    .iter()
                    .position(|l| l.label() == r.spec.load.label())
                    .expect("every load level was collected");
                contestants[i].1[li].runs.push(r);
            }
            Group {
                path: runs[0].spec.workload.path.clone(),
                key,
                loads,
                contestants,
            }
        })
        .collect()
}

impl Group<'_> {
    /// Every contestant's best point, best throughput first.
    pub fn best(&self) -> Vec<Best> {
        // Closed-loop latency hides clients that are not being served (a
        // starved connection sends nothing, so it adds no samples), so
        // when open-loop or auto levels exist, only they count.
        let open_only = self
            .loads
            .iter()
            .any(|l| !matches!(l, LoadLevel::Closed { .. }))
            .then_some(());
        let mut out: Vec<Best> = self
            .contestants
            .iter()
            .map(|(name, cells)| {
                let load = cells
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| {
                        open_only.map_or(true, |_| {
                            !matches!(self.loads[*i], LoadLevel::Closed { .. })
                        })
                    })
                    .filter(|(_, c)| c.sustainable())
                    .filter_map(|(i, c)| c.spread(|m| Some(m.throughput_rps)).map(|s| (i, s.mean)))
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(i, _)| i);
                let cell = load.map(|i| &cells[i]);
                let at = |f: fn(&Metrics) -> Option<f64>| cell.and_then(|c| c.spread(f));
                Best {
                    contestant: name.clone(),
                    load,
                    throughput: at(|m| Some(m.throughput_rps)),
                    objective_latency: at(|m| Some(m.objective_latency_ms)),
                    per_cpu: at(|m| m.requests_per_cpu_s),
                    memory: at(|m| m.memory_peak_bytes.map(|b| b as f64)),
                    failures: cells
                        .iter()
                        .flat_map(|c| c.failures())
                        .map(|r| {
                            format!(
                                "{} {}: {}",
                                r.spec.load.label(),
                                r.status.as_str(),
                                r.reason.as_deref().unwrap_or("")
                            )
                        })
                        .chain(caveats(cell))
                        .collect(),
                }
            })
            .collect();
        out.sort_by(|a, b| {
            let t = |x: &Best| x.throughput.map_or(-1.0, |s| s.mean);
            t(b).total_cmp(&t(a))
        });
        out
    }
}

/// Values this close to the best (relative) count as a tie: differences
/// smaller than run-to-run noise on a shared machine decide nothing.
pub const TIE: f64 = 0.02;

/// The winners of a group: by throughput, by requests per CPU-second, by
/// (lowest) memory. Each list holds the best contestant first, then every
/// other within [`TIE`] of it; empty where no contestant qualifies.
pub fn winners(best: &[Best]) -> [Vec<String>; 3] {
    let pick = |f: &dyn Fn(&Best) -> Option<f64>, highest: bool| -> Vec<String> {
        let mut v: Vec<(String, f64)> = best
            .iter()
            .filter_map(|b| f(b).map(|x| (b.contestant.clone(), x)))
            .collect();
        v.sort_by(|a, b| {
            if highest {
                b.1.total_cmp(&a.1)
            } else {
                a.1.total_cmp(&b.1)
            }
        });
        let Some(top) = v.first().map(|x| x.1) else {
            return Vec::new();
        };
        v.into_iter()
            .take_while(|(_, x)| (x - top).abs() <= TIE * top.abs())
            .map(|(n, _)| n)
            .collect()
    };
    [
        pick(&|b| b.throughput.map(|s| s.mean), true),
        pick(&|b| b.per_cpu.map(|s| s.mean), true),
        pick(&|b| b.memory.map(|s| s.mean), false),
    ]
}

/// The distinct notes of a cell's runs, each prefixed with its load level.
fn caveats(cell: Option<&Cell>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in cell.map_or(&[][..], |c| &c.runs[..]) {
        for n in &r.notes {
            let text = format!("{}: {n}", r.spec.load.label());
            if !out.contains(&text) {
                out.push(text);
            }
        }
    }
    out
}

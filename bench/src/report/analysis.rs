//! From run files to the answer: runs grouped by what they compare
//! (workload × limits × state), repetitions folded into a spread, and each
//! contestant's best sustainable point.
//!
//! "Sustainable" means every measured repetition at that load level met the
//! suite's latency objective (with < 1 % errors, no starved connection and,
//! in open loop, at least 95 % of the offered rate achieved). A
//! contestant's best point is the sustainable level with the highest mean
//! throughput (among the open-loop and auto levels when the group has any).
//!
//! The answer is honest about what the measurements can tell apart:
//! - each contestant's capacity is a range — an auto search's bracket
//!   (last sustainable, first unsustainable rate) over every repetition, a
//!   fixed rate up to the next rate offered, a closed loop's min–max — and
//!   contestants whose ranges overlap the best one's are tied with it;
//! - a figure limited by the load generator (or by the search's maximum,
//!   or by the highest rate offered) is only a lower bound: its range is
//!   open above, so it is never ranked against another such figure;
//! - requests per CPU-second depend on the load, so they are compared at
//!   one common offered rate every contestant sustained, from the
//!   measurements the virtual machine's host left alone (a figure measured
//!   only while it took the CPUs is a lower bound, and a contestant below
//!   the best on lower bounds alone is not compared);
//! - memory is the server's own (anonymous + shared, no page cache), and
//!   without a cgroup no memory winner is named.

use crate::results::{AutoStep, Metrics, RunRecord, Status, Steal};
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
    /// The server's own peak memory there, bytes (`None` without a cgroup).
    pub memory: Option<Spread>,
    /// Where the capacity lies, over every repetition.
    pub capacity: Option<Capacity>,
    /// Runs that failed, crashed, were OOM-killed or skipped (any level),
    /// then the caveats noted at the best point (generator-bound, ...).
    pub failures: Vec<String>,
}

/// Where a contestant's capacity lies: at least `low`; below `high`
/// (exclusive) when that is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    /// The lowest sustainable rate over the repetitions.
    pub low: f64,
    /// The highest rate known to be too much; `None`: open above (the
    /// load generator, the search's maximum or the highest rate offered
    /// was the limit, not the server).
    pub high: Option<f64>,
    /// Why it is open above, when it is.
    pub open_because: Option<&'static str>,
    /// Relative run-to-run noise the range does not show (one repetition:
    /// [`SINGLE_RUN_NOISE`]; several: 0, their min–max shows it).
    pub noise: f64,
}

/// A single repetition cannot show how much the next one would differ, so
/// its capacity range is widened by this much either way when ranges are
/// compared: about the largest run-to-run difference of a contestant's
/// capacity between three quick-suite runs on the development VM (see the
/// README's "Repeatability").
pub const SINGLE_RUN_NOISE: f64 = 0.10;

/// The same for requests per CPU-second at a low common rate, which vary
/// much more between runs (same measurement).
pub const SINGLE_RUN_CPU_NOISE: f64 = 0.40;

/// The share of the server's or the generator's CPUs the host may take
/// over a window before that window's requests per CPU-second count only
/// as a lower bound. At a low rate, where the server sleeps and wakes for
/// every request, the figure falls far faster than the share taken: in
/// the first step of every capacity search of the reference quick and
/// full runs (132 steps), against the best figure of the same server,
/// workload and rate, the median was 0.82 at 1–2 % stolen, 0.84 at 2–5 %,
/// 0.67 at 5–10 %, 0.51 at 10–20 % and 0.42 above; `bench/pace_probe.sh`
/// (event-loop, 2,000 req/s, 120 rounds) found the same: 25.0k at under
/// 1 %, 22.2k at 1–2 %, 16.7k at 5–10 %, 12–13k above 10 %.
pub const EFFICIENCY_STEAL: f64 = 0.01;

/// A contestant's requests per CPU-second at the common load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerCpu {
    /// Over the repetitions measured while the host took less than
    /// [`EFFICIENCY_STEAL`]; over all of them when none was.
    pub spread: Spread,
    /// No repetition was measured with the host quiet: the figures are
    /// lower bounds (the host lowered them by an unknown amount).
    pub lower_bound: bool,
}

impl PerCpu {
    /// Folds `(figure, what the host took over its window)` pairs; a
    /// window without steal figures (not a VM, older results) is quiet.
    fn of(values: impl IntoIterator<Item = (f64, Option<Steal>)>) -> Option<PerCpu> {
        let values: Vec<(f64, Option<Steal>)> = values.into_iter().collect();
        let quiet = |s: &Option<Steal>| s.map_or(true, |s| s.share() < EFFICIENCY_STEAL);
        match Spread::of(values.iter().filter(|v| quiet(&v.1)).map(|v| v.0)) {
            Some(spread) => Some(PerCpu {
                spread,
                lower_bound: false,
            }),
            None => Some(PerCpu {
                spread: Spread::of(values.iter().map(|v| v.0))?,
                lower_bound: true,
            }),
        }
    }
}

impl Capacity {
    /// Whether the two ranges share any rate (allowing for the noise a
    /// single repetition cannot show): then the measurements do not tell
    /// the two apart.
    pub fn overlaps(&self, o: &Capacity) -> bool {
        let below = |a: &Capacity, b: &Capacity| {
            a.high
                .is_some_and(|h| h * (1.0 + a.noise) <= b.low * (1.0 - b.noise))
        };
        !below(self, o) && !below(o, self)
    }
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
            state: r.spec.state.map_or("default", |s| s.as_str()).to_string(),
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
                let name = r.spec.subject();
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
                let limited = cell.is_some_and(|c| c.runs.iter().any(|r| r.unlimited));
                Best {
                    contestant: name.clone(),
                    load,
                    throughput: at(|m| Some(m.throughput_rps)),
                    objective_latency: at(|m| Some(m.objective_latency_ms)),
                    memory: if limited {
                        None
                    } else {
                        at(|m| m.memory_own_bytes.map(|b| b as f64))
                    },
                    capacity: load.and_then(|i| self.capacity(cells, i)),
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
                        // With no sustainable point, every level's
                        // caveats explain why (a starved client, say).
                        .chain(match cell {
                            Some(_) => caveats(cell),
                            None => cells.iter().flat_map(|c| caveats(Some(c))).collect(),
                        })
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

/// Closed loops and CPU efficiency: values this close to the best
/// (relative) count as a tie when their spreads do not overlap already.
pub const TIE: f64 = 0.02;

impl Group<'_> {
    /// The capacity range of a contestant's sustainable level `i`.
    fn capacity(&self, cells: &[Cell], i: usize) -> Option<Capacity> {
        let cell = &cells[i];
        let runs: Vec<&RunRecord> = cell
            .runs
            .iter()
            .copied()
            .filter(|r| r.status == Status::Ok)
            .collect();
        let generator_bound = runs.iter().any(|r| {
            r.loadgen
                .as_ref()
                .and_then(|l| l.pointer("/cpu/generator_bound"))
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
        });
        match self.loads[i] {
            LoadLevel::Auto { .. } => {
                let brackets: Vec<_> = runs.iter().filter_map(|r| r.bracket).collect();
                if brackets.is_empty() {
                    return None;
                }
                let low = brackets
                    .iter()
                    .filter_map(|b| b.sustainable_rps)
                    .fold(f64::INFINITY, f64::min);
                // Generator-bound at the first unsustainable rate, or
                // already at the sustainable one: the failure above may be
                // the generator's.
                let open_because = if generator_bound || brackets.iter().any(|b| b.generator_bound)
                {
                    Some("limited by the load generator")
                } else if brackets.iter().any(|b| b.unsustainable_rps.is_none()) {
                    Some("the search reached its maximum rate")
                } else {
                    None
                };
                let high = match open_because {
                    Some(_) => None,
                    None => brackets
                        .iter()
                        .filter_map(|b| b.unsustainable_rps)
                        .reduce(f64::max),
                };
                low.is_finite().then_some(Capacity {
                    low,
                    high,
                    open_because,
                    noise: if brackets.len() < 2 {
                        SINGLE_RUN_NOISE
                    } else {
                        0.0
                    },
                })
            }
            LoadLevel::Open { rate, .. } => {
                // Up to the next rate offered, if it was not sustained.
                let next = self
                    .loads
                    .iter()
                    .enumerate()
                    .filter_map(|(j, l)| match l {
                        LoadLevel::Open { rate: r, .. } if *r > rate => Some((j, *r)),
                        _ => None,
                    })
                    .min_by(|a, b| a.1.total_cmp(&b.1));
                let (high, open_because) = if generator_bound {
                    (None, Some("limited by the load generator"))
                } else {
                    match next {
                        Some((j, r)) if !cells[j].sustainable() => (Some(r), None),
                        Some(_) => (None, None),
                        None => (None, Some("the highest rate offered")),
                    }
                };
                // The rates offered are the resolution: no noise margin.
                Some(Capacity {
                    low: rate,
                    high,
                    open_because,
                    noise: 0.0,
                })
            }
            LoadLevel::Closed { .. } => {
                let s = cell.spread(|m| Some(m.throughput_rps))?;
                Some(Capacity {
                    low: s.min,
                    high: (!generator_bound).then_some(s.max * (1.0 + TIE)),
                    open_because: generator_bound.then_some("limited by the load generator"),
                    noise: if s.n < 2 { SINGLE_RUN_NOISE } else { 0.0 },
                })
            }
        }
    }

    /// The load at which CPU efficiency compares like with like: the
    /// highest offered rate that every contestant with any sustainable
    /// point sustained in every repetition (auto steps or open levels);
    /// failing that, the largest closed-loop level they all sustained.
    pub fn common_load(&self) -> Option<Common> {
        let mut rates: Option<Vec<f64>> = None;
        let mut closed: Option<Vec<usize>> = None;
        for (_, cells) in &self.contestants {
            let mine = sustained_rates(&self.loads, cells);
            let mine_closed: Vec<usize> = (0..cells.len())
                .filter(|&i| {
                    matches!(self.loads[i], LoadLevel::Closed { .. }) && cells[i].sustainable()
                })
                .collect();
            if mine.is_empty() && mine_closed.is_empty() {
                continue;
            }
            rates = Some(match rates {
                None => mine,
                Some(c) => c
                    .into_iter()
                    .filter(|r| mine.iter().any(|x| same(*x, *r)))
                    .collect(),
            });
            closed = Some(match closed {
                None => mine_closed,
                Some(c) => c.into_iter().filter(|i| mine_closed.contains(i)).collect(),
            });
        }
        if let Some(r) = rates.and_then(|r| r.into_iter().reduce(f64::max)) {
            return Some(Common::Rate(r));
        }
        closed?
            .into_iter()
            .max_by(|a, b| {
                load_order(&self.loads[*a])
                    .partial_cmp(&load_order(&self.loads[*b]))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .map(|i| Common::Closed(i, self.loads[i].label()))
    }

    /// Requests per CPU-second of each contestant at `at` (over
    /// repetitions), for those that sustained it.
    pub fn per_cpu_at(&self, at: &Common) -> Vec<(String, PerCpu)> {
        self.contestants
            .iter()
            .filter_map(|(name, cells)| {
                let values = cells.iter().enumerate().flat_map(|(i, c)| {
                    c.runs
                        .iter()
                        .filter(|r| r.status == Status::Ok)
                        .filter_map(move |r| {
                            let m = r.metrics.as_ref();
                            let fixed =
                                || m.and_then(|m| Some((m.requests_per_cpu_s?, m.host_steal)));
                            match (self.loads[i], at) {
                                (LoadLevel::Auto { .. }, Common::Rate(rate)) => r
                                    .auto_steps
                                    .iter()
                                    .find(|s| s.sustainable && same(s.offered_rps, *rate))
                                    .and_then(|s| Some((s.requests_per_cpu_s?, s.host_steal))),
                                (LoadLevel::Open { rate: r0, .. }, Common::Rate(rate))
                                    if same(r0, *rate) && c.sustainable() =>
                                {
                                    fixed()
                                }
                                (LoadLevel::Closed { .. }, Common::Closed(j, _))
                                    if i == *j && c.sustainable() =>
                                {
                                    fixed()
                                }
                                _ => None,
                            }
                        })
                });
                PerCpu::of(values).map(|p| (name.clone(), p))
            })
            .collect()
    }

    /// The answer for this group.
    pub fn answer(&self) -> Answer {
        let best = self.best();
        Answer::of(self, best)
    }
}

/// The load at which CPU efficiency is compared.
#[derive(Debug, Clone, PartialEq)]
pub enum Common {
    /// An offered open-loop rate, requests per second.
    Rate(f64),
    /// A closed-loop level: its index in the group's loads, and its label.
    Closed(usize, String),
}

impl Common {
    /// `at 8000 req/s offered` or `at c64`.
    pub fn describe(&self) -> String {
        match self {
            Common::Rate(r) => format!("at {} req/s offered", super::rps(*r)),
            Common::Closed(_, label) => format!("at {label}"),
        }
    }
}

/// Whether two offered rates are the same step (the ramp computes them the
/// same way for every contestant).
fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs())
}

/// Offered rates a contestant sustained in every repetition.
fn sustained_rates(loads: &[LoadLevel], cells: &[Cell]) -> Vec<f64> {
    let mut out = Vec::new();
    for (i, c) in cells.iter().enumerate() {
        match loads[i] {
            LoadLevel::Open { rate, .. } if c.sustainable() => out.push(rate),
            LoadLevel::Auto { .. } => {
                let ok: Vec<&RunRecord> = c
                    .runs
                    .iter()
                    .copied()
                    .filter(|r| r.status == Status::Ok)
                    .collect();
                if ok.is_empty() || ok.len() < c.runs.len() {
                    continue;
                }
                let steps = |r: &RunRecord| -> Vec<f64> {
                    r.auto_steps
                        .iter()
                        .filter(|s: &&AutoStep| s.sustainable)
                        .map(|s| s.offered_rps)
                        .collect()
                };
                let mut rates = steps(ok[0]);
                for r in &ok[1..] {
                    let other = steps(r);
                    rates.retain(|x| other.iter().any(|y| same(*x, *y)));
                }
                out.extend(rates);
            }
            _ => {}
        }
    }
    out
}

/// A group's answer: the winners by each measure, and what qualifies them.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Every contestant's best point, most throughput first.
    pub best: Vec<Best>,
    /// Most sustainable throughput: the best first, then every contestant
    /// whose capacity range overlaps it.
    pub throughput: Vec<String>,
    /// The best's capacity is open above (only a lower bound), and why.
    pub throughput_open: Option<&'static str>,
    /// Fixed rates only: every contestant sustained the highest rate
    /// offered, so the rates did not separate them.
    pub unseparated: Option<f64>,
    /// Most requests per CPU-second at `common` (ties within [`TIE`] or
    /// overlapping spreads; a lower bound at or above the best counts).
    pub per_cpu: Vec<(String, PerCpu)>,
    /// Below the best on lower bounds alone: the host may be why, so they
    /// are neither tied nor beaten.
    pub per_cpu_uncompared: Vec<String>,
    /// Every contestant's requests per CPU-second at `common`, for tables.
    pub per_cpu_at_common: Vec<(String, PerCpu)>,
    /// The load the CPU efficiency was compared at.
    pub common: Option<Common>,
    /// Least own memory (empty when any run went without a cgroup).
    pub memory: Vec<String>,
    /// Some runs went without a cgroup: no memory winner.
    pub memory_unmeasured: bool,
}

impl Answer {
    fn of(g: &Group, best: Vec<Best>) -> Answer {
        // Throughput: the highest mean, tied with every overlapping range.
        let ranked: Vec<&Best> = best.iter().filter(|b| b.capacity.is_some()).collect();
        let (throughput, throughput_open) = match ranked.first() {
            None => (Vec::new(), None),
            Some(top) => {
                let c = top.capacity.expect("filtered");
                let tied = ranked
                    .iter()
                    .filter(|b| b.capacity.is_some_and(|o| o.overlaps(&c)))
                    .map(|b| b.contestant.clone())
                    .collect();
                (tied, c.open_because)
            }
        };
        let only_rates = g.loads.iter().all(|l| matches!(l, LoadLevel::Open { .. }));
        let top_rate = g
            .loads
            .iter()
            .filter_map(|l| match l {
                LoadLevel::Open { rate, .. } => Some(*rate),
                _ => None,
            })
            .reduce(f64::max);
        let unseparated = top_rate.filter(|&top| {
            only_rates
                && !ranked.is_empty()
                && g.contestants.len() > 1
                && best
                    .iter()
                    .all(|b| b.capacity.is_some_and(|c| same(c.low, top)))
        });
        let common = g.common_load();
        let per_cpu_at_common = common.as_ref().map_or_else(Vec::new, |c| g.per_cpu_at(c));
        let mut ranked = per_cpu_at_common.clone();
        ranked.sort_by(|a, b| b.1.spread.mean.total_cmp(&a.1.spread.mean));
        let (per_cpu, below): (Vec<_>, Vec<_>) = match ranked.first().map(|x| x.1.spread) {
            None => (Vec::new(), Vec::new()),
            Some(top) => {
                let noise = |s: &Spread| if s.n < 2 { SINGLE_RUN_CPU_NOISE } else { TIE };
                ranked.into_iter().partition(|(_, p)| {
                    p.spread.max * (1.0 + noise(&p.spread)) >= top.min * (1.0 - noise(&top))
                })
            }
        };
        // The best's figure is what it did at least (a lower bound only
        // rises), so a quiet figure below it is beaten; a lower bound below
        // it may be the host's doing.
        let per_cpu_uncompared = below
            .into_iter()
            .filter(|(_, p)| p.lower_bound)
            .map(|(n, _)| n)
            .collect();
        let memory_unmeasured = g
            .contestants
            .iter()
            .flat_map(|(_, cells)| cells.iter().flat_map(|c| c.runs.iter()))
            .any(|r| r.unlimited);
        let memory = if memory_unmeasured {
            Vec::new()
        } else {
            lowest(&best, |b| b.memory)
        };
        Answer {
            best,
            throughput,
            throughput_open,
            unseparated,
            per_cpu,
            per_cpu_uncompared,
            per_cpu_at_common,
            common,
            memory,
            memory_unmeasured,
        }
    }

    /// Whether `name` is among the winners of measure 0 (throughput),
    /// 1 (CPU) or 2 (memory).
    pub fn wins(&self, measure: usize, name: &str) -> bool {
        match measure {
            0 => self.throughput.iter().any(|n| n == name),
            1 => self.per_cpu.iter().any(|(n, _)| n == name),
            _ => self.memory.iter().any(|n| n == name),
        }
    }
}

/// The contestants with the least of `f`, the lowest first, with those
/// within [`TIE`] of it.
fn lowest(best: &[Best], f: impl Fn(&Best) -> Option<Spread>) -> Vec<String> {
    let mut v: Vec<(String, f64)> = best
        .iter()
        .filter_map(|b| f(b).map(|x| (b.contestant.clone(), x.mean)))
        .collect();
    v.sort_by(|a, b| a.1.total_cmp(&b.1));
    let Some(top) = v.first().map(|x| x.1) else {
        return Vec::new();
    };
    v.into_iter()
        .take_while(|(_, x)| (x - top).abs() <= TIE * top.abs())
        .map(|(n, _)| n)
        .collect()
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

//! The capacity search behind `auto` loads, as a pure function: given the
//! steps measured so far, which open-loop rate to offer next, or the
//! verdict. The runner measures; this decides.
//!
//! 1. **Ramp**: `start`, `start × factor`, ... while every step is
//!    sustainable (up to `max`). Every contestant walks the same ramp, so
//!    its rates are common ground for comparing CPU efficiency.
//! 2. **Bracket**: the highest sustainable rate below the lowest
//!    unsustainable one (`lo`, `hi`). The capacity lies between them.
//! 3. **Narrow** the bracket until `hi / lo ≤ 1 + resolution`. When an
//!    overloaded step fell short of its offered rate, what it did achieve
//!    is an estimate of the capacity: the next probes go just below and
//!    just above it, which usually closes the bracket in two steps. Other
//!    cuts are geometric bisections.
//!
//! The verdict is the bracket itself, not a grid point: two contestants
//! whose brackets overlap are not told apart by this search.
//!
//! With `confirm`, a failure that may be one noisy moment — the step kept
//! up with its offer but missed the latency objective, or had errors or a
//! starved connection — is measured once more before it bounds the
//! bracket, and a rate that passes either time counts as sustainable. A
//! step that fell short of its offer is overload, believed at once.
//!
//! Whatever `confirm` says, a failure measured while the virtual machine's
//! host took a good share of the CPUs (`disturbed`, see `runner::steal`) is
//! not evidence about the server: its rate is measured again, up to
//! [`DISTURBED_TRIES`] times in all. A pass at that rate settles it; a
//! failure measured undisturbed counts as any other; a rate that failed
//! every time, disturbed every time, is believed at last, and the bracket
//! says so.

/// One measured step, as the search sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// Requests per second offered.
    pub offered: f64,
    /// Responses per second achieved.
    pub achieved: f64,
    /// Whether the step met the objective (latency, errors, keep-up, no
    /// starved connection).
    pub sustainable: bool,
    /// Whether the load generator was saturated during the step.
    pub generator_bound: bool,
    /// Whether the host took enough of the CPUs during the step that it
    /// may be why the step failed (`runner::steal::Steal::may_explain`).
    pub disturbed: bool,
}

/// Most measurements of one rate whose failures were all disturbed.
pub const DISTURBED_TRIES: usize = 3;

/// The search's settings (the suite's `auto`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// First rate.
    pub start: f64,
    /// Ramp factor (> 1).
    pub factor: f64,
    /// Highest rate ever offered.
    pub max: f64,
    /// Stop when `hi / lo ≤ 1 + resolution` (0.05: 5 %).
    pub resolution: f64,
    /// A step counts as keeping up when it achieved this share of its offer.
    pub keep_up: f64,
    /// Most steps in all (a bound on time, whatever happens).
    pub max_steps: usize,
    /// Measure a failure that kept up once more before believing it.
    pub confirm: bool,
}

/// How a search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum End {
    /// The bracket is within the resolution.
    Converged,
    /// Every step up to `max` was sustainable: the capacity is higher.
    AtMax,
    /// Not even the first rate was sustainable.
    NoneSustainable,
    /// The step budget ran out before the bracket was narrow enough.
    StepLimit,
    /// The server stopped before the search could finish.
    ServerGone,
}

/// What the search found.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bracket {
    /// The highest sustainable rate below `unsustainable_rps` (`None`: none).
    pub sustainable_rps: Option<f64>,
    /// The lowest unsustainable rate (`None`: every step was sustainable).
    pub unsustainable_rps: Option<f64>,
    /// How the search ended.
    pub end: End,
    /// The resolution asked for.
    pub resolution: f64,
    /// The unsustainable end was set by a step during which the load
    /// generator was saturated: the server's capacity may lie above it.
    pub generator_bound: bool,
    /// Some step above the bracket was sustainable (noise, or a server
    /// whose capacity changed during the search).
    pub non_monotonic: bool,
    /// The unsustainable end failed only in steps the host disturbed
    /// (after [`DISTURBED_TRIES`] measurements): it may lie too low.
    #[serde(default)]
    pub disturbed: bool,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Measure this rate.
    Probe(f64),
    /// Done.
    Done(Bracket),
}

/// Relative margin within which two rates count as the same probe.
const SAME: f64 = 1e-6;

/// What `steps` show, ended for the reason `end`: the bracket between the
/// highest sustainable rate below the lowest unsustainable one and that one.
pub fn verdict(p: &Params, steps: &[Probe], end: End) -> Bracket {
    let (lo, hi) = ends(p, steps);
    Bracket {
        sustainable_rps: lo.map(|s| s.offered),
        unsustainable_rps: hi.map(|s| s.offered),
        end,
        resolution: p.resolution,
        generator_bound: hi.is_some_and(|h| h.generator_bound),
        disturbed: hi.is_some_and(|h| {
            at(steps, h.offered)
                .filter(|x| !x.sustainable)
                .all(|x| x.disturbed)
        }),
        non_monotonic: hi.is_some_and(|h| {
            steps
                .iter()
                .any(|s| s.sustainable && s.offered > h.offered * (1.0 + SAME))
        }),
    }
}

/// The bracket's ends: the highest sustainable step below the lowest
/// unsustainable one, and that one. Failures that do not count are left
/// out (see [`counts`]).
fn ends<'a>(p: &Params, steps: &'a [Probe]) -> (Option<&'a Probe>, Option<&'a Probe>) {
    let hi = steps
        .iter()
        .filter(|s| counts(p, steps, s))
        .min_by(|a, b| a.offered.total_cmp(&b.offered));
    let lo = steps
        .iter()
        .filter(|s| s.sustainable && hi.map_or(true, |h| s.offered < h.offered))
        .max_by(|a, b| a.offered.total_cmp(&b.offered));
    (lo, hi)
}

/// The next step of the search after `steps` (in the order measured).
pub fn next(p: &Params, steps: &[Probe]) -> Next {
    let Some(last) = steps.last() else {
        return Next::Probe(p.start);
    };
    let (lo, hi) = ends(p, steps);
    let done = |end: End| Next::Done(verdict(p, steps, end));
    if let Some(rate) = disturbed_retry(steps, hi) {
        if steps.len() >= p.max_steps {
            return done(End::StepLimit);
        }
        return Next::Probe(rate);
    }
    if let Some(h) = hi.filter(|h| p.confirm && unconfirmed(p, steps, h)) {
        if steps.len() >= p.max_steps {
            return done(End::StepLimit);
        }
        return Next::Probe(h.offered);
    }
    let Some(hi) = hi else {
        // Still ramping.
        if last.offered >= p.max * (1.0 - SAME) {
            return done(End::AtMax);
        }
        if steps.len() >= p.max_steps {
            return done(End::StepLimit);
        }
        return Next::Probe((last.offered * p.factor).min(p.max));
    };
    let Some(lo) = lo else {
        return done(End::NoneSustainable);
    };
    let (lo, hi) = (lo.offered, hi.offered);
    if hi <= lo * (1.0 + p.resolution) * (1.0 + SAME) {
        return done(End::Converged);
    }
    if steps.len() >= p.max_steps {
        return done(End::StepLimit);
    }
    Next::Probe(cut(p, steps, lo, hi))
}

/// Whether two offers are the same rate.
fn same_rate(a: f64, b: f64) -> bool {
    (a / b - 1.0).abs() < SAME
}

/// The steps measured at `rate`.
fn at(steps: &[Probe], rate: f64) -> impl Iterator<Item = &Probe> {
    steps.iter().filter(move |s| same_rate(s.offered, rate))
}

/// Whether a step is a failure that bounds the bracket. Not when its rate
/// also passed and the failure may be noise (`confirm`) or was disturbed;
/// not when it was disturbed and its rate has not yet been measured
/// undisturbed or [`DISTURBED_TRIES`] times.
fn counts(p: &Params, steps: &[Probe], s: &Probe) -> bool {
    if s.sustainable {
        return false;
    }
    if (p.confirm || s.disturbed) && at(steps, s.offered).any(|x| x.sustainable) {
        return false;
    }
    !s.disturbed || at(steps, s.offered).count() >= DISTURBED_TRIES
}

/// The lowest rate (below the bracket's unsustainable end, if any) whose
/// every measurement is a disturbed failure, measured fewer than
/// [`DISTURBED_TRIES`] times: it is to be measured again.
fn disturbed_retry(steps: &[Probe], hi: Option<&Probe>) -> Option<f64> {
    steps
        .iter()
        .filter(|s| hi.map_or(true, |h| s.offered < h.offered * (1.0 - SAME)))
        .filter(|s| {
            let mut here = at(steps, s.offered);
            here.all(|x| x.disturbed && !x.sustainable)
                && at(steps, s.offered).count() < DISTURBED_TRIES
        })
        .map(|s| s.offered)
        .min_by(f64::total_cmp)
}

/// A failure that may be noise (it kept up with its offer, and the
/// generator was not saturated), measured only once undisturbed at its
/// rate.
fn unconfirmed(p: &Params, steps: &[Probe], failed: &Probe) -> bool {
    let kept_up = failed.achieved >= p.keep_up * failed.offered;
    let measured = at(steps, failed.offered).filter(|s| !s.disturbed).count();
    kept_up && !failed.generator_bound && !failed.disturbed && measured == 1
}

/// Where to cut the bracket (lo, hi): beside the capacity estimate when
/// there is a usable one, else at the geometric mean.
fn cut(p: &Params, steps: &[Probe], lo: f64, hi: f64) -> f64 {
    // An overloaded step achieves about what the server can do: the
    // lowest such figure is the best estimate.
    let estimate = steps
        .iter()
        .filter(|s| !s.sustainable && s.achieved < p.keep_up * s.offered && s.achieved > 0.0)
        .map(|s| s.achieved)
        .min_by(f64::total_cmp);
    if let Some(e) = estimate {
        // Probes 0.45 × resolution either side of it: if the capacity is
        // there, the two close the bracket to within the resolution.
        let margin = 1.0 + p.resolution / 4.0;
        let inside = |x: f64| x > lo * margin && x < hi / margin;
        let tried = |x: f64| {
            steps
                .iter()
                .any(|s| (s.offered / x - 1.0).abs() < p.resolution / 8.0)
        };
        for x in [
            e * (1.0 - 0.45 * p.resolution),
            e * (1.0 + 0.45 * p.resolution),
        ] {
            if inside(x) && !tried(x) {
                return x;
            }
        }
    }
    (lo * hi).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            start: 1000.0,
            factor: 4.0,
            max: 1e6,
            resolution: 0.05,
            keep_up: 0.95,
            max_steps: 20,
            confirm: false,
        }
    }

    /// A synthetic server: sustainable up to `capacity`; above it, it
    /// achieves `overload_share` of its capacity.
    fn server(capacity: f64, overload_share: f64) -> impl Fn(f64) -> Probe {
        move |offered| {
            let sustainable = offered <= capacity;
            Probe {
                offered,
                achieved: if sustainable {
                    offered
                } else {
                    capacity * overload_share
                },
                sustainable,
                generator_bound: false,
                disturbed: false,
            }
        }
    }

    /// Runs the search against `measure` and returns the steps and verdict.
    fn search(p: &Params, measure: impl Fn(f64) -> Probe) -> (Vec<Probe>, Bracket) {
        let mut steps = Vec::new();
        loop {
            match next(p, &steps) {
                Next::Probe(rate) => steps.push(measure(rate)),
                Next::Done(b) => return (steps, b),
            }
        }
    }

    /// `server` whose step at `noisy` (its first measurement there only)
    /// misses the latency objective while keeping up: one noisy moment.
    fn noisy_once(capacity: f64, noisy: f64) -> impl FnMut(f64, &[Probe]) -> Probe {
        let honest = server(capacity, 0.9);
        move |offered, before| {
            let first = !before.iter().any(|s| same_rate(s.offered, offered));
            let mut probe = honest(offered);
            if same_rate(offered, noisy) && first {
                probe.sustainable = false;
            }
            probe
        }
    }

    fn search_with(
        p: &Params,
        mut measure: impl FnMut(f64, &[Probe]) -> Probe,
    ) -> (Vec<Probe>, Bracket) {
        let mut steps = Vec::new();
        loop {
            match next(p, &steps) {
                Next::Probe(rate) => {
                    let probe = measure(rate, &steps);
                    steps.push(probe)
                }
                Next::Done(b) => return (steps, b),
            }
        }
    }

    #[test]
    fn one_noisy_step_bounds_the_search_unless_failures_are_confirmed() {
        // Capacity 30k; the first step at 4k misses its latency once.
        let (_, b) = search_with(&params(), noisy_once(30_000.0, 4_000.0));
        assert_eq!(b.end, End::Converged);
        assert!(b.unsustainable_rps.unwrap() <= 4_000.0, "believed: {b:?}");

        let confirm = Params {
            confirm: true,
            ..params()
        };
        let (steps, b) = search_with(&confirm, noisy_once(30_000.0, 4_000.0));
        let (lo, hi) = (b.sustainable_rps.unwrap(), b.unsustainable_rps.unwrap());
        assert!(
            lo <= 30_000.0 && 30_000.0 < hi && hi / lo <= 1.05 + 1e-9,
            "{b:?}"
        );
        let at_4k = steps
            .iter()
            .filter(|s| same_rate(s.offered, 4_000.0))
            .count();
        assert_eq!(at_4k, 2, "measured again once: {steps:?}");

        // Noise at the very first rate: confirmed away as well, where
        // believing it found nothing sustainable at all.
        let (_, b) = search_with(&params(), noisy_once(30_000.0, 1_000.0));
        assert_eq!(b.end, End::NoneSustainable);
        let (_, b) = search_with(&confirm, noisy_once(30_000.0, 1_000.0));
        assert_eq!(b.end, End::Converged, "{b:?}");
    }

    /// `server` whose first `times` measurements at `rate` fail while the
    /// host disturbs them; later ones are honest.
    fn disturbed_at(capacity: f64, rate: f64, times: usize) -> impl FnMut(f64, &[Probe]) -> Probe {
        let honest = server(capacity, 0.9);
        move |offered, before| {
            let earlier = at(before, offered).count();
            let mut probe = honest(offered);
            if same_rate(offered, rate) && earlier < times {
                probe.sustainable = false;
                probe.disturbed = true;
            }
            probe
        }
    }

    #[test]
    fn a_disturbed_failure_is_measured_again_until_it_passes() {
        // The host takes the CPUs during the first two measurements at 4k;
        // the third passes, and the search finds the real capacity, with
        // or without `confirm`.
        for confirm in [false, true] {
            let p = Params {
                confirm,
                ..params()
            };
            let (steps, b) = search_with(&p, disturbed_at(30_000.0, 4_000.0, 2));
            let (lo, hi) = (b.sustainable_rps.unwrap(), b.unsustainable_rps.unwrap());
            assert!(lo <= 30_000.0 && 30_000.0 < hi, "{confirm}: {b:?}");
            assert_eq!(at(&steps, 4_000.0).count(), 3, "{steps:?}");
            assert!(!b.disturbed);
        }
        // Disturbed at the very first rate: measured again, not "none
        // sustainable".
        let (_, b) = search_with(&params(), disturbed_at(30_000.0, 1_000.0, 1));
        assert_eq!(b.end, End::Converged, "{b:?}");
    }

    #[test]
    fn a_rate_disturbed_every_time_is_believed_at_last_and_flagged() {
        let (steps, b) = search_with(&params(), disturbed_at(30_000.0, 4_000.0, usize::MAX));
        assert_eq!(at(&steps, 4_000.0).count(), DISTURBED_TRIES, "{steps:?}");
        assert_eq!(b.unsustainable_rps, Some(4_000.0));
        assert!(b.disturbed, "{b:?}");
        // Once measured undisturbed, a failure is evidence like any other:
        // here the second measurement at 4k is an honest failure.
        let mut first = true;
        let (steps, b) = search_with(&params(), |rate, before: &[Probe]| {
            let mut probe = server(3_000.0, 1.0)(rate);
            if same_rate(rate, 4_000.0) && std::mem::take(&mut first) {
                probe.disturbed = true;
            }
            let _ = before;
            probe
        });
        assert_eq!(at(&steps, 4_000.0).count(), 2, "{steps:?}");
        assert!(!b.disturbed && b.unsustainable_rps.unwrap() <= 4_000.0);
        // The bracket is not flagged when any failure at its end was
        // measured undisturbed, whichever came first.
        let failed = |disturbed| Probe {
            offered: 4_000.0,
            achieved: 4_000.0,
            sustainable: false,
            generator_bound: false,
            disturbed,
        };
        let steps = [
            Probe {
                offered: 1_000.0,
                sustainable: true,
                ..failed(false)
            },
            failed(true),
            failed(false),
        ];
        let b = verdict(&params(), &steps, End::Converged);
        assert_eq!(b.unsustainable_rps, Some(4_000.0));
        assert!(!b.disturbed, "{b:?}");
    }

    #[test]
    fn a_disturbed_pass_is_believed() {
        // Sustaining a rate with part of the CPUs taken is still
        // sustaining it: no step is repeated.
        let honest = search(&params(), server(30_000.0, 1.0)).0.len();
        let (steps, b) = search(&params(), |rate| Probe {
            disturbed: true,
            ..server(30_000.0, 1.0)(rate)
        });
        // Only failures are repeated; the failures here all fall short of
        // their offer, each measured up to three times.
        assert!(steps
            .iter()
            .filter(|s| s.sustainable)
            .all(|s| at(&steps, s.offered).count() == 1));
        assert!(steps.len() > honest && b.disturbed, "{b:?}");
    }

    #[test]
    fn a_failure_that_repeats_or_falls_short_is_believed() {
        let confirm = Params {
            confirm: true,
            ..params()
        };
        // A real capacity of 30k: every failure there repeats, so the
        // bracket is the same as without confirmation, a few steps later.
        let (steps, b) = search_with(&confirm, |rate, _: &[Probe]| server(30_000.0, 1.0)(rate));
        let (lo, hi) = (b.sustainable_rps.unwrap(), b.unsustainable_rps.unwrap());
        assert!(
            lo <= 30_000.0 && 30_000.0 < hi && hi / lo <= 1.05 + 1e-9,
            "{b:?}"
        );
        // 64k fell short of its offer (overload, not measured again);
        // 30.7k kept up yet failed: measured twice.
        let count = |rate: f64| {
            steps
                .iter()
                .filter(|s| (s.offered - rate).abs() < 1.0)
                .count()
        };
        assert_eq!(count(64_000.0), 1, "{steps:?}");
        assert_eq!(count(hi), 2, "{steps:?}");
        // A server failing at its first rate fails twice there, then stops.
        let (steps, b) = search_with(&confirm, |rate, _: &[Probe]| server(500.0, 1.0)(rate));
        assert_eq!(b.end, End::NoneSustainable);
        assert_eq!(steps.len(), 1, "1,000 fell short of its offer: {steps:?}");
        let latency_only = |rate: f64, _: &[Probe]| Probe {
            offered: rate,
            achieved: rate,
            sustainable: false,
            generator_bound: false,
            disturbed: false,
        };
        let (steps, b) = search_with(&confirm, latency_only);
        assert_eq!((b.end, steps.len()), (End::NoneSustainable, 2));
    }

    #[test]
    fn converges_within_the_resolution_around_the_capacity() {
        for capacity in [1500.0, 7_777.0, 13_721.0, 15_185.0, 98_000.0, 543_210.0] {
            for share in [1.0, 0.9, 0.5] {
                let (steps, b) = search(&params(), server(capacity, share));
                assert_eq!(b.end, End::Converged, "{capacity} {share}: {b:?}");
                let (lo, hi) = (b.sustainable_rps.unwrap(), b.unsustainable_rps.unwrap());
                assert!(lo <= capacity && capacity < hi, "{capacity}: {lo}..{hi}");
                assert!(hi / lo <= 1.05 + 1e-9, "{capacity}: {lo}..{hi}");
                assert!(
                    steps.len() <= 16,
                    "{capacity} {share}: {} steps",
                    steps.len()
                );
            }
        }
    }

    #[test]
    fn an_overload_estimate_closes_the_bracket_in_two_probes() {
        // Ramp 1k, 4k, 16k, 64k (fails, achieves 30k): then 29.3k, 30.7k.
        let (steps, b) = search(&params(), server(30_000.0, 1.0));
        assert_eq!(steps.len(), 6, "{steps:?}");
        assert_eq!(b.end, End::Converged);
        let (lo, hi) = (b.sustainable_rps.unwrap(), b.unsustainable_rps.unwrap());
        assert!(lo > 29_000.0 && hi < 31_000.0, "{lo}..{hi}");
    }

    #[test]
    fn every_step_sustainable_ends_at_the_maximum() {
        let p = Params {
            max: 20_000.0,
            ..params()
        };
        let (steps, b) = search(&p, server(1e9, 1.0));
        let offered: Vec<f64> = steps.iter().map(|s| s.offered).collect();
        assert_eq!(offered, vec![1000.0, 4000.0, 16_000.0, 20_000.0]);
        assert_eq!(b.end, End::AtMax);
        assert_eq!(b.sustainable_rps, Some(20_000.0));
        assert_eq!(b.unsustainable_rps, None);
    }

    #[test]
    fn nothing_sustainable_says_so_after_one_step() {
        let (steps, b) = search(&params(), server(10.0, 1.0));
        assert_eq!(steps.len(), 1);
        assert_eq!(b.end, End::NoneSustainable);
        assert_eq!(b.sustainable_rps, None);
        assert_eq!(b.unsustainable_rps, Some(1000.0));
    }

    #[test]
    fn a_latency_wall_below_the_throughput_capacity_still_converges() {
        // Keeps up to 50k, but latency breaks the objective above 31k:
        // the estimate (50k) is misleading and must not stall the search.
        let measure = |offered: f64| Probe {
            offered,
            achieved: offered.min(50_000.0),
            sustainable: offered <= 31_000.0,
            generator_bound: false,
            disturbed: false,
        };
        let (_, b) = search(&params(), measure);
        let (lo, hi) = (b.sustainable_rps.unwrap(), b.unsustainable_rps.unwrap());
        assert_eq!(b.end, End::Converged);
        assert!(lo <= 31_000.0 && 31_000.0 < hi && hi / lo <= 1.05 + 1e-9);
    }

    #[test]
    fn a_search_cut_short_still_reports_its_bracket() {
        let measure = server(30_000.0, 1.0);
        let steps: Vec<Probe> = [1000.0, 4000.0, 16_000.0, 64_000.0]
            .into_iter()
            .map(measure)
            .collect();
        let b = verdict(&params(), &steps, End::ServerGone);
        assert_eq!(b.end, End::ServerGone);
        assert_eq!(
            (b.sustainable_rps, b.unsustainable_rps),
            (Some(16_000.0), Some(64_000.0))
        );
    }

    #[test]
    fn the_step_budget_bounds_the_search() {
        let p = Params {
            max_steps: 5,
            resolution: 0.001,
            ..params()
        };
        let (steps, b) = search(&p, server(77_777.0, 0.3));
        assert_eq!(steps.len(), 5);
        assert_eq!(b.end, End::StepLimit);
        assert!(b.sustainable_rps.unwrap() <= 77_777.0);
    }

    #[test]
    fn a_generator_bound_upper_end_is_flagged() {
        let measure = |offered: f64| Probe {
            offered,
            achieved: offered.min(60_000.0),
            sustainable: offered <= 60_000.0,
            generator_bound: offered > 60_000.0,
            disturbed: false,
        };
        let (_, b) = search(&params(), measure);
        assert!(b.generator_bound, "{b:?}");
    }

    #[test]
    fn a_sustainable_step_above_the_bracket_is_flagged_as_non_monotonic() {
        let steps = [
            Probe {
                offered: 1000.0,
                achieved: 1000.0,
                sustainable: true,
                generator_bound: false,
                disturbed: false,
            },
            Probe {
                offered: 4000.0,
                achieved: 4000.0,
                sustainable: false,
                generator_bound: false,
                disturbed: false,
            },
            Probe {
                offered: 5000.0,
                achieved: 5000.0,
                sustainable: true,
                generator_bound: false,
                disturbed: false,
            },
        ];
        let p = Params {
            max_steps: 3,
            ..params()
        };
        let Next::Done(b) = next(&p, &steps) else {
            panic!("the budget is spent")
        };
        assert!(b.non_monotonic);
        assert_eq!(b.sustainable_rps, Some(1000.0));
        assert_eq!(b.unsustainable_rps, Some(4000.0));
    }
}

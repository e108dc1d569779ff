//! How long a suite will take: each run's planned time from the suite's own
//! settings, and an estimate of what is left that scales the plan by how
//! fast the finished part went. The progress bar counts planned time, not
//! runs, so its estimate neither starts at zero nor jumps when a short run
//! follows a long one.

use super::measure::{MAX_AUTO_STEPS, SETTLE};
use crate::suite::{LoadLevel, RunSpec, Suite};
use std::time::Duration;

/// Starting, checking and stopping a server, around its load.
const OVERHEAD: Duration = Duration::from_secs(1);

/// The time one run should take: start-up, then warmup and measurement for
/// each load step (a capacity search counts the steps it would need to
/// reach `max` and then narrow the bracket, as `search` does, with their
/// settling).
pub fn planned(suite: &Suite, spec: &RunSpec) -> Duration {
    let step = suite.warmup + suite.duration;
    match spec.load {
        LoadLevel::Closed { .. } | LoadLevel::Open { .. } => OVERHEAD + step,
        LoadLevel::Auto {
            start,
            factor,
            max,
            resolution,
            confirm,
            ..
        } => {
            let ramp = ((max / start).ln() / factor.ln()).ceil().max(0.0) + 1.0;
            let narrow = (factor.ln() / (1.0 + resolution).ln())
                .log2()
                .ceil()
                .max(0.0);
            // A confirmed failure is one step more.
            let again = if confirm { 1.0 } else { 0.0 };
            let steps = (ramp + narrow + again).min(MAX_AUTO_STEPS as f64) as u32;
            OVERHEAD + (step + SETTLE / 2) * steps
        }
    }
}

/// What is left of a suite planned to take `total`, of which `done` (in
/// planned time) took `elapsed`. Until a twentieth of the plan is done the
/// plan is taken as it is; after, scaled by how fast the done part went.
pub fn eta(total: Duration, done: Duration, elapsed: Duration) -> Duration {
    let left = total.saturating_sub(done);
    if done.is_zero() || done < total / 20 {
        return left;
    }
    left.mul_f64(elapsed.as_secs_f64() / done.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_plan_is_used_until_there_is_progress_to_scale_it_by() {
        // At the start: the whole plan, not zero.
        assert_eq!(eta(S(600), S(0), S(0)), S(600));
        assert_eq!(eta(S(600), S(20), S(90)), S(580));
        // A third done in the planned time: two thirds left as planned.
        assert_eq!(eta(S(600), S(200), S(200)), S(400));
        // Running twice as slow as planned: twice the rest.
        assert_eq!(eta(S(600), S(300), S(600)), S(600));
        assert_eq!(eta(S(600), S(600), S(700)), S(0));
    }

    #[test]
    fn a_capacity_search_is_planned_by_its_steps() {
        let suite = Suite::parse(
            "t.toml",
            "name = \"t\"\narchitectures = [\"iterative\"]\nwarmup = \"1s\"\nduration = \"2s\"\n\
             objective = { percentile = 99.0, latency = \"10ms\" }\n\
             [[workload]]\nname = \"h\"\npath = \"/hello\"\n\
             [load]\nauto = { start = 1000, factor = 2, max = 16000 }\n",
        )
        .unwrap();
        let spec = &suite.runs()[0];
        // Ramp 1k..16k: 5 steps; narrowing a 2× bracket to 5 %: 4 halvings.
        assert_eq!(planned(&suite, spec), S(1) + S(4) * 9);
    }
}

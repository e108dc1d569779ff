//! Time the host took from the CPUs of a measurement ("steal").
//!
//! On a virtual machine, the host runs other guests on the physical CPUs
//! behind ours. While it does, our server and generator simply do not run:
//! a step measured then shows a server slower than it is, by as much as
//! the host took. The guest kernel counts that time per CPU (the eighth
//! number of each `cpuN` line of `/proc/stat`, in USER_HZ ticks), so the
//! runner reads it at the start and end of every measured window, and
//! every 200 ms in between for the worst moment.
//!
//! Measured on a 2-vCPU VM: a capacity search whose every step but the
//! first failed (p99 15–37 ms against 20 ms, at 500–2,000 req/s that the
//! same server sustains at 10–12 ms) ran while the host took 30–47 % of
//! both CPUs for eight seconds; the search of the same server before and
//! after it, at 1–4 % steal, found 30–48k req/s.
//!
//! Steal accrues only while a CPU wants to run, and on that VM it came
//! with wake-ups: in a busy spell of the host, a server waking 8,000 times
//! a second lost 27–31 % of the CPUs' time, two threads sleeping 50 µs at
//! a time 12 %, two spinning threads 1–3 %. So there is no cheap separate
//! test of whether the host is quiet; each measurement is judged by what
//! the host took during it.

use crate::results::Steal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the worst moment is sampled.
pub const SAMPLE: Duration = Duration::from_millis(200);

/// The share of their time the host may take from the server's or the
/// generator's CPUs over a measured window before the step is `disturbed`:
/// its figures are then not the server's alone. Chosen from 64 steps of
/// the `noisy-steps` suite (10 ms waits, p99 objective 20 ms): every
/// failure below the server's capacity had 19–47 % stolen over its
/// window, every failure at 10 % or less was at the capacity. The worst
/// [`SAMPLE`] is noisier (10 ms ticks: 5 % apart) and only reported.
pub const DISTURBED: f64 = 0.10;

/// All and stolen time of a set of CPUs since boot, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ticks {
    total: u64,
    steal: u64,
}

impl Ticks {
    /// The CPUs' counters now; `None` where `/proc/stat` has no steal
    /// column or lacks one of the CPUs.
    pub fn now(cpus: &[usize]) -> Option<Ticks> {
        parse(&std::fs::read_to_string("/proc/stat").ok()?, cpus)
    }

    /// The share of the CPUs' time stolen between `before` and `self`
    /// (`None` when no tick passed).
    pub fn share_since(&self, before: &Ticks) -> Option<f64> {
        let total = self.total.checked_sub(before.total)?;
        let steal = self.steal.checked_sub(before.steal)?;
        (total > 0).then(|| steal as f64 / total as f64)
    }
}

/// The `cpuN` lines of a `/proc/stat` text: N and the line's numbers.
fn per_cpu(stat: &str) -> impl Iterator<Item = (usize, std::str::SplitAsciiWhitespace<'_>)> {
    stat.lines().filter_map(|line| {
        let mut fields = line.split_ascii_whitespace();
        let cpu = fields.next()?.strip_prefix("cpu")?.parse().ok()?;
        Some((cpu, fields))
    })
}

/// The summed counters of `cpus` in a `/proc/stat` text.
fn parse(stat: &str, cpus: &[usize]) -> Option<Ticks> {
    if cpus.is_empty() {
        return None;
    }
    let mut sum = Ticks::default();
    let mut found = 0;
    for (_, fields) in per_cpu(stat).filter(|(cpu, _)| cpus.contains(cpu)) {
        // user nice system idle iowait irq softirq steal [guest guest_nice]:
        // guest time is already inside user time, so the first eight add up
        // to the CPU's whole time.
        let ticks: Vec<u64> = fields.take(8).map_while(|f| f.parse().ok()).collect();
        if ticks.len() < 8 {
            return None;
        }
        sum.total += ticks.iter().sum::<u64>();
        sum.steal += ticks[7];
        found += 1;
    }
    (found == cpus.len()).then_some(sum)
}

/// Every CPU the kernel counts in `/proc/stat` (online ones).
pub fn online_cpus() -> Vec<usize> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    per_cpu(&stat).map(|(cpu, _)| cpu).collect()
}

/// Watches the steal of the server's and the generator's CPUs over one
/// measured window.
pub struct Watch {
    server: Track,
    generator: Track,
    /// When the counters were last read.
    last_sample: Instant,
}

struct Track {
    cpus: Vec<usize>,
    first: Option<Ticks>,
    last: Option<Ticks>,
    worst: f64,
}

impl Track {
    fn new(cpus: &[usize]) -> Track {
        let now = Ticks::now(cpus);
        Track {
            cpus: cpus.to_vec(),
            first: now,
            last: now,
            worst: 0.0,
        }
    }

    /// Reads the counters; `worst` says whether the time since the last
    /// reading is a whole sample (a sliver of a few ticks at the end of
    /// the window would make a share of 0 or 50 % out of one tick).
    fn sample(&mut self, worst: bool) {
        let now = Ticks::now(&self.cpus);
        if let (Some(now), Some(last), true) = (now, self.last, worst) {
            if let Some(share) = now.share_since(&last) {
                self.worst = self.worst.max(share);
            }
        }
        self.last = now.or(self.last);
    }

    fn share(&self) -> Option<f64> {
        self.last?.share_since(&self.first?)
    }
}

impl Watch {
    /// Starts watching (call when the window begins).
    pub fn start(server_cpus: &[usize], generator_cpus: &[usize]) -> Watch {
        Watch {
            server: Track::new(server_cpus),
            generator: Track::new(generator_cpus),
            last_sample: Instant::now(),
        }
    }

    /// Waits until `done` says the window ended, sampling every
    /// [`SAMPLE`]. Sleeps in between: whoever sets `done` unparks this
    /// thread, so the window's end is seen at once.
    pub fn until(&mut self, done: &AtomicBool) {
        let mut next = Instant::now() + SAMPLE;
        while !done.load(Ordering::SeqCst) {
            std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
            if Instant::now() >= next {
                self.sample(true);
                next += SAMPLE;
            }
        }
        self.last_sample = next - SAMPLE;
    }

    fn sample(&mut self, worst: bool) {
        self.server.sample(worst);
        self.generator.sample(worst);
    }

    /// What the host took over the window (call when it ended); `None`
    /// where the kernel does not count steal.
    pub fn finish(mut self) -> Option<Steal> {
        self.sample(self.last_sample.elapsed() >= SAMPLE / 2);
        Some(Steal {
            server: self.server.share()?,
            generator: self.generator.share()?,
            server_worst: self.server.worst,
            generator_worst: self.generator.worst,
        })
    }
}

/// What [`watched`] saw.
pub struct Watched<T, A> {
    /// The generator's result (`Err` if it panicked).
    pub result: std::thread::Result<T>,
    /// What `mark` returned when the window began and when it ended.
    pub marks: (A, A),
    /// What the host took over the window.
    pub steal: Option<Steal>,
}

/// Runs a load generator (`generate`, given the flag it raises when its
/// measured window begins) on its own thread and watches the steal of
/// `cpus` (the server's, the generator's) over that window. `mark(true)`
/// is called the moment the window begins and `mark(false)` when the
/// generator returns (to read the server's CPU time there, say).
pub fn watched<T: Send, A>(
    cpus: (&[usize], &[usize]),
    generate: impl FnOnce(&AtomicBool) -> T + Send,
    mut mark: impl FnMut(bool) -> A,
) -> Watched<T, A> {
    let measuring = AtomicBool::new(false);
    let finished = AtomicBool::new(false);
    let watcher = std::thread::current();
    std::thread::scope(|s| {
        let generator = s.spawn(|| {
            let result = generate(&measuring);
            finished.store(true, Ordering::SeqCst);
            watcher.unpark();
            result
        });
        while !measuring.load(Ordering::SeqCst) && !finished.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let start = mark(true);
        let mut watch = Watch::start(cpus.0, cpus.1);
        watch.until(&finished);
        let end = mark(false);
        let steal = watch.finish();
        Watched {
            result: generator.join(),
            marks: (start, end),
            steal,
        }
    })
}

impl Steal {
    /// The larger of the two sides' shares over the window: what the
    /// judgements use.
    pub fn share(&self) -> f64 {
        self.server.max(self.generator)
    }

    /// Whether the host took enough to make the step's figures doubtful.
    pub fn disturbed(&self) -> bool {
        self.share() >= DISTURBED
    }

    /// Whether the host may be why a search step failed: it disturbed the
    /// step, and the step fell short of its offer (`offered`, achieving
    /// `achieved`) by no more than what the host took can explain. A
    /// server that achieved 60k of 128k offered while the host took 20 %
    /// was overloaded whatever the host did: that failure is believed.
    pub fn may_explain(&self, offered: f64, achieved: f64, keep_up: f64) -> bool {
        let left = 1.0 - self.share();
        self.disturbed() && achieved >= keep_up * offered * left
    }

    /// A sentence for a run's notes.
    pub fn note(&self) -> String {
        self.note_naming("the server's CPUs")
    }

    /// The same, naming the first set of CPUs `server` ("the machine's
    /// CPUs" where the server's are not known).
    pub fn note_naming(&self, server: &str) -> String {
        format!(
            "host interference: the virtual machine's host took {:.0} % of {server} and {:.0} % of the generator's during the measured window (at worst {:.0} % and {:.0} % over {} ms): the figures are not the server's alone; measure again when the host is quieter",
            self.server * 100.0,
            self.generator * 100.0,
            self.server_worst * 100.0,
            self.generator_worst * 100.0,
            SAMPLE.as_millis()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  6314 0 2251 18438 151 0 22 147 0 0
cpu0 2948 0 1037 9567 22 0 7 72 0 0
cpu1 3366 0 1213 8870 128 0 14 74 0 0
intr 1 2 3
ctxt 99
";

    #[test]
    fn reads_the_named_cpus_and_only_them() {
        let one = parse(STAT, &[1]).unwrap();
        assert_eq!(one.steal, 74);
        assert_eq!(one.total, 3366 + 1213 + 8870 + 128 + 14 + 74);
        let both = parse(STAT, &[0, 1]).unwrap();
        assert_eq!(both.steal, 72 + 74);
        assert_eq!(parse(STAT, &[2]), None, "a CPU the file lacks");
        assert_eq!(parse(STAT, &[]), None);
        assert_eq!(parse("cpu0 1 2 3 4\n", &[0]), None, "no steal column");
    }

    #[test]
    fn the_share_is_stolen_over_all_ticks_between_two_readings() {
        let a = Ticks {
            total: 1000,
            steal: 10,
        };
        let b = Ticks {
            total: 1200,
            steal: 60,
        };
        assert_eq!(b.share_since(&a), Some(0.25));
        assert_eq!(a.share_since(&a), None, "no tick passed");
        assert_eq!(a.share_since(&b), None, "counters never go back");
    }

    #[test]
    fn a_step_is_disturbed_by_either_sides_share_over_the_window() {
        let quiet = Steal {
            server: 0.02,
            generator: 0.01,
            server_worst: 0.05,
            generator_worst: 0.30,
        };
        assert!(!quiet.disturbed(), "one noisy sample is not enough");
        let generator = Steal {
            generator: 0.12,
            ..quiet
        };
        assert!(generator.disturbed(), "the generator's CPUs count too");
        assert!(generator.note().contains("12 % of the generator's"));
        let server = Steal {
            server: 0.10,
            ..quiet
        };
        assert!(server.disturbed());
    }

    #[test]
    fn overload_beyond_what_the_host_took_is_not_its_doing() {
        let took = |share: f64| Steal {
            server: share,
            generator: share / 2.0,
            server_worst: share,
            generator_worst: share,
        };
        // Kept up, or fell short by about the host's share: may be it.
        assert!(took(0.20).may_explain(8_000.0, 8_000.0, 0.95));
        assert!(took(0.20).may_explain(10_000.0, 7_700.0, 0.95));
        // Half the offer with a fifth of the CPUs taken: overload.
        assert!(!took(0.20).may_explain(128_000.0, 60_000.0, 0.95));
        // Not disturbed: never the host's doing.
        assert!(!took(0.05).may_explain(8_000.0, 8_000.0, 0.95));
    }

    #[test]
    fn this_machine_is_read_when_it_counts_steal() {
        // Where the kernel has the column (every Linux since 2.6.11), a
        // window gives a share between 0 and 1.
        let cpus = super::super::placement::allowed_cpus();
        let Some(_) = Ticks::now(&cpus) else {
            panic!("/proc/stat has no steal column for CPUs {cpus:?}");
        };
        let mut watch = Watch::start(&cpus, &cpus);
        let ended = AtomicBool::new(false);
        let watcher = std::thread::current();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(450));
                ended.store(true, Ordering::SeqCst);
                watcher.unpark();
            });
            watch.until(&ended);
        });
        let steal = watch.finish().expect("ticks passed in 450 ms");
        assert!((0.0..=1.0).contains(&steal.server), "{steal:?}");
        assert!(steal.server_worst >= 0.0 && steal.server_worst <= 1.0);
    }
}

//! A thread that samples a cgroup's memory and task count where the kernel
//! keeps no peak.

/// Samples memory use and task count where the kernel keeps no peak, and
/// the split of memory into the tasks' own and page cache (no kernel
/// keeps a peak of those), every [`SAMPLE_EVERY`], keeping the maxima.
pub struct Sampler {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<Sampled>>,
}

/// The maxima a [`Sampler`] saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sampled {
    /// Memory use (when sampled).
    pub memory: Option<u64>,
    /// Tasks (when sampled).
    pub tasks: Option<u64>,
    /// The tasks' own memory.
    pub own: Option<u64>,
    /// Page cache.
    pub cache: Option<u64>,
}

/// Sampling interval: short spikes between samples are missed (hence the
/// `*_sampled` flags).
pub const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

impl Sampler {
    /// Starts sampling `cgroup` (memory use only if `memory`, tasks only
    /// if `tasks`; the memory split always).
    pub fn start(
        cgroup: std::sync::Arc<super::Cgroup>,
        memory: bool,
        tasks: bool,
    ) -> std::io::Result<Sampler> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sampler".into())
            .spawn(move || {
                let mut max = Sampled::default();
                loop {
                    let (m, t) = cgroup.current();
                    if memory {
                        max.memory = max.memory.max(m);
                    }
                    if tasks {
                        max.tasks = max.tasks.max(t);
                    }
                    if let Some((own, cache)) = cgroup.memory_split() {
                        max.own = max.own.max(Some(own));
                        max.cache = max.cache.max(Some(cache));
                    }
                    match stopped.recv_timeout(SAMPLE_EVERY) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return max,
                    }
                }
            })?;
        Ok(Sampler {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops and returns the maxima it saw.
    pub fn stop(&mut self) -> Sampled {
        let _ = self.stop.send(());
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop();
    }
}

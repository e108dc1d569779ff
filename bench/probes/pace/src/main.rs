//! Times a few fixed pieces of work on each CPU named on the command line
//! and prints one line of `name=value` pairs (nanoseconds per operation,
//! the best of `REPS` tries so that one interruption does not count):
//!
//! - `alu<N>`: one step of an integer hash (the core's speed and its
//!   sharing with a sibling thread);
//! - `mem<N>`: one load of a random walk over 16 MiB (cache and memory);
//! - `sys<N>`: one `getppid` system call (entry and exit);
//! - `tcp<N>`: 100 bytes written to a loopback TCP connection and read
//!   back at its other end on the same thread (the network stack a
//!   request crosses, with no sleep);
//! - `wake<N>`: one round trip with a thread on the first CPU, over Unix
//!   sockets (a sleep and a wake-up on each side: the cost a server that
//!   is not saturated pays per request); not for the first CPU itself;
//! - `sleepcpu<N>` and `late<N>`: the CPU time a 50 µs sleep costs, and how
//!   late it wakes.
//!
//! Usage: pace [CPU...] (default 0 1). Environment: REPS (default 3).
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read
    // and write that set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
            panic!(
                "cannot run on CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Nanoseconds per operation of `ops` runs of `f`.
fn per_op(ops: u32, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..ops {
        f();
    }
    t.elapsed().as_nanos() as f64 / f64::from(ops)
}

struct Work {
    walk: Vec<u32>,
    tcp: (TcpStream, TcpStream),
    echo: UnixStream,
}

impl Work {
    fn new(echo_cpu: usize) -> Work {
        // A single cycle through every slot, in random order (Sattolo).
        let n = 4 << 20;
        let mut walk: Vec<u32> = (0..n as u32).collect();
        let mut r: u64 = 12345;
        for i in (1..n).rev() {
            r = r.wrapping_mul(6364136223846793005).wrapping_add(1);
            walk.swap(i, (r >> 33) as usize % i);
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let a = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (b, _) = listener.accept().expect("accept");
        a.set_nodelay(true).unwrap();
        let (echo, mut far) = UnixStream::pair().expect("socket pair");
        std::thread::spawn(move || {
            pin(echo_cpu);
            let mut byte = [0u8];
            while far.read_exact(&mut byte).is_ok() && far.write_all(&byte).is_ok() {}
        });
        Work {
            walk,
            tcp: (a, b),
            echo,
        }
    }

    /// The figures of one try on the current CPU.
    fn once(&mut self, wake: bool) -> Vec<(&'static str, f64)> {
        let mut x: u64 = 88172645463325252;
        let alu = per_op(2_000_000, || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x = x.wrapping_mul(0x9E3779B97F4A7C15);
        });
        std::hint::black_box(x);
        let mut at = 0u32;
        let walk = &self.walk;
        let mem = per_op(200_000, || at = walk[at as usize]);
        std::hint::black_box(at);
        // SAFETY: getppid has no arguments and cannot fail.
        let sys = per_op(20_000, || {
            std::hint::black_box(unsafe { libc::getppid() });
        });
        let (a, b) = (&mut self.tcp.0, &mut self.tcp.1);
        let mut buf = [0u8; 256];
        let tcp = per_op(5_000, || {
            a.write_all(&buf[..100]).unwrap();
            let mut got = 0;
            while got < 100 {
                got += b.read(&mut buf[got..]).unwrap();
            }
        });
        let mut figures = vec![("alu", alu), ("mem", mem), ("sys", sys), ("tcp", tcp)];
        if wake {
            let echo = &mut self.echo;
            let mut byte = [1u8];
            figures.push((
                "wake",
                per_op(1_000, || {
                    echo.write_all(&byte).unwrap();
                    echo.read_exact(&mut byte).unwrap();
                }),
            ));
        }
        let (cpu, wall) = (thread_cpu(), Instant::now());
        let nap = Duration::from_micros(50);
        for _ in 0..300 {
            std::thread::sleep(nap);
        }
        figures.push(("sleepcpu", (thread_cpu() - cpu).as_nanos() as f64 / 300.0));
        figures.push(("late", wall.elapsed().as_nanos() as f64 / 300.0 - 50_000.0));
        figures
    }
}

fn main() {
    let cpus: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .unwrap_or_else(|_| panic!("not a CPU number: {a}"))
        })
        .collect();
    let cpus = if cpus.is_empty() { vec![0, 1] } else { cpus };
    let reps: u32 = std::env::var("REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let mut work = Work::new(cpus[0]);
    let mut line = Vec::new();
    for (i, &cpu) in cpus.iter().enumerate() {
        pin(cpu);
        let mut best: Vec<(&str, f64)> = Vec::new();
        for _ in 0..reps.max(1) {
            let got = work.once(i > 0);
            if best.is_empty() {
                best = got;
            } else {
                for (b, g) in best.iter_mut().zip(got) {
                    b.1 = b.1.min(g.1);
                }
            }
        }
        line.extend(best.into_iter().map(|(k, v)| format!("{k}{cpu}={v:.1}")));
    }
    println!("{}", line.join(" "));
}

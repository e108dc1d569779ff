//! Who made a sandbox object. Every cgroup, network namespace, veth and
//! run folder carries its maker's pid *and* start time (`<pid>s<ticks>`) in
//! its name, so that leftovers of a dead runner are told apart from those
//! of a live one, even when a new process got the dead one's pid.

use super::PREFIX;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Whether a process with this pid exists (EPERM: exists, not ours).
fn alive(pid: i32) -> bool {
    pid > 0
        && !matches!(
            kill(Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
}

/// When process `pid` started, in clock ticks since boot (`/proc/<pid>/stat`
/// field 22); `None` if there is no such process.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "pid (comm)", whose comm may hold anything: state is field 3.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The process that made a sandbox object, as named in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: i32,
    /// Its start time; `None` in names that carry only a pid.
    pub start: Option<u64>,
}

impl Owner {
    /// This process.
    pub fn me() -> Owner {
        let pid = std::process::id() as i32;
        Owner {
            pid,
            start: start_time(pid),
        }
    }

    /// How names carry it: `<pid>s<start>`, or `<pid>`.
    pub fn tag(&self) -> String {
        match self.start {
            Some(start) => format!("{}s{start}", self.pid),
            None => self.pid.to_string(),
        }
    }

    pub(crate) fn parse(tag: &str) -> Option<Owner> {
        let (pid, start) = match tag.split_once('s') {
            Some((pid, start)) => (pid, Some(start.parse().ok()?)),
            None => (tag, None),
        };
        Some(Owner {
            pid: pid.parse().ok()?,
            start,
        })
    }

    /// Whether the owner has exited: its pid is free, or now belongs to a
    /// process that started at another time.
    pub fn gone(&self) -> bool {
        !alive(self.pid) || self.start.is_some_and(|s| start_time(self.pid) != Some(s))
    }
}

/// The owner in `serverlab-<hint>-<owner>-<n>` or `serverlab-<owner>-<n>`
/// (hints may contain dashes).
pub fn owner_of_cgroup(name: &str) -> Option<Owner> {
    let rest = name.strip_prefix(PREFIX)?.strip_prefix('-')?;
    let mut parts = rest.rsplit('-');
    parts.next()?.parse::<u32>().ok()?;
    Owner::parse(parts.next()?)
}

/// The owner in a veth name `slv<pid hex>x<n>{h,c}` (a pid only).
pub fn owner_of_veth(name: &str) -> Option<Owner> {
    let rest = name.strip_prefix("slv")?;
    let (hex, tail) = rest.split_once('x')?;
    let n = tail.strip_suffix('h').or_else(|| tail.strip_suffix('c'))?;
    n.parse::<u32>().ok()?;
    Some(Owner {
        pid: i32::from_str_radix(hex, 16).ok()?,
        start: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_parsed_from_names() {
        let pid = |pid| Owner { pid, start: None };
        assert_eq!(owner_of_cgroup("serverlab-web-1234-7"), Some(pid(1234)));
        assert_eq!(owner_of_cgroup("serverlab-my-app-99-0"), Some(pid(99)));
        assert_eq!(
            owner_of_cgroup("serverlab-my-app-99s4242-0"),
            Some(Owner {
                pid: 99,
                start: Some(4242)
            })
        );
        assert_eq!(owner_of_cgroup("serverlab-99s-0"), None);
        assert_eq!(owner_of_cgroup("serverlab-probe"), None);
        assert_eq!(owner_of_cgroup("system.slice"), None);
        assert_eq!(owner_of_veth("slv4d2x3h"), Some(pid(0x4d2)));
        assert_eq!(owner_of_veth("slvzzx3h"), None);
        assert_eq!(owner_of_veth("eth0"), None);
        let me = Owner::me();
        assert!(me.start.is_some());
        assert_eq!(Owner::parse(&me.tag()), Some(me));
    }

    #[test]
    fn a_reused_pid_does_not_protect_leftovers() {
        let me = Owner::me();
        assert!(!me.gone());
        // The same pid, started at another time: the owner has exited and
        // this process merely got its pid.
        let earlier = Owner {
            start: me.start.map(|s| s.wrapping_sub(1)),
            ..me
        };
        assert!(earlier.gone());
        assert!(Owner {
            pid: 4194305,
            start: None
        }
        .gone());
    }
}

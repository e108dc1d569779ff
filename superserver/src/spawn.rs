//! Starting a service's process the way `posix_spawn` does: `clone` with
//! `CLONE_VM | CLONE_VFORK` (the child runs on a stack of its own in the
//! parent's memory, and the parent waits until it has exec'd or failed),
//! so no address space is copied only to be thrown away by `execve` — a
//! copy `perf` showed to be most of a plain `fork`'s cost here. In the child
//! only async-signal-safe calls (`dup2`, `sigprocmask`, `prctl`, `execve`),
//! with everything it needs — argv, environment, descriptors — prepared
//! before; it never allocates.
//!
//! What the child gets:
//! - `nowait`: the connection as descriptors 0 and 1 (stderr stays the
//!   super server's), `REMOTE_ADDR` and `REMOTE_PORT`;
//! - `wait`: the service's listening sockets as descriptors 3, 4, … with
//!   systemd's `LISTEN_FDS=<how many>`, `LISTEN_FDNAMES=<service>` once
//!   per socket (colon-separated) and `LISTEN_PID=<its own pid>` (written
//!   into the prepared environment after the fork, when the pid is known),
//!   standard input from `/dev/null`;
//! - the super server's environment without its own `LISTEN_*`/`REMOTE_*`,
//!   plus the service's `env`; no blocked signal and `SIGPIPE` at its
//!   default, whatever the super server had;
//! - death with the super server (`PR_SET_PDEATHSIG`), so that killing the
//!   super server outright leaves no service running.
//!
//! A failed `execve` is known when the parent resumes: the child leaves its
//! `errno` in the shared memory and exits with 127.

use crate::config::Command;
use nix::sched::CloneFlags;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI32, Ordering};

/// What the new process is handed.
#[derive(Debug, Clone, Copy)]
pub enum Hand<'a> {
    /// A client connection, as stdin and stdout.
    Connection(RawFd),
    /// Listening sockets, as descriptors 3, 4, … (each named for
    /// `LISTEN_FDNAMES`).
    Listeners(&'a [RawFd]),
}

/// A started process.
#[derive(Debug)]
pub struct Spawned {
    pub pid: libc::pid_t,
    /// Why its `execve` failed, if it did (the process then exits, 127).
    pub exec_error: Option<io::Error>,
}

/// The child's stack: it only sets up descriptors and execs.
const CHILD_STACK: usize = 64 * 1024;

/// Where `LISTEN_PID=` is written in the child: room for any pid.
const PID_ROOM: usize = 20;

/// Starts `command` with `hand`, adding `extra` to its environment
/// (`REMOTE_ADDR` and the like) and naming a handed listener `name`.
pub fn spawn(
    command: &Command,
    hand: Hand,
    name: &str,
    extra: &[(&str, String)],
) -> io::Result<Spawned> {
    let cstr = |b: &[u8]| {
        CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"))
    };
    let path = cstr(command.path.as_os_str().as_bytes())?;
    let argv: Vec<CString> = command
        .argv
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<io::Result<_>>()?;
    let mut env: Vec<CString> = Vec::new();
    for (k, v) in std::env::vars_os() {
        let key = k.as_bytes();
        if key.starts_with(b"LISTEN_")
            || key.starts_with(b"REMOTE_")
            || command.env.contains_key(&*k.to_string_lossy())
        {
            continue;
        }
        env.push(cstr(&[key, b"=", v.as_bytes()].concat())?);
    }
    for (k, v) in command
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(extra.iter().map(|(k, v)| (*k, v.as_str())))
    {
        env.push(cstr(
            &[k.as_bytes(), b"=", OsStr::new(v).as_bytes()].concat(),
        )?);
    }
    // LISTEN_PID's text is filled in by the child; the buffer is made here.
    let mut pid_entry: Vec<u8> = b"LISTEN_PID=".to_vec();
    let pid_at = pid_entry.len();
    pid_entry.resize(pid_at + PID_ROOM + 1, 0);
    // A handed listener goes to descriptor 3 + k. Copies above every such
    // slot, made here, are what the child moves there (`dup2` clears their
    // close-on-exec), so that no handed descriptor overwrites another
    // before it is moved; the copies close when this function returns.
    let lifted: Vec<std::os::fd::OwnedFd> = match hand {
        Hand::Listeners(fds) => fds
            .iter()
            .map(|&fd| lift_above(fd, 3 + fds.len() as RawFd))
            .collect::<io::Result<_>>()?,
        Hand::Connection(_) => Vec::new(),
    };
    let lifted_fds: Vec<RawFd> = lifted.iter().map(|f| f.as_raw_fd()).collect();
    if let Hand::Listeners(fds) = hand {
        env.push(cstr(format!("LISTEN_FDS={}", fds.len()).as_bytes())?);
        let names = vec![name; fds.len()].join(":");
        env.push(cstr(format!("LISTEN_FDNAMES={names}").as_bytes())?);
    }
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    if let Hand::Listeners(_) = hand {
        env_ptrs.push(pid_entry.as_ptr().cast());
    }
    env_ptrs.push(std::ptr::null());
    let null = match hand {
        Hand::Listeners(fds) => Some(lift_above(
            std::fs::File::open("/dev/null")?.as_raw_fd(),
            3 + fds.len() as RawFd,
        )?),
        Hand::Connection(_) => None,
    };
    let parent = std::process::id() as libc::pid_t;
    let pid_text = SendPtr(pid_entry.as_mut_ptr().wrapping_add(pid_at));
    let failed = AtomicI32::new(0);
    let null_fd = null.as_ref().map(|f| f.as_raw_fd());
    let mut stack = vec![0u8; CHILD_STACK];
    let run = Box::new(|| {
        // SAFETY: in the child, on its own stack, in the parent's memory
        // (which the suspended parent does not touch); see the module doc.
        unsafe {
            child(
                hand,
                &lifted_fds,
                null_fd,
                parent,
                pid_text.0,
                &path,
                &argv_ptrs,
                &env_ptrs,
                &failed,
            )
        }
    });
    // SAFETY: CLONE_VFORK suspends this thread until the child has exec'd
    // or exited, so everything the closure borrows outlives its use.
    let pid = unsafe {
        nix::sched::clone(
            run,
            &mut stack,
            CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
            Some(libc::SIGCHLD),
        )
    }?;
    let errno = failed.load(Ordering::SeqCst);
    Ok(Spawned {
        pid: pid.as_raw(),
        exec_error: (errno != 0).then(|| io::Error::from_raw_os_error(errno)),
    })
}

/// A close-on-exec copy of `fd` numbered `min` or above.
fn lift_above(fd: RawFd, min: RawFd) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
    // SAFETY: `fd` is open for the call (the caller holds it).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let copy = nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min))?;
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// A pointer the child may write through (the parent is suspended).
#[derive(Clone, Copy)]
struct SendPtr(*mut u8);

/// The child's side: descriptors, signals, death signal, exec. Never
/// returns.
#[allow(clippy::too_many_arguments)]
unsafe fn child(
    hand: Hand,
    lifted: &[RawFd],
    null: Option<RawFd>,
    parent: libc::pid_t,
    pid_text: *mut u8,
    path: &CString,
    argv: &[*const libc::c_char],
    env: &[*const libc::c_char],
    failed: &AtomicI32,
) -> ! {
    let fail = || -> ! {
        failed.store((*libc::__errno_location()).max(1), Ordering::SeqCst);
        libc::_exit(127)
    };
    // Nothing we need may sit where the handed descriptors go.
    let lift = |fd: RawFd| -> RawFd {
        if fd <= 3 {
            libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 4)
        } else {
            fd
        }
    };
    match hand {
        Hand::Connection(fd) => {
            let fd = lift(fd);
            if fd < 0 || libc::dup2(fd, 0) < 0 || libc::dup2(fd, 1) < 0 {
                fail()
            }
        }
        Hand::Listeners(_) => {
            // Every lifted copy and `null` are above the handed slots.
            for (k, &fd) in lifted.iter().enumerate() {
                if libc::dup2(fd, 3 + k as RawFd) < 0 {
                    fail()
                }
            }
            if !null.is_some_and(|null| libc::dup2(null, 0) >= 0) {
                fail()
            }
            // LISTEN_PID: this process's pid, in the prepared buffer.
            let mut digits = [0u8; PID_ROOM];
            let mut n = libc::getpid() as u64;
            let mut len = 0;
            loop {
                digits[len] = b'0' + (n % 10) as u8;
                len += 1;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            for i in 0..len {
                *pid_text.add(i) = digits[len - 1 - i];
            }
            *pid_text.add(len) = 0;
        }
    }
    let mut none: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut none);
    libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    if libc::getppid() != parent {
        // The super server died before the death signal was set.
        libc::_exit(1);
    }
    libc::execve(path.as_ptr(), argv.as_ptr(), env.as_ptr());
    fail()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::{Read, Write};

    fn reap(pid: libc::pid_t) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        status
    }

    /// A nowait child talks to the client on stdin/stdout and sees its
    /// variables; an exec that fails is reported with its errno.
    #[test]
    fn a_child_gets_the_connection_and_its_environment() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (conn, _) = listener.accept().unwrap();
        let command = Command {
            path: "/bin/sh".into(),
            argv: vec![
                "sh".into(),
                "-c".into(),
                "read x; echo \"$x $GREETING $REMOTE_PORT\"".into(),
            ],
            env: BTreeMap::from([("GREETING".into(), "hi".into())]),
        };
        let s = spawn(
            &command,
            Hand::Connection(conn.as_raw_fd()),
            "t",
            &[("REMOTE_PORT", "42".into())],
        )
        .unwrap();
        drop(conn);
        assert!(s.exec_error.is_none());
        client.write_all(b"ping\n").unwrap();
        let mut out = String::new();
        client.read_to_string(&mut out).unwrap();
        assert_eq!(out, "ping hi 42\n");
        assert_eq!(reap(s.pid), 0);

        let missing = Command {
            path: "/nonexistent/program".into(),
            argv: vec!["program".into()],
            env: BTreeMap::new(),
        };
        let s = spawn(&missing, Hand::Connection(client.as_raw_fd()), "t", &[]).unwrap();
        let err = s.exec_error.expect("the exec fails");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
        assert_ne!(reap(s.pid), 0);
    }

    /// Two listeners go to descriptors 3 and 4, in order, whatever numbers
    /// they had (the second is given the lowest free number from 3, where
    /// the first may have to go), with `LISTEN_FDS=2` and a name for each.
    #[test]
    fn a_wait_child_gets_every_listener_in_order() {
        use std::os::fd::{FromRawFd, OwnedFd};
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // The lowest free number from 3 for `b` (3 itself unless the test
        // harness holds it).
        let b_fd = nix::fcntl::fcntl(&b, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)).unwrap();
        // SAFETY: a new descriptor that nothing else owns.
        let b_copy = unsafe { OwnedFd::from_raw_fd(b_fd) };
        let out =
            std::env::temp_dir().join(format!("serverlab-test-spawn2-{}", std::process::id()));
        // Which socket each handed descriptor is (its inode, from /proc).
        let script = "for fd in 3 4; do readlink /proc/$$/fd/$fd; done > \"$0\"; \
                      echo \"$LISTEN_FDS $LISTEN_FDNAMES\" >> \"$0\"";
        let command = Command {
            path: "/bin/sh".into(),
            argv: vec![
                "sh".into(),
                "-c".into(),
                script.into(),
                out.display().to_string(),
            ],
            env: BTreeMap::new(),
        };
        let s = spawn(
            &command,
            Hand::Listeners(&[a.as_raw_fd(), b_copy.as_raw_fd()]),
            "web",
            &[],
        )
        .unwrap();
        assert!(s.exec_error.is_none());
        assert_eq!(reap(s.pid), 0);
        let text = std::fs::read_to_string(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let inode = |fd: RawFd| std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        assert_eq!(lines[0], inode(a.as_raw_fd()).to_str().unwrap(), "3 is a");
        assert_eq!(lines[1], inode(b.as_raw_fd()).to_str().unwrap(), "4 is b");
        assert_eq!(lines[2], "2 web:web");
    }

    /// A wait child gets the listener as descriptor 3 with LISTEN_PID equal
    /// to its own pid.
    #[test]
    fn a_wait_child_gets_the_listener_and_its_own_pid() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let out = std::env::temp_dir().join(format!("serverlab-test-spawn-{}", std::process::id()));
        let command = Command {
            path: "/bin/sh".into(),
            argv: vec![
                "sh".into(),
                "-c".into(),
                "echo \"$LISTEN_PID $$ $LISTEN_FDS $LISTEN_FDNAMES\" > \"$0\"; [ -e /proc/$$/fd/3 ]".into(),
                out.display().to_string(),
            ],
            env: BTreeMap::new(),
        };
        let s = spawn(
            &command,
            Hand::Listeners(&[listener.as_raw_fd()]),
            "web",
            &[],
        )
        .unwrap();
        assert!(s.exec_error.is_none());
        assert_eq!(reap(s.pid), 0, "descriptor 3 is open in the child");
        let text = std::fs::read_to_string(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        let words: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(words[0], words[1], "LISTEN_PID is the child's pid: {text}");
        assert_eq!(&words[2..], ["1", "web"]);
    }
}

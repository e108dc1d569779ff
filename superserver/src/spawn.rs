//! Starting a service's process: `fork`, then in the child only
//! async-signal-safe calls (`dup2`, `sigprocmask`, `prctl`, `execve`), with
//! everything it needs — argv, environment, descriptors — prepared before
//! the fork.
//!
//! What the child gets:
//! - `nowait`: the connection as descriptors 0 and 1 (stderr stays the
//!   super server's), `REMOTE_ADDR` and `REMOTE_PORT`;
//! - `wait`: the listening socket as descriptor 3 with systemd's
//!   `LISTEN_FDS=1`, `LISTEN_FDNAMES=<service>` and `LISTEN_PID=<its own
//!   pid>` (written into the prepared environment after the fork, when the
//!   pid is known), standard input from `/dev/null`;
//! - the super server's environment without its own `LISTEN_*`/`REMOTE_*`,
//!   plus the service's `env`; no blocked signal and `SIGPIPE` at its
//!   default, whatever the super server had;
//! - death with the super server (`PR_SET_PDEATHSIG`), so that killing the
//!   super server outright leaves no service running.
//!
//! A failed `execve` is reported through a close-on-exec pipe: the parent
//! reads nothing if the exec happened, the `errno` otherwise — without
//! waiting for it (the read end is polled with everything else).

use crate::config::Command;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// What the new process is handed.
#[derive(Debug, Clone, Copy)]
pub enum Hand {
    /// A client connection, as stdin and stdout.
    Connection(RawFd),
    /// A listening socket, as descriptor 3 (named for `LISTEN_FDNAMES`).
    Listener(RawFd),
}

/// A started process.
#[derive(Debug)]
pub struct Spawned {
    pub pid: libc::pid_t,
    /// Readable once the exec happened (end of file) or failed (an errno).
    pub report: OwnedFd,
}

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
    if let Hand::Listener(_) = hand {
        env.push(cstr(b"LISTEN_FDS=1")?);
        env.push(cstr(format!("LISTEN_FDNAMES={name}").as_bytes())?);
    }
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    if let Hand::Listener(_) = hand {
        env_ptrs.push(pid_entry.as_ptr().cast());
    }
    env_ptrs.push(std::ptr::null());
    let null = match hand {
        Hand::Listener(_) => Some(std::fs::File::open("/dev/null")?),
        Hand::Connection(_) => None,
    };
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let parent = std::process::id() as libc::pid_t;
    let pid_buf = pid_entry.as_mut_ptr();
    // SAFETY: the child runs only async-signal-safe calls on memory
    // prepared above, then execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child; see the module doc.
        unsafe {
            child(
                hand,
                null.as_ref().map(|f| f.as_raw_fd()),
                write.as_raw_fd(),
                parent,
                pid_buf.add(pid_at),
                &path,
                &argv_ptrs,
                &env_ptrs,
            )
        }
    }
    drop(write);
    nix::fcntl::fcntl(
        &read,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    Ok(Spawned { pid, report: read })
}

/// The child's side: descriptors, signals, death signal, exec. Never
/// returns.
#[allow(clippy::too_many_arguments)]
unsafe fn child(
    hand: Hand,
    null: Option<RawFd>,
    mut report: RawFd,
    parent: libc::pid_t,
    pid_text: *mut u8,
    path: &CString,
    argv: &[*const libc::c_char],
    env: &[*const libc::c_char],
) -> ! {
    let fail = |report: RawFd| -> ! {
        let errno = *libc::__errno_location();
        let bytes = errno.to_ne_bytes();
        libc::write(report, bytes.as_ptr().cast(), bytes.len());
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
    report = lift(report);
    match hand {
        Hand::Connection(fd) => {
            let fd = lift(fd);
            if fd < 0 || libc::dup2(fd, 0) < 0 || libc::dup2(fd, 1) < 0 {
                fail(report)
            }
        }
        Hand::Listener(fd) => {
            let fd = lift(fd);
            let null = null.map_or(-1, lift);
            if fd < 0 || null < 0 || libc::dup2(fd, 3) < 0 || libc::dup2(null, 0) < 0 {
                fail(report)
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
    fail(report)
}

/// What a spawn's report pipe says: `None` while undecided, `Some(Ok)` if
/// the exec happened, `Some(Err)` with the child's errno if it failed.
pub fn read_report(report: &OwnedFd) -> Option<io::Result<()>> {
    let mut buf = [0u8; 4];
    match nix::unistd::read(report, &mut buf) {
        Ok(0) => Some(Ok(())),
        Ok(4) => Some(Err(io::Error::from_raw_os_error(i32::from_ne_bytes(buf)))),
        Ok(_) => Some(Err(io::Error::other("a short report from the child"))),
        Err(nix::errno::Errno::EAGAIN) => None,
        Err(e) => Some(Err(e.into())),
    }
}

/// Duplicates `fd` as an owned descriptor (close-on-exec).
pub fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on a valid descriptor; the new one is ours alone.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
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

    fn wait_report(s: &Spawned) -> io::Result<()> {
        loop {
            if let Some(r) = read_report(&s.report) {
                return r;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
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
        wait_report(&s).unwrap();
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
        let err = wait_report(&s).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
        assert_ne!(reap(s.pid), 0);
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
        let s = spawn(&command, Hand::Listener(listener.as_raw_fd()), "web", &[]).unwrap();
        wait_report(&s).unwrap();
        assert_eq!(reap(s.pid), 0, "descriptor 3 is open in the child");
        let text = std::fs::read_to_string(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        let words: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(words[0], words[1], "LISTEN_PID is the child's pid: {text}");
        assert_eq!(&words[2..], ["1", "web"]);
    }
}

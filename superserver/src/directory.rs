//! The directory (a port mapper): servers register a name and an address,
//! clients look names up. Registrations are soft state: each has a time to
//! live and is gone when it runs out, unless renewed, so a server that dies
//! disappears by itself ([`Registration`] renews at a third of the TTL).
//!
//! The protocol is text lines over TCP (try it with `nc`): each request is
//! one line, each answer begins with `OK` or `ERR`.
//!
//! ```text
//! REGISTER <name> <host:port> <ttl seconds> [<secret>]   OK | ERR <why>
//! UNREGISTER <name> [<secret>]                           OK | ERR <why>
//! LOOKUP <name>                                          OK <host:port> | ERR not found
//! LIST                                                   OK <n>, then n lines "<name> <host:port> <seconds left>"
//! ```
//!
//! The port mapper's known weakness is that anyone may register anything;
//! here only a client on this machine (loopback) may register or
//! unregister, or one that gives the shared secret (`--secret-file`).
//! Lines are at most [`MAX_LINE`] bytes, names 1-64 of `[A-Za-z0-9._-]`,
//! TTLs 1-3600 s, the table at most `max_entries` names; anything else is
//! an `ERR` answer, never a crash. A connection idle for [`IDLE`] is
//! closed; at most [`MAX_CLIENTS`] are served at once.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest request line, in bytes.
pub const MAX_LINE: usize = 512;
/// A client connection idle this long is closed.
pub const IDLE: Duration = Duration::from_secs(10);
/// Most client connections served at once.
pub const MAX_CLIENTS: usize = 64;
/// Longest time to live.
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// The table and its rules.
pub struct Directory {
    entries: Mutex<HashMap<String, (SocketAddr, Instant)>>,
    max_entries: usize,
    secret: Option<String>,
}

impl Directory {
    /// An empty table of at most `max_entries` names; `secret` lets other
    /// machines register.
    pub fn new(max_entries: usize, secret: Option<String>) -> Directory {
        Directory {
            entries: Mutex::new(HashMap::new()),
            max_entries,
            secret,
        }
    }

    /// The answer to one request line from `peer`.
    pub fn answer(&self, line: &str, peer: IpAddr, now: Instant) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (_, until)| *until > now);
        let allowed = |secret: Option<&&str>| {
            peer.is_loopback()
                || matches!((&self.secret, secret), (Some(s), Some(given)) if s == given)
        };
        match words.as_slice() {
            [cmd, name, addr, ttl, rest @ ..] if cmd.eq_ignore_ascii_case("REGISTER") && rest.len() <= 1 => {
                if !allowed(rest.first()) {
                    return "ERR registering needs this machine or the secret".into();
                }
                if let Err(e) = check_name(name) {
                    return format!("ERR {e}");
                }
                let Ok(addr) = addr.parse::<SocketAddr>() else {
                    return format!("ERR {addr:?} is not host:port");
                };
                let ttl = match ttl.parse::<u64>().map(Duration::from_secs) {
                    Ok(t) if !t.is_zero() && t <= MAX_TTL => t,
                    _ => return format!("ERR ttl is 1 to {} seconds", MAX_TTL.as_secs()),
                };
                if !entries.contains_key(*name) && entries.len() >= self.max_entries {
                    return format!("ERR the table is full ({} names)", self.max_entries);
                }
                entries.insert(name.to_string(), (addr, now + ttl));
                "OK".into()
            }
            [cmd, name, rest @ ..] if cmd.eq_ignore_ascii_case("UNREGISTER") && rest.len() <= 1 => {
                if !allowed(rest.first()) {
                    return "ERR unregistering needs this machine or the secret".into();
                }
                match entries.remove(*name) {
                    Some(_) => "OK".into(),
                    None => "ERR not registered".into(),
                }
            }
            [cmd, name] if cmd.eq_ignore_ascii_case("LOOKUP") => match entries.get(*name) {
                Some((addr, _)) => format!("OK {addr}"),
                None => "ERR not found".into(),
            },
            [cmd] if cmd.eq_ignore_ascii_case("LIST") => {
                let mut names: Vec<_> = entries.iter().collect();
                names.sort();
                let mut out = format!("OK {}", names.len());
                for (name, (addr, until)) in names {
                    out += &format!("\n{name} {addr} {}", until.saturating_duration_since(now).as_secs());
                }
                out
            }
            [] => "ERR empty line".into(),
            _ => "ERR try REGISTER name host:port ttl [secret], UNREGISTER name [secret], LOOKUP name or LIST".into(),
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    ok.then_some(())
        .ok_or_else(|| format!("{name:?}: a name is 1-64 letters, digits, '-', '_' or '.'"))
}

/// Serves `directory` on `listener` until `shutdown` is triggered, a
/// thread per client (at most [`MAX_CLIENTS`]; more are told to try again).
pub fn serve(
    listener: TcpListener,
    directory: Arc<Directory>,
    shutdown: &servers::Shutdown,
) -> io::Result<()> {
    let clients = Arc::new(AtomicUsize::new(0));
    servers::net::accept_loop(&listener.into(), shutdown, |arrival| {
        let mut stream = arrival.stream;
        let Ok(peer) = stream.peer_addr() else { return };
        if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
            clients.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.write_all(b"ERR busy, try again\n");
            return;
        }
        let (directory, clients) = (directory.clone(), clients.clone());
        let spawned = std::thread::Builder::new()
            .name("directory".into())
            .spawn(move || {
                let _ = client(stream, peer.ip(), &directory);
                clients.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            tracing::warn!("directory: cannot start a thread for a client");
        }
    })
}

/// One client: lines in, answers out, until it closes, idles or misbehaves.
fn client(stream: TcpStream, peer: IpAddr, directory: &Directory) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(IDLE))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream.take(u64::MAX));
    let mut line = Vec::new();
    loop {
        line.clear();
        reader.get_mut().set_limit(MAX_LINE as u64 + 1);
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(());
        }
        if !line.ends_with(b"\n") && line.len() > MAX_LINE {
            writer.write_all(format!("ERR a line is at most {MAX_LINE} bytes\n").as_bytes())?;
            // The rest of the line is unread: linger, or the answer could
            // be lost to a reset.
            servers::linger::close(writer, true);
            return Ok(());
        }
        let answer = match std::str::from_utf8(&line) {
            Ok(text) => directory.answer(text.trim_end(), peer, Instant::now()),
            Err(_) => "ERR not text".into(),
        };
        writer.write_all(answer.as_bytes())?;
        writer.write_all(b"\n")?;
    }
}

/// One request to the directory at `at`; the answer's text after `OK`.
pub fn request(at: SocketAddr, line: &str) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&at, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    stream.take(1 << 20).read_to_string(&mut answer)?;
    let answer = answer.trim_end();
    match answer.strip_prefix("OK") {
        Some(rest) => Ok(rest.trim_start().to_string()),
        None => Err(io::Error::other(format!(
            "directory {at}: {}",
            answer.strip_prefix("ERR ").unwrap_or(answer)
        ))),
    }
}

/// The address registered as `name` in the directory at `at`.
pub fn lookup(at: SocketAddr, name: &str) -> io::Result<SocketAddr> {
    let text = request(at, &format!("LOOKUP {name}"))?;
    text.parse()
        .map_err(|_| io::Error::other(format!("directory {at}: {text:?} is not an address")))
}

/// Registers `name` → `addr` in the directory at `at` and keeps it there,
/// renewing every third of `ttl`, until dropped (then unregisters).
pub struct Registration {
    stop: servers::Shutdown,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Registration {
    /// Registers once now (an error if the directory refuses) and then
    /// renews in the background; a failed renewal is logged and retried.
    pub fn start(
        at: SocketAddr,
        name: &str,
        addr: SocketAddr,
        ttl: Duration,
        secret: Option<String>,
    ) -> io::Result<Registration> {
        let secret = secret.map(|s| format!(" {s}")).unwrap_or_default();
        let line = format!("REGISTER {name} {addr} {}{secret}", ttl.as_secs().max(1));
        request(at, &line)?;
        let stop = servers::Shutdown::new()?;
        let stopping = stop.clone();
        let unregister = format!("UNREGISTER {name}{secret}");
        let name = name.to_string();
        let every = (ttl / 3).max(Duration::from_millis(300));
        let thread = std::thread::Builder::new()
            .name("register".into())
            .spawn(move || {
                while !stopping.sleep(every).unwrap_or(true) {
                    if let Err(e) = request(at, &line) {
                        tracing::warn!("renewing {name} in directory {at}: {e}");
                    }
                }
                let _ = request(at, &unregister);
            })?;
        Ok(Registration {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.stop.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Parses `NAME@HOST:PORT` (as `serve --register` takes it).
pub fn parse_name_at(text: &str) -> Result<(String, SocketAddr), String> {
    let (name, at) = text
        .split_once('@')
        .ok_or_else(|| format!("{text:?}: expected NAME@DIRECTORY (e.g. web@127.0.0.1:7000)"))?;
    check_name(name)?;
    let at = at
        .parse()
        .map_err(|_| format!("{at:?} is not the directory's host:port"))?;
    Ok((name.to_string(), at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    #[test]
    fn register_lookup_expire_and_list() {
        let d = Directory::new(2, None);
        let t0 = Instant::now();
        assert_eq!(d.answer("REGISTER web 127.0.0.1:8080 2", local(), t0), "OK");
        assert_eq!(d.answer("LOOKUP web", local(), t0), "OK 127.0.0.1:8080");
        assert_eq!(d.answer("register db [::1]:5432 30", local(), t0), "OK");
        assert!(d
            .answer("LIST", local(), t0)
            .starts_with("OK 2\ndb [::1]:5432 30\nweb 127.0.0.1:8080"));
        // Soft state: not renewed, gone after its TTL.
        let later = t0 + Duration::from_secs(3);
        assert_eq!(d.answer("LOOKUP web", local(), later), "ERR not found");
        assert_eq!(d.answer("UNREGISTER db", local(), later), "OK");
        assert_eq!(
            d.answer("UNREGISTER db", local(), later),
            "ERR not registered"
        );
    }

    #[test]
    fn bad_requests_get_an_error_and_the_table_is_bounded() {
        let d = Directory::new(1, Some("s3cret".into()));
        let now = Instant::now();
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        for (line, says) in [
            ("", "empty"),
            ("HELLO", "try REGISTER"),
            ("REGISTER a b", "try REGISTER"),
            ("REGISTER we/b 127.0.0.1:1 5", "a name is"),
            ("REGISTER web localhost 5", "host:port"),
            ("REGISTER web 127.0.0.1:1 0", "ttl"),
            ("REGISTER web 127.0.0.1:1 99999", "ttl"),
        ] {
            let a = d.answer(line, local(), now);
            assert!(a.starts_with("ERR") && a.contains(says), "{line:?}: {a}");
        }
        assert!(d
            .answer("REGISTER web 127.0.0.1:1 5", remote, now)
            .contains("secret"));
        assert!(d
            .answer("REGISTER web 127.0.0.1:1 5 wrong", remote, now)
            .contains("secret"));
        assert_eq!(
            d.answer("REGISTER web 127.0.0.1:1 5 s3cret", remote, now),
            "OK"
        );
        assert!(d
            .answer("REGISTER other 127.0.0.1:2 5", local(), now)
            .contains("full"));
        assert_eq!(
            d.answer("REGISTER web 127.0.0.1:3 5", local(), now),
            "OK",
            "a renewal fits"
        );
        assert_eq!(
            d.answer("LOOKUP web", remote, now),
            "OK 127.0.0.1:3",
            "anyone may look up"
        );
    }

    #[test]
    fn a_registration_is_kept_renewed_and_removed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = listener.local_addr().unwrap();
        let directory = Arc::new(Directory::new(16, None));
        let stop = servers::Shutdown::new().unwrap();
        let server = {
            let (d, s) = (directory.clone(), stop.clone());
            std::thread::spawn(move || serve(listener, d, &s))
        };
        let addr: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let reg = Registration::start(at, "web", addr, Duration::from_secs(1), None).unwrap();
        assert_eq!(lookup(at, "web").unwrap(), addr);
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            lookup(at, "web").unwrap(),
            addr,
            "renewed past its first TTL"
        );
        drop(reg);
        assert!(lookup(at, "web")
            .unwrap_err()
            .to_string()
            .contains("not found"));
        // A line too long is refused, and the server carries on.
        let mut s = TcpStream::connect(at).unwrap();
        s.write_all(&vec![b'x'; MAX_LINE + 10]).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("ERR a line is at most"), "{answer}");
        assert_eq!(request(at, "LIST").unwrap(), "0");
        stop.trigger();
        server.join().unwrap().unwrap();
    }
}

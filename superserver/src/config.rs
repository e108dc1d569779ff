//! The super server's file: which services, on which ports, started how,
//! within which limits. Every mistake names the file, the line and the
//! field; the commands are argv arrays from the file (never a shell string,
//! never built from anything a client sends), resolved on `PATH` when the
//! file is read, so a missing program is a refused file, not a failure per
//! connection.
//!
//! ```toml
//! status = "127.0.0.1:9100"          # optional: GET /status, JSON
//! directory = "127.0.0.1:7000"       # optional: register every service there
//!
//! [[service]]
//! name = "hello"
//! listen = ["127.0.0.1:8081"]
//! mode = "nowait"                    # a process per connection, on stdin/stdout
//! command = ["serverlab", "serve", "--inetd"]
//! instances = 64                     # most running at once
//! per_source = 8                     # most from one client address
//! cps = [200, 5]                     # above 200 new connections/s, off for 5 s
//! only_from = ["127.0.0.0/8", "::1"]
//! env = { RUST_LOG = "warn" }
//!
//! [[service]]
//! name = "pool"
//! listen = ["127.0.0.1:8082"]
//! mode = "wait"                      # the listeners handed to one server
//! command = ["serverlab", "serve", "--arch", "thread-pool"]
//!
//! [[service]]
//! name = "echo"
//! listen = ["127.0.0.1:8007"]
//! builtin = "echo"                   # echo, discard, daytime, hello: no fork
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;
use tomlfile::{Invalid, Locator};

/// A checked super server file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where `GET /status` is answered, if anywhere.
    pub status: Option<SocketAddr>,
    /// A directory to register every service in.
    pub directory: Option<SocketAddr>,
    /// The services, in file order.
    pub services: Vec<Service>,
}

/// One service.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub listen: Vec<SocketAddr>,
    pub start: Start,
    /// Most instances running at once (`None`: no limit).
    pub instances: Option<usize>,
    /// Most instances for one client address (`None`: no limit).
    pub per_source: Option<usize>,
    /// Above `rate` new connections in a second, the service is switched
    /// off for `off` (xinetd's `cps`).
    pub cps: Option<Cps>,
    /// Client addresses allowed (`None`: all).
    pub only_from: Option<Vec<Cidr>>,
}

/// How a service is started.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// A new process per connection, the connection as its stdin and
    /// stdout (inetd `nowait`).
    Nowait(Command),
    /// The listening sockets handed to one process that accepts by itself
    /// (inetd `wait`, systemd's `LISTEN_FDS`); watched again when it exits.
    Wait(Command),
    /// Served inside the super server, without a process.
    Builtin(Builtin),
}

/// A program to run: its resolved path, its argv, and variables to add.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub path: PathBuf,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// The services served inside the super server (inetd's internal ones,
/// and an HTTP answer for load tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Builtin {
    /// Sends back what it receives (RFC 862).
    Echo,
    /// Reads and drops everything (RFC 863).
    Discard,
    /// Sends the date and time, then closes (RFC 867).
    Daytime,
    /// Answers one HTTP request with `Hello, World!`, then closes.
    Hello,
}

/// xinetd's `cps = RATE SECONDS`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cps {
    pub rate: u32,
    pub off: Duration,
}

/// An address range, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/PREFIX` or `ADDR`.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let bad = || format!("{text:?} is not an address or an address range (try 10.0.0.0/8)");
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is in the range (an IPv4 client on an IPv6 socket,
    /// `::ffff:a.b.c.d`, counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let bits = |a: IpAddr| -> (u128, u32) {
            match a {
                IpAddr::V4(v4) => (u32::from(v4) as u128, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let ((net, width), (host, host_width)) = (bits(self.addr), bits(ip));
        if width != host_width {
            return false;
        }
        let shift = width - u32::from(self.prefix);
        let mask = if shift >= 128 { 0 } else { u128::MAX << shift };
        net & mask == host & mask
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    status: Option<Spanned<String>>,
    directory: Option<Spanned<String>>,
    #[serde(default)]
    service: Vec<Spanned<RawService>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    listen: Spanned<Vec<Spanned<String>>>,
    mode: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    builtin: Option<Spanned<Builtin>>,
    instances: Option<Spanned<i64>>,
    per_source: Option<Spanned<i64>>,
    cps: Option<Spanned<Vec<Spanned<i64>>>>,
    only_from: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// Reads and checks the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    Ok(parse(&file, &text)?)
}

/// Why a file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

/// Checks the text of a file named `file`.
pub fn parse(file: &str, text: &str) -> Result<Config, Invalid> {
    let loc = Locator { file, text };
    let raw: RawConfig = toml::from_str(text).map_err(|e| loc.of_toml(&e))?;
    let addr = |s: &Spanned<String>, field: &str| -> Result<SocketAddr, Invalid> {
        s.get_ref().parse().map_err(|_| {
            loc.at(
                s.span(),
                field,
                format!(
                    "{:?} is not an address with a port (try 127.0.0.1:9100)",
                    s.get_ref()
                ),
            )
        })
    };
    let status = raw.status.as_ref().map(|s| addr(s, "status")).transpose()?;
    let directory = raw
        .directory
        .as_ref()
        .map(|s| addr(s, "directory"))
        .transpose()?;
    if raw.service.is_empty() {
        return Err(loc.at(0..0, "service", "no [[service]]: nothing to serve"));
    }
    let mut services: Vec<Service> = Vec::new();
    let mut taken: BTreeMap<SocketAddr, String> = BTreeMap::new();
    if let Some(s) = status {
        taken.insert(s, "status".into());
    }
    for raw in &raw.service {
        let span = raw.span();
        let raw = raw.get_ref();
        let name = raw.name.get_ref().trim().to_string();
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(loc.at(
                raw.name.span(),
                "name",
                "a name is 1-64 letters, digits, '-', '_' or '.'",
            ));
        }
        if services.iter().any(|s| s.name == name) {
            return Err(loc.at(
                raw.name.span(),
                "name",
                format!("a second service named {name:?}"),
            ));
        }
        if raw.listen.get_ref().is_empty() {
            return Err(loc.at(raw.listen.span(), "listen", "at least one address"));
        }
        let mut listen = Vec::new();
        for a in raw.listen.get_ref() {
            let at = addr(a, "listen")?;
            if at.port() == 0 {
                return Err(loc.at(
                    a.span(),
                    "listen",
                    "port 0: a service needs a port clients can know",
                ));
            }
            if let Some(other) = taken.insert(at, name.clone()) {
                return Err(loc.at(a.span(), "listen", format!("{at} is already {other:?}'s")));
            }
            listen.push(at);
        }
        let start = start(&loc, raw, span.clone())?;
        let count = |v: &Option<Spanned<i64>>, field: &str| -> Result<Option<usize>, Invalid> {
            v.as_ref()
                .map(|n| {
                    usize::try_from(*n.get_ref())
                        .ok()
                        .filter(|&n| (1..=1_000_000).contains(&n))
                        .ok_or_else(|| loc.at(n.span(), field, "a count from 1 to 1000000"))
                })
                .transpose()
        };
        let instances = count(&raw.instances, "instances")?;
        let per_source = count(&raw.per_source, "per_source")?;
        if matches!(start, Start::Wait(_)) {
            for (v, field) in [
                (&raw.instances, "instances"),
                (&raw.per_source, "per_source"),
            ] {
                if let Some(v) = v {
                    return Err(loc.at(v.span(), field, "a wait service runs one server that accepts by itself: no per-connection limits"));
                }
            }
        }
        let cps = match &raw.cps {
            None => None,
            Some(c) => match c.get_ref().as_slice() {
                [rate, secs] if *rate.get_ref() >= 1 && (1..=3600).contains(secs.get_ref()) => Some(Cps {
                    rate: u32::try_from(*rate.get_ref()).map_err(|_| loc.at(rate.span(), "cps", "too large"))?,
                    off: Duration::from_secs(*secs.get_ref() as u64),
                }),
                _ => return Err(loc.at(c.span(), "cps", "[RATE, SECONDS]: at most RATE new connections a second, else off for SECONDS (1 to 3600)")),
            },
        };
        let only_from = raw
            .only_from
            .as_ref()
            .map(|list| {
                list.get_ref()
                    .iter()
                    .map(|c| Cidr::parse(c.get_ref()).map_err(|m| loc.at(c.span(), "only_from", m)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        services.push(Service {
            name,
            listen,
            start,
            instances,
            per_source,
            cps,
            only_from,
        });
    }
    Ok(Config {
        status,
        directory,
        services,
    })
}

/// The start mode of one service, its command resolved.
fn start(loc: &Locator, raw: &RawService, span: std::ops::Range<usize>) -> Result<Start, Invalid> {
    let mode = raw.mode.as_ref();
    match (&raw.builtin, &raw.command) {
        (Some(b), None) => {
            if let Some(m) = mode {
                return Err(loc.at(
                    m.span(),
                    "mode",
                    "a builtin service runs inside the super server: no mode",
                ));
            }
            if !raw.env.is_empty() {
                return Err(loc.at(b.span(), "env", "a builtin service has no environment"));
            }
            Ok(Start::Builtin(*b.get_ref()))
        }
        (None, Some(c)) => {
            let argv = c.get_ref().clone();
            let Some(program) = argv.first() else {
                return Err(loc.at(c.span(), "command", "an empty command"));
            };
            if argv.iter().any(|a| a.contains('\0')) {
                return Err(loc.at(c.span(), "command", "an argument holds a NUL byte"));
            }
            for (k, v) in &raw.env {
                if k.is_empty()
                    || k.contains(['=', '\0'])
                    || v.contains('\0')
                    || k.starts_with("LISTEN_")
                    || k.starts_with("REMOTE_")
                {
                    return Err(loc.at(span.clone(), "env", format!("{k:?}: not a variable the service may be given (LISTEN_* and REMOTE_* are set by the super server)")));
                }
            }
            let path = resolve(program).map_err(|m| loc.at(c.span(), "command", m))?;
            let command = Command {
                path,
                argv,
                env: raw.env.clone(),
            };
            match mode.map(|m| m.get_ref().as_str()) {
                Some("nowait") | None => Ok(Start::Nowait(command)),
                Some("wait") => Ok(Start::Wait(command)),
                Some(other) => Err(loc.at(
                    mode.unwrap().span(),
                    "mode",
                    format!("{other:?}: use \"nowait\" or \"wait\""),
                )),
            }
        }
        (Some(_), Some(c)) => Err(loc.at(
            c.span(),
            "command",
            "a service has a command or a builtin, not both",
        )),
        (None, None) => Err(loc.at(
            span,
            "command",
            "a service needs a command (argv array) or a builtin",
        )),
    }
}

/// The executable `program` names: a path, or a name found on `PATH`.
pub fn resolve(program: &str) -> Result<PathBuf, String> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return if executable(&p) {
            Ok(p)
        } else {
            Err(format!("{program}: no such executable file"))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| format!("{program}: not found on PATH"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_every_kind_of_service() {
        let text = r#"
status = "127.0.0.1:9100"

[[service]]
name = "hello"
listen = ["127.0.0.1:8081", "[::1]:8081"]
command = ["sh", "-c", "echo hi"]
instances = 4
per_source = 2
cps = [100, 5]
only_from = ["127.0.0.0/8", "::1"]
env = { GREETING = "hi" }

[[service]]
name = "pool"
listen = ["127.0.0.1:8082"]
mode = "wait"
command = ["/bin/sh"]

[[service]]
name = "echo"
listen = ["127.0.0.1:8007"]
builtin = "echo"
"#;
        let c = parse("t.toml", text).unwrap();
        assert_eq!(c.status, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(c.services.len(), 3);
        let hello = &c.services[0];
        assert_eq!(hello.listen.len(), 2);
        let Start::Nowait(cmd) = &hello.start else {
            panic!("nowait")
        };
        assert!(cmd.path.ends_with("sh") && cmd.argv[0] == "sh");
        assert_eq!(
            hello.cps,
            Some(Cps {
                rate: 100,
                off: Duration::from_secs(5)
            })
        );
        assert!(matches!(c.services[1].start, Start::Wait(_)));
        assert_eq!(c.services[2].start, Start::Builtin(Builtin::Echo));
    }

    #[test]
    fn mistakes_name_the_line_and_the_field() {
        let service =
            |body: &str| format!("[[service]]\nname = \"s\"\nlisten = [\"127.0.0.1:9\"]\n{body}\n");
        let cases: &[(&str, usize, &str, &str)] = &[
            (
                "command = [\"no-such-program-here\"]",
                4,
                "command",
                "not found on PATH",
            ),
            ("command = []", 4, "command", "empty"),
            ("builtin = \"chargen\"", 4, "builtin", "unknown variant"),
            (
                "builtin = \"echo\"\ncommand = [\"sh\"]",
                5,
                "command",
                "not both",
            ),
            (
                "command = [\"sh\"]\nmode = \"sometimes\"",
                5,
                "mode",
                "nowait",
            ),
            (
                "command = [\"sh\"]\ninstances = 0",
                5,
                "instances",
                "from 1",
            ),
            ("command = [\"sh\"]\ncps = [10]", 5, "cps", "RATE, SECONDS"),
            (
                "command = [\"sh\"]\nonly_from = [\"10.0.0.0/33\"]",
                5,
                "only_from",
                "not an address",
            ),
            (
                "command = [\"sh\"]\nmode = \"wait\"\nper_source = 2",
                6,
                "per_source",
                "wait service",
            ),
            (
                "command = [\"sh\"]\nshell = true",
                5,
                "shell",
                "unknown field",
            ),
        ];
        for (body, line, field, says) in cases {
            let e = parse("t.toml", &service(body)).unwrap_err();
            assert_eq!((e.line, e.field.as_str()), (*line, *field), "{body}: {e}");
            assert!(e.message.contains(says), "{body}: {e}");
        }
        let twice = format!(
            "{}{}",
            service("builtin = \"echo\""),
            service("builtin = \"echo\"").replace("127.0.0.1:9", "127.0.0.1:10")
        );
        let e = parse("t.toml", &twice).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (6, "name"), "{e}");
        let clash = format!(
            "{}{}",
            service("builtin = \"echo\""),
            service("builtin = \"echo\"").replace("\"s\"", "\"t\"")
        );
        let e = parse("t.toml", &clash).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (7, "listen"), "{e}");
        assert!(parse("t.toml", "")
            .unwrap_err()
            .message
            .contains("nothing to serve"));
    }

    #[test]
    fn address_ranges() {
        let r = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(r.contains("10.1.200.3".parse().unwrap()));
        assert!(!r.contains("10.2.0.1".parse().unwrap()));
        assert!(
            r.contains("::ffff:10.1.2.3".parse().unwrap()),
            "mapped IPv4"
        );
        assert!(!r.contains("::1".parse().unwrap()));
        let one = Cidr::parse("::1").unwrap();
        assert!(one.contains("::1".parse().unwrap()) && !one.contains("::2".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("example.com").is_err());
    }
}

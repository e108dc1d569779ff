//! The one handler: a request in, a [`Plan`] out.
//!
//! A plan is a short list of steps followed by a response, and it is run in
//! one place, [`Plan::advance`]: CPU work runs there, the same for every
//! architecture, and a step that waits is handed back as an [`Await`]. How
//! to wait is an architecture's only choice — a thread sleeps in place
//! ([`Await::block`]), an event loop arms a timer, AMPED hands the step to a
//! helper, the async server awaits a tokio timer — so the work per request
//! is the same everywhere, which is what makes the comparison fair.
//!
//! Routes:
//! - `GET /hello`: the 13-byte body `Hello, World!`.
//! - `GET /work?cpu=N&io_ms=M&bytes=B`: N units of CPU work ([`crate::work`]),
//!   then an M ms blocking wait standing for disk or database I/O, then a
//!   B-byte body. Out-of-range or unknown parameters answer 400.
//! - `GET /file/<name>`: a regular file under the docroot, at most
//!   [`MAX_FILE_BYTES`]; nothing outside it, no FIFOs or devices.
//! - `POST /counter`: a per-client counter kept as `--state` says
//!   ([`crate::state`]).
//! - `GET /health`, `GET /stats` (JSON counters).

use crate::codec::{Method, Request, Response};
use crate::config::{Config, Options};
use crate::state::State;
use crate::stats::Stats;
use crate::work;
use std::collections::VecDeque;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Upper bound of `cpu=` (about a tenth of a second of work).
pub const MAX_CPU_UNITS: u32 = 10_000;
/// Upper bound of `io_ms=`.
pub const MAX_IO_MS: u64 = 10_000;
/// Largest file `/file/` reads into memory; larger ones are refused (403).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// Run this many units of the CPU kernel.
    Compute(u32),
    /// Block for this long (stands for disk or database I/O).
    Wait(Duration),
    /// Read a file; its bytes become the response body.
    ReadFile(FileRead),
}

/// What a plan waits for before it can go on (see [`Plan::advance`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Await {
    /// Nothing: a CPU step has just run. Advance again.
    Computed,
    /// This long (it stands for disk or database I/O); then advance again.
    Wait(Duration),
    /// A file read, whose result goes to [`Plan::file_read`]; then advance
    /// again.
    ReadFile(FileRead),
}

impl Await {
    /// Waits on this thread: sleeps, or reads the file in place (a thread
    /// server's way, an AMPED helper's, and the event loop's pitfall).
    pub fn block(self, plan: &mut Plan) {
        match self {
            Await::Computed => {}
            Await::Wait(d) => std::thread::sleep(d),
            Await::ReadFile(f) => {
                let result = f.read();
                plan.file_read(result);
            }
        }
    }
}

/// A file to read, already checked to lie under `root` by name; the read
/// checks again after resolving symbolic links.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRead {
    root: Arc<Path>,
    path: PathBuf,
}

/// Why `/file/` could not serve a file.
#[derive(Debug, Clone, PartialEq)]
pub enum FileError {
    /// No such file (404).
    Missing,
    /// Outside the docroot, not a regular file, too large, or not readable
    /// (403, with the reason).
    Refused(String),
    /// The read failed for another reason (500).
    Failed(String),
}

impl FileError {
    fn from_io(e: io::Error) -> FileError {
        match e.kind() {
            io::ErrorKind::NotFound => FileError::Missing,
            io::ErrorKind::PermissionDenied => FileError::Refused("not readable".into()),
            _ => FileError::Failed(e.to_string()),
        }
    }
}

impl FileRead {
    /// Reads the file, refusing anything that resolves outside the root,
    /// anything but a regular file (a FIFO would block the reader forever,
    /// a device would never end) and files over [`MAX_FILE_BYTES`]. This
    /// blocks on the disk: it is the step AMPED gives to a helper thread.
    pub fn read(&self) -> Result<Vec<u8>, FileError> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let real = self.path.canonicalize().map_err(FileError::from_io)?;
        if !real.starts_with(&self.root) {
            return Err(FileError::Refused("outside the docroot".into()));
        }
        // Opened non-blocking, so that opening a FIFO does not wait for a
        // writer; its type is checked on the open file, not the name.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&real)
            .map_err(FileError::from_io)?;
        let meta = file.metadata().map_err(FileError::from_io)?;
        if !meta.is_file() {
            return Err(FileError::Refused("not a regular file".into()));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(FileError::Refused(format!(
                "larger than the {} MiB /file/ serves",
                MAX_FILE_BYTES >> 20
            )));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // Bounded again in case the file grows while it is read.
        file.take(MAX_FILE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(FileError::from_io)?;
        Ok(bytes)
    }
}

/// What the handler decided for one request.
#[derive(Debug)]
pub struct Plan {
    steps: VecDeque<Step>,
    response: Response,
    /// Whether the client's request allows keeping the connection open.
    pub keep_alive: bool,
    /// HEAD request: send the head only.
    pub head_only: bool,
}

impl Plan {
    fn respond(req: &Request, response: Response) -> Plan {
        Plan {
            steps: VecDeque::new(),
            response,
            keep_alive: req.keep_alive,
            head_only: req.method == Method::Head,
        }
    }

    /// Runs the plan on: the next CPU step runs here and now (reported as
    /// [`Await::Computed`], so that a cooperative scheduler may yield), and
    /// a step that waits is handed back for the caller to wait on its way.
    /// `None` once every step has run: the response is ready.
    pub fn advance(&mut self) -> Option<Await> {
        Some(match self.steps.pop_front()? {
            Step::Compute(units) => {
                work::compute(units);
                Await::Computed
            }
            Step::Wait(d) => Await::Wait(d),
            Step::ReadFile(f) => Await::ReadFile(f),
        })
    }

    /// Records the outcome of a `ReadFile` step.
    pub fn file_read(&mut self, result: Result<Vec<u8>, FileError>) {
        self.response = match result {
            Ok(bytes) => Response {
                content_type: "application/octet-stream",
                ..Response::text(200, bytes)
            },
            Err(FileError::Refused(why)) => Response::text(403, format!("forbidden: {why}")),
            Err(FileError::Missing) => Response::text(404, "no such file"),
            Err(FileError::Failed(why)) => Response::text(500, format!("cannot read: {why}")),
        };
    }

    /// Runs every remaining step on this thread, blocking on waits, and
    /// returns the finished plan (the way thread and process servers do it).
    pub fn run_blocking(mut self) -> Plan {
        while let Some(pending) = self.advance() {
            pending.block(&mut self);
        }
        self
    }

    /// The response (call once every step has run).
    pub fn response(&self) -> &Response {
        &self.response
    }
}

/// Turns requests into plans. One per server, shared by all its workers.
pub struct Handler {
    config: Config,
    /// What `/stats` reports as asked for (the architecture's option).
    configured_workers: usize,
    docroot: Option<Arc<Path>>,
    stats: Stats,
    state: State,
}

impl Handler {
    /// A handler for `config`, reporting in `/stats` the workers `options`
    /// asks for. Fails if the docroot does not exist, the state settings
    /// are invalid, or shared memory cannot be mapped.
    pub fn new(config: Config, options: &Options) -> io::Result<Handler> {
        let docroot = match &config.docroot {
            Some(dir) => Some(Arc::from(dir.canonicalize().map_err(|e| {
                io::Error::new(e.kind(), format!("docroot {}: {e}", dir.display()))
            })?)),
            None => None,
        };
        // Made here, before any fork: the session table is a shared mapping.
        let state = State::new(&config.state)?;
        let stats =
            Stats::new(config.stats_file.as_deref()).map_err(|e| match &config.stats_file {
                Some(f) => io::Error::new(e.kind(), format!("stats file {}: {e}", f.display())),
                None => e,
            })?;
        Ok(Handler {
            config,
            configured_workers: options.workers,
            docroot,
            stats,
            state,
        })
    }

    /// The configuration this handler serves with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The server-wide counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Decides what to do for `req`. Never blocks: anything slow is a step.
    pub fn plan(&self, req: &Request) -> Plan {
        let path = req.path();
        let read_only = matches!(req.method, Method::Get | Method::Head);
        let route_allows = |allowed: &'static str| {
            Plan::respond(
                req,
                Response::text(405, "method not allowed").with_header("Allow", allowed),
            )
        };
        match path {
            "/hello" | "/work" | "/health" | "/stats" if !read_only => route_allows("GET, HEAD"),
            "/counter" if req.method != Method::Post => route_allows("POST"),
            "/counter" => Plan::respond(req, self.state.counter(req)),
            _ if path.starts_with("/migrate/") => Plan::respond(req, self.state.migrate(req)),
            "/hello" => Plan::respond(req, Response::text(200, "Hello, World!")),
            "/health" => Plan::respond(req, Response::text(200, "ok")),
            "/stats" => Plan::respond(req, self.stats_response()),
            "/work" => match parse_work(req.query().unwrap_or("")) {
                Ok(w) => {
                    let mut plan = Plan::respond(req, Response::text(200, work::body(w.bytes)));
                    if w.cpu > 0 {
                        plan.steps.push_back(Step::Compute(w.cpu));
                    }
                    if w.io_ms > 0 {
                        plan.steps
                            .push_back(Step::Wait(Duration::from_millis(w.io_ms)));
                    }
                    plan
                }
                Err(msg) => Plan::respond(req, Response::text(400, msg)),
            },
            _ if path.starts_with("/file/") => {
                if !read_only {
                    return route_allows("GET, HEAD");
                }
                self.plan_file(req, &path["/file/".len()..])
            }
            _ => Plan::respond(req, Response::text(404, "not found")),
        }
    }

    fn plan_file(&self, req: &Request, name: &str) -> Plan {
        let Some(root) = &self.docroot else {
            return Plan::respond(req, Response::text(404, "no docroot configured"));
        };
        // Only plain names below the root: no `..`, no absolute paths, no
        // empty or `.` components. Symbolic links are checked at read time.
        let rel = Path::new(name);
        let plain = !name.is_empty()
            && !name.contains('\0')
            && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Plan::respond(req, Response::text(403, "forbidden"));
        }
        let mut plan = Plan::respond(req, Response::text(500, "file step did not run"));
        plan.steps.push_back(Step::ReadFile(FileRead {
            root: root.clone(),
            path: root.join(rel),
        }));
        plan
    }

    fn stats_response(&self) -> Response {
        let s = self.stats.snapshot();
        let st = self.state.stats();
        let body = serde_json::json!({
            "arch": self.config.arch,
            "pid": std::process::id(),
            "requests": s.requests,
            "connections_open": s.connections_open,
            "connections_total": s.connections_total,
            "workers": s.workers,
            "configured_workers": self.configured_workers,
            "spawn_failures": s.spawn_failures,
            "connections_peak": s.connections_peak,
            "workers_peak": s.workers_peak,
            "state": st.mode,
            "sessions": st.table.map_or(0, |t| t.sessions),
            "session_bytes": st.table.map_or(0, |t| t.bytes),
            "session_table": st.table,
        });
        Response::json(200, body.to_string())
    }
}

struct WorkParams {
    cpu: u32,
    io_ms: u64,
    bytes: usize,
}

fn parse_work(query: &str) -> Result<WorkParams, String> {
    let mut w = WorkParams {
        cpu: 0,
        io_ms: 0,
        bytes: 0,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = |max: u64| -> Result<u64, String> {
            match value.parse::<u64>() {
                Ok(n) if n <= max => Ok(n),
                _ => Err(format!(
                    "{key} must be a whole number from 0 to {max}, not {value:?}"
                )),
            }
        };
        match key {
            "cpu" => w.cpu = number(u64::from(MAX_CPU_UNITS))? as u32,
            "io_ms" => w.io_ms = number(MAX_IO_MS)?,
            "bytes" => w.bytes = number(work::MAX_BODY_BYTES as u64)? as usize,
            _ => {
                return Err(format!(
                    "unknown parameter {key:?} (known: cpu, io_ms, bytes)"
                ))
            }
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{parse_request, Limits};

    fn req(raw: &str) -> Request {
        parse_request(raw.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap()
            .0
    }

    fn handler(docroot: Option<PathBuf>) -> Handler {
        Handler::new(
            Config {
                docroot,
                ..Config::default()
            },
            &Options::default(),
        )
        .unwrap()
    }

    #[test]
    fn work_plan_has_compute_then_wait() {
        let mut plan = handler(None).plan(&req(
            "GET /work?cpu=3&io_ms=7&bytes=100 HTTP/1.1\r\nHost: t\r\n\r\n",
        ));
        assert_eq!(plan.advance(), Some(Await::Computed));
        assert_eq!(plan.advance(), Some(Await::Wait(Duration::from_millis(7))));
        assert_eq!(plan.advance(), None);
        assert_eq!(plan.response().body.len(), 100);
    }

    #[test]
    fn out_of_range_work_is_400() {
        let h = handler(None);
        for q in ["cpu=10001", "io_ms=x", "bytes=1048577", "nope=1", "cpu=-1"] {
            let plan = h.plan(&req(&format!("GET /work?{q} HTTP/1.1\r\nHost: t\r\n\r\n")));
            assert_eq!(plan.response().status, 400, "{q}");
        }
    }

    #[test]
    fn methods_and_unknown_paths() {
        let h = handler(None);
        assert_eq!(
            h.plan(&req("POST /hello HTTP/1.1\r\nHost: t\r\n\r\n"))
                .response()
                .status,
            405
        );
        assert_eq!(
            h.plan(&req("GET /nope HTTP/1.1\r\nHost: t\r\n\r\n"))
                .response()
                .status,
            404
        );
        let head = h.plan(&req("HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n"));
        assert!(head.head_only);
        assert_eq!(head.response().status, 200);
    }

    #[test]
    fn files_cannot_escape_the_docroot() {
        let dir = std::env::temp_dir().join(format!("serverlab-handler-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a.txt"), "inside").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.join("link")).unwrap();
        let h = handler(Some(dir.clone()));
        let get = |name: &str| {
            h.plan(&req(&format!(
                "GET /file/{name} HTTP/1.1\r\nHost: t\r\n\r\n"
            )))
            .run_blocking()
        };
        let ok = get("sub/a.txt");
        assert_eq!(
            (ok.response().status, &ok.response().body[..]),
            (200, &b"inside"[..])
        );
        assert_eq!(get("../etc/passwd").response().status, 403);
        assert_eq!(get("sub/../../x").response().status, 403);
        assert_eq!(get("/etc/passwd").response().status, 403);
        assert_eq!(get("link").response().status, 403);
        assert_eq!(get("missing").response().status, 404);
        // A FIFO nobody writes to is refused at once, not waited on.
        let fifo =
            std::ffi::CString::new(dir.join("fifo").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let r = get("fifo");
        assert_eq!(r.response().status, 403);
        assert_eq!(&r.response().body[..], b"forbidden: not a regular file");
        assert_eq!(get("sub").response().status, 403, "a directory");
        let big = std::fs::File::create(dir.join("big")).unwrap();
        big.set_len(MAX_FILE_BYTES + 1).unwrap();
        assert_eq!(get("big").response().status, 403);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

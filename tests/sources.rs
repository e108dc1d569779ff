//! Where connections come from besides a listener `serve` binds: a
//! listening socket from a socket-activating launcher (see also the
//! conformance suite's `inherited_listener`, run for every architecture),
//! and inetd's one connection on standard input.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_serverlab");

/// Waits at most `limit` for `child` to exit; kills it if it does not.
fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Sends `requests` on `stream` and reads until the server closes (each
/// request but the last keeps the connection open).
fn exchange(stream: &mut TcpStream, requests: &[u8]) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(requests).unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

const TWO_REQUESTS: &[u8] =
    b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /work?bytes=5 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/// `serve --inetd`: the connection on standard input is served (two
/// requests on it, the second closing it), nothing else is written to it,
/// and the process exits when the connection ends.
#[test]
fn inetd_serves_the_connection_on_standard_input() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        exchange(&mut c, TWO_REQUESTS)
    });
    let (conn, _) = listener.accept().unwrap();
    let out = conn.try_clone().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--inetd", "--arch", "event-loop"])
        .stdin(Stdio::from(OwnedFd::from(conn)))
        .stdout(Stdio::from(OwnedFd::from(out)))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let got = client.join().unwrap();
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    assert_eq!(got.matches("HTTP/1.1 200").count(), 2, "{got:?}");
    assert!(
        got.ends_with("\r\n\r\nxxxxx"),
        "the 5-byte body last: {got:?}"
    );
    let status =
        exit_within(&mut child, Duration::from_secs(5)).expect("exits after the connection");
    assert!(status.success(), "{status}");
}

#[test]
fn inetd_without_a_connection_says_why() {
    let out = Command::new(BIN)
        .args(["serve", "--inetd"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a TCP connection"), "{err}");
}

/// A launcher's variables meant for another process (`LISTEN_PID` not
/// ours) are ignored; ones that are ours but wrong are refused, saying why.
#[test]
fn socket_activation_variables_are_checked() {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = out;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(
        line.starts_with("listening on 127.0.0.1:") && !line.contains("activation"),
        "{line:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
    // Ours, but descriptor 3 is not a listening socket.
    let out = Command::new("/bin/sh")
        .args([
            "-c",
            "export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$0\" serve 3</dev/null",
            BIN,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("neither a listening TCP socket"), "{err}");
}

/// Connects with retries until `limit` (the launcher may not listen yet).
fn connect_within(port: u16, limit: Duration) -> TcpStream {
    let deadline = Instant::now() + limit;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("port {port}: {e}"),
        }
    }
}

/// systemd's own launcher: `systemd-socket-activate -l` passes a listener
/// to `serve --arch thread-pool`, and `--inetd -a` starts `serve --inetd`
/// per connection.
#[test]
#[cfg_attr(
    not(serverlab_socket_activate),
    ignore = "needs /usr/bin/systemd-socket-activate (apt-get install systemd)"
)]
fn systemd_socket_activate_starts_serve_both_ways() {
    // systemd-socket-activate listening on a free port, then `args`.
    let launch = |args: &[&str]| {
        let port = common::free_port();
        let launcher = Command::new("systemd-socket-activate")
            .args(["-l", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (port, launcher)
    };
    let (port, mut launcher) = launch(&[BIN, "serve", "--arch", "thread-pool"]);
    for _ in 0..2 {
        let mut c = connect_within(port, Duration::from_secs(5));
        let got = exchange(&mut c, TWO_REQUESTS);
        assert_eq!(got.matches("HTTP/1.1 200").count(), 2, "{got:?}");
    }
    // It exec'd the server: the launcher's pid is the server's.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(launcher.id() as i32, libc::SIGTERM) };
    let status = exit_within(&mut launcher, Duration::from_secs(15)).expect("stops on SIGTERM");
    assert!(status.success(), "{status}");

    let (port, mut launcher) = launch(&["--inetd", "-a", BIN, "serve", "--inetd"]);
    for _ in 0..3 {
        let mut c = connect_within(port, Duration::from_secs(5));
        let got = exchange(&mut c, TWO_REQUESTS);
        assert_eq!(got.matches("HTTP/1.1 200").count(), 2, "{got:?}");
    }
    let _ = launcher.kill();
    let _ = launcher.wait();
}

/// A launcher may pass several listening sockets (two `-l`): every
/// architecture serves all of them, from one loop, one pool or one set of
/// processes.
#[test]
#[cfg_attr(
    not(serverlab_socket_activate),
    ignore = "needs /usr/bin/systemd-socket-activate (apt-get install systemd)"
)]
fn every_listener_a_launcher_passes_is_served() {
    for arch in servers::arch::names() {
        let (a, b) = (common::free_port(), common::free_port());
        let mut launcher = Command::new("systemd-socket-activate")
            .args([
                "-l",
                &format!("127.0.0.1:{a}"),
                "-l",
                &format!("127.0.0.1:{b}"),
            ])
            .args([BIN, "serve", "--arch", arch, "--workers", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for port in [a, b, a] {
            let mut c = connect_within(port, Duration::from_secs(5));
            let got = exchange(&mut c, TWO_REQUESTS);
            assert_eq!(
                got.matches("HTTP/1.1 200").count(),
                2,
                "{arch} on {port}: {got:?}"
            );
        }
        // SAFETY: signalling our own child (the launcher exec'd the server).
        unsafe { libc::kill(launcher.id() as i32, libc::SIGTERM) };
        let status = exit_within(&mut launcher, Duration::from_secs(15)).expect("stops on SIGTERM");
        assert!(status.success(), "{arch}: {status}");
    }
}

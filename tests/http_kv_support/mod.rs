//! Shared by the `http_kv_*` tests: runs the example binary as a child
//! process on a free port and a temporary data dir, and talks HTTP to it
//! with `ureq` or raw sockets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ringvisor::Backend;

/// Longest any single wait in these tests may take before it is a failure.
pub const WAIT_MAX: Duration = Duration::from_secs(10);

/// The `http_kv` example next to this test binary:
/// `target/<profile>/deps/<test>` -> `target/<profile>/examples/http_kv`.
///
/// A plain `cargo test` builds examples; `cargo test --test NAME` does not,
/// so the first call also asks cargo (when it ran us) to build it, which is
/// a no-op when it is up to date.
pub fn binary() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .to_path_buf();
    BUILD.call_once(|| {
        let Some(cargo) = std::env::var_os("CARGO") else {
            return;
        };
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--example", "http_kv"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building the http_kv example failed");
    });
    let path = profile_dir.join("examples").join("http_kv");
    assert!(
        path.exists(),
        "{} missing: cargo test builds examples",
        path.display()
    );
    path
}

/// A running server, killed (and reaped) on drop.
pub struct Server {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The first line it printed.
    pub banner: String,
    /// Its data dir.
    pub dir: tempfile::TempDir,
}

/// The `--backend` spelling of a backend.
pub fn backend_flag(backend: Backend) -> &'static str {
    match backend {
        Backend::Uring => "uring",
        Backend::Poll => "poll",
        Backend::Auto => "auto",
    }
}

impl Server {
    /// Starts the server on `backend` with `extra` flags and waits for its
    /// `listening on` line.
    pub fn start(backend: Backend, extra: &[&str]) -> Server {
        Server::start_with_fd_limit(backend, extra, None)
    }

    /// Like [`Server::start`], with `RLIMIT_NOFILE` set to `fd_limit`.
    pub fn start_with_fd_limit(backend: Backend, extra: &[&str], fd_limit: Option<u64>) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        Server::start_in(backend, extra, fd_limit, dir)
    }

    /// Starts the server on an existing data directory (a restart).
    pub fn start_in(
        backend: Backend,
        extra: &[&str],
        fd_limit: Option<u64>,
        dir: tempfile::TempDir,
    ) -> Server {
        let mut cmd = Command::new(binary());
        cmd.args(["--addr", "127.0.0.1:0", "--backend", backend_flag(backend)])
            .arg("--data-dir")
            .arg(dir.path())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(limit) = fd_limit {
            use std::os::unix::process::CommandExt;
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: runs in the forked child before exec; setrlimit is
            // async-signal-safe and touches only that process.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn http_kv");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read banner");
        let addr = parse_banner(&line).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("unexpected first line: {line:?}")
        });
        Server {
            child: Some(child),
            addr,
            banner: line.trim_end().to_string(),
            dir,
        }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A raw connection with read and write timeouts.
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(WAIT_MAX)).expect("read timeout");
        s.set_write_timeout(Some(WAIT_MAX)).expect("write timeout");
        s.set_nodelay(true).expect("nodelay");
        s
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` and waits (bounded) for the exit.
    pub fn signal_and_wait(&mut self, signal: i32) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid, which it has not reaped yet.
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not exit within {WAIT_MAX:?} of signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server if it still runs and hands back its data directory.
    pub fn into_dir(mut self) -> tempfile::TempDir {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }

    /// `/_status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        let body = agent()
            .get(&self.url("/_status"))
            .call()
            .expect("status")
            .body_mut()
            .read_to_string()
            .expect("body");
        serde_json::from_str(&body).expect("status is JSON")
    }

    /// Polls `/_status` until `pred` holds (bounded by [`WAIT_MAX`]).
    pub fn wait_status(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let status = self.status();
            if pred(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {status}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn parse_banner(line: &str) -> Option<SocketAddr> {
    line.strip_prefix("listening on ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// A `ureq` agent that returns 4xx/5xx as responses, with a global timeout.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(WAIT_MAX))
        .build()
        .into()
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header fields, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response; `head_request` if it answers a HEAD (no body).
pub fn read_response(
    r: &mut BufReader<TcpStream>,
    head_request: bool,
) -> std::io::Result<RawResponse> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let n = r.read_until(b'\n', &mut head)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("EOF after {:?}", String::from_utf8_lossy(&head)),
            ));
        }
    }
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut fields);
    let parsed = resp
        .parse(&head)
        .map_err(|e| std::io::Error::other(format!("{e}: {:?}", String::from_utf8_lossy(&head))))?;
    assert!(parsed.is_complete());
    let status = resp.code.expect("status code");
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().expect("numeric content-length"));
    let mut body = vec![
        0;
        if head_request || status == 204 || status < 200 {
            0
        } else {
            len
        }
    ];
    r.read_exact(&mut body)?;
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

/// Whether the server closed `r`'s connection (EOF or reset) with nothing
/// more to read, within the read timeout.
pub fn closed(r: &mut BufReader<TcpStream>) -> bool {
    let mut byte = [0u8; 1];
    match r.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
}

/// Writes `bytes` and reads one response on a fresh connection.
pub fn raw_exchange(server: &Server, bytes: &[u8]) -> (RawResponse, BufReader<TcpStream>) {
    let mut s = server.connect();
    s.write_all(bytes).expect("write");
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r, false).expect("a response");
    (resp, r)
}

/// `GET` of `path`: status and body.
pub fn get(server: &Server, path: &str) -> (u16, Vec<u8>) {
    let mut resp = agent().get(&server.url(path)).call().expect("GET");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_vec().expect("body"))
}

/// `PUT` of `value` at `path`: the status.
pub fn put(server: &Server, path: &str, value: &[u8]) -> u16 {
    agent()
        .put(&server.url(path))
        .send(value)
        .expect("PUT")
        .status()
        .as_u16()
}

/// `DELETE` of `path`: the status.
pub fn delete(server: &Server, path: &str) -> u16 {
    agent()
        .delete(&server.url(path))
        .call()
        .expect("DELETE")
        .status()
        .as_u16()
}

/// Percent-encodes every byte of `key` (`%XX`).
pub fn encode_all(key: &[u8]) -> String {
    key.iter().map(|b| format!("%{b:02X}")).collect()
}

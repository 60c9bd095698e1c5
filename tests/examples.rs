//! The behaviour examples, run as real processes; their output is the contract.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("test exe");
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .join("examples")
        .join(name)
}

fn run_to_end(name: &str, args: &[&str], backend: &str) -> Vec<String> {
    let out = Command::new(example(name))
        .args(args)
        .env("RINGVISOR_BACKEND", backend)
        .output()
        .expect("example runs");
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_string)
        .collect()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ringvisor-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn supervised_kv_trace_matches_the_seed() {
    for backend in ["uring", "poll"] {
        let lines = run_to_end("supervised_kv", &[], backend);
        let expected = [
            "KV store starting: kv1",
            "KV store starting: kv2",
            "KV store starting: kv3",
            "Calling kv2: Store(\"x\", 1)",
            "Right Ack",
            "Calling kv2: Lookup(\"x\")",
            "Right Result(Some(1))",
            "Calling kv2: Lookup(\"crash\")",
            "kv2 threw: attempt to divide by zero",
            "KV store terminating: kv2",
            "KV store terminating: kv3",
            "KV store starting: kv2",
            "KV store starting: kv3",
            "Left callee exited: panic: attempt to divide by zero",
            "Calling kv2: Lookup(\"x\")",
            "Right Result(None)",
            "Calling kv2: Lookup(\"y\")",
            "Right Result(None)",
        ];
        assert_eq!(lines, expected, "backend {backend}");
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("kv1") && l.contains("terminating")),
            "kv1 untouched"
        );
    }
}

/// The counter demo's replies, in order (the `starting with` lines interleave
/// with them depending on when recovery completes, so they are checked apart).
fn counter_replies(counter2_read: u64) -> Vec<String> {
    [
        "counter1 Increment -> Ack",
        "counter1 Increment -> Ack",
        "counter1 Read -> Value(2)",
        "counter2 Increment -> Ack",
        "counter1 Reset -> Ack",
        "counter1 Reset -> crashed: panic: reset of a counter that is already 0",
        "counter1 Read -> Value(0)",
        &format!("counter2 Read -> Value({counter2_read})"),
        "counters stopped",
    ]
    .iter()
    .map(|l| l.to_string())
    .collect()
}

fn starts(lines: &[String], name: &str) -> Vec<String> {
    let prefix = format!("{name} starting with ");
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

#[test]
fn counter_crashes_restarts_and_keeps_saved_values() {
    for backend in ["uring", "poll"] {
        let dir = tempdir(&format!("counter-{backend}"));
        let dir_arg = dir.to_str().expect("utf-8 path");
        // Each run adds one to counter2; counter1 ends every run reset to 0
        // and recovers that 0 after its crash.
        for run in 1..=2u64 {
            let lines = run_to_end("counter", &["--dir", dir_arg], backend);
            let replies: Vec<String> = lines
                .iter()
                .filter(|l| !l.contains(" starting with "))
                .cloned()
                .collect();
            assert_eq!(replies, counter_replies(run), "{backend} run {run}");
            assert_eq!(
                starts(&lines, "counter1"),
                ["0", "0"],
                "{backend} run {run}: started, crashed, recovered: {lines:#?}"
            );
            assert_eq!(
                starts(&lines, "counter2"),
                [(run - 1).to_string()],
                "{backend} run {run}: recovers the previous run's value"
            );
        }
        for name in ["counter1", "counter2"] {
            assert!(dir.join(name).is_dir(), "{name} has its own data directory");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A running `counter --serve`; its stdout stays open (a closed pipe would
/// make the counters' `println!` panic).
struct Serving {
    _child: Killed,
    _stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
    addr: String,
}

/// Starts `counter --serve` on `dir`.
fn serve_counter(dir: &std::path::Path, backend: &str) -> Serving {
    let mut child = Command::new(example("counter"))
        .args(["--dir", dir.to_str().unwrap(), "--serve", "127.0.0.1:0"])
        .env("RINGVISOR_BACKEND", backend)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn counter");
    let stdout = child.stdout.take().unwrap();
    let child = Killed(child);
    let mut lines = BufReader::new(stdout).lines();
    let first = loop {
        let line = lines.next().expect("a line").expect("utf-8");
        if line.starts_with("listening on ") {
            break line;
        }
    };
    let addr = first
        .trim_start_matches("listening on ")
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    Serving {
        _child: child,
        _stdout: lines,
        addr,
    }
}

/// Sends `request` on a new connection and reads `replies` lines back.
fn exchange(addr: &str, request: &[u8], replies: usize) -> Vec<String> {
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(request).unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 256];
    while got.lines().count() < replies {
        let n = conn.read(&mut buf).expect("reply");
        assert!(n > 0, "closed early: {got:?}");
        got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    got.lines().map(str::to_string).collect()
}

#[test]
fn counter_serves_lines_over_tcp() {
    for backend in ["uring", "poll"] {
        let dir = tempdir(&format!("counter-serve-{backend}"));
        let serving = serve_counter(&dir, backend);
        let addr = &serving.addr;
        // Pipelined: all requests in one write, replies in order.
        let replies = exchange(addr, b"increment\nincrement\nread\nbogus\n", 4);
        assert_eq!(replies[..3], ["ok", "ok", "2"], "backend {backend}");
        assert!(
            replies[3].starts_with("error: unknown command"),
            "{replies:?}"
        );
        // The bad line ends that connection only: a new one is served.
        assert_eq!(exchange(addr, b"read\n", 1), ["2"]);
        // SIGKILL: no clean shutdown, yet every acknowledged increment was
        // durable before its "ok", so a new process on the same dir sees them.
        drop(serving);
        let serving = serve_counter(&dir, backend);
        let addr = &serving.addr;
        assert_eq!(
            exchange(addr, b"read\nincrement\nread\n", 3),
            ["2", "ok", "3"],
            "backend {backend}: recovered after SIGKILL"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

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

#[test]
fn counter_crashes_restarts_and_keeps_saved_values() {
    for backend in ["uring", "poll"] {
        let dir = tempdir(&format!("counter-{backend}"));
        let dir_arg = dir.to_str().expect("utf-8 path");
        let lines = run_to_end("counter", &["--dir", dir_arg], backend);
        for expected in [
            "counter1 Read -> Value(2)",
            "counter1 terminating (panic: reset of a counter that is already 0), saving 0",
            "counter1 Reset -> crashed: panic: reset of a counter that is already 0",
            "counter1 Read -> Value(0)",
            "counter2 Read -> Value(1)",
            "counter2 terminating (shutdown), saving 1",
            "counter2 saved",
        ] {
            assert!(
                lines.iter().any(|l| l == expected),
                "{backend}: missing {expected:?} in {lines:#?}"
            );
        }
        let restarts = lines
            .iter()
            .filter(|l| l.starts_with("counter1 starting"))
            .count();
        assert_eq!(restarts, 2, "started, crashed, restarted: {lines:#?}");
        assert_eq!(
            std::fs::read_to_string(dir.join("counter2.txt")).unwrap(),
            "1"
        );
        // A second run loads what the first saved.
        let lines = run_to_end("counter", &["--dir", dir_arg], backend);
        assert!(
            lines.iter().any(|l| l == "counter2 starting with 1"),
            "{lines:#?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn counter_serves_lines_over_tcp() {
    for backend in ["uring", "poll"] {
        let dir = tempdir(&format!("counter-serve-{backend}"));
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
        let mut conn = TcpStream::connect(&addr).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Pipelined: all requests in one write, replies in order.
        conn.write_all(b"increment\nincrement\nread\nbogus\n")
            .unwrap();
        let mut got = String::new();
        let mut buf = [0u8; 256];
        while got.lines().count() < 4 {
            let n = conn.read(&mut buf).expect("reply");
            assert!(n > 0, "closed early: {got:?}");
            got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        let replies: Vec<&str> = got.lines().collect();
        assert_eq!(replies[..3], ["ok", "ok", "2"], "backend {backend}");
        assert!(
            replies[3].starts_with("error: unknown command"),
            "{replies:?}"
        );
        // The bad line ends that connection only: a new one is served.
        let mut other = TcpStream::connect(&addr).expect("connect again");
        other
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        other.write_all(b"read\n").unwrap();
        let n = other.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"2\n");
        drop(child);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Kill test: a child process (`examples/persist_crash.rs`) makes durable
//! appends and prints each acknowledged seq; it is SIGKILLed at a seeded
//! random moment, and the directory must then hold every acknowledged entry,
//! each whole and in order, with no half-applied record.

mod persist_common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use persist_common::*;
use ringvisor_behaviours::persist::{Options, Recovered};
use ringvisor_runtime::{backend_tests, Backend};

const ROUNDS_PER_BACKEND: usize = 25;
const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// The backends' rounds take turns: a child forked for one backend holds
/// copies of this process's fds until it execs, and a copy of the other
/// round's lock fd would make its next child find the directory locked.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Same as the example's.
fn crash_payload(seq: u64) -> Vec<u8> {
    let mut x = splitmix(seq);
    let len = 1 + (x % 300) as usize;
    (0..len)
        .map(|_| {
            x = splitmix(x);
            x as u8
        })
        .collect()
}

fn apply(state: (u64, u64), entry: &[u8]) -> (u64, u64) {
    let h = entry.iter().fold(state.1 ^ 0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    (state.0 + 1, h)
}

fn helper_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let helper = profile_dir.join("examples").join("persist_crash");
    assert!(
        helper.exists(),
        "{} missing: `cargo test` builds it (or `cargo build --example persist_crash`)",
        helper.display()
    );
    helper
}

/// Chain values after 0, 1, 2, ... entries, extended on demand.
struct Chain(Vec<(u64, u64)>);

impl Chain {
    fn after(&mut self, count: u64) -> (u64, u64) {
        while self.0.len() as u64 <= count {
            let n = self.0.len() as u64;
            let next = apply(*self.0.last().unwrap(), &crash_payload(n));
            self.0.push(next);
        }
        self.0[count as usize]
    }
}

/// Checks the directory as the test process sees it; returns the last seq.
fn verify(recovered: &Recovered, acked_max: u64, chain: &mut Chain, round: usize) -> u64 {
    let mut state = match &recovered.snapshot {
        None => (0, 0),
        Some(bytes) => {
            let count = u64::from_le_bytes(bytes[0..8].try_into().unwrap());
            let hash = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
            (count, hash)
        }
    };
    assert_eq!(
        state.0, recovered.snapshot_seq,
        "round {round}: snapshot covers its own count"
    );
    assert_eq!(
        state,
        chain.after(state.0),
        "round {round}: snapshot state is exactly entries 1..={}",
        state.0
    );
    for (seq, entry) in &recovered.entries {
        assert_eq!(*seq, state.0 + 1, "round {round}: entries contiguous");
        assert_eq!(
            *entry,
            crash_payload(*seq),
            "round {round}: entry {seq} whole and unchanged"
        );
        state = apply(state, entry);
    }
    let last = recovered.next_seq - 1;
    assert_eq!(state.0, last);
    assert!(
        last >= acked_max,
        "round {round}: acknowledged seq {acked_max} lost (recovered up to {last})"
    );
    last
}

/// Spawns the helper; lines of its stdout arrive on the channel.
fn spawn(helper: &Path, dir: &Path, backend: Backend) -> (Child, mpsc::Receiver<String>) {
    let name = match backend {
        Backend::Uring => "uring",
        _ => "poll",
    };
    let mut child = Command::new(helper)
        .arg(dir)
        .arg(name)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Reads acks until `kill_after` of them arrived (0: kill at once, maybe
/// mid-recovery); returns the largest acknowledged seq.
fn run_until_kill(child: &mut Child, lines: &mpsc::Receiver<String>, kill_after: u64) -> u64 {
    let mut acked_max = 0;
    let mut acks = 0;
    while acks < kill_after {
        let line = lines.recv_timeout(LINE_TIMEOUT).unwrap_or_else(|e| {
            let _ = child.kill();
            let status = child.wait();
            panic!("helper stopped talking ({e}, limit {LINE_TIMEOUT:?}); status {status:?}");
        });
        if let Some(seq) = line.strip_prefix("ack ") {
            acked_max = acked_max.max(seq.parse::<u64>().unwrap());
            acks += 1;
        }
    }
    child.kill().unwrap(); // SIGKILL
                           // Acks already printed before the kill count too.
    let status = child.wait().unwrap();
    assert!(
        status.code() != Some(2),
        "helper found its recovered data wrong"
    );
    for line in lines.try_iter() {
        if let Some(seq) = line.strip_prefix("ack ") {
            acked_max = acked_max.max(seq.parse::<u64>().unwrap());
        }
    }
    acked_max
}

backend_tests! {
    fn sigkill_never_loses_an_acknowledged_append(backend) {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let helper = helper_binary();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let mut rng = 0x5eed_0004 ^ (backend as u64);
        let mut chain = Chain(vec![(0, 0)]);
        let mut acked_max = 0;
        let (mut torn_tails, mut snapshots) = (0u32, 0u32);
        let mut lp = new_loop(backend);
        for round in 0..ROUNDS_PER_BACKEND {
            rng = splitmix(rng);
            let kill_after = match rng % 10 {
                0 => 0,
                1 => 1 + (rng >> 8) % 8,
                _ => 1 + (rng >> 8) % 600,
            };
            let (mut child, lines) = spawn(&helper, &dir, backend);
            acked_max = acked_max.max(run_until_kill(&mut child, &lines, kill_after));
            let (store, recovered) = open(&mut lp, &dir, Options::default()).unwrap();
            let last = verify(&recovered, acked_max, &mut chain, round);
            torn_tails += recovered.torn_tail.is_some() as u32;
            snapshots += recovered.snapshot.is_some() as u32;
            eprintln!("round {round}: kill after {kill_after} acks, acked {acked_max}, recovered {last}, snapshot {}, torn {:?}",
                recovered.snapshot_seq, recovered.torn_tail);
            drop(store);
        }
        eprintln!("{torn_tails} torn tails, {snapshots} rounds with a snapshot");
        assert!(acked_max > 0, "the helper acknowledged something");
    }
}

//! Crash-test helper for the persist kill test (`tests/persist_kill.rs`):
//! a durable "hash chain" counter under a write load, meant to be SIGKILLed.
//!
//! ```text
//! persist_crash <dir> <uring|poll>
//! ```
//!
//! On start it recovers the directory, checks every recovered entry and the
//! snapshot against the deterministic payload of its sequence number (exit
//! code 2 on a mismatch, 3 if the store does not open), prints `ready <next_seq>`, then keeps `WRITERS`
//! appends outstanding (each writer re-appends when acknowledged), printing
//! `ack <seq>` for every entry once it is durable. Every `SNAPSHOT_EVERY`
//! entries it snapshots its state (entry count and hash chain). It exits by
//! itself after `RUN_MAX` or when stdout goes away.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use ringvisor_behaviours::persist::{Options, Recovered, Store};
use ringvisor_runtime::{Backend, Loop};

const WRITERS: usize = 16;
const SNAPSHOT_EVERY: u64 = 256;
const RUN_MAX: Duration = Duration::from_secs(20);

/// The payload of entry `seq`: 1..=300 bytes derived from `seq` alone.
fn payload(seq: u64) -> Vec<u8> {
    let mut x = splitmix(seq);
    let len = 1 + (x % 300) as usize;
    (0..len)
        .map(|_| {
            x = splitmix(x);
            x as u8
        })
        .collect()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The state: (entries applied, hash chain over their payloads).
fn apply(state: (u64, u64), entry: &[u8]) -> (u64, u64) {
    let h = entry.iter().fold(state.1 ^ 0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    (state.0 + 1, h)
}

fn encode_state(state: (u64, u64)) -> Vec<u8> {
    [state.0.to_le_bytes(), state.1.to_le_bytes()].concat()
}

fn decode_state(bytes: &[u8]) -> Option<(u64, u64)> {
    let count = u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
    let hash = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((count, hash))
}

fn check(recovered: &Recovered) -> Result<(u64, u64), String> {
    let mut state = match &recovered.snapshot {
        None => (0, 0),
        Some(bytes) => decode_state(bytes).ok_or("snapshot does not decode")?,
    };
    if state.0 != recovered.snapshot_seq {
        return Err(format!(
            "snapshot holds {} entries, covers seq {}",
            state.0, recovered.snapshot_seq
        ));
    }
    for (seq, entry) in &recovered.entries {
        if *seq != state.0 + 1 || *entry != payload(*seq) {
            return Err(format!("entry {seq} is not the one appended"));
        }
        state = apply(state, entry);
    }
    Ok(state)
}

struct Writer {
    store: Store,
    state: RefCell<(u64, u64)>,
    since_snapshot: Cell<u64>,
    snapshot_busy: Cell<bool>,
}

fn print_line(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0); // the test went away
    }
}

fn write_one(lp: &mut Loop, writer: &Rc<Writer>) {
    let seq = writer.store.next_seq();
    let entry = payload(seq);
    let w = writer.clone();
    let assigned = writer.store.append(lp, &entry, move |lp, res| match res {
        Ok(seq) => {
            print_line(format_args!("ack {seq}"));
            write_one(lp, &w);
        }
        Err(e) => panic!("append {seq} failed: {e}"),
    });
    assert_eq!(assigned, Ok(seq));
    let state = apply(*writer.state.borrow(), &entry);
    *writer.state.borrow_mut() = state;
    writer.since_snapshot.set(writer.since_snapshot.get() + 1);
    if writer.since_snapshot.get() >= SNAPSHOT_EVERY && !writer.snapshot_busy.get() {
        writer.since_snapshot.set(0);
        writer.snapshot_busy.set(true);
        let w = writer.clone();
        writer
            .store
            .snapshot(lp, encode_state(state), state.0, move |_, res| {
                res.expect("snapshot");
                w.snapshot_busy.set(false);
            })
            .expect("snapshot starts");
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .expect("usage: persist_crash <dir> <uring|poll>"),
    );
    let backend = Backend::parse(&args.next().expect("backend")).expect("uring or poll");
    let mut lp = Loop::builder().backend(backend).build().expect("loop");
    Store::open(&mut lp, dir, Options::default(), |lp, res| {
        let (store, recovered) = match res {
            Ok(opened) => opened,
            Err(e) => {
                eprintln!("persist_crash: open failed: {e}");
                std::process::exit(3);
            }
        };
        let state = match check(&recovered) {
            Ok(state) => state,
            Err(message) => {
                eprintln!("persist_crash: recovered data is wrong: {message}");
                std::process::exit(2);
            }
        };
        print_line(format_args!("ready {}", recovered.next_seq));
        let writer = Rc::new(Writer {
            store,
            state: RefCell::new(state),
            since_snapshot: Cell::new(0),
            snapshot_busy: Cell::new(false),
        });
        for _ in 0..WRITERS {
            write_one(lp, &writer);
        }
        lp.timer(RUN_MAX, |_| std::process::exit(0));
    });
    lp.run().expect("loop");
}

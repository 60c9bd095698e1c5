//! Snapshots: crash at every step of the sequence, compaction, and a model
//! check (snapshot + replay == the in-memory state) over random commands.

mod persist_common;

use std::collections::BTreeMap;

use persist_common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use ringvisor_behaviours::persist::{
    Codec, DecodeError, Options, Recovered, SnapshotStep, StoreError, SNAPSHOT_FILE,
    SNAPSHOT_TEMP_FILE,
};
use ringvisor_runtime::{backend_tests, Loop};

fn small_segments() -> Options {
    Options {
        record_bytes_max: 64,
        batch_bytes_max: 256,
        pending_bytes_max: 4096,
        segment_bytes_max: 256,
        ..Options::default()
    }
}

/// Counter model: (entries applied, sum of payload bytes).
fn apply(state: (u64, u64), entry: &[u8]) -> (u64, u64) {
    (
        state.0 + 1,
        state.1 + entry.iter().map(|&b| b as u64).sum::<u64>(),
    )
}

fn encode_state(state: (u64, u64)) -> Vec<u8> {
    [state.0.to_le_bytes(), state.1.to_le_bytes()].concat()
}

fn decode_state(bytes: &[u8]) -> (u64, u64) {
    let field = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    (field(0), field(8))
}

fn model_up_to(n: u64) -> (u64, u64) {
    (1..=n).fold((0, 0), |s, i| apply(s, &payload(i)))
}

fn replay(recovered: &Recovered) -> (u64, u64) {
    let start = recovered.snapshot.as_deref().map_or((0, 0), decode_state);
    assert_eq!(
        start.0, recovered.snapshot_seq,
        "snapshot covers exactly its entries"
    );
    recovered
        .entries
        .iter()
        .fold(start, |s, (_, e)| apply(s, e))
}

fn append_one_by_one(
    lp: &mut Loop,
    store: &ringvisor_behaviours::persist::Store,
    seqs: std::ops::RangeInclusive<u64>,
) {
    for i in seqs {
        append_all(lp, store, &[payload(i)]);
    }
}

backend_tests! {
    fn crash_after_each_snapshot_step_recovers(backend) {
        let mut lp = new_loop(backend);
        for step in SnapshotStep::ALL {
            let tmp = tempfile::tempdir().unwrap();
            let (store, _) = open(&mut lp, tmp.path(), small_segments()).unwrap();
            append_one_by_one(&mut lp, &store, 1..=10);
            snapshot(&mut lp, &store, encode_state(model_up_to(10)), 10).unwrap();
            append_one_by_one(&mut lp, &store, 11..=30);
            let segments_before = segments(tmp.path()).len();
            assert!(segments_before > 2, "{step:?}: the log spans segments");

            let done = std::rc::Rc::new(std::cell::Cell::new(false));
            let d = done.clone();
            store.snapshot_until(&mut lp, encode_state(model_up_to(30)), 30, step, move |_, r| {
                r.unwrap();
                d.set(true);
            }).unwrap();
            while !done.get() {
                lp.run_once().unwrap();
            }
            append_one_by_one(&mut lp, &store, 31..=35);
            drop(store); // crash: nothing after `step` happens

            let temp_left = tmp.path().join(SNAPSHOT_TEMP_FILE).exists();
            assert_eq!(temp_left, step <= SnapshotStep::TempSynced, "{step:?}");
            let (store, recovered) = open(&mut lp, tmp.path(), small_segments()).unwrap();
            assert_eq!(replay(&recovered), model_up_to(35), "{step:?}");
            let expected_snapshot_seq = if step >= SnapshotStep::Renamed { 30 } else { 10 };
            assert_eq!(recovered.snapshot_seq, expected_snapshot_seq, "{step:?}");
            assert_eq!(recovered.next_seq, 36);
            assert!(!tmp.path().join(SNAPSHOT_TEMP_FILE).exists(), "{step:?}: temp file removed");
            if step == SnapshotStep::LogCompacted {
                assert!(segments(tmp.path()).len() < segments_before, "{step:?}: covered segments unlinked");
            }
            // The recovered store keeps working.
            append_all(&mut lp, &store, &[payload(36)]);
            close(&mut lp, &store).unwrap();
            let (_, recovered) = open(&mut lp, tmp.path(), small_segments()).unwrap();
            assert_eq!(replay(&recovered), model_up_to(36), "{step:?}");
        }
    }

    fn torn_temp_file_is_ignored_and_removed(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), Options::default()).unwrap();
        append_one_by_one(&mut lp, &store, 1..=3);
        snapshot(&mut lp, &store, encode_state(model_up_to(2)), 2).unwrap();
        close(&mut lp, &store).unwrap();
        std::fs::write(tmp.path().join(SNAPSHOT_TEMP_FILE), b"RVSNAP01 half a snapsh").unwrap();
        let (_, recovered) = open(&mut lp, tmp.path(), Options::default()).unwrap();
        assert_eq!((recovered.snapshot_seq, replay(&recovered)), (2, model_up_to(3)));
        assert!(!tmp.path().join(SNAPSHOT_TEMP_FILE).exists());
        assert!(tmp.path().join(SNAPSHOT_FILE).exists());
    }

    fn snapshot_compacts_the_log_to_what_follows_it(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), small_segments()).unwrap();
        append_one_by_one(&mut lp, &store, 1..=40);
        assert!(segments(tmp.path()).len() > 3);
        snapshot(&mut lp, &store, encode_state(model_up_to(40)), 40).unwrap();
        assert!(segments(tmp.path()).is_empty(), "every segment covered: {:?}", segments(tmp.path()));
        append_one_by_one(&mut lp, &store, 41..=42);
        assert_eq!(segments(tmp.path()).len(), 1);
        assert_eq!(store.stats().snapshots, 1);
        close(&mut lp, &store).unwrap();
        let (_, recovered) = open(&mut lp, tmp.path(), small_segments()).unwrap();
        assert_eq!(recovered.entries.iter().map(|e| e.0).collect::<Vec<_>>(), vec![41, 42]);
        assert_eq!(replay(&recovered), model_up_to(42));
    }

    fn snapshot_arguments_are_checked(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let options = Options { snapshot_bytes_max: 100, ..Options::default() };
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), options).unwrap();
        append_one_by_one(&mut lp, &store, 1..=3);
        let future = store.snapshot(&mut lp, vec![], 4, |_, _| panic!("refused"));
        assert_eq!(future, Err(StoreError::BadCoveringSeq { covering_seq: 4, snapshot_seq: 0, next_seq: 4 }));
        let big = store.snapshot(&mut lp, vec![0; 100], 2, |_, _| panic!("refused"));
        assert_eq!(big, Err(StoreError::TooLarge { bytes: 100, max: 100 }));
        store.snapshot(&mut lp, vec![1], 2, |_, r| r.unwrap()).unwrap();
        let busy = store.snapshot(&mut lp, vec![2], 3, |_, _| panic!("refused"));
        assert_eq!(busy, Err(StoreError::SnapshotBusy));
        lp.run().unwrap();
        let older = store.snapshot(&mut lp, vec![], 1, |_, _| panic!("refused"));
        assert!(matches!(older, Err(StoreError::BadCoveringSeq { .. })));
    }

    fn snapshot_and_replay_equal_the_in_memory_state(backend) {
        let mut runner = TestRunner::new(Config { cases: 24, failure_persistence: None, ..Config::default() });
        let commands = proptest::collection::vec(command(), 1..60);
        runner.run(&commands, |commands| {
            check_model(backend, &commands);
            Ok(())
        }).unwrap();
    }
}

#[derive(Debug, Clone)]
enum Command {
    Put(u8, u8),
    Delete(u8),
    Snapshot,
    Close,
    Crash,
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        6 => (0u8..8, any::<u8>()).prop_map(|(k, v)| Command::Put(k, v)),
        2 => (0u8..8).prop_map(Command::Delete),
        1 => Just(Command::Snapshot),
        1 => Just(Command::Close),
        1 => Just(Command::Crash),
    ]
}

type Kv = BTreeMap<u8, u8>;

/// Entries are commands: tag 1 = put(k, v), tag 2 = delete(k).
struct KvCodec;

impl Codec<(u8, Option<u8>)> for KvCodec {
    fn encode(value: &(u8, Option<u8>), out: &mut Vec<u8>) {
        match value {
            (k, Some(v)) => out.extend_from_slice(&[1, *k, *v]),
            (k, None) => out.extend_from_slice(&[2, *k]),
        }
    }

    fn decode(bytes: &[u8]) -> Result<(u8, Option<u8>), DecodeError> {
        match bytes {
            [1, k, v] => Ok((*k, Some(*v))),
            [2, k] => Ok((*k, None)),
            _ => Err(DecodeError::new(format!("bad entry {bytes:?}"))),
        }
    }
}

fn apply_kv(kv: &mut Kv, (k, v): (u8, Option<u8>)) {
    match v {
        Some(v) => kv.insert(k, v),
        None => kv.remove(&k),
    };
}

fn rebuild(recovered: &Recovered) -> Kv {
    let mut kv: Kv = recovered
        .snapshot
        .as_deref()
        .map(|s| s.chunks(2).map(|p| (p[0], p[1])).collect())
        .unwrap_or_default();
    for (_, entry) in &recovered.entries {
        apply_kv(&mut kv, KvCodec::decode(entry).unwrap());
    }
    kv
}

fn check_model(backend: ringvisor_runtime::Backend, commands: &[Command]) {
    let tmp = tempfile::tempdir().unwrap();
    let mut lp = new_loop(backend);
    let (mut store, _) = open(&mut lp, tmp.path(), small_segments()).unwrap();
    let mut kv = Kv::new();
    for command in commands {
        match command {
            Command::Put(..) | Command::Delete(_) => {
                let op = match *command {
                    Command::Put(k, v) => (k, Some(v)),
                    Command::Delete(k) => (k, None),
                    _ => unreachable!(),
                };
                apply_kv(&mut kv, op);
                let acked = std::rc::Rc::new(std::cell::Cell::new(false));
                let a = acked.clone();
                store
                    .append_encoded::<KvCodec, _>(&mut lp, &op, move |_, r| {
                        r.unwrap();
                        a.set(true);
                    })
                    .unwrap();
                while !acked.get() {
                    lp.run_once().unwrap();
                }
            }
            Command::Snapshot => {
                let state: Vec<u8> = kv.iter().flat_map(|(k, v)| [*k, *v]).collect();
                let covering = store.next_seq() - 1;
                snapshot(&mut lp, &store, state, covering).unwrap();
            }
            Command::Close | Command::Crash => {
                if matches!(command, Command::Close) {
                    close(&mut lp, &store).unwrap();
                }
                drop(store);
                let (reopened, recovered) = open(&mut lp, tmp.path(), small_segments()).unwrap();
                assert_eq!(rebuild(&recovered), kv, "after {command:?}");
                store = reopened;
            }
        }
    }
    drop(store);
    let (_, recovered) = open(&mut lp, tmp.path(), small_segments()).unwrap();
    assert_eq!(rebuild(&recovered), kv);
}

//! A log shared by several streams: one group commit for all of them,
//! per-stream recovery, compaction across streams, corruption, and a stream
//! reopened while its entries are still in flight.

mod persist_common;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use persist_common::*;
use ringvisor_behaviours::persist::{
    Durability, OpenError, Options, Recovered, SharedLog, Store, STREAMS_MAX,
};
use ringvisor_runtime::{backend_tests, Loop};

fn log_dir(tmp: &Path) -> PathBuf {
    tmp.join("log")
}

fn stream_dir(tmp: &Path, stream: u32) -> PathBuf {
    tmp.join(format!("stream-{stream}"))
}

fn open_log(lp: &mut Loop, tmp: &Path, options: Options) -> SharedLog {
    SharedLog::open_blocking(lp, &log_dir(tmp), options).unwrap()
}

fn open_stream(lp: &mut Loop, log: &SharedLog, tmp: &Path, stream: u32) -> (Store, Recovered) {
    log.open_stream_blocking(lp, stream, &stream_dir(tmp, stream))
        .unwrap()
}

/// Entry `i` of stream `s`: recognisable per stream.
fn entry(stream: u32, i: u64) -> Vec<u8> {
    let mut bytes = payload(i);
    bytes.insert(0, stream as u8);
    bytes
}

fn entries(stream: u32, seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
    seqs.map(|i| (i, entry(stream, i))).collect()
}

/// Appends `count` entries to every store in one tick, from `first` on, and
/// runs until all are acknowledged; returns each store's acknowledged seqs.
fn append_round(lp: &mut Loop, stores: &[(u32, &Store)], first: u64, count: u64) -> Vec<Vec<u64>> {
    let acked: Vec<Rc<RefCell<Vec<u64>>>> = stores.iter().map(|_| Rc::default()).collect();
    for ((stream, store), acked) in stores.iter().zip(&acked) {
        for i in first..first + count {
            let acked = acked.clone();
            store
                .append(lp, &entry(*stream, i), move |_, r| {
                    acked.borrow_mut().push(r.unwrap())
                })
                .unwrap();
        }
    }
    while acked.iter().any(|a| (a.borrow().len() as u64) < count) {
        lp.run_once().unwrap();
    }
    acked.iter().map(|a| a.borrow().clone()).collect()
}

fn close_log(lp: &mut Loop, log: &SharedLog) -> std::io::Result<()> {
    let out: Rc<RefCell<Option<std::io::Result<()>>>> = Rc::default();
    let slot = out.clone();
    log.close(lp, move |_, res| *slot.borrow_mut() = Some(res))
        .unwrap();
    while out.borrow().is_none() {
        lp.run_once().unwrap();
    }
    let result = out.borrow_mut().take().unwrap();
    result
}

fn small_segments() -> Options {
    Options {
        record_bytes_max: 64,
        batch_bytes_max: 512,
        pending_bytes_max: 4096,
        segment_bytes_max: 512,
        ..Options::default()
    }
}

backend_tests! {
    fn a_tick_of_entries_from_several_streams_takes_one_fdatasync(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let log = open_log(&mut lp, tmp.path(), Options::default());
        let opened: Vec<(Store, Recovered)> = (0..4).map(|s| open_stream(&mut lp, &log, tmp.path(), s)).collect();
        let stores: Vec<(u32, &Store)> = opened.iter().enumerate().map(|(s, (st, _))| (s as u32, st)).collect();
        let acked = append_round(&mut lp, &stores, 1, 16);
        for seqs in &acked {
            assert_eq!(*seqs, (1..=16).collect::<Vec<_>>(), "each stream numbers its own entries");
        }
        let stats = log.stats();
        assert_eq!((stats.fdatasyncs, stats.batches, stats.entries_written), (1, 1, 64), "{stats:?}");
        for (_, store) in &stores {
            let s = store.stats();
            assert_eq!((s.fdatasyncs, s.batches, s.entries_written), (1, 1, 16), "{s:?}");
        }
    }

    fn writers_on_many_streams_share_each_fdatasync(backend) {
        // 8 streams x 8 writers, each re-appending when acknowledged: with
        // a log per stream a group could hold at most 8 entries.
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let log = open_log(&mut lp, tmp.path(), Options::default());
        let stores: Vec<Rc<Store>> = (0..8).map(|s| Rc::new(open_stream(&mut lp, &log, tmp.path(), s).0)).collect();
        let done = Rc::new(RefCell::new(0u32));
        fn writer(lp: &mut Loop, store: Rc<Store>, left: u32, done: Rc<RefCell<u32>>) {
            if left == 0 {
                *done.borrow_mut() += 1;
                return;
            }
            let s = store.clone();
            store.append(lp, b"w", move |lp, r| { r.unwrap(); writer(lp, s, left - 1, done) }).unwrap();
        }
        for store in &stores {
            for _ in 0..8 {
                writer(&mut lp, store.clone(), 20, done.clone());
            }
        }
        while *done.borrow() < 64 {
            lp.run_once().unwrap();
        }
        let stats = log.stats();
        assert_eq!(stats.entries_written, 64 * 20);
        assert!(stats.entries_per_fdatasync() >= 16.0, "{stats:?}");
    }

    fn each_stream_recovers_its_own_entries_after_close(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let log = open_log(&mut lp, tmp.path(), Options::default());
        let (a, _) = open_stream(&mut lp, &log, tmp.path(), 0);
        let (b, _) = open_stream(&mut lp, &log, tmp.path(), 7);
        append_round(&mut lp, &[(0, &a), (7, &b)], 1, 5);
        append_round(&mut lp, &[(0, &a)], 6, 3);
        close(&mut lp, &a).unwrap();
        close(&mut lp, &b).unwrap();
        assert!(a.append(&mut lp, b"late", |_, _| panic!("refused")).is_err());
        close_log(&mut lp, &log).unwrap();
        drop((a, b, log));

        let log = open_log(&mut lp, tmp.path(), Options::default());
        let (a, ra) = open_stream(&mut lp, &log, tmp.path(), 0);
        let (_b, rb) = open_stream(&mut lp, &log, tmp.path(), 7);
        let (_c, rc) = open_stream(&mut lp, &log, tmp.path(), 3);
        assert_eq!((ra.entries.clone(), ra.next_seq), (entries(0, 1..=8), 9));
        assert_eq!((rb.entries.clone(), rb.next_seq), (entries(7, 1..=5), 6));
        assert_eq!((rc.entries.len(), rc.next_seq), (0, 1));
        assert_eq!(append_round(&mut lp, &[(0, &a)], 9, 1), vec![vec![9]]);
    }

    fn a_crash_keeps_acknowledged_entries_and_cuts_a_torn_tail(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let log = open_log(&mut lp, tmp.path(), Options::default());
        let (a, _) = open_stream(&mut lp, &log, tmp.path(), 1);
        let (b, _) = open_stream(&mut lp, &log, tmp.path(), 2);
        append_round(&mut lp, &[(1, &a), (2, &b)], 1, 4);
        // Crash: nothing is closed; a torn record follows the last good one.
        drop((a, b, log));
        let segment = only_segment(&log_dir(tmp.path()));
        let good_bytes = std::fs::metadata(&segment).unwrap().len();
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes.extend_from_slice(&[0x2a, 0, 0, 0, 1, 2, 3]);
        std::fs::write(&segment, &bytes).unwrap();

        let mut lp = new_loop(backend);
        let log = open_log(&mut lp, tmp.path(), Options::default());
        let torn = log.torn_tail().expect("torn tail reported");
        assert_eq!((torn.offset, torn.bytes), (good_bytes, 7));
        let (a, ra) = open_stream(&mut lp, &log, tmp.path(), 1);
        let (_b, rb) = open_stream(&mut lp, &log, tmp.path(), 2);
        assert_eq!(ra.entries, entries(1, 1..=4));
        assert_eq!(rb.entries, entries(2, 1..=4));
        append_round(&mut lp, &[(1, &a)], 5, 1);
        drop((a, _b, log));
        let log = open_log(&mut lp, tmp.path(), Options::default());
        assert!(log.torn_tail().is_none(), "the cut tail was zeroed");
        assert_eq!(open_stream(&mut lp, &log, tmp.path(), 1).1.entries, entries(1, 1..=5));
    }

    fn a_corrupt_record_in_the_middle_is_reported_with_file_and_offset(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let log = open_log(&mut lp, tmp.path(), Options::default());
        let (a, _) = open_stream(&mut lp, &log, tmp.path(), 0);
        let (b, _) = open_stream(&mut lp, &log, tmp.path(), 1);
        append_round(&mut lp, &[(0, &a), (1, &b)], 1, 3);
        append_round(&mut lp, &[(0, &a), (1, &b)], 4, 3);
        drop((a, b, log));
        let segment = only_segment(&log_dir(tmp.path()));
        let mut bytes = std::fs::read(&segment).unwrap();
        let first_record = 16 + 12 + entry(0, 1).len();
        bytes[first_record + 20] ^= 0x01; // inside the second record
        std::fs::write(&segment, &bytes).unwrap();
        match SharedLog::open_blocking(&mut lp, &log_dir(tmp.path()), Options::default()) {
            Err(OpenError::Corrupt { file, offset, .. }) => {
                assert_eq!(file, segment);
                assert_eq!(offset, first_record as u64);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    fn compaction_keeps_a_segment_while_any_stream_needs_it(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let log = open_log(&mut lp, tmp.path(), small_segments());
        let (a, _) = open_stream(&mut lp, &log, tmp.path(), 0);
        let (b, _) = open_stream(&mut lp, &log, tmp.path(), 1);
        let (c, _) = open_stream(&mut lp, &log, tmp.path(), 2);
        for round in 0..4 {
            append_round(&mut lp, &[(0, &a), (1, &b)], 1 + round * 3, 3);
        }
        for round in 0..4 {
            append_round(&mut lp, &[(0, &a), (2, &c)], 13 + round * 3, 3);
        }
        let segments_before = segments(&log_dir(tmp.path())).len();
        assert!(segments_before >= 4, "{segments_before} segments");
        snapshot(&mut lp, &a, b"a".to_vec(), 24).unwrap();
        assert_eq!(segments(&log_dir(tmp.path())).len(), segments_before, "b and c still need them");
        snapshot(&mut lp, &b, b"b".to_vec(), 12).unwrap();
        let after_b = segments(&log_dir(tmp.path())).len();
        assert!(after_b < segments_before, "segments only a and b had are gone ({after_b})");
        assert!(after_b >= 2, "c's segments stay ({after_b})");
        assert_eq!(log.segments(), after_b);
        drop((a, b, c, log));

        let log = open_log(&mut lp, tmp.path(), small_segments());
        let (a, ra) = open_stream(&mut lp, &log, tmp.path(), 0);
        let (b, rb) = open_stream(&mut lp, &log, tmp.path(), 1);
        let (c, rc) = open_stream(&mut lp, &log, tmp.path(), 2);
        assert_eq!((ra.snapshot.as_deref(), ra.snapshot_seq, ra.entries.len(), ra.next_seq), (Some(&b"a"[..]), 24, 0, 25));
        assert_eq!((rb.snapshot.as_deref(), rb.snapshot_seq, rb.entries.len(), rb.next_seq), (Some(&b"b"[..]), 12, 0, 13));
        // c's own numbering starts at 1 (its payloads were made from 13 on).
        let c_entries: Vec<_> = (1..=12).map(|seq| (seq, entry(2, seq + 12))).collect();
        assert_eq!(rc.entries, c_entries, "c kept every entry");
        snapshot(&mut lp, &c, b"c".to_vec(), 12).unwrap();
        assert_eq!(segments(&log_dir(tmp.path())).len(), 1, "only the open segment is left");
        drop((a, b, c));
    }

    fn a_stream_reopened_while_its_entries_are_in_flight_recovers_them(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let log = open_log(&mut lp, tmp.path(), Options::default());
        let (a, _) = open_stream(&mut lp, &log, tmp.path(), 0);
        let (b, _) = open_stream(&mut lp, &log, tmp.path(), 1);
        let acked: Rc<RefCell<Vec<u64>>> = Rc::default();
        for i in 1..=10 {
            let acked = acked.clone();
            a.append(&mut lp, &entry(0, i), move |_, r| acked.borrow_mut().push(r.unwrap())).unwrap();
        }
        while a.in_flight_entries() == 0 {
            lp.run_once().unwrap();
        }
        for i in 11..=15 {
            let acked = acked.clone();
            a.append(&mut lp, &entry(0, i), move |_, r| acked.borrow_mut().push(r.unwrap())).unwrap();
        }
        assert_eq!((a.in_flight_entries(), a.queued_entries()), (10, 5));
        // The owner crashes: its store goes while the writer holds 15 entries.
        drop(a);
        let reopened: Rc<RefCell<Option<(usize, Recovered)>>> = Rc::default();
        let (slot, seen) = (reopened.clone(), acked.clone());
        log.open_stream(&mut lp, 0, stream_dir(tmp.path(), 0), move |_, res| {
            let (store, recovered) = res.unwrap();
            drop(store);
            *slot.borrow_mut() = Some((seen.borrow().len(), recovered));
        });
        // Other streams keep writing meanwhile.
        append_round(&mut lp, &[(1, &b)], 1, 3);
        while reopened.borrow().is_none() {
            lp.run_once().unwrap();
        }
        let (acked_before_open, recovered) = reopened.borrow_mut().take().unwrap();
        assert_eq!(acked_before_open, 15, "every entry of the old owner settled first");
        assert_eq!(recovered.entries, entries(0, 1..=15));
        assert_eq!(recovered.next_seq, 16);
        // A later recovery sees exactly the same.
        drop((b, log));
        let log = open_log(&mut lp, tmp.path(), Options::default());
        assert_eq!(open_stream(&mut lp, &log, tmp.path(), 0).1.entries, entries(0, 1..=15));
    }

    fn a_stream_or_log_already_open_is_refused(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let log = open_log(&mut lp, tmp.path(), Options::default());
        let (a, _) = open_stream(&mut lp, &log, tmp.path(), 5);
        let again = log.open_stream_blocking(&mut lp, 5, &stream_dir(tmp.path(), 5));
        assert!(matches!(again, Err(OpenError::Locked { .. })), "{again:?}");
        let second = SharedLog::open_blocking(&mut lp, &log_dir(tmp.path()), Options::default());
        assert!(matches!(second, Err(OpenError::Locked { .. })), "{second:?}");
        let beyond = log.open_stream_blocking(&mut lp, STREAMS_MAX, &stream_dir(tmp.path(), 9));
        assert!(matches!(beyond, Err(OpenError::InvalidOptions(_))), "{beyond:?}");
        close(&mut lp, &a).unwrap();
        // Closed: the stream may be opened again.
        let (_a, recovered) = open_stream(&mut lp, &log, tmp.path(), 5);
        assert_eq!(recovered.next_seq, 1);
    }

    fn a_directory_with_its_own_log_is_not_taken_as_a_stream(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let (own, _) = open(&mut lp, &stream_dir(tmp.path(), 0), Options::default()).unwrap();
        append_all(&mut lp, &own, &[payload(1)]);
        close(&mut lp, &own).unwrap();
        let log = open_log(&mut lp, tmp.path(), Options::default());
        let refused = log.open_stream_blocking(&mut lp, 0, &stream_dir(tmp.path(), 0));
        assert!(matches!(refused, Err(OpenError::Corrupt { .. })), "{refused:?}");
    }

    fn interval_and_never_modes_work_on_a_shared_log(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let interval = Options { durability: Durability::Interval(Duration::from_millis(20)), ..Options::default() };
        let mut lp = new_loop(backend);
        let log = open_log(&mut lp, tmp.path(), interval.clone());
        let (a, _) = open_stream(&mut lp, &log, tmp.path(), 0);
        let (b, _) = open_stream(&mut lp, &log, tmp.path(), 1);
        append_round(&mut lp, &[(0, &a), (1, &b)], 1, 3);
        assert_eq!(log.stats().fdatasyncs, 0, "acknowledged before any fdatasync");
        close(&mut lp, &a).unwrap();
        assert_eq!(log.stats().fdatasyncs, 1, "a stream's close syncs its entries");
        close(&mut lp, &b).unwrap();
        close_log(&mut lp, &log).unwrap();
        drop((a, b, log));

        let never = Options { durability: Durability::Never, ..Options::default() };
        let log = open_log(&mut lp, tmp.path(), never.clone());
        let (a, ra) = open_stream(&mut lp, &log, tmp.path(), 0);
        assert_eq!(ra.entries, entries(0, 1..=3));
        append_round(&mut lp, &[(0, &a)], 4, 2);
        assert_eq!(log.stats().entries_written, 0, "memory only");
        assert_eq!(a.append_unlogged(), Ok(Some(6)));
        assert_eq!(a.next_seq(), 7);
        snapshot(&mut lp, &a, b"six".to_vec(), 6).unwrap();
        close(&mut lp, &a).unwrap();
        drop((a, log));
        let log = open_log(&mut lp, tmp.path(), never);
        let (_a, ra) = open_stream(&mut lp, &log, tmp.path(), 0);
        assert_eq!((ra.snapshot.as_deref(), ra.snapshot_seq, ra.next_seq), (Some(&b"six"[..]), 6, 7));
        let (_b, rb) = open_stream(&mut lp, &log, tmp.path(), 1);
        assert_eq!(rb.entries, entries(1, 1..=3));
    }
}

//! Group commit, durability modes, limits and close.

mod persist_common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use persist_common::*;
use ringvisor_behaviours::persist::{Durability, Options, StoreError, RECORD_HEADER_BYTES};
use ringvisor_runtime::backend_tests;

backend_tests! {
    fn sixty_four_appends_in_one_tick_take_one_fdatasync(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), Options::default()).unwrap();
        let payloads: Vec<_> = (1..=64).map(payload).collect();
        let seqs = append_all(&mut lp, &store, &payloads);
        assert_eq!(seqs, (1..=64).collect::<Vec<_>>(), "acknowledged in order");
        let stats = store.stats();
        assert_eq!((stats.fdatasyncs, stats.batches, stats.entries_written), (1, 1, 64));
        assert_eq!(stats.batch_entries_peak, 64);
    }

    fn appends_during_an_inflight_batch_form_the_next_batch(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), Options::default()).unwrap();
        let store = Rc::new(store);
        let order: Rc<RefCell<Vec<u64>>> = Rc::default();
        let record = |order: &Rc<RefCell<Vec<u64>>>| {
            let order = order.clone();
            move |_: &mut ringvisor_runtime::Loop, res: std::io::Result<u64>| order.borrow_mut().push(res.unwrap())
        };
        for i in 1..=10 {
            store.append(&mut lp, &payload(i), record(&order)).unwrap();
        }
        assert_eq!(store.queued_entries(), 10);
        while store.in_flight_entries() == 0 {
            lp.run_once().unwrap();
        }
        assert_eq!((store.in_flight_entries(), store.queued_entries()), (10, 0));
        assert!(order.borrow().is_empty(), "first batch not yet durable");
        for i in 11..=15 {
            store.append(&mut lp, &payload(i), record(&order)).unwrap();
        }
        assert_eq!((store.in_flight_entries(), store.queued_entries()), (10, 5));
        while order.borrow().len() < 15 {
            lp.run_once().unwrap();
        }
        assert_eq!(*order.borrow(), (1..=15).collect::<Vec<_>>());
        let stats = store.stats();
        assert_eq!((stats.batches, stats.fdatasyncs, stats.entries_written), (2, 2, 15));
        assert_eq!(stats.batch_entries_peak, 10);
    }

    fn batch_entries_max_splits_a_tick_into_batches(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let options = Options { batch_entries_max: 4, ..Options::default() };
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), options.clone()).unwrap();
        let seqs = append_all(&mut lp, &store, &(1..=10).map(payload).collect::<Vec<_>>());
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
        let stats = store.stats();
        assert_eq!((stats.batches, stats.fdatasyncs, stats.batch_entries_peak), (3, 3, 4));
        close(&mut lp, &store).unwrap();
        let (_, recovered) = open(&mut lp, tmp.path(), options).unwrap();
        assert_eq!(recovered.entries.len(), 10);
    }

    fn batch_bytes_max_splits_a_tick_into_batches(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let record_bytes = RECORD_HEADER_BYTES + 100;
        let options = Options {
            record_bytes_max: 100,
            batch_bytes_max: 3 * record_bytes,
            ..Options::default()
        };
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), options).unwrap();
        append_all(&mut lp, &store, &vec![vec![7u8; 100]; 7]);
        let stats = store.stats();
        assert_eq!((stats.batches, stats.batch_entries_peak), (3, 3));
        assert_eq!(stats.bytes_written, 7 * record_bytes as u64);
    }

    fn record_above_record_bytes_max_is_refused(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let options = Options { record_bytes_max: 100, ..Options::default() };
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), options).unwrap();
        let refused = store.append(&mut lp, &[0u8; 101], |_, _| panic!("refused entries never call back"));
        assert_eq!(refused, Err(StoreError::TooLarge { bytes: 101, max: 100 }));
        assert_eq!(append_all(&mut lp, &store, &[vec![0u8; 100]]), vec![1], "the refused entry took no seq");
    }

    fn pending_bytes_max_refuses_appends_until_the_queue_drains(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let record_bytes = RECORD_HEADER_BYTES + 50;
        let options = Options {
            record_bytes_max: 50,
            batch_bytes_max: 2 * record_bytes,
            pending_bytes_max: 4 * record_bytes,
            segment_bytes_max: 1 << 20,
            ..Options::default()
        };
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), options).unwrap();
        let acked = Rc::new(RefCell::new(0));
        for _ in 0..4 {
            let acked = acked.clone();
            store.append(&mut lp, &[1u8; 50], move |_, r| { r.unwrap(); *acked.borrow_mut() += 1; }).unwrap();
        }
        let full = store.append(&mut lp, &[1u8; 50], |_, _| panic!("refused"));
        assert_eq!(full, Err(StoreError::Full { pending_bytes: 4 * record_bytes, max: 4 * record_bytes }));
        while *acked.borrow() < 4 {
            lp.run_once().unwrap();
        }
        assert_eq!(append_all(&mut lp, &store, &[vec![1u8; 50]]), vec![5]);
    }

    fn interval_mode_acks_before_sync_and_syncs_on_the_timer(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let options = Options { durability: Durability::Interval(Duration::from_millis(20)), ..Options::default() };
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), options.clone()).unwrap();
        let seqs = append_all(&mut lp, &store, &(1..=5).map(payload).collect::<Vec<_>>());
        assert_eq!(seqs, (1..=5).collect::<Vec<_>>());
        assert_eq!(store.stats().fdatasyncs, 0, "acknowledged before any fdatasync");
        while !store.is_idle() {
            lp.run_once().unwrap();
        }
        let stats = store.stats();
        assert_eq!((stats.fdatasyncs, stats.entries_written), (1, 5), "one timer sync for the batch");
        append_all(&mut lp, &store, &[payload(6)]);
        close(&mut lp, &store).unwrap();
        assert_eq!(store.stats().fdatasyncs, 2, "close syncs what the timer had not");
        let (_, recovered) = open(&mut lp, tmp.path(), options).unwrap();
        assert_eq!(recovered.entries.len(), 6);
    }

    fn never_mode_writes_nothing_but_the_snapshot(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let options = Options { durability: Durability::Never, ..Options::default() };
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), options.clone()).unwrap();
        assert_eq!(append_all(&mut lp, &store, &(1..=3).map(payload).collect::<Vec<_>>()), vec![1, 2, 3]);
        // Taking a seq without a callback, as a memory-only store allows.
        assert_eq!(store.append_unlogged(), Ok(Some(4)));
        assert_eq!(store.next_seq(), 5);
        assert_eq!(store.stats(), Default::default());
        assert!(segments(tmp.path()).is_empty());
        // Crash (drop without snapshot): everything is gone.
        drop(store);
        let (store, recovered) = open(&mut lp, tmp.path(), options.clone()).unwrap();
        assert_eq!((recovered.next_seq, recovered.entries.len()), (1, 0));
        // Clean shutdown: snapshot, then close.
        append_all(&mut lp, &store, &(1..=3).map(payload).collect::<Vec<_>>());
        snapshot(&mut lp, &store, b"three".to_vec(), 3).unwrap();
        close(&mut lp, &store).unwrap();
        let (_, recovered) = open(&mut lp, tmp.path(), options).unwrap();
        assert_eq!(recovered.snapshot.as_deref(), Some(&b"three"[..]));
        assert_eq!((recovered.snapshot_seq, recovered.next_seq), (3, 4));
    }

    fn a_logging_store_takes_no_unlogged_seq_and_a_closed_one_refuses(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), Options::default()).unwrap();
        assert_eq!(store.append_unlogged(), Ok(None));
        assert_eq!(store.next_seq(), 1, "nothing taken");
        close(&mut lp, &store).unwrap();
        let never = Options { durability: Durability::Never, ..Options::default() };
        let (store, _) = open(&mut lp, tmp.path(), never).unwrap();
        close(&mut lp, &store).unwrap();
        assert_eq!(store.append_unlogged(), Err(StoreError::Closed));
    }

    fn close_flushes_entries_appended_in_the_same_tick(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), Options::default()).unwrap();
        let acked: Rc<RefCell<Vec<u64>>> = Rc::default();
        for i in 1..=8 {
            let acked = acked.clone();
            store.append(&mut lp, &payload(i), move |_, r| acked.borrow_mut().push(r.unwrap())).unwrap();
        }
        let acked_at_close = Rc::new(RefCell::new(None));
        let (a, c) = (acked.clone(), acked_at_close.clone());
        store.close(&mut lp, move |_, res| { res.unwrap(); *c.borrow_mut() = Some(a.borrow().len()); }).unwrap();
        assert_eq!(store.append(&mut lp, b"late", |_, _| panic!("refused")), Err(StoreError::Closed));
        assert!(store.close(&mut lp, |_, _| {}).is_err());
        lp.run().unwrap();
        assert_eq!(*acked_at_close.borrow(), Some(8), "every entry durable before close calls back");
        let (_, recovered) = open(&mut lp, tmp.path(), Options::default()).unwrap();
        assert_eq!(recovered.entries.len(), 8);
    }

    fn writers_that_reappend_on_ack_are_batched(backend) {
        // 32 writers, each re-appending when acknowledged, 20 rounds each.
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), Options::default()).unwrap();
        let store = Rc::new(store);
        let done = Rc::new(RefCell::new(0u32));
        fn writer(lp: &mut ringvisor_runtime::Loop, store: Rc<ringvisor_behaviours::persist::Store>, left: u32, done: Rc<RefCell<u32>>) {
            if left == 0 {
                *done.borrow_mut() += 1;
                return;
            }
            let s = store.clone();
            store.append(lp, b"w", move |lp, r| { r.unwrap(); writer(lp, s, left - 1, done) }).unwrap();
        }
        for _ in 0..32 {
            writer(&mut lp, store.clone(), 20, done.clone());
        }
        while *done.borrow() < 32 {
            lp.run_once().unwrap();
        }
        let stats = store.stats();
        assert_eq!(stats.entries_written, 640);
        assert!(stats.entries_per_fdatasync() >= 16.0, "{stats:?}");
    }

    fn a_log_io_error_fails_waiters_and_refuses_later_appends(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), Options::default()).unwrap();
        // Block the first segment's name so creating it fails (EEXIST).
        let blocker = tmp.path().join(ringvisor_behaviours::persist::segment_file_name(1));
        std::fs::create_dir(&blocker).unwrap();
        let errors: Rc<RefCell<Vec<std::io::ErrorKind>>> = Rc::default();
        for i in 1..=3 {
            let errors = errors.clone();
            store.append(&mut lp, &payload(i), move |_, r| errors.borrow_mut().push(r.unwrap_err().kind())).unwrap();
        }
        while errors.borrow().len() < 3 {
            lp.run_once().unwrap();
        }
        assert_eq!(*errors.borrow(), vec![std::io::ErrorKind::AlreadyExists; 3]);
        let refused = store.append(&mut lp, b"x", |_, _| panic!("refused"));
        assert!(matches!(refused, Err(StoreError::Failed { .. })), "{refused:?}");
        let error = close(&mut lp, &store).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
        // The lock was released all the same.
        std::fs::remove_dir(&blocker).unwrap();
        let (_, recovered) = open(&mut lp, tmp.path(), Options::default()).unwrap();
        assert!(recovered.entries.is_empty());
    }
}

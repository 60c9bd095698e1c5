//! Batches in flight (`Options::batches_in_flight_max`): several batches
//! written one after another with their fdatasyncs overlapping, on a shared
//! log and on a store's own log. Acknowledgements come in log order, the
//! limit holds, and a crash with several batches in flight recovers a
//! prefix of the log.
//!
//! Each test appends one entry per loop tick (from a zero-length timer), so
//! that a new batch is sealed while earlier ones are still being synced.

mod persist_common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use persist_common::*;
use ringvisor_behaviours::persist::{Durability, Options, SharedLog, Store};
use ringvisor_runtime::{backend_tests, Loop};

/// Entries appended before a test stops appending.
const APPENDS: usize = 300;

fn pipelined(batches_in_flight_max: usize) -> Options {
    Options {
        batches_in_flight_max,
        ..Options::default()
    }
}

fn entry(stream: u32, seq: u64) -> Vec<u8> {
    let mut bytes = payload(seq);
    bytes.insert(0, stream as u8);
    bytes
}

/// Acknowledged `(stream, seq)`s, in the order their callbacks ran.
type Acks = Rc<RefCell<Vec<(u32, u64)>>>;

/// Appends entry `seq` of `stream` to `store`, noting its acknowledgement.
fn append(lp: &mut Loop, store: &Store, stream: u32, seq: u64, acks: &Acks) {
    let acks = acks.clone();
    let appended = store
        .append(lp, &entry(stream, seq), move |_, res| {
            assert_eq!(
                res.expect("durable"),
                seq,
                "acknowledged with its stream seq"
            );
            acks.borrow_mut().push((stream, seq));
        })
        .unwrap();
    assert_eq!(appended, seq);
}

/// What [`append_one_per_tick`] keeps between ticks.
struct Ticker {
    stores: Vec<Store>,
    acks: Acks,
    /// Most entries appended.
    limit: usize,
    appended: RefCell<Vec<(u32, u64)>>,
    peak: std::cell::Cell<usize>,
    stopped: std::cell::Cell<bool>,
    in_flight: Box<dyn Fn() -> usize>,
    stop: Box<dyn Fn(&Ticker) -> bool>,
}

/// From a zero-length timer, so once per tick and inside it (a batch is
/// sealed at the end of the tick its entries were appended in): appends
/// the next entry round robin over the stores, until `APPENDS` or `stop`.
fn tick(lp: &mut Loop, t: Rc<Ticker>) {
    t.peak.set(t.peak.get().max((t.in_flight)()));
    let i = t.appended.borrow().len();
    if i == t.limit || (t.stop)(&t) {
        t.stopped.set(true);
        return;
    }
    let stream = (i % t.stores.len()) as u32;
    let seq = (i / t.stores.len()) as u64 + 1;
    append(lp, &t.stores[stream as usize], stream, seq, &t.acks);
    t.appended.borrow_mut().push((stream, seq));
    lp.timer(Duration::ZERO, move |lp| tick(lp, t));
}

/// Runs [`tick`] until it stops, at most `APPENDS` entries; returns the `(stream, seq)`s in the order
/// they were appended and the most batches seen in flight.
fn append_one_per_tick(
    lp: &mut Loop,
    stores: Vec<Store>,
    acks: &Acks,
    in_flight: impl Fn() -> usize + 'static,
    stop: impl Fn(&Ticker) -> bool + 'static,
) -> (Rc<Ticker>, Vec<(u32, u64)>, usize) {
    append_per_tick_up_to(lp, stores, acks, APPENDS, in_flight, stop)
}

fn append_per_tick_up_to(
    lp: &mut Loop,
    stores: Vec<Store>,
    acks: &Acks,
    limit: usize,
    in_flight: impl Fn() -> usize + 'static,
    stop: impl Fn(&Ticker) -> bool + 'static,
) -> (Rc<Ticker>, Vec<(u32, u64)>, usize) {
    // First one entry each, acknowledged: the log's first segment is open
    // (appends made while it is being created would all join one batch).
    let mut first = Vec::new();
    for (stream, store) in stores.iter().enumerate() {
        append(lp, store, stream as u32, 1, acks);
        first.push((stream as u32, 1));
    }
    while acks.borrow().len() < first.len() {
        lp.run_once().unwrap();
    }
    let ticker = Rc::new(Ticker {
        stores,
        acks: acks.clone(),
        limit,
        appended: RefCell::new(first),
        peak: Default::default(),
        stopped: Default::default(),
        in_flight: Box::new(in_flight),
        stop: Box::new(stop),
    });
    let t = ticker.clone();
    lp.timer(Duration::ZERO, move |lp| tick(lp, t));
    while !ticker.stopped.get() {
        lp.run_once().unwrap();
    }
    let appended = ticker.appended.borrow().clone();
    let peak = ticker.peak.get();
    (ticker, appended, peak)
}

backend_tests! {
    fn a_shared_log_acknowledges_in_log_order_with_batches_in_flight(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let log = SharedLog::open_blocking(&mut lp, &tmp.path().join("log"), pipelined(2)).unwrap();
        let stores: Vec<Store> = (0..3)
            .map(|s| log.open_stream_blocking(&mut lp, s, &tmp.path().join(format!("s{s}"))).unwrap().0)
            .collect();
        let acks = Acks::default();
        let l = log.clone();
        let (_ticker, appended, peak) =
            append_one_per_tick(&mut lp, stores, &acks, move || l.batches_in_flight(), |_| false);
        while acks.borrow().len() < appended.len() {
            lp.run_once().unwrap();
            assert!(log.batches_in_flight() <= 2, "the limit holds");
        }
        // Batch n's sync may complete before batch n-1's (the poll
        // backend's file threads run them in parallel); its entries still
        // wait for n-1's.
        assert_eq!(*acks.borrow(), appended, "acknowledged in log order");
        let stats = log.stats();
        assert_eq!((peak, stats.batches_in_flight_peak), (2, 2), "the limit is reached, never passed");
        assert_eq!(stats.fdatasyncs, stats.batches, "one fdatasync per batch");
        assert_eq!(stats.entries_written, APPENDS as u64);
        assert!(stats.batches > 1);
    }

    fn a_store_s_own_log_pipelines_its_batches_too(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let (store, _) = open(&mut lp, tmp.path(), pipelined(3)).unwrap();
        let acks = Acks::default();
        let (ticker, appended, _) = append_one_per_tick(&mut lp, vec![store], &acks, || 0, |_| false);
        while acks.borrow().len() < appended.len() {
            lp.run_once().unwrap();
        }
        assert_eq!(*acks.borrow(), appended, "acknowledged in order");
        let store = &ticker.stores[0];
        let peak = store.stats().batches_in_flight_peak;
        assert_eq!(peak, 3, "the limit is reached, never passed");
        close(&mut lp, store).unwrap();
        let (_, recovered) = open(&mut lp, tmp.path(), pipelined(3)).unwrap();
        let expected: Vec<(u64, Vec<u8>)> = (1..=APPENDS as u64).map(|s| (s, entry(0, s))).collect();
        assert_eq!(recovered.entries, expected);
    }

    fn a_crash_with_batches_in_flight_recovers_a_prefix_of_the_log(backend) {
        let tmp = tempfile::tempdir().unwrap();
        let log_dir = tmp.path().join("log");
        let stream_dir = |s: u32| tmp.path().join(format!("s{s}"));
        let mut lp = new_loop(backend);
        let log = SharedLog::open_blocking(&mut lp, &log_dir, pipelined(4)).unwrap();
        let stores: Vec<Store> =
            (0..2).map(|s| log.open_stream_blocking(&mut lp, s, &stream_dir(s)).unwrap().0).collect();
        let acks = Acks::default();
        let (l, m) = (log.clone(), log.clone());
        let (ticker, appended, _) = append_one_per_tick(
            &mut lp,
            stores,
            &acks,
            move || l.batches_in_flight(),
            move |t| !t.acks.borrow().is_empty() && m.batches_in_flight() >= 3,
        );
        assert!(log.batches_in_flight() >= 2, "crash with batches in flight");
        let acked = acks.borrow().clone();
        // Crash: nothing is closed, the loop goes with its ops in flight.
        drop((ticker, log));
        drop(lp);

        let mut lp = new_loop(backend);
        let log = SharedLog::open_blocking(&mut lp, &log_dir, pipelined(4)).unwrap();
        let recovered: Vec<Vec<(u64, Vec<u8>)>> = (0..2)
            .map(|s| log.open_stream_blocking(&mut lp, s, &stream_dir(s)).unwrap().1.entries)
            .collect();
        // Writes go out in log order: what survives is the first n entries
        // appended, whichever stream they belong to.
        let n = recovered.iter().map(Vec::len).sum::<usize>();
        for (stream, entries) in recovered.iter().enumerate() {
            let stream = stream as u32;
            let expected: Vec<(u64, Vec<u8>)> = appended[..n]
                .iter()
                .filter(|(s, _)| *s == stream)
                .map(|&(s, seq)| (seq, entry(s, seq)))
                .collect();
            assert_eq!(*entries, expected, "stream {stream} recovered a prefix of the log");
        }
        assert!(n >= acked.len(), "every acknowledged entry survives ({n} < {})", acked.len());
        assert_eq!(acked[..], appended[..acked.len()], "acknowledged in log order");
    }

    fn an_interval_sync_runs_under_a_steady_load_of_batches(backend) {
        // A due sync waits for the batches in flight and stops new ones:
        // with a new batch every tick the pipeline must still drain.
        let tmp = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let options = Options {
            durability: Durability::Interval(Duration::from_millis(1)),
            ..pipelined(2)
        };
        let log = SharedLog::open_blocking(&mut lp, &tmp.path().join("log"), options).unwrap();
        let store = log.open_stream_blocking(&mut lp, 0, &tmp.path().join("s0")).unwrap().0;
        let acks = Acks::default();
        let (l, m) = (log.clone(), log.clone());
        let limit = 2_000_000;
        let (_ticker, appended, _) = append_per_tick_up_to(
            &mut lp,
            vec![store],
            &acks,
            limit,
            move || l.batches_in_flight(),
            move |_| m.stats().fdatasyncs >= 3,
        );
        assert!(appended.len() < limit, "interval syncs ran while appends went on");
        assert!(log.stats().batches > 3, "{:?}", log.stats());
    }
}

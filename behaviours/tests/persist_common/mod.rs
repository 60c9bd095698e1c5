//! Helpers shared by the persist integration tests.
#![allow(dead_code)]

use std::cell::RefCell;
use std::io;
use std::path::Path;
use std::rc::Rc;

use ringvisor_behaviours::persist::{open_blocking, OpenError, Options, Recovered, Store};
use ringvisor_runtime::{Backend, Loop};

pub fn new_loop(backend: Backend) -> Loop {
    Loop::builder().backend(backend).build().unwrap()
}

pub fn open(lp: &mut Loop, dir: &Path, options: Options) -> Result<(Store, Recovered), OpenError> {
    open_blocking(lp, dir, options)
}

/// Appends every payload in one tick and runs the loop until all are acked.
pub fn append_all(lp: &mut Loop, store: &Store, payloads: &[Vec<u8>]) -> Vec<u64> {
    let acked: Rc<RefCell<Vec<u64>>> = Rc::default();
    for payload in payloads {
        let acked = acked.clone();
        store
            .append(lp, payload, move |_, res| {
                acked.borrow_mut().push(res.unwrap())
            })
            .unwrap();
    }
    while acked.borrow().len() < payloads.len() {
        lp.run_once().unwrap();
    }
    let seqs = acked.borrow().clone();
    seqs
}

/// Closes the store and runs until it is closed.
pub fn close(lp: &mut Loop, store: &Store) -> io::Result<()> {
    let out: Rc<RefCell<Option<io::Result<()>>>> = Rc::default();
    let slot = out.clone();
    store
        .close(lp, move |_, res| *slot.borrow_mut() = Some(res))
        .unwrap();
    while out.borrow().is_none() {
        lp.run_once().unwrap();
    }
    let result = out.borrow_mut().take().unwrap();
    result
}

/// Snapshots and runs until done.
pub fn snapshot(lp: &mut Loop, store: &Store, state: Vec<u8>, covering_seq: u64) -> io::Result<()> {
    let out: Rc<RefCell<Option<io::Result<()>>>> = Rc::default();
    let slot = out.clone();
    store
        .snapshot(lp, state, covering_seq, move |_, res| {
            *slot.borrow_mut() = Some(res)
        })
        .unwrap();
    while out.borrow().is_none() {
        lp.run_once().unwrap();
    }
    let result = out.borrow_mut().take().unwrap();
    result
}

/// Payload of entry `i` in tests: recognisable and of varying length.
pub fn payload(i: u64) -> Vec<u8> {
    let len = 1 + (i * 7 % 23) as usize;
    (0..len)
        .map(|k| (i as u8).wrapping_mul(31).wrapping_add(k as u8))
        .collect()
}

/// The single log segment's path (panics if there is not exactly one).
pub fn only_segment(dir: &Path) -> std::path::PathBuf {
    let segments = segments(dir);
    assert_eq!(segments.len(), 1, "segments: {segments:?}");
    segments.into_iter().next().unwrap()
}

/// Log segments in `dir`, sorted.
pub fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments
}

//! The linked pair at the driver level, with and without CQE skipping (the
//! loop always gets whichever the kernel has, so only here is the other mode
//! exercised): one completion per op, none stray afterwards, cancels that
//! land wherever the pair is, and closes held until the pair is back.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::*;
use crate::backend::{BackendConfig, Driver, Push};
use crate::op::{Completion, OpError, OpState, OpTable, SendRecvBufs, Settled};
use crate::stats::Stats;

/// Waits a test allows before calling the pair lost.
const WAITS_MAX: usize = 200;

struct Harness {
    driver: UringDriver,
    ops: OpTable,
    stats: Stats,
    done: Vec<RawCompletion>,
}

impl Harness {
    fn new(cqe_skip: bool) -> Harness {
        let config = BackendConfig {
            sq_entries: 8,
            file_threads: 1,
            batch_wait: std::time::Duration::ZERO,
        };
        let mut driver = UringDriver::open(config).expect("io_uring");
        driver.linked.cqe_skip = cqe_skip;
        Harness {
            driver,
            ops: OpTable::new(),
            stats: Stats::default(),
            done: Vec::new(),
        }
    }

    fn submit(&mut self, kind: OpKind) -> OpId {
        let id = self.ops.insert(kind, None);
        let key = id.key as usize;
        let slot = self.ops.slot_mut(key).expect("inserted");
        match self
            .driver
            .push(id, &mut slot.kind, &mut self.done, &mut self.stats)
        {
            Push::Accepted => self.ops.mark_in_kernel(key),
            Push::Full => panic!("SQ full in a test"),
        }
        id
    }

    fn cancel(&mut self, id: OpId) {
        let key = id.key as usize;
        assert!(self.ops.mark_canceling(key));
        let kind = &self.ops.slot_mut(key).expect("live").kind;
        self.driver
            .cancel(id, kind, &mut self.done, &mut self.stats);
    }

    /// Waits once; returns the completions settled.
    fn wait(&mut self, timeout: Duration) -> Vec<(usize, Completion)> {
        self.driver
            .wait(
                Some(timeout),
                &mut self.ops,
                &mut self.done,
                &mut self.stats,
            )
            .expect("wait");
        while let Some(raw) = self.driver.next_completion() {
            self.done.push(raw);
        }
        let mut settled = Vec::new();
        for raw in std::mem::take(&mut self.done) {
            let key = raw.key & !crate::op::SEND_DONE_KEY_FLAG;
            match self.ops.settle(raw) {
                Settled::Deliver(_, completion) => settled.push((key, completion)),
                Settled::Resubmit(_) => panic!("no short sends expected here"),
                Settled::Reap(..) => panic!("nothing to reap here"),
            }
        }
        settled
    }

    /// Waits until op `id` completes; asserts nothing else does.
    fn complete(&mut self, id: OpId) -> Completion {
        for _ in 0..WAITS_MAX {
            let mut settled = self.wait(Duration::from_millis(50));
            if let Some((key, _)) = settled.first() {
                assert_eq!(*key, id.key as usize, "only this op was in flight");
                assert_eq!(settled.len(), 1, "one completion per op");
                return settled.pop().expect("one").1;
            }
        }
        panic!("op did not complete");
    }

    /// A nop round trip completes alone: no CQE of an earlier pair strays
    /// in after its op completed.
    fn assert_no_stray_cqe(&mut self) {
        let nop = self.submit(OpKind::Nop);
        let completion = self.complete(nop);
        assert!(completion.result.is_ok());
        assert_eq!(self.ops.len(), 0);
        assert!(self.driver.linked.ops.iter().all(Option::is_none));
        assert!(self.driver.linked.per_fd.iter().all(|&n| n == 0));
        assert!(self.driver.linked.canceling.is_empty());
    }
}

/// A connected pair; the peer end fails a test instead of blocking forever.
fn pair() -> (UnixStream, UnixStream) {
    let (ours, peer) = UnixStream::pair().expect("pair");
    let limit = Some(Duration::from_secs(10));
    peer.set_read_timeout(limit).expect("timeout");
    peer.set_write_timeout(limit).expect("timeout");
    (ours, peer)
}

fn send_recv(fd: RawFd, out: &[u8]) -> OpKind {
    OpKind::SendRecv {
        fd,
        bufs: Box::new(SendRecvBufs {
            out: out.to_vec(),
            sent: 0,
            input: Vec::with_capacity(64),
            arg: 0,
        }),
    }
}

fn parts(completion: Completion) -> (Result<i32, OpError>, usize, Vec<u8>, Vec<u8>) {
    let OpKind::SendRecv { bufs, .. } = completion.kind else {
        panic!("not a send_recv")
    };
    let SendRecvBufs {
        out, sent, input, ..
    } = *bufs;
    (completion.result, sent, out, input)
}

fn both_modes(test: fn(bool)) {
    test(true);
    test(false);
}

#[test]
fn a_round_trip_completes_once_with_the_reply() {
    both_modes(|skip| {
        let mut h = Harness::new(skip);
        let (ours, mut peer) = pair();
        peer.write_all(b"pong").expect("write");
        let id = h.submit(send_recv(ours.as_raw_fd(), b"ping"));
        let (result, sent, out, input) = parts(h.complete(id));
        assert_eq!(result.expect("received"), 4, "skip={skip}");
        assert_eq!(
            (sent, &out[..], &input[..]),
            (4, &b"ping"[..], &b"pong"[..])
        );
        let mut got = [0u8; 4];
        peer.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"ping");
        h.assert_no_stray_cqe();
    });
}

#[test]
fn a_failed_send_reports_its_error_and_no_receive() {
    both_modes(|skip| {
        let mut h = Harness::new(skip);
        let (ours, peer) = pair();
        drop(peer);
        let id = h.submit(send_recv(ours.as_raw_fd(), b"ping"));
        let (result, sent, _, input) = parts(h.complete(id));
        let err = result.expect_err("the peer is gone");
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE), "skip={skip}");
        assert_eq!((sent, input.len()), (0, 0), "the receive never ran");
        h.assert_no_stray_cqe();
    });
}

#[test]
fn a_send_of_megabytes_is_one_op() {
    both_modes(|skip| {
        let mut h = Harness::new(skip);
        let (ours, mut peer) = pair();
        let out: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
        let expected = out.clone();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; expected.len()];
            peer.read_exact(&mut got).expect("read");
            assert!(got == expected, "bytes arrive whole and in order");
            peer.write_all(b"ok").expect("write");
        });
        let id = h.submit(send_recv(ours.as_raw_fd(), &out));
        let (result, sent, _, input) = parts(h.complete(id));
        assert_eq!(result.expect("received"), 2);
        assert_eq!((sent, &input[..]), (out.len(), &b"ok"[..]));
        reader.join().expect("reader");
        h.assert_no_stray_cqe();
    });
}

#[test]
fn a_cancel_reaches_a_receive_still_waiting_to_be_issued() {
    // Canceled before the first enter: the send completes during that
    // enter's submission and the receive waits in task work, where the
    // first round of cancels cannot find it. A later round must.
    both_modes(|skip| {
        let mut h = Harness::new(skip);
        let (ours, mut peer) = pair();
        let id = h.submit(send_recv(ours.as_raw_fd(), b"ping"));
        h.cancel(id);
        let (result, sent, _, _) = parts(h.complete(id));
        assert!(matches!(result, Err(OpError::Canceled)), "skip={skip}");
        assert_eq!(sent, 4, "the send finished; the receive was canceled");
        let mut got = [0u8; 4];
        peer.read_exact(&mut got).expect("read");
        h.assert_no_stray_cqe();
    });
}

#[test]
fn a_cancel_reaches_a_receive_waiting_for_data() {
    both_modes(|skip| {
        let mut h = Harness::new(skip);
        let (ours, _peer) = pair();
        let id = h.submit(send_recv(ours.as_raw_fd(), b"ping"));
        assert!(h.wait(Duration::from_millis(20)).is_empty());
        h.cancel(id);
        let (result, _, _, _) = parts(h.complete(id));
        assert!(matches!(result, Err(OpError::Canceled)), "skip={skip}");
        h.assert_no_stray_cqe();
    });
}

#[test]
fn a_close_waits_for_the_pair_on_its_fd_and_cancels_it() {
    both_modes(|skip| {
        let mut h = Harness::new(skip);
        let (ours, mut peer) = pair();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(ours);
        let id = h.submit(send_recv(fd, b"ping"));
        let close = h.submit(OpKind::Close { fd });
        let (result, _, _, _) = parts(h.complete(id));
        let err = result.expect_err("canceled by the close");
        assert_eq!(err.raw_os_error(), Some(libc::ECANCELED), "skip={skip}");
        assert_eq!(h.ops.state(close.key as usize), OpState::InKernel);
        h.complete(close).result.expect("close");
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).expect("EOF once closed");
        assert!(rest.is_empty() || rest == b"ping");
        h.assert_no_stray_cqe();
    });
}

//! Unit tests of the op lifecycle: reaping, send_all resubmission, reads.
use super::*;

fn in_kernel(table: &mut OpTable, kind: OpKind) -> usize {
    let key = table.insert(kind, None).key as usize;
    table.mark_in_kernel(key);
    key
}

fn accept() -> OpKind {
    OpKind::Accept {
        fd: 3,
        addr: SockAddrBuf::empty(),
    }
}

#[test]
fn an_fd_produced_for_a_canceled_accept_or_open_is_reaped() {
    let mut table = OpTable::new();
    let open = OpKind::Open {
        path: CString::new("/x").expect("no NUL"),
        flags: 0,
        mode: 0,
    };
    for kind in [accept(), open] {
        let key = in_kernel(&mut table, kind);
        assert!(table.mark_canceling(key));
        match table.settle(RawCompletion { key, res: 42 }) {
            Settled::Reap(fd, _, completion) => {
                assert_eq!(fd, 42);
                assert!(matches!(completion.result, Err(OpError::Canceled)));
            }
            _ => panic!("the late fd must be reaped"),
        }
    }
    assert_eq!((table.len(), table.in_kernel()), (0, 0));
}

#[test]
fn a_canceled_accept_that_failed_anyway_reaps_nothing() {
    let mut table = OpTable::new();
    let key = in_kernel(&mut table, accept());
    table.mark_canceling(key);
    let settled = table.settle(RawCompletion {
        key,
        res: -libc::ECANCELED,
    });
    assert!(matches!(settled, Settled::Deliver(_, c) if c.result.is_err()));
}

#[test]
fn a_failed_or_canceled_connect_gives_its_socket_to_the_reaper() {
    let mut table = OpTable::new();
    let connect = || OpKind::Connect {
        fd: 9,
        addr: SockAddrBuf::empty(),
        in_progress: false,
    };
    let key = in_kernel(&mut table, connect());
    let settled = table.settle(RawCompletion {
        key,
        res: -libc::ECONNREFUSED,
    });
    assert!(matches!(settled, Settled::Reap(9, ..)));
    let key = table.insert(connect(), None).key as usize;
    assert!(matches!(table.cancel_queued(key), Settled::Reap(9, ..)));
    // A connect that succeeded hands its socket to the caller.
    let key = in_kernel(&mut table, connect());
    let settled = table.settle(RawCompletion { key, res: 0 });
    assert!(matches!(settled, Settled::Deliver(_, c) if c.result.is_ok()));
}

#[test]
fn send_all_resubmits_partial_sends_and_reports_the_total() {
    let mut table = OpTable::new();
    let send = OpKind::Send {
        fd: 5,
        buf: vec![0; 10],
        offset: 0,
        all: true,
    };
    let key = in_kernel(&mut table, send);
    for res in [4, 3] {
        let Settled::Resubmit(id) = table.settle(RawCompletion { key, res }) else {
            panic!("a partial send goes back to the queue");
        };
        assert_eq!(table.state(id.key as usize), OpState::Queued);
        table.mark_in_kernel(key);
    }
    match table.settle(RawCompletion { key, res: 3 }) {
        Settled::Deliver(_, c) => assert_eq!(c.result.expect("sent"), 10),
        _ => panic!("the last piece completes the op"),
    }
}

#[test]
fn a_canceled_send_all_stops_after_its_partial_send_and_says_how_much_went_out() {
    let mut table = OpTable::new();
    let send = |table: &mut OpTable| {
        let kind = OpKind::Send {
            fd: 5,
            buf: vec![0; 10],
            offset: 0,
            all: true,
        };
        let key = in_kernel(table, kind);
        table.mark_canceling(key);
        key
    };
    // The kernel sent 4 bytes before the cancel reached it: no resubmit,
    // and the 4 bytes are reported (a caller that retried on `Canceled`
    // would send them twice).
    let key = send(&mut table);
    match table.settle(RawCompletion { key, res: 4 }) {
        Settled::Deliver(_, c) => assert_eq!(c.result.expect("sent before the cancel"), 4),
        _ => panic!("a canceling send_all is not resubmitted"),
    }
    // The kernel canceled it: `Canceled`.
    let key = send(&mut table);
    let settled = table.settle(RawCompletion {
        key,
        res: -libc::ECANCELED,
    });
    assert!(
        matches!(settled, Settled::Deliver(_, c) if matches!(c.result, Err(OpError::Canceled)))
    );
    assert_eq!(table.len(), 0);
}

#[test]
fn a_recv_that_finished_before_its_cancel_keeps_its_bytes() {
    let mut table = OpTable::new();
    let recv = |table: &mut OpTable| {
        let key = in_kernel(
            table,
            OpKind::Recv {
                fd: 5,
                buf: Vec::with_capacity(8),
            },
        );
        table.mark_canceling(key);
        key
    };
    let key = recv(&mut table);
    match table.settle(RawCompletion { key, res: 3 }) {
        Settled::Deliver(_, c) => {
            assert_eq!(c.result.expect("received before the cancel"), 3);
            let OpKind::Recv { buf, .. } = c.kind else {
                panic!("recv data")
            };
            assert_eq!(buf.len(), 3, "the bytes are kept");
        }
        _ => panic!("delivered"),
    }
    let key = recv(&mut table);
    let settled = table.settle(RawCompletion {
        key,
        res: -libc::ECANCELED,
    });
    assert!(
        matches!(settled, Settled::Deliver(_, c) if matches!(c.result, Err(OpError::Canceled)))
    );
    // An accept always ends canceled; its late fd is reaped.
    let key = in_kernel(
        &mut table,
        OpKind::Accept {
            fd: 5,
            addr: crate::op::SockAddrBuf::empty(),
        },
    );
    table.mark_canceling(key);
    let settled = table.settle(RawCompletion { key, res: 9 });
    assert!(
        matches!(settled, Settled::Reap(9, _, c) if matches!(c.result, Err(OpError::Canceled)))
    );
}

#[test]
fn a_recv_result_extends_the_buffer_by_the_bytes_received() {
    let mut table = OpTable::new();
    let mut buf = Vec::with_capacity(16);
    buf.extend_from_slice(b"ab");
    let key = in_kernel(&mut table, OpKind::Recv { fd: 1, buf });
    if let OpKind::Recv { buf, .. } = &mut table.slot_mut(key).expect("live").kind {
        buf.spare_capacity_mut()[0].write(b'c');
    }
    match table.settle(RawCompletion { key, res: 1 }) {
        Settled::Deliver(
            _,
            Completion {
                kind: OpKind::Recv { buf, .. },
                ..
            },
        ) => {
            assert_eq!(buf, b"abc");
        }
        _ => panic!("recv delivers its buffer"),
    }
}

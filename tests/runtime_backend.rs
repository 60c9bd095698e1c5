//! Backend mechanics: syscall batching, a tiny ring's overflow queue, and
//! `Auto` falling back to poll where io_uring is refused.

mod runtime_support;

use std::cell::Cell;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use ringvisor::{backend_tests, Backend, Loop, OpId};
use runtime_support::*;

const NOPS: u64 = 10_000;

fn nops_in_one_go(backend: Backend, sq_entries: u32) -> (Loop, u64) {
    let mut lp = Loop::builder()
        .backend(backend)
        .sq_entries(sq_entries)
        .build()
        .expect("loop");
    let ran = Rc::new(Cell::new(0u64));
    for _ in 0..NOPS {
        let r = ran.clone();
        lp.nop(move |_, res| {
            res.expect("nop");
            r.set(r.get() + 1);
        });
    }
    assert_eq!(lp.stats().syscalls, 0, "submitting makes no syscall");
    lp.run().expect("run");
    let ran = ran.get();
    (lp, ran)
}

backend_tests! {
    fn ten_thousand_nops_complete_within_the_batching_bound(backend) {
        for sq_entries in [64u32, 256, 1024] {
            let (lp, ran) = nops_in_one_go(backend, sq_entries);
            let stats = lp.stats();
            assert_eq!(ran, NOPS, "every callback ran");
            assert_eq!(stats.completions, NOPS);
            assert_eq!(stats.sqes_submitted, NOPS);
            let bound = NOPS.div_ceil(u64::from(sq_entries)) + 2;
            eprintln!("{backend} sq_entries={sq_entries}: {stats:?} (bound {bound})");
            match backend {
                Backend::Uring => assert!(stats.syscalls <= bound, "{stats:?}, bound {bound}"),
                // Nops need no syscall on poll: one wait delivers them all.
                _ => assert!(stats.syscalls <= 5, "{stats:?}"),
            }
            assert_eq!(stats.ticks, 1, "{stats:?}");
        }
    }

    fn a_tiny_ring_queues_what_does_not_fit_and_completes_everything(backend) {
        let mut lp = Loop::builder().backend(backend).sq_entries(4).build().expect("loop");
        let ran = Rc::new(Cell::new(0u64));
        for _ in 0..1000 {
            let r = ran.clone();
            lp.nop(move |_, res| {
                res.expect("nop");
                r.set(r.get() + 1);
            });
        }
        // Sockets too: 20 pairs, each echoing 64 KiB back and forth through the loop.
        let mut peers = Vec::new();
        for _ in 0..20 {
            let (fd, peer) = tcp_pair(backend);
            let r = ran.clone();
            lp.recv(fd, Vec::with_capacity(16), move |lp, res, buf| {
                assert_eq!(res.expect("recv"), 5);
                assert_eq!(buf, b"hello");
                lp.send_all(fd, pattern(64 * 1024), move |lp, res, _| {
                    assert_eq!(res.expect("send_all"), 64 * 1024);
                    r.set(r.get() + 1);
                    lp.close(fd, |_, res| res.expect("close"));
                });
            });
            peers.push(peer);
        }
        let peer_threads: Vec<_> = peers
            .into_iter()
            .map(|mut p| {
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    p.write_all(b"hello").expect("write");
                    let mut got = Vec::new();
                    p.read_to_end(&mut got).expect("read");
                    assert!(got == pattern(64 * 1024));
                })
            })
            .collect();
        lp.run_for(Duration::from_secs(30)).expect("run");
        for t in peer_threads {
            t.join().expect("peer");
        }
        assert_eq!(ran.get(), 1020);
        if backend == Backend::Uring {
            // 1000 nops through a 4-entry ring take at least 250 submissions.
            assert!(lp.stats().syscalls >= 250, "{:?}", lp.stats());
        }
    }

    fn a_panicking_callback_leaves_the_ticks_other_completions_to_the_next_run(backend) {
        let mut lp = Loop::builder().backend(backend).build().expect("loop");
        let ran = Rc::new(Cell::new(0u32));
        lp.nop(|_, _| panic!("callback fails"));
        for _ in 0..3 {
            let r = ran.clone();
            lp.nop(move |_, res| {
                res.expect("nop");
                r.set(r.get() + 1);
            });
        }
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lp.run()));
        assert!(run.is_err(), "the panic reaches the caller");
        assert_eq!(ran.get(), 0, "the panic came first");
        lp.run_for(Duration::from_secs(10)).expect("run");
        assert_eq!(ran.get(), 3, "each of the others ran once");
        assert_eq!(lp.stats().ops_in_flight, 0);
    }
}

/// Idle connected sockets whose recvs never complete on their own.
fn idle_sockets(backend: Backend, count: usize) -> (Vec<RawFd>, Vec<std::net::TcpStream>) {
    (0..count).map(|_| tcp_pair(backend)).unzip()
}

fn pending_recv(lp: &mut Loop, fd: RawFd, canceled: &Rc<Cell<u32>>) -> OpId {
    let c = canceled.clone();
    lp.recv(fd, Vec::with_capacity(8), move |_, res, _| {
        assert!(res.expect_err("nobody sends").is_canceled());
        c.set(c.get() + 1);
    })
}

#[test]
fn a_cancel_reaches_the_kernel_even_when_ops_fill_the_ring() {
    let (fds, peers) = idle_sockets(Backend::Uring, 5);
    let canceled = within(Duration::from_secs(10), move || {
        let mut lp = Loop::builder()
            .backend(Backend::Uring)
            .sq_entries(4)
            .build()
            .expect("loop");
        let canceled = Rc::new(Cell::new(0));
        let first = pending_recv(&mut lp, fds[0], &canceled);
        lp.run_nowait().expect("tick");
        // Exactly a ring's worth of new ops, then a cancel that needs an SQE too.
        let rest: Vec<OpId> = fds[1..]
            .iter()
            .map(|fd| pending_recv(&mut lp, *fd, &canceled))
            .collect();
        assert!(lp.cancel(first));
        lp.run_once().expect("tick");
        let after_one = canceled.get();
        for id in rest {
            lp.cancel(id);
        }
        lp.run().expect("run");
        for fd in fds {
            close_fd(fd);
        }
        (after_one, canceled.get())
    });
    assert_eq!(canceled, (1, 5));
    drop(peers);
}

/// Ops started by a posted closure, which must be `Send` and so keeps its
/// state in the loop.
#[derive(Default)]
struct Recvs {
    ids: Vec<OpId>,
    canceled: u32,
}

fn recvs(lp: &mut Loop) -> &mut Recvs {
    lp.extension_mut::<Recvs>().expect("recvs")
}

#[test]
fn a_post_wakes_the_loop_even_when_ops_fill_the_ring() {
    let (fds, peers) = idle_sockets(Backend::Uring, 4);
    within(Duration::from_secs(10), move || {
        let mut lp = Loop::builder()
            .backend(Backend::Uring)
            .sq_entries(4)
            .build()
            .expect("loop");
        lp.insert_extension(Recvs::default());
        // A post consumed in the first tick, whose closure fills the ring: the
        // next tick must still re-arm its wakeup read before sleeping.
        let fds2 = fds.clone();
        lp.handle()
            .post(move |lp| {
                for fd in fds2 {
                    let id = lp.recv(fd, Vec::with_capacity(8), |lp, res, _| {
                        assert!(res.expect_err("nobody sends").is_canceled());
                        recvs(lp).canceled += 1;
                    });
                    recvs(lp).ids.push(id);
                }
            })
            .expect("post");
        let handle = lp.handle();
        let poster = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            handle.post(|lp| lp.stop()).expect("post stop");
        });
        lp.run().expect("run until stopped");
        poster.join().expect("poster");
        assert_eq!(recvs(&mut lp).ids.len(), 4);
        for id in std::mem::take(&mut recvs(&mut lp).ids) {
            lp.cancel(id);
        }
        lp.run().expect("run");
        assert_eq!(recvs(&mut lp).canceled, 4);
        for fd in fds {
            close_fd(fd);
        }
    });
    drop(peers);
}

#[test]
fn completions_reaped_while_making_room_are_delivered_without_waiting() {
    let (fds, peers) = idle_sockets(Backend::Uring, 4);
    within(Duration::from_secs(10), move || {
        let mut lp = Loop::builder()
            .backend(Backend::Uring)
            .sq_entries(4)
            .build()
            .expect("loop");
        let nops = Rc::new(Cell::new(0));
        // A ring's worth of nops completes during the flush that makes room
        // for the recvs, which then fill the ring and never complete.
        for _ in 0..4 {
            let n = nops.clone();
            lp.nop(move |_, res| {
                res.expect("nop");
                n.set(n.get() + 1);
            });
        }
        let canceled = Rc::new(Cell::new(0));
        let ids: Vec<OpId> = fds
            .iter()
            .map(|fd| pending_recv(&mut lp, *fd, &canceled))
            .collect();
        lp.run_once().expect("tick");
        assert_eq!(nops.get(), 4, "the nops' callbacks ran in the first tick");
        for id in ids {
            lp.cancel(id);
        }
        lp.run().expect("run");
        assert_eq!(canceled.get(), 4);
        for fd in fds {
            close_fd(fd);
        }
    });
    drop(peers);
}

/// Makes `io_uring_setup` fail with `errno` on this thread (and threads it
/// spawns) through a seccomp filter, as a locked-down container would.
fn deny_io_uring_setup(errno: u32) {
    fn stmt(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }
    let filter = [
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0), // seccomp_data.nr
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | errno),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with a filter program that outlives the call; without
    // the TSYNC flag it applies to this thread only.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        let ret = libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &program as *const libc::sock_fprog,
        );
        assert_eq!(ret, 0, "seccomp: {}", std::io::Error::last_os_error());
    }
}

#[test]
fn auto_falls_back_to_poll_where_io_uring_is_refused_and_says_why_once() {
    for errno in [libc::ENOSYS, libc::EPERM] {
        std::thread::spawn(move || {
            deny_io_uring_setup(errno as u32);
            let err = Loop::builder()
                .backend(Backend::Uring)
                .build()
                .expect_err("refused");
            assert_eq!(err.raw_os_error(), None, "wrapped with context: {err}");
            assert!(
                err.to_string().contains("io_uring backend unavailable"),
                "{err}"
            );
            let counter = LevelCounter::default();
            let warnings = counter.warn.clone();
            let mut lp = tracing::subscriber::with_default(counter, || {
                Loop::builder()
                    .backend(Backend::Auto)
                    .build()
                    .expect("auto falls back")
            });
            assert_eq!(lp.backend(), Backend::Poll);
            assert_eq!(
                warnings.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "one warning"
            );
            let ran = Rc::new(Cell::new(false));
            let r = ran.clone();
            lp.nop(move |_, res| r.set(res.is_ok()));
            lp.run().expect("run");
            assert!(ran.get());
        })
        .join()
        .expect("fallback thread");
    }
}

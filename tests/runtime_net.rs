//! Socket ops on both backends: echo under concurrency, partial sends, a recv
//! and a send pending on one socket, cancellation, and the bad conditions
//! (refused, reset, closed peer, contended listener, idle waits).

mod runtime_support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ringvisor::{backend_tests, Backend, ListenOptions, Loop, LoopHandle, OpError, OpId};
use runtime_support::*;

/// Connection bookkeeping of the echo server used here, kept in the loop.
#[derive(Default)]
struct Echo {
    accepted: usize,
    closed: usize,
    /// Stop accepting after this many connections.
    accept_limit: usize,
}

fn echo_accept(lp: &mut Loop, listener: RawFd) -> OpId {
    lp.accept(listener, move |lp, res| match res {
        Ok((fd, peer)) => {
            assert!(peer.ip().is_loopback(), "peer address {peer}");
            let echo = lp.extension_mut::<Echo>().expect("echo state");
            echo.accepted += 1;
            let more = echo.accepted < echo.accept_limit;
            echo_recv(lp, fd, Vec::with_capacity(4096));
            if more {
                echo_accept(lp, listener);
            }
        }
        Err(OpError::Canceled) => {}
        Err(e) => panic!("accept failed: {e}"),
    })
}

fn echo_recv(lp: &mut Loop, fd: RawFd, mut buf: Vec<u8>) {
    buf.clear();
    lp.recv(fd, buf, move |lp, res, buf| match res {
        Ok(0) => {
            lp.close(fd, |lp, res| {
                res.expect("close");
                lp.extension_mut::<Echo>().expect("echo state").closed += 1;
            });
        }
        Ok(n) => {
            assert_eq!(buf.len(), n);
            lp.send_all(fd, buf, move |lp, res, buf| {
                assert_eq!(res.expect("send_all"), buf.len());
                echo_recv(lp, fd, buf);
            });
        }
        Err(e) => panic!("recv failed: {e}"),
    });
}

fn echo_loop(backend: Backend, accept_limit: usize) -> (Loop, SocketAddr, RawFd) {
    let mut lp = Loop::builder().backend(backend).build().expect("loop");
    let listener = lp
        .listen_tcp(
            "127.0.0.1:0".parse().expect("addr"),
            ListenOptions::default(),
        )
        .expect("listen");
    let addr = ringvisor::local_addr(listener).expect("local addr");
    lp.insert_extension(Echo {
        accept_limit,
        ..Echo::default()
    });
    (lp, addr, listener)
}

backend_tests! {
    fn echo_round_trip_with_100_concurrent_clients(backend) {
        const CLIENTS: usize = 100;
        const ROUNDS: usize = 5;
        let (mut lp, addr, listener) = echo_loop(backend, CLIENTS);
        echo_accept(&mut lp, listener);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                std::thread::spawn(move || {
                    let mut stream = client(addr);
                    for round in 0..ROUNDS {
                        let msg = format!("client {id} round {round} ").repeat(20 + id);
                        assert_eq!(echo_once(&mut stream, msg.as_bytes()), msg.as_bytes());
                    }
                })
            })
            .collect();
        lp.run_for(Duration::from_secs(60)).expect("run");
        for c in clients {
            c.join().expect("client");
        }
        let echo = lp.extension::<Echo>().expect("echo state");
        assert_eq!((echo.accepted, echo.closed), (CLIENTS, CLIENTS));
        assert_eq!(lp.stats().ops_in_flight, 0);
        lp.close(listener, |_, res| res.expect("close listener"));
        lp.run().expect("run");
    }

    fn send_all_reaches_a_slow_reader_complete_and_in_order(backend) {
        const LEN: usize = 4 << 20;
        let (fd, mut peer) = tcp_pair(backend);
        set_sock_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 16 * 1024);
        set_sock_opt(peer.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 16 * 1024);
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 1000];
            let mut total = 0;
            let mut reads = 0u32;
            loop {
                let n = peer.read(&mut chunk).expect("read");
                if n == 0 {
                    return total;
                }
                for (i, b) in chunk[..n].iter().enumerate() {
                    assert_eq!(*b, pattern_byte(total + i), "byte {}", total + i);
                }
                total += n;
                reads += 1;
                if reads.is_multiple_of(16) {
                    std::thread::sleep(Duration::from_millis(1)); // a slow reader
                }
            }
        });
        let mut lp = Loop::builder().backend(backend).build().expect("loop");
        let sent = Arc::new(AtomicUsize::new(0));
        let s = sent.clone();
        lp.send_all(fd, pattern(LEN), move |lp, res, buf| {
            s.store(res.expect("send_all"), Ordering::SeqCst);
            assert_eq!(buf, pattern(LEN), "the buffer comes back unchanged");
            lp.close(fd, |_, res| res.expect("close"));
        });
        lp.run_for(Duration::from_secs(60)).expect("run");
        assert_eq!(sent.load(Ordering::SeqCst), LEN);
        assert_eq!(reader.join().expect("reader"), LEN);
        // One submission per partial send: a 4 MiB buffer cannot go in one.
        assert!(lp.stats().sqes_submitted > 3, "{:?}", lp.stats());
    }

    fn recv_and_send_all_pending_on_one_socket_both_complete(backend) {
        const LEN: usize = 8 << 20;
        let (fd, mut peer) = tcp_pair(backend);
        set_sock_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 16 * 1024);
        set_sock_opt(peer.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 16 * 1024);
        let peer_thread = std::thread::spawn(move || {
            // "ping" goes out before we read anything, so the loop's recv
            // completes while its send_all is still blocked.
            peer.write_all(b"ping").expect("write ping");
            let mut got = vec![0u8; LEN];
            peer.read_exact(&mut got).expect("read all");
            assert!(got == pattern(LEN), "bytes arrived out of order");
            peer.write_all(b"done").expect("write done");
            let mut rest = Vec::new();
            peer.read_to_end(&mut rest).expect("read to end");
            assert!(rest.is_empty());
        });
        let mut lp = Loop::builder().backend(backend).build().expect("loop");
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let ev = events.clone();
        lp.recv(fd, Vec::with_capacity(64), move |lp, res, buf| {
            assert_eq!(res.expect("recv ping"), 4);
            assert_eq!(buf, b"ping");
            ev.lock().expect("events").push("ping");
            lp.recv(fd, Vec::with_capacity(64), move |lp, res, buf| {
                assert_eq!(res.expect("recv done"), 4);
                assert_eq!(buf, b"done");
                ev.lock().expect("events").push("done");
                lp.close(fd, |_, res| res.expect("close"));
            });
        });
        let ev = events.clone();
        lp.send_all(fd, pattern(LEN), move |_, res, _| {
            assert_eq!(res.expect("send_all"), LEN);
            ev.lock().expect("events").push("sent");
        });
        lp.run_for(Duration::from_secs(60)).expect("run");
        peer_thread.join().expect("peer");
        assert_eq!(*events.lock().expect("events"), ["ping", "sent", "done"]);
    }

    fn cancel_of_a_pending_recv_returns_the_buffer_with_canceled(backend) {
        let (fd, mut peer) = tcp_pair(backend);
        let mut lp = Loop::builder().backend(backend).build().expect("loop");
        let mut buf = Vec::with_capacity(8192);
        buf.extend_from_slice(b"keep");
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        let id = lp.recv(fd, buf, move |_, res, buf| {
            assert!(matches!(res, Err(OpError::Canceled)), "{res:?}");
            assert_eq!(buf, b"keep", "contents before len are untouched");
            assert_eq!(buf.capacity(), 8192, "the same allocation comes back");
            d.fetch_add(1, Ordering::SeqCst);
        });
        lp.run_nowait().expect("tick");
        assert_eq!(lp.stats().ops_in_flight, 1, "the recv waits in the backend");
        assert_eq!(done.load(Ordering::SeqCst), 0);
        assert!(lp.cancel(id));
        lp.run_for(Duration::from_secs(10)).expect("run");
        assert_eq!(done.load(Ordering::SeqCst), 1, "exactly one completion");
        assert!(!lp.cancel(id), "a completed op cannot be canceled");
        // The socket still works: the next recv gets the next bytes.
        peer.write_all(b"after").expect("write");
        lp.recv(fd, Vec::with_capacity(16), move |lp, res, buf| {
            assert_eq!(res.expect("recv"), 5);
            assert_eq!(buf, b"after");
            lp.close(fd, |_, res| res.expect("close"));
        });
        lp.run_for(Duration::from_secs(10)).expect("run");
        assert_eq!(lp.stats().ops_in_flight, 0);
    }

    fn cancel_of_a_queued_recv_completes_once_without_the_kernel(backend) {
        let (fd, _peer) = tcp_pair(backend);
        let mut lp = Loop::builder().backend(backend).build().expect("loop");
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        let id = lp.recv(fd, Vec::with_capacity(100), move |_, res, buf| {
            assert!(res.expect_err("canceled").is_canceled());
            assert_eq!(buf.capacity(), 100);
            d.fetch_add(1, Ordering::SeqCst);
        });
        assert!(lp.cancel(id));
        assert_eq!(done.load(Ordering::SeqCst), 0, "never re-entrant");
        lp.run().expect("run");
        assert_eq!(done.load(Ordering::SeqCst), 1);
        assert_eq!(lp.stats().sqes_submitted, 0);
        close_fd(fd);
    }

    // A cancel that reaches an op after the kernel finished it (here: from
    // the callback of a no-op completed in the same tick, before the
    // receive's completion is delivered) must not drop what the receive
    // took off the socket.
    fn a_cancel_that_loses_the_race_loses_no_received_bytes(backend) {
        let (fd, mut peer) = tcp_pair(backend);
        peer.write_all(b"hello").expect("write");
        let mut lp = Loop::builder().backend(backend).build().expect("loop");
        let got = std::rc::Rc::new(std::cell::RefCell::new(None));
        let recv_id = std::rc::Rc::new(std::cell::Cell::new(None::<OpId>));
        let r = recv_id.clone();
        lp.nop(move |lp, res| {
            res.expect("nop");
            lp.cancel(r.get().expect("recv submitted"));
        });
        let g = got.clone();
        recv_id.set(Some(lp.recv(fd, Vec::with_capacity(64), move |_, res, buf| {
            *g.borrow_mut() = Some((res.map_err(|e| e.is_canceled()), buf));
        })));
        lp.run_for(Duration::from_secs(10)).expect("run");
        let (res, mut buf) = got.borrow_mut().take().expect("the recv completed");
        match res {
            Ok(n) => assert_eq!((n, &buf[..]), (5, &b"hello"[..])),
            Err(canceled) => {
                assert!(canceled, "only a cancel may fail it");
                // Canceled before it read: the bytes are still in the socket.
                buf.resize(64, 0);
                // SAFETY: `buf` has 64 writable bytes; `fd` is open.
                let n = unsafe {
                    libc::recv(fd, buf.as_mut_ptr().cast(), 64, libc::MSG_DONTWAIT)
                };
                assert_eq!(n, 5, "the bytes a canceled recv did not take are still there");
            }
        }
        assert_eq!(lp.stats().ops_in_flight, 0);
        close_fd(fd);
    }

    // The same for a send: one reported `Canceled` must not have gone out
    // (a caller would send it again).
    fn a_cancel_that_loses_the_race_reports_the_bytes_sent(backend) {
        let (fd, mut peer) = tcp_pair(backend);
        let mut lp = Loop::builder().backend(backend).build().expect("loop");
        let got = std::rc::Rc::new(std::cell::Cell::new(None));
        let send_id = std::rc::Rc::new(std::cell::Cell::new(None::<OpId>));
        let s = send_id.clone();
        lp.nop(move |lp, res| {
            res.expect("nop");
            lp.cancel(s.get().expect("send submitted"));
        });
        let g = got.clone();
        send_id.set(Some(lp.send(fd, b"hello".to_vec(), move |_, res, _| {
            g.set(Some(res.map_err(|e| e.is_canceled())));
        })));
        lp.run_for(Duration::from_secs(10)).expect("run");
        close_fd(fd);
        let mut received = Vec::new();
        peer.read_to_end(&mut received).expect("read to the close");
        match got.get().expect("the send completed") {
            Ok(n) => assert_eq!((n, &received[..]), (5, &b"hello"[..])),
            Err(canceled) => {
                assert!(canceled, "only a cancel may fail it");
                assert!(received.is_empty(), "a send reported canceled went out");
            }
        }
    }

    // On io_uring the ops are in the SQ ring already; the canceled one is
    // taken back from among them before the kernel reads the ring.
    fn a_send_canceled_before_the_tick_sends_nothing_and_the_rest_run(backend) {
        let (fd, mut peer) = tcp_pair(backend);
        let mut lp = Loop::builder().backend(backend).build().expect("loop");
        let nops = Arc::new(AtomicUsize::new(0));
        let n = nops.clone();
        lp.nop(move |_, res| {
            assert!(res.is_ok());
            n.fetch_add(1, Ordering::SeqCst);
        });
        let canceled = Arc::new(AtomicUsize::new(0));
        let c = canceled.clone();
        let id = lp.send(fd, b"never".to_vec(), move |_, res, buf| {
            assert!(res.expect_err("canceled").is_canceled());
            assert_eq!(buf, b"never");
            c.fetch_add(1, Ordering::SeqCst);
        });
        let n = nops.clone();
        lp.nop(move |_, res| {
            assert!(res.is_ok());
            n.fetch_add(1, Ordering::SeqCst);
        });
        assert!(lp.cancel(id));
        lp.run().expect("run");
        assert_eq!(canceled.load(Ordering::SeqCst), 1);
        assert_eq!(nops.load(Ordering::SeqCst), 2);
        assert_eq!(lp.stats().sqes_submitted, 2, "only the no-ops");
        assert!(!lp.cancel(id), "completed");
        close_fd(fd);
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).expect("EOF");
        assert!(rest.is_empty(), "a canceled op sent {rest:?}");
    }

    fn connect_to_a_closed_port_is_refused(backend) {
        let addr = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        let mut lp = Loop::builder().backend(backend).build().expect("loop");
        let errno = Arc::new(AtomicUsize::new(0));
        let e = errno.clone();
        lp.connect(addr, move |_, res| {
            let err = res.expect_err("nothing listens there");
            e.store(err.raw_os_error().unwrap_or(0) as usize, Ordering::SeqCst);
        });
        lp.run_for(Duration::from_secs(10)).expect("run");
        assert_eq!(errno.load(Ordering::SeqCst), libc::ECONNREFUSED as usize);
        // The connect's own socket is closed by the loop.
        lp.run().expect("run");
        assert_eq!(lp.stats().ops_in_flight, 0);
    }

    fn connect_then_round_trip(backend) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            s.set_read_timeout(Some(CLIENT_TIMEOUT)).expect("timeout");
            let mut b = [0u8; 3];
            s.read_exact(&mut b).expect("read");
            s.write_all(&b).expect("write");
        });
        let mut lp = Loop::builder().backend(backend).build().expect("loop");
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let g = got.clone();
        lp.connect(addr, move |lp, res| {
            let fd = res.expect("connect");
            lp.send_all(fd, b"abc".to_vec(), move |lp, res, _| {
                res.expect("send");
                lp.recv(fd, Vec::with_capacity(3), move |lp, res, buf| {
                    res.expect("recv");
                    *g.lock().expect("got") = buf;
                    lp.close(fd, |_, res| res.expect("close"));
                });
            });
        });
        lp.run_for(Duration::from_secs(10)).expect("run");
        server.join().expect("server");
        assert_eq!(*got.lock().expect("got"), b"abc");
    }

    fn send_to_a_closed_peer_fails_with_epipe_or_reset_and_no_sigpipe(backend) {
        let mask = block_sigpipe();
        let (fd, peer) = tcp_pair(backend);
        drop(peer);
        let mut lp = Loop::builder().backend(backend).build().expect("loop");
        let errno = Arc::new(AtomicUsize::new(0));
        send_until_error(&mut lp, fd, 100, errno.clone());
        lp.run_for(Duration::from_secs(10)).expect("run");
        let pending = take_pending_sigpipe();
        restore_sigmask(&mask);
        let errno = errno.load(Ordering::SeqCst) as i32;
        assert!(
            errno == libc::EPIPE || errno == libc::ECONNRESET,
            "errno {errno}"
        );
        assert!(!pending, "a send raised SIGPIPE");
        close_fd(fd);
    }

    fn send_after_shutdown_is_epipe_and_raises_no_sigpipe(backend) {
        let mask = block_sigpipe();
        let (fd, _peer) = tcp_pair(backend);
        let mut lp = Loop::builder().backend(backend).build().expect("loop");
        let errno = Arc::new(AtomicUsize::new(0));
        let e = errno.clone();
        lp.shutdown(fd, Shutdown::Write, move |lp, res| {
            res.expect("shutdown");
            lp.send(fd, b"too late".to_vec(), move |_, res, buf| {
                assert_eq!(buf, b"too late");
                let err = res.expect_err("write side is shut");
                e.store(err.raw_os_error().unwrap_or(0) as usize, Ordering::SeqCst);
            });
        });
        lp.run_for(Duration::from_secs(10)).expect("run");
        let pending = take_pending_sigpipe();
        restore_sigmask(&mask);
        assert_eq!(errno.load(Ordering::SeqCst), libc::EPIPE as usize);
        assert!(!pending, "a send raised SIGPIPE");
        close_fd(fd);
    }

    fn recv_from_a_reset_connection_is_econnreset(backend) {
        let (fd, peer) = tcp_pair(backend);
        reset_on_close(&peer);
        drop(peer);
        let mut lp = Loop::builder().backend(backend).build().expect("loop");
        let errno = Arc::new(AtomicUsize::new(0));
        let e = errno.clone();
        lp.recv(fd, Vec::with_capacity(16), move |lp, res, _| {
            let err = res.expect_err("reset");
            e.store(err.raw_os_error().unwrap_or(0) as usize, Ordering::SeqCst);
            lp.close(fd, |_, res| res.expect("close"));
        });
        lp.run_for(Duration::from_secs(10)).expect("run");
        assert_eq!(errno.load(Ordering::SeqCst), libc::ECONNRESET as usize);
    }

    fn closing_a_socket_ends_the_ops_pending_on_it(backend) {
        let (fd, mut peer) = tcp_pair(backend);
        set_sock_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 16 * 1024);
        let mut lp = Loop::builder().backend(backend).build().expect("loop");
        let failed = Arc::new(AtomicUsize::new(0));
        let f = failed.clone();
        lp.recv(fd, Vec::with_capacity(16), move |_, res, buf| {
            assert_eq!(res.expect_err("closed").raw_os_error(), Some(libc::ECANCELED));
            assert_eq!(buf.capacity(), 16);
            f.fetch_add(1, Ordering::SeqCst);
        });
        let f = failed.clone();
        lp.send_all(fd, vec![0u8; 8 << 20], move |_, res, _| {
            assert_eq!(res.expect_err("closed").raw_os_error(), Some(libc::ECANCELED));
            f.fetch_add(1, Ordering::SeqCst);
        });
        lp.run_nowait().expect("tick");
        lp.close(fd, |_, res| res.expect("close"));
        lp.run_for(Duration::from_secs(10)).expect("run");
        assert_eq!(failed.load(Ordering::SeqCst), 2, "both ops completed");
        assert_eq!(lp.stats().ops_in_flight, 0);
        // The socket is really gone: the peer reads to EOF (or a reset).
        let mut rest = Vec::new();
        match peer.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
    }

    fn waiting_on_idle_sockets_does_not_spin(backend) {
        let (fd, _peer) = tcp_pair(backend);
        let mut lp = Loop::builder().backend(backend).build().expect("loop");
        let listener = lp
            .listen_tcp("127.0.0.1:0".parse().expect("addr"), ListenOptions::default())
            .expect("listen");
        let recv = lp.recv(fd, Vec::with_capacity(16), |_, res, _| {
            assert!(res.expect_err("canceled").is_canceled());
        });
        let accept = lp.accept(listener, |_, res| {
            assert!(res.expect_err("canceled").is_canceled());
        });
        let started = Instant::now();
        lp.run_for(Duration::from_millis(300)).expect("run");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(lp.stats().ticks <= 3, "spun while idle: {:?}", lp.stats());
        assert!(lp.stats().syscalls <= 30, "spun while idle: {:?}", lp.stats());
        lp.cancel(recv);
        lp.cancel(accept);
        lp.run().expect("run");
        lp.close(fd, |_, res| res.expect("close"));
        lp.close(listener, |_, res| res.expect("close"));
        lp.run().expect("run");
    }

    fn a_contended_listener_never_reports_eagain(backend) {
        const CLIENTS: usize = 50;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(backend == Backend::Poll).expect("nonblocking");
        let listen_fd = listener.as_raw_fd();
        let accepted = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(AtomicUsize::new(0));
        let (handles_tx, handles_rx) = mpsc::channel::<LoopHandle>();
        let servers: Vec<_> = (0..2)
            .map(|_| {
                let (accepted, errors, tx) = (accepted.clone(), errors.clone(), handles_tx.clone());
                std::thread::spawn(move || {
                    let mut lp = Loop::builder().backend(backend).build().expect("loop");
                    tx.send(lp.handle()).expect("send handle");
                    count_accepts(&mut lp, listen_fd, accepted, errors);
                    lp.run_for(Duration::from_secs(30)).expect("run");
                })
            })
            .collect();
        let handles: Vec<LoopHandle> = handles_rx.iter().take(2).collect();
        let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| client(addr)).collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        while accepted.load(Ordering::SeqCst) < CLIENTS && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        for h in &handles {
            h.stop();
        }
        for s in servers {
            s.join().expect("server");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), CLIENTS);
        assert_eq!(errors.load(Ordering::SeqCst), 0, "an accept failed");
        drop(clients);
        drop(listener);
    }
}

fn count_accepts(
    lp: &mut Loop,
    listener: RawFd,
    accepted: Arc<AtomicUsize>,
    errors: Arc<AtomicUsize>,
) {
    lp.accept(listener, move |lp, res| match res {
        Ok((fd, _)) => {
            accepted.fetch_add(1, Ordering::SeqCst);
            lp.close(fd, |_, res| res.expect("close"));
            count_accepts(lp, listener, accepted, errors);
        }
        Err(OpError::Canceled) => {}
        Err(e) => {
            eprintln!("accept error: {e}");
            errors.fetch_add(1, Ordering::SeqCst);
        }
    });
}

fn send_until_error(lp: &mut Loop, fd: RawFd, attempts_left: usize, errno: Arc<AtomicUsize>) {
    assert!(attempts_left > 0, "sends to a closed peer kept succeeding");
    lp.send_all(fd, vec![7u8; 64 * 1024], move |lp, res, _| match res {
        Ok(_) => send_until_error(lp, fd, attempts_left - 1, errno),
        Err(e) => errno.store(e.raw_os_error().unwrap_or(0) as usize, Ordering::SeqCst),
    });
}

/// Makes the kernel answer the peer's close with a reset.
fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: passes a live linger struct of the size given.
    let ret = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0);
}

/// Blocks SIGPIPE on this thread so a raised one stays pending (the test
/// harness ignores SIGPIPE, which would hide it) and returns the old mask.
/// The poll backend sends from this thread, so a send without MSG_NOSIGNAL
/// shows up here; io_uring's send path adds MSG_NOSIGNAL in the kernel.
fn block_sigpipe() -> libc::sigset_t {
    // SAFETY: sigset operations on live locals; pthread_sigmask on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    }
}

/// True if SIGPIPE was pending for this thread or the process; consumes it.
fn take_pending_sigpipe() -> bool {
    // SAFETY: sigset operations on live locals; sigtimedwait with a zero
    // timeout only takes a SIGPIPE that is already pending.
    unsafe {
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut pending);
        if libc::sigismember(&pending, libc::SIGPIPE) != 1 {
            return false;
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
        true
    }
}

fn restore_sigmask(old: &libc::sigset_t) {
    // SAFETY: restores a mask obtained from pthread_sigmask on this thread.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut());
    }
}

//! Fd accounting on both backends: canceled and dropped ops leak no fd, a
//! late fd for a canceled accept/open is closed, dropping a loop with ops in
//! flight drains them, and EMFILE on accept is survivable.
//!
//! Every test here counts the process's open fds (`/proc/self/fd`), which
//! other threads of this test binary would disturb: each takes [`FD_LOCK`]
//! for its whole body, so the tests of this file run one at a time.

mod runtime_support;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ringvisor::{backend_tests, Backend, ListenOptions, Loop, OpError, OpId};
use runtime_support::*;

static FD_LOCK: Mutex<()> = Mutex::new(());

fn fd_lock() -> MutexGuard<'static, ()> {
    FD_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The fd numbers open in this process (including the one listing them,
/// which gets the same number each time the set is the same).
fn open_fds() -> BTreeSet<RawFd> {
    std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .map(|e| {
            e.expect("entry")
                .file_name()
                .to_string_lossy()
                .parse()
                .expect("fd number")
        })
        .collect()
}

fn describe(fds: &BTreeSet<RawFd>) -> Vec<String> {
    fds.iter()
        .map(|fd| {
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}"));
            format!("{fd} -> {target:?}")
        })
        .collect()
}

fn assert_no_fd_leak(before: &BTreeSet<RawFd>) {
    let after = open_fds();
    let leaked: BTreeSet<RawFd> = after.difference(before).copied().collect();
    let closed: BTreeSet<RawFd> = before.difference(&after).copied().collect();
    assert!(leaked.is_empty(), "leaked fds: {:?}", describe(&leaked));
    assert!(
        closed.is_empty(),
        "fds closed behind the test's back: {closed:?}"
    );
}

fn new_loop(backend: Backend) -> Loop {
    Loop::builder().backend(backend).build().expect("loop")
}

fn listen(lp: &Loop, options: ListenOptions) -> (RawFd, SocketAddr) {
    let fd = lp
        .listen_tcp("127.0.0.1:0".parse().expect("addr"), options)
        .expect("listen");
    (fd, ringvisor::local_addr(fd).expect("local addr"))
}

fn close_via_loop(lp: &mut Loop, fd: RawFd) {
    lp.close(fd, |_, res| res.expect("close"));
    lp.run_for(Duration::from_secs(10)).expect("run");
}

/// The peer's view once its server side is gone: EOF or a reset, within the
/// client timeout (a hang fails the read with a timeout error).
fn assert_sees_eof_or_reset(stream: &mut TcpStream) {
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("unexpected {n} bytes"),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected EOF or reset, got {e}"),
    }
}

backend_tests! {
    fn canceling_pending_accepts_leaks_no_fd(backend) {
        let _guard = fd_lock();
        let before = open_fds();
        let mut lp = new_loop(backend);
        let (listener, _) = listen(&lp, ListenOptions::default());
        let canceled = Rc::new(Cell::new(0));
        let ids: Vec<OpId> = (0..10)
            .map(|_| {
                let c = canceled.clone();
                lp.accept(listener, move |_, res| {
                    assert!(res.expect_err("nobody connects").is_canceled());
                    c.set(c.get() + 1);
                })
            })
            .collect();
        lp.run_nowait().expect("tick");
        assert_eq!(lp.stats().ops_in_flight, 10);
        for id in ids {
            assert!(lp.cancel(id));
        }
        lp.run_for(Duration::from_secs(10)).expect("run");
        assert_eq!(canceled.get(), 10);
        close_via_loop(&mut lp, listener);
        drop(lp);
        assert_no_fd_leak(&before);
    }

    fn dropping_a_loop_with_pending_accepts_and_connects_leaks_no_fd(backend) {
        let _guard = fd_lock();
        let before = open_fds();
        let lp_listener;
        {
            let mut lp = new_loop(backend);
            let (listener, addr) = listen(&lp, ListenOptions::default());
            lp_listener = listener;
            for _ in 0..10 {
                lp.accept(listener, |_, _| panic!("callbacks do not run on drop"));
            }
            lp.run_nowait().expect("tick");
            // Queued, never submitted: accepts, and connects owning a socket.
            for _ in 0..5 {
                lp.accept(listener, |_, _| panic!("callbacks do not run on drop"));
                lp.connect(addr, |_, _| panic!("callbacks do not run on drop"));
            }
        }
        close_fd(lp_listener);
        assert_no_fd_leak(&before);
    }

    fn an_fd_accepted_for_a_canceled_accept_is_closed(backend) {
        const ROUNDS: usize = 20;
        let _guard = fd_lock();
        let before = open_fds();
        let mut lp = new_loop(backend);
        let (listener, addr) = listen(&lp, ListenOptions::default());
        let mut clients = Vec::new();
        let mut reaped = 0;
        for _ in 0..ROUNDS {
            let outcome: Rc<RefCell<Option<Result<RawFd, bool>>>> = Rc::default();
            let o = outcome.clone();
            let id = lp.accept(listener, move |_, res| {
                *o.borrow_mut() = Some(match res {
                    Ok((fd, _)) => Ok(fd),
                    Err(e) => Err(e.is_canceled()),
                });
            });
            lp.run_nowait().expect("tick");
            // The connection lands in the backlog while the accept is in the
            // kernel; the cancel races with the accept taking it.
            let client = client(addr);
            let cancel_took = lp.cancel(id);
            lp.run_for(Duration::from_secs(10)).expect("run");
            let got = outcome.borrow_mut().take().expect("accept completed");
            match got {
                Ok(fd) => {
                    assert!(!cancel_took, "a canceled accept delivered an fd");
                    close_via_loop(&mut lp, fd);
                }
                Err(canceled) => assert!(canceled, "accept failed without being canceled"),
            }
            client.set_nonblocking(true).expect("nonblocking");
            if matches!((&client).read(&mut [0u8; 1]), Ok(0)) {
                reaped += 1; // the kernel accepted it; the loop closed the late fd
            }
            client.set_nonblocking(false).expect("blocking");
            clients.push(client);
        }
        eprintln!("{backend}: {reaped} of {ROUNDS} canceled accepts had taken the connection");
        // The rest are still in the backlog: closing the listener resets them.
        close_via_loop(&mut lp, listener);
        for mut client in clients {
            assert_sees_eof_or_reset(&mut client);
        }
        drop(lp);
        assert_no_fd_leak(&before);
    }

    fn an_fd_opened_for_a_canceled_open_is_closed(backend) {
        let _guard = fd_lock();
        let before = open_fds();
        let dir = scratch_dir("canceled-open", backend);
        let mut lp = new_loop(backend);
        let (mut canceled, mut completed) = (0, 0);
        for i in 0..50 {
            let outcome: Rc<RefCell<Option<Result<RawFd, OpError>>>> = Rc::default();
            let o = outcome.clone();
            // O_CREAT makes io_uring hand the open to a worker thread, so it
            // can finish in the kernel after the loop asked to cancel it.
            let path = dir.join(format!("f{i}"));
            let id = lp.open(path, libc::O_CREAT | libc::O_RDWR, 0o600, move |_, res| {
                *o.borrow_mut() = Some(res);
            });
            lp.run_nowait().expect("tick");
            let cancel_took = lp.cancel(id);
            lp.run_for(Duration::from_secs(10)).expect("run");
            let got = outcome.borrow_mut().take();
            match got.expect("open completed") {
                Ok(fd) => {
                    assert!(!cancel_took, "a canceled open delivered an fd");
                    completed += 1;
                    close_via_loop(&mut lp, fd);
                }
                Err(e) => {
                    assert!(e.is_canceled(), "{e}");
                    canceled += 1;
                }
            }
        }
        eprintln!("{backend}: {canceled} opens canceled in flight, {completed} completed first");
        drop(lp);
        std::fs::remove_dir_all(dir).expect("cleanup");
        assert_no_fd_leak(&before);
    }

    fn connects_refused_leak_no_fd(backend) {
        let _guard = fd_lock();
        let addr = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        let before = open_fds();
        let mut lp = new_loop(backend);
        let refused = Rc::new(Cell::new(0));
        for _ in 0..20 {
            let r = refused.clone();
            lp.connect(addr, move |_, res| {
                assert_eq!(res.expect_err("refused").raw_os_error(), Some(libc::ECONNREFUSED));
                r.set(r.get() + 1);
            });
        }
        lp.run_for(Duration::from_secs(10)).expect("run");
        assert_eq!(refused.get(), 20);
        drop(lp);
        assert_no_fd_leak(&before);
    }

    fn dropping_a_loop_with_every_kind_of_op_in_flight_drains_it(backend) {
        let _guard = fd_lock();
        let before = open_fds();
        let dir = scratch_dir("drop-in-flight", backend);
        // A listener whose accept queue is full: connects to it stay pending.
        let full = TcpListener::bind("127.0.0.1:0").expect("bind");
        set_backlog(&full, 0);
        let full_addr = full.local_addr().expect("addr");
        let filler = client(full_addr); // backlog 0 holds exactly one
        let (pair_fd, peer) = tcp_pair(backend);
        let lp_fds = within(Duration::from_secs(30), move || {
            let ran = Rc::new(Cell::new(0));
            let mut lp = new_loop(backend);
            let (listener, _) = listen(&lp, ListenOptions::default());
            let r = ran.clone();
            lp.accept(listener, move |_, _| r.set(r.get() + 1));
            let r = ran.clone();
            lp.recv(pair_fd, Vec::with_capacity(64), move |_, _, _| r.set(r.get() + 1));
            let r = ran.clone();
            lp.send_all(pair_fd, vec![1u8; 32 << 20], move |_, _, _| r.set(r.get() + 1));
            let r = ran.clone();
            lp.connect(full_addr, move |_, _| r.set(r.get() + 1));
            let r = ran.clone();
            lp.open(dir.join("f"), libc::O_CREAT | libc::O_WRONLY, 0o600, move |_, res| {
                if let Ok(fd) = res {
                    close_fd(fd); // it raced ahead of the drop
                }
                r.set(r.get() + 1);
            });
            lp.timer(Duration::from_secs(60), |_| panic!("timer fired"));
            lp.run_nowait().expect("tick");
            lp.run_nowait().expect("tick");
            let in_flight = lp.stats().ops_in_flight;
            let started = Instant::now();
            drop(lp);
            (listener, ran.get(), in_flight, started.elapsed(), dir)
        });
        let (listener, callbacks_ran, in_flight, drop_took, dir) = lp_fds;
        assert!(in_flight >= 4, "ops were in flight at drop: {in_flight}");
        assert!(callbacks_ran <= 1, "only the open may have completed: {callbacks_ran}");
        assert!(drop_took < Duration::from_secs(5), "drop took {drop_took:?}");
        close_fd(listener);
        close_fd(pair_fd);
        drop((peer, filler, full));
        let _ = std::fs::remove_dir_all(dir);
        assert_no_fd_leak(&before);
    }
}

fn set_backlog(listener: &TcpListener, backlog: i32) {
    // SAFETY: listen(2) on a socket the caller owns.
    let ret = unsafe { libc::listen(listener.as_raw_fd(), backlog) };
    assert_eq!(ret, 0);
}

/// The accept side of the EMFILE test: an echo server that backs off with a
/// timer when the process is out of fds, as `examples/echo.rs` does.
#[derive(Default)]
struct Server {
    accepted: usize,
    emfile: usize,
    open_connections: usize,
    accept_op: Option<OpId>,
}

const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

fn server(lp: &mut Loop) -> &mut Server {
    lp.extension_mut::<Server>().expect("server state")
}

fn serve(lp: &mut Loop, listener: RawFd) {
    let id = lp.accept(listener, move |lp, res| match res {
        Ok((fd, _)) => {
            server(lp).accepted += 1;
            server(lp).open_connections += 1;
            echo(lp, fd);
            serve(lp, listener);
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
            server(lp).emfile += 1;
            lp.timer(ACCEPT_BACKOFF, move |lp| serve(lp, listener));
        }
        Err(OpError::Canceled) => {}
        Err(e) => panic!("accept: {e}"),
    });
    server(lp).accept_op = Some(id);
}

fn echo(lp: &mut Loop, fd: RawFd) {
    lp.recv(
        fd,
        Vec::with_capacity(1024),
        move |lp, res, buf| match res {
            Ok(n) if n > 0 => {
                lp.send_all(fd, buf, move |lp, res, _| {
                    res.expect("send");
                    echo(lp, fd);
                });
            }
            _ => {
                server(lp).open_connections -= 1;
                lp.close(fd, |_, res| res.expect("close"));
            }
        },
    );
}

/// Runs `client_work` on another thread while the loop runs; stops the loop
/// when it is done.
fn drive<T: Send + 'static>(lp: &mut Loop, client_work: impl FnOnce() -> T + Send + 'static) -> T {
    let handle = lp.handle();
    let worker = std::thread::spawn(move || {
        let value = client_work();
        handle.stop();
        value
    });
    lp.run_for(Duration::from_secs(30)).expect("run");
    worker.join().expect("client work")
}

fn run_until(lp: &mut Loop, done: impl Fn(&mut Loop) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(lp) {
        assert!(Instant::now() < deadline, "condition not reached in time");
        lp.run_for(Duration::from_millis(10)).expect("run");
    }
}

/// Lowers RLIMIT_NOFILE to just above the fds in use and fills the rest, so
/// the next fd anyone asks for is refused with EMFILE; undone on drop.
struct FdExhaustion {
    old: libc::rlimit,
    fillers: Vec<RawFd>,
}

impl FdExhaustion {
    fn start() -> FdExhaustion {
        let highest = *open_fds().iter().max().expect("some fds are open");
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with live locals.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
            let low = libc::rlimit {
                rlim_cur: (highest + 8) as libc::rlim_t,
                rlim_max: old.rlim_max,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0);
        }
        let mut fillers = Vec::new();
        loop {
            // SAFETY: opening /dev/null; the fd is owned by `fillers`.
            let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                assert_eq!(
                    std::io::Error::last_os_error().raw_os_error(),
                    Some(libc::EMFILE)
                );
                break;
            }
            fillers.push(fd);
        }
        FdExhaustion { old, fillers }
    }
}

impl Drop for FdExhaustion {
    fn drop(&mut self) {
        for fd in self.fillers.drain(..) {
            close_fd(fd);
        }
        // SAFETY: restores the limit read in `start`.
        unsafe {
            libc::setrlimit(libc::RLIMIT_NOFILE, &self.old);
        }
    }
}

/// A TCP socket created now, connected later (when no new fd can be had).
fn unconnected_socket() -> RawFd {
    // SAFETY: plain socket(2); the fd is handed to a TcpStream after connect.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    fd
}

fn connect_socket(fd: RawFd, addr: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("ipv4 only")
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: connects `fd` (a socket we own) to a valid sockaddr_in; the
    // TcpStream then owns the fd.
    let stream = unsafe {
        let ret = libc::connect(
            fd,
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(ret, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    };
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .expect("timeout");
    stream
}

backend_tests! {
    fn emfile_on_accept_backs_off_and_keeps_serving_open_connections(backend) {
        const LATE: usize = 3;
        let _guard = fd_lock();
        let before = open_fds();
        let mut lp = new_loop(backend);
        let (listener, addr) = listen(&lp, ListenOptions::default());
        lp.insert_extension(Server::default());
        serve(&mut lp, listener);
        let mut first = client(addr);
        run_until(&mut lp, |lp| server(lp).accepted == 1);
        let late: Vec<RawFd> = (0..LATE).map(|_| unconnected_socket()).collect();

        // io_uring reads the fd limit when it prepares an accept, so the
        // accept pending from before would still get an fd: start anew.
        let pending = server(&mut lp).accept_op.take().expect("an accept is pending");
        assert!(lp.cancel(pending));
        run_until(&mut lp, |lp| lp.stats().ops_in_flight == 1); // the first client's recv

        let exhaustion = FdExhaustion::start();
        serve(&mut lp, listener);
        let late: Vec<TcpStream> = late.into_iter().map(|fd| connect_socket(fd, addr)).collect();
        // The open connection is served while accepts fail with EMFILE.
        let first = drive(&mut lp, move || {
            std::thread::sleep(ACCEPT_BACKOFF * 3); // let a few accepts fail
            for i in 0..20 {
                let msg = format!("still served {i}");
                assert_eq!(echo_once(&mut first, msg.as_bytes()), msg.as_bytes());
            }
            first
        });
        assert!(server(&mut lp).emfile >= 1, "no accept saw EMFILE");
        assert_eq!(server(&mut lp).accepted, 1);
        // Backing off is not spinning: a few ticks per back-off period.
        let ticks = lp.stats().ticks;
        lp.run_for(ACCEPT_BACKOFF * 10).expect("run");
        let idle_ticks = lp.stats().ticks - ticks;
        assert!(idle_ticks <= 10 * 3 + 3, "{idle_ticks} ticks in 10 back-off periods");
        drop(exhaustion);

        let late = drive(&mut lp, move || {
            let mut late = late;
            for (i, s) in late.iter_mut().enumerate() {
                let msg = format!("late client {i}");
                assert_eq!(echo_once(s, msg.as_bytes()), msg.as_bytes());
            }
            late
        });
        assert_eq!(server(&mut lp).accepted, 1 + LATE);
        drop((first, late));
        run_until(&mut lp, |lp| server(lp).open_connections == 0);
        let accept = server(&mut lp).accept_op.expect("an accept is pending");
        assert!(lp.cancel(accept));
        close_via_loop(&mut lp, listener);
        drop(lp);
        assert_no_fd_leak(&before);
    }
}

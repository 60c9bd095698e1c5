//! Process-level guarantees: monitors, fairness, and what a crash releases.

mod common;

use std::cell::{Cell, RefCell};
use std::os::fd::{IntoRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use common::{new_loop, run_until, Log, Watcher};
use ringvisor_behaviours::gen_server::{
    self, Ctx, GenServer, Init, Next, Reply, ServerRef, StartOptions,
};
use ringvisor_behaviours::{is_alive, ExitReason, From, Info, PASS_BUDGET};
use ringvisor_runtime::backend_tests;

/// Counts casts; records the count each time a named marker arrives.
struct Counter {
    handled: Rc<Cell<u64>>,
}

impl GenServer for Counter {
    type Args = Rc<Cell<u64>>;
    type Call = ();
    type Reply = u64;
    type Cast = ();
    type Info = ();
    type Continue = ();
    fn init(handled: Rc<Cell<u64>>, _: &mut Ctx<Self>) -> Init<Self> {
        Init::ok(Counter { handled })
    }
    fn handle_call(&mut self, _: (), _: From<u64>, _: &mut Ctx<Self>) -> Reply<Self> {
        Reply::now(self.handled.get())
    }
    fn handle_cast(&mut self, _: (), _: &mut Ctx<Self>) -> Next<Self> {
        self.handled.set(self.handled.get() + 1);
        Next::Wait
    }
}

/// Owns a socket, a timer and a pending recv, then panics on request.
struct Owner {
    fired: Rc<Cell<bool>>,
    recv_result: Rc<RefCell<Option<String>>>,
}

impl GenServer for Owner {
    type Args = (RawFd, RawFd, Rc<Cell<bool>>, Rc<RefCell<Option<String>>>);
    type Call = ();
    type Reply = ();
    type Cast = ();
    type Info = ();
    type Continue = ();
    fn init((owned, pending, fired, recv_result): Self::Args, ctx: &mut Ctx<Self>) -> Init<Self> {
        ctx.own_fd(owned);
        ctx.send_after(Duration::from_millis(30), ());
        let result = recv_result.clone();
        ctx.io(
            move |lp, done| {
                lp.recv(pending, Vec::with_capacity(64), move |lp, res, buf| {
                    // The op completes (canceled) and its buffer comes back even
                    // though the process is gone; `done` then drops the result.
                    *result.borrow_mut() = Some(format!(
                        "{} cap={}",
                        res.map(|_| "ok").unwrap_or_else(|e| if e.is_canceled() {
                            "canceled"
                        } else {
                            "error"
                        }),
                        buf.capacity()
                    ));
                    done.complete(lp, ());
                })
            },
            |_: &mut Owner, _, ()| panic!("continuation must not run after the owner died"),
        );
        Init::ok(Owner { fired, recv_result })
    }
    fn handle_call(&mut self, _: (), _: From<()>, _: &mut Ctx<Self>) -> Reply<Self> {
        panic!("owner crashes");
    }
    fn handle_info(&mut self, _: Info<()>, _: &mut Ctx<Self>) -> Next<Self> {
        self.fired.set(true);
        let _ = &self.recv_result;
        Next::Wait
    }
}

fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

backend_tests! {
    // gen_server_SUITE: monitor — Down when the target exits, at once if it is gone.
    fn monitor_delivers_down_even_for_a_dead_target(backend) {
        let mut lp = new_loop(backend);
        let handled = Rc::new(Cell::new(0));
        let a = gen_server::start::<Counter>(&mut lp, handled.clone(), StartOptions::default()).unwrap();
        let b = gen_server::start::<Counter>(&mut lp, handled, StartOptions::default()).unwrap();
        gen_server::stop(&mut lp, b, ExitReason::Normal);
        let log = Log::default();
        gen_server::start::<Watcher>(&mut lp, (log.clone(), vec![a.pid(), b.pid()]), StartOptions::default()).unwrap();
        run_until(&mut lp, |_| log.borrow().len() == 1);
        assert_eq!(*log.borrow(), ["down error: noproc"]);
        gen_server::stop(&mut lp, a, ExitReason::error("bye"));
        run_until(&mut lp, |_| log.borrow().len() == 2);
        assert_eq!(log.borrow()[1], "down error: bye");
    }

    // A deep mailbox cannot starve another process, nor the loop's I/O.
    fn deep_mailbox_does_not_starve_others(backend) {
        let mut lp = new_loop(backend);
        let busy_count = Rc::new(Cell::new(0));
        let other_count = Rc::new(Cell::new(0));
        let busy = gen_server::start::<Counter>(&mut lp, busy_count.clone(), StartOptions { mailbox_capacity: 100_000, ..StartOptions::default() }).unwrap();
        let other = gen_server::start::<Counter>(&mut lp, other_count.clone(), StartOptions::default()).unwrap();
        let total = 20 * PASS_BUDGET as u64;
        for _ in 0..total {
            gen_server::cast(&mut lp, busy, ()).unwrap();
        }
        gen_server::cast(&mut lp, other, ()).unwrap();
        let seen_by_other = Rc::new(Cell::new(None));
        let s = seen_by_other.clone();
        let b = busy_count.clone();
        let seen_by_io = Rc::new(Cell::new(None));
        let io = seen_by_io.clone();
        let b2 = busy_count.clone();
        lp.nop(move |_, _| io.set(Some(b2.get())));
        gen_server::call(&mut lp, other, (), Duration::from_secs(5), move |_, _| s.set(Some(b.get())));
        lp.run().unwrap();
        assert_eq!(busy_count.get(), total);
        assert_eq!(other_count.get(), 1);
        let other_at = seen_by_other.get().expect("other answered");
        let io_at = seen_by_io.get().expect("nop completed");
        assert!(other_at < total / 2, "other served early, not after the backlog: {other_at}");
        assert!(io_at < total / 2, "I/O completed early, not after the backlog: {io_at}");
    }

    // A panic releases what the process owned: fds closed, timers canceled,
    // in-flight ops canceled with their buffers returned.
    fn panic_releases_owned_resources(backend) {
        let mut lp = new_loop(backend);
        let owned = std::net::TcpListener::bind("127.0.0.1:0").unwrap().into_raw_fd();
        let (pending, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let pending_fd = std::os::fd::AsRawFd::as_raw_fd(&pending);
        let fired = Rc::new(Cell::new(false));
        let recv_result = Rc::new(RefCell::new(None));
        let args = (owned, pending_fd, fired.clone(), recv_result.clone());
        let owner = gen_server::start::<Owner>(&mut lp, args, StartOptions::default()).unwrap();
        gen_server::call(&mut lp, ServerRef::<Owner>::from_pid(owner.pid()), (), Duration::from_secs(5), |_, r| {
            assert!(r.is_err())
        });
        lp.run_for(Duration::from_millis(100)).unwrap();
        assert!(!is_alive(&mut lp, owner.pid()));
        assert!(!fd_is_open(owned), "owned fd closed");
        assert!(!fired.get(), "owned timer canceled");
        assert_eq!(recv_result.borrow().as_deref(), Some("canceled cap=64"));
        assert_eq!(lp.stats().ops_in_flight, 0);
    }
}

/// Its terminate finishes async work through `Ctx::later`, completed by a timer.
struct Flusher {
    log: Log,
}

impl GenServer for Flusher {
    type Args = Log;
    type Call = ();
    type Reply = ();
    type Cast = ();
    type Info = ();
    type Continue = ();
    fn init(log: Log, ctx: &mut Ctx<Self>) -> Init<Self> {
        // A continuation from before the exit: dropped, and does not hold it.
        let early =
            ctx.later(|me: &mut Flusher, _, ()| me.log.borrow_mut().push("early ran".into()));
        ctx.lp()
            .timer(Duration::from_millis(40), move |lp| early.complete(lp, ()));
        Init::ok(Flusher { log })
    }
    fn handle_call(&mut self, _: (), _: From<()>, _: &mut Ctx<Self>) -> Reply<Self> {
        Reply::now(())
    }
    fn terminate(&mut self, _: &ExitReason, ctx: &mut Ctx<Self>) {
        let done = ctx
            .later(|me: &mut Flusher, _, n: u32| me.log.borrow_mut().push(format!("flushed {n}")));
        ctx.lp()
            .timer(Duration::from_millis(10), move |lp| done.complete(lp, 7));
    }
}

backend_tests! {
    // An exit waits for terminate's `later` work, not for continuations made before it.
    fn exit_waits_for_terminate_later_work(backend) {
        let mut lp = new_loop(backend);
        let log = Log::default();
        let f = gen_server::start::<Flusher>(&mut lp, log.clone(), StartOptions::default()).unwrap();
        let watch = Log::default();
        gen_server::start::<Watcher>(&mut lp, (watch.clone(), vec![f.pid()]), StartOptions::default()).unwrap();
        gen_server::stop(&mut lp, f, ExitReason::Shutdown);
        assert!(!is_alive(&mut lp, f.pid()), "refuses messages while it flushes");
        run_until(&mut lp, |_| !watch.borrow().is_empty());
        assert_eq!(*log.borrow(), ["flushed 7"], "flushed before the exit was final");
        lp.run().unwrap();
        assert_eq!(*log.borrow(), ["flushed 7"], "the pre-exit continuation never ran");
    }
}

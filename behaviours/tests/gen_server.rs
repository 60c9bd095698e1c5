//! gen_server conformance, modelled on OTP's gen_server_SUITE.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use ringvisor_behaviours::gen_server::{
    self, Ctx, GenServer, Init, Next, Reply, ServerRef, StartOptions,
};
use ringvisor_behaviours::{CallError, ExitReason, From, Info};
use ringvisor_runtime::{backend_tests, Loop};

type Log = Rc<RefCell<Vec<String>>>;

struct Srv {
    log: Log,
    kept: Vec<From<u32>>,
}

enum Call {
    Echo(u32),
    Defer,
    ReleaseDeferred(u32),
    /// Like `ReleaseDeferred`, through the public `reply(lp, ..)` on the loop.
    ReleaseThroughLoop(u32),
    Panic,
    Sleep(Duration),
    StopWith(ExitReason),
    IdleFor(Duration),
}

impl GenServer for Srv {
    type Args = Log;
    type Call = Call;
    type Reply = u32;
    type Cast = &'static str;
    type Info = &'static str;
    type Continue = &'static str;

    fn init(log: Log, _ctx: &mut Ctx<Self>) -> Init<Self> {
        log.borrow_mut().push("init".into());
        Init::ok(Srv {
            log,
            kept: Vec::new(),
        })
    }

    fn handle_call(&mut self, call: Call, from: From<u32>, ctx: &mut Ctx<Self>) -> Reply<Self> {
        match call {
            Call::Echo(n) => Reply::now(n),
            Call::Defer => {
                self.kept.push(from);
                Reply::later()
            }
            Call::ReleaseDeferred(n) => {
                for from in self.kept.drain(..) {
                    ctx.reply(from, n);
                }
                Reply::now(0)
            }
            Call::ReleaseThroughLoop(n) => {
                for from in self.kept.drain(..) {
                    ringvisor_behaviours::reply(ctx.lp(), from, n);
                }
                Reply::now(0)
            }
            Call::Panic => panic!("deliberate"),
            Call::Sleep(d) => {
                // Reply after `d` through a timer: a late reply if the caller timed out.
                self.kept.push(from);
                ctx.send_after(d, "release");
                Reply::later()
            }
            Call::StopWith(reason) => Reply::Stop(reason, Some(1)),
            Call::IdleFor(d) => Reply::Now(7, Next::Timeout(d)),
        }
    }

    fn handle_cast(&mut self, msg: &'static str, _ctx: &mut Ctx<Self>) -> Next<Self> {
        self.log.borrow_mut().push(format!("cast {msg}"));
        if msg == "continue" {
            return Next::Continue("after-cast");
        }
        Next::Wait
    }

    fn handle_info(&mut self, info: Info<&'static str>, ctx: &mut Ctx<Self>) -> Next<Self> {
        match info {
            Info::Msg("release") => {
                for from in self.kept.drain(..) {
                    ctx.reply(from, 99);
                }
            }
            Info::Msg(m) => self.log.borrow_mut().push(format!("info {m}")),
            Info::Timeout => self.log.borrow_mut().push("timeout".into()),
            other => self.log.borrow_mut().push(format!("{other:?}")),
        }
        Next::Wait
    }

    fn handle_continue(&mut self, work: &'static str, _ctx: &mut Ctx<Self>) -> Next<Self> {
        self.log.borrow_mut().push(format!("continue {work}"));
        Next::Wait
    }

    fn terminate(&mut self, reason: &ExitReason, _ctx: &mut Ctx<Self>) {
        self.log.borrow_mut().push(format!("terminate {reason}"));
    }
}

fn new_loop(backend: ringvisor_runtime::Backend) -> Loop {
    Loop::builder().backend(backend).build().expect("loop")
}

fn results<T: 'static>() -> (Rc<RefCell<Vec<T>>>, impl Fn(T) + Clone) {
    let cell: Rc<RefCell<Vec<T>>> = Rc::new(RefCell::new(Vec::new()));
    let c = cell.clone();
    (cell, move |v| c.borrow_mut().push(v))
}

/// An immediate reply, a deferred one released by `release` (answering 2
/// to the deferred call, 0 to itself), then another immediate one: the
/// caller sees them in the order they were made.
fn assert_reply_order(backend: ringvisor_runtime::Backend, release: Call) {
    let mut lp = new_loop(backend);
    let srv = gen_server::start::<Srv>(&mut lp, Log::default(), StartOptions::default()).unwrap();
    let (got, push) = results();
    for call in [Call::Echo(1), Call::Defer, release, Call::Echo(3)] {
        let p = push.clone();
        gen_server::call(&mut lp, srv, call, Duration::from_secs(5), move |_, r| p(r));
    }
    lp.run_for(Duration::from_millis(100)).unwrap();
    assert_eq!(*got.borrow(), vec![Ok(1), Ok(2), Ok(0), Ok(3)]);
}

/// Calls from call site `N` (a distinct continuation type per `N`).
fn call_from_site<const N: u32>(
    lp: &mut Loop,
    srv: ServerRef<Srv>,
    push: impl Fn((u32, Result<u32, CallError>)) + 'static,
) {
    gen_server::call(
        lp,
        srv,
        Call::Echo(N),
        Duration::from_secs(5),
        move |_, r| push((N, r)),
    );
}

macro_rules! many_call_sites {
    ($lp:ident, $srv:ident, $push:ident, $expected:ident, [$($n:literal),*]) => {
        $(
            call_from_site::<$n>(&mut $lp, $srv, $push.clone());
            $expected.push(($n, Ok($n)));
        )*
    };
}

backend_tests! {
    // gen_server_SUITE: call/1 and cast/1
    fn call_and_cast_round_trip(backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let srv = gen_server::start::<Srv>(&mut lp, log.clone(), StartOptions::default()).unwrap();
        gen_server::cast(&mut lp, srv, "hello").unwrap();
        let (got, push) = results();
        gen_server::call(&mut lp, srv, Call::Echo(5), Duration::from_secs(5), move |_, r| push(r));
        lp.run().unwrap();
        assert_eq!(*got.borrow(), vec![Ok(5)]);
        assert_eq!(*log.borrow(), vec!["init", "cast hello"]);
    }

    // A finite timeout too large to add to the clock waits like `INFINITY`
    // (it used to overflow `Instant` and panic in the caller).
    fn call_with_a_huge_finite_timeout_gets_its_reply(backend) {
        let mut lp = new_loop(backend);
        let srv = gen_server::start::<Srv>(&mut lp, Log::default(), StartOptions::default()).unwrap();
        let (got, push) = results();
        let huge = Duration::from_secs(u64::MAX);
        assert_ne!(huge, ringvisor_behaviours::INFINITY);
        gen_server::call(&mut lp, srv, Call::Echo(7), huge, move |_, r| push(r));
        lp.run_for(Duration::from_millis(100)).unwrap();
        assert_eq!(*got.borrow(), vec![Ok(7)]);
    }

    // Not from OTP: each call site has its own call table, found through a
    // hint by the site's type; 80 sites (more than the hint slots) called
    // twice in turn each get their own replies, in order.
    fn replies_reach_their_call_site_among_many(backend) {
        let mut lp = new_loop(backend);
        let srv = gen_server::start::<Srv>(&mut lp, Log::default(), StartOptions::default()).unwrap();
        let (got, push) = results();
        let mut expected = Vec::new();
        for _round in 0..2 {
            many_call_sites!(lp, srv, push, expected, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79]);
        }
        lp.run_for(Duration::from_millis(100)).unwrap();
        assert_eq!(*got.borrow(), expected);
        assert_eq!(ringvisor_behaviours::calls_waiting::<u32>(&mut lp), 0);
    }

    // gen_server_SUITE: call_remote_n1 / stale pid: a call to a dead process is NoProc
    fn call_to_dead_or_stale_pid_is_noproc(backend) {
        let mut lp = new_loop(backend);
        let srv = gen_server::start::<Srv>(&mut lp, Log::default(), StartOptions::default()).unwrap();
        assert!(gen_server::stop(&mut lp, srv, ExitReason::Normal));
        // The slot is reused by a new process; the old ref must not reach it.
        let newer = gen_server::start::<Srv>(&mut lp, Log::default(), StartOptions::default()).unwrap();
        assert_ne!(srv.pid(), newer.pid());
        let (got, push) = results();
        gen_server::call(&mut lp, srv, Call::Echo(1), Duration::from_secs(5), move |_, r| push(r));
        assert_eq!(gen_server::cast(&mut lp, srv, "x"), Err(ringvisor_behaviours::SendError::NoProc));
        lp.run_for(Duration::from_millis(50)).unwrap();
        assert_eq!(*got.borrow(), vec![Err(CallError::NoProc)]);
    }

    // gen_server_SUITE: call_timeout + late reply dropped
    fn call_timeout_then_late_reply_is_dropped(backend) {
        let mut lp = new_loop(backend);
        let srv = gen_server::start::<Srv>(&mut lp, Log::default(), StartOptions::default()).unwrap();
        let (got, push) = results();
        let p = push.clone();
        gen_server::call(&mut lp, srv, Call::Sleep(Duration::from_millis(30)), Duration::from_millis(5), move |_, r| p(r));
        lp.run().unwrap();
        assert_eq!(*got.borrow(), vec![Err(CallError::Timeout)]);
        assert_eq!(ringvisor_behaviours::calls_waiting::<u32>(&mut lp), 0);
        // The server is fine and answers the next call.
        gen_server::call(&mut lp, srv, Call::Echo(3), Duration::from_secs(5), move |_, r| push(r));
        lp.run_for(Duration::from_millis(100)).unwrap();
        assert_eq!(*got.borrow(), vec![Err(CallError::Timeout), Ok(3)]);
    }

    // gen_server_SUITE: deferred reply (reply/2 from another callback)
    fn deferred_reply_from_another_callback(backend) {
        let mut lp = new_loop(backend);
        let srv = gen_server::start::<Srv>(&mut lp, Log::default(), StartOptions::default()).unwrap();
        let (got, push) = results();
        for _ in 0..3 {
            let p = push.clone();
            gen_server::call(&mut lp, srv, Call::Defer, Duration::from_secs(5), move |_, r| p(r));
        }
        gen_server::call(&mut lp, srv, Call::ReleaseDeferred(42), Duration::from_secs(5), move |_, r| push(r));
        lp.run_for(Duration::from_millis(100)).unwrap();
        assert_eq!(*got.borrow(), vec![Ok(42), Ok(42), Ok(42), Ok(0)]);
    }

    // Replies reach their callers in the order the server made them, whether
    // returned from handle_call or sent with ctx.reply within one batch.
    fn replies_keep_the_order_they_were_made(backend) {
        assert_reply_order(backend, Call::ReleaseDeferred(2));
    }

    // The same through the public `reply` on `ctx.lp()`: handing out the
    // loop first finishes the replies a batch has buffered.
    fn replies_through_the_loop_keep_the_order_they_were_made(backend) {
        assert_reply_order(backend, Call::ReleaseThroughLoop(2));
    }

    // Continuations run in the order their calls finished, also across
    // call sites (each closure type has its own call table).
    fn continuations_of_different_call_sites_keep_the_reply_order(backend) {
        let mut lp = new_loop(backend);
        let srv = gen_server::start::<Srv>(&mut lp, Log::default(), StartOptions::default()).unwrap();
        let order: Rc<RefCell<Vec<String>>> = Default::default();
        for n in 0..3u32 {
            let a = order.clone();
            gen_server::call(&mut lp, srv, Call::Echo(n), Duration::from_secs(5), move |_, r| {
                a.borrow_mut().push(format!("a{}", r.unwrap()))
            });
            let b = order.clone();
            let timeout = Duration::from_secs(4);
            gen_server::call(&mut lp, srv, Call::Echo(n), timeout, move |_, r: Result<u32, CallError>| {
                b.borrow_mut().push(format!("b{}", r.unwrap()))
            });
        }
        lp.run_for(Duration::from_millis(100)).unwrap();
        assert_eq!(*order.borrow(), ["a0", "b0", "a1", "b1", "a2", "b2"]);
        assert_eq!(ringvisor_behaviours::calls_waiting::<u32>(&mut lp), 0);
    }

    // Callers fail at once with Exit(reason) when the callee panics (not a timeout).
    fn callers_fail_at_once_when_callee_panics(backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let srv = gen_server::start::<Srv>(&mut lp, log.clone(), StartOptions::default()).unwrap();
        let (got, push) = results();
        let p = push.clone();
        gen_server::call(&mut lp, srv, Call::Defer, Duration::from_secs(60), move |_, r| p(r));
        let p = push.clone();
        gen_server::call(&mut lp, srv, Call::Panic, Duration::from_secs(60), move |_, r| p(r));
        gen_server::call(&mut lp, srv, Call::Echo(1), Duration::from_secs(60), move |_, r| push(r));
        let start = std::time::Instant::now();
        lp.run().unwrap();
        assert!(start.elapsed() < Duration::from_secs(10), "failed at once, not by timeout");
        let got = got.borrow();
        assert_eq!(got.len(), 3);
        for r in got.iter() {
            match r {
                Err(CallError::Exit(ExitReason::Panic(m))) => assert!(m.contains("deliberate")),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(log.borrow().iter().any(|l| l.starts_with("terminate panic: deliberate")));
        assert!(!ringvisor_behaviours::is_alive(&mut lp, srv.pid()));
    }

    // Mailbox full gives Overloaded to the sender.
    fn full_mailbox_is_overloaded(backend) {
        let mut lp = new_loop(backend);
        let options = StartOptions { mailbox_capacity: 4, ..StartOptions::default() };
        let srv = gen_server::start::<Srv>(&mut lp, Log::default(), options).unwrap();
        for _ in 0..4 {
            gen_server::cast(&mut lp, srv, "fill").unwrap();
        }
        assert_eq!(gen_server::cast(&mut lp, srv, "over"), Err(ringvisor_behaviours::SendError::Overloaded));
        let (got, push) = results();
        gen_server::call(&mut lp, srv, Call::Echo(1), Duration::from_secs(5), move |_, r| push(r));
        lp.run().unwrap();
        assert_eq!(*got.borrow(), vec![Err(CallError::Overloaded)]);
        // Drained: it takes messages again.
        assert!(gen_server::cast(&mut lp, srv, "again").is_ok());
    }

    // gen_server_SUITE: timeout (idle timeout info) and continue
    fn idle_timeout_and_continue(backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let srv = gen_server::start::<Srv>(&mut lp, log.clone(), StartOptions::default()).unwrap();
        gen_server::call(&mut lp, srv, Call::IdleFor(Duration::from_millis(10)), Duration::from_secs(5), |_, r| {
            assert_eq!(r, Ok(7))
        });
        lp.run_for(Duration::from_millis(100)).unwrap();
        gen_server::cast(&mut lp, srv, "continue").unwrap();
        gen_server::send_info(&mut lp, srv, "later").unwrap();
        lp.run_for(Duration::from_millis(20)).unwrap();
        assert_eq!(
            *log.borrow(),
            vec!["init", "timeout", "cast continue", "continue after-cast", "info later"]
        );
    }

    // send_after and cancel_timer
    fn send_after_and_cancel_timer(backend) {
        struct T { log: Log }
        impl GenServer for T {
            type Args = Log; type Call = (); type Reply = (); type Cast = (); type Info = u32; type Continue = ();
            fn init(log: Log, ctx: &mut Ctx<Self>) -> Init<Self> {
                ctx.send_after(Duration::from_millis(20), 2);
                let t = ctx.send_after(Duration::from_millis(10), 99);
                ctx.send_after(Duration::from_millis(5), 1);
                assert!(ctx.cancel_timer(t));
                Init::ok(T { log })
            }
            fn handle_call(&mut self, _: (), _: From<()>, _: &mut Ctx<Self>) -> Reply<Self> { Reply::now(()) }
            fn handle_info(&mut self, info: Info<u32>, _: &mut Ctx<Self>) -> Next<Self> {
                if let Info::Msg(n) = info { self.log.borrow_mut().push(n.to_string()); }
                Next::Wait
            }
        }
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        gen_server::start::<T>(&mut lp, log.clone(), StartOptions::default()).unwrap();
        lp.run().unwrap();
        assert_eq!(*log.borrow(), vec!["1", "2"]);
    }

    // stop with a final reply; terminate runs; the process is gone
    fn stop_with_reply_runs_terminate(backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let srv = gen_server::start::<Srv>(&mut lp, log.clone(), StartOptions::named("stopper")).unwrap();
        assert_eq!(ringvisor_behaviours::whereis(&lp, "stopper"), Some(srv.pid()));
        let (got, push) = results();
        gen_server::call(&mut lp, srv, Call::StopWith(ExitReason::Normal), Duration::from_secs(5), move |_, r| push(r));
        lp.run().unwrap();
        assert_eq!(*got.borrow(), vec![Ok(1)]);
        assert_eq!(log.borrow().last().unwrap(), "terminate normal");
        assert_eq!(ringvisor_behaviours::whereis(&lp, "stopper"), None);
    }
}

struct Picky;

impl GenServer for Picky {
    type Args = u8;
    type Call = ();
    type Reply = ();
    type Cast = ();
    type Info = ();
    type Continue = ();
    fn init(mode: u8, _ctx: &mut Ctx<Self>) -> Init<Self> {
        match mode {
            0 => Init::Ignore,
            1 => Init::Stop(ExitReason::error("refused")),
            2 => panic!("init blew up"),
            _ => Init::ok(Picky),
        }
    }
    fn handle_call(&mut self, _: (), _: From<()>, _: &mut Ctx<Self>) -> Reply<Self> {
        Reply::now(())
    }
}

backend_tests! {
    // gen_server_SUITE: start (ignore, stop, crash in init) — no process is left behind.
    fn init_ignore_stop_and_panic_start_nothing(backend) {
        use ringvisor_behaviours::StartError;
        let mut lp = new_loop(backend);
        assert_eq!(gen_server::start::<Picky>(&mut lp, 0, StartOptions::named("p")).unwrap_err(), StartError::Ignored);
        assert_eq!(
            gen_server::start::<Picky>(&mut lp, 1, StartOptions::named("p")).unwrap_err(),
            StartError::Stopped(ExitReason::error("refused"))
        );
        match gen_server::start::<Picky>(&mut lp, 2, StartOptions::named("p")) {
            Err(StartError::Stopped(ExitReason::Panic(m))) => assert!(m.contains("init blew up")),
            other => panic!("{other:?}"),
        }
        assert_eq!(ringvisor_behaviours::process_count(&mut lp), 0);
        assert_eq!(ringvisor_behaviours::whereis(&lp, "p"), None, "name released");
        let ok = gen_server::start::<Picky>(&mut lp, 3, StartOptions::named("p")).unwrap();
        assert_eq!(
            gen_server::start::<Picky>(&mut lp, 3, StartOptions::named("p")).unwrap_err(),
            StartError::NameTaken("p".into())
        );
        assert_eq!(ringvisor_behaviours::whereis(&lp, "p"), Some(ok.pid()));
    }
}

//! Timers and run modes on both backends: deadline order, FIFO on ties,
//! cancellation, due-now timers, a million timers, `run_for`, `run_nowait`,
//! `run_once` and `stop()` from callbacks.

mod runtime_support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringvisor::{backend_tests, Loop, TimerId};
use runtime_support::*;

fn new_loop(backend: ringvisor::Backend) -> Loop {
    Loop::builder().backend(backend).build().expect("loop")
}

/// Records which timers fired, in order.
type Fired = Rc<RefCell<Vec<usize>>>;

fn record(fired: &Fired, index: usize) -> impl FnOnce(&mut Loop) + 'static {
    let fired = fired.clone();
    move |_| fired.borrow_mut().push(index)
}

/// Where the million-timers test keeps the order its timers fired in.
struct FireOrder(Vec<u32>);

const MILLION: u32 = 1_000_000;
/// Distinct deadlines among the million timers.
const MILLION_DISTINCT_DEADLINES: u32 = 1000;

fn million_deadline_us(index: u32) -> u64 {
    // A permutation of 0..1000, each value shared by 1000 timers, 20 us apart.
    u64::from(index.wrapping_mul(7919) % MILLION_DISTINCT_DEADLINES) * 20
}

backend_tests! {
    fn timers_fire_in_deadline_order(backend) {
        let mut lp = new_loop(backend);
        let fired: Fired = Rc::default();
        let deadlines_ms = [30u64, 10, 20, 0, 5, 40, 1];
        for (i, ms) in deadlines_ms.iter().enumerate() {
            lp.timer(Duration::from_millis(*ms), record(&fired, i));
        }
        let started = Instant::now();
        lp.run().expect("run");
        assert!(started.elapsed() >= Duration::from_millis(40));
        let mut expected: Vec<usize> = (0..deadlines_ms.len()).collect();
        expected.sort_by_key(|&i| deadlines_ms[i]);
        assert_eq!(*fired.borrow(), expected);
        assert_eq!(lp.stats().timers_fired, deadlines_ms.len() as u64);
    }

    fn timers_with_the_same_deadline_fire_in_the_order_they_were_set(backend) {
        let mut lp = new_loop(backend);
        let fired: Fired = Rc::default();
        for i in 0..1000 {
            lp.timer(Duration::from_millis(2), record(&fired, i));
        }
        lp.run().expect("run");
        assert_eq!(*fired.borrow(), (0..1000).collect::<Vec<_>>());
    }

    fn plain_function_timers_fire_in_order_with_closures_and_cancel_alike(backend) {
        fn push(lp: &mut Loop, n: u64) {
            lp.extension_mut::<Vec<u64>>().expect("order").push(n);
        }
        let mut lp = new_loop(backend);
        lp.insert_extension(Vec::<u64>::new());
        lp.defer(|lp| {
            lp.timer_fn(Duration::from_millis(3), push, 3);
            lp.timer(Duration::from_millis(1), |lp| push(lp, 1));
            let gone = lp.timer_fn(Duration::from_millis(2), push, 99);
            lp.timer_fn(Duration::from_millis(1), push, 2);
            assert!(lp.cancel_timer(gone));
        });
        lp.run().expect("run");
        assert_eq!(lp.extension::<Vec<u64>>().expect("order"), &[1, 2, 3]);
    }

    fn canceled_timers_never_fire(backend) {
        let mut lp = new_loop(backend);
        let fired: Fired = Rc::default();
        let ids: Vec<TimerId> = (0..100)
            .map(|i| lp.timer(Duration::from_millis(1 + (i as u64 % 7)), record(&fired, i)))
            .collect();
        for id in ids.iter().step_by(2) {
            assert!(lp.cancel_timer(*id));
            assert!(!lp.cancel_timer(*id), "a second cancel finds nothing");
        }
        assert_eq!(lp.timers_pending(), 50);
        lp.run().expect("run");
        let mut got = fired.borrow().clone();
        got.sort();
        assert_eq!(got, (1..100).step_by(2).collect::<Vec<_>>());
        assert!(!lp.cancel_timer(ids[1]), "a fired timer cannot be canceled");
    }

    fn a_timer_canceled_by_an_earlier_timer_of_the_same_tick_does_not_fire(backend) {
        let mut lp = new_loop(backend);
        let fired: Fired = Rc::default();
        let victim: Rc<Cell<Option<TimerId>>> = Rc::default();
        let (v, f) = (victim.clone(), fired.clone());
        lp.timer(Duration::from_millis(5), move |lp| {
            f.borrow_mut().push(0);
            let id = v.get().expect("victim set");
            assert!(lp.cancel_timer(id), "the victim has not fired yet");
        });
        victim.set(Some(lp.timer(Duration::from_millis(5), record(&fired, 1))));
        lp.run().expect("run");
        assert_eq!(*fired.borrow(), [0]);
    }

    fn a_timer_due_now_fires_on_the_next_tick_never_inside_timer(backend) {
        let mut lp = new_loop(backend);
        let fired = Rc::new(Cell::new(0u32));
        let f = fired.clone();
        lp.timer(Duration::ZERO, move |_| f.set(f.get() + 1));
        assert_eq!(fired.get(), 0, "timer() ran its callback");
        assert_eq!(lp.timers_pending(), 1);
        lp.run_nowait().expect("tick");
        assert_eq!(fired.get(), 1);
        assert_eq!(lp.stats().ticks, 1);
    }

    fn a_zero_delay_timer_that_rearms_itself_fires_once_per_tick(backend) {
        fn rearm(lp: &mut Loop, count: Rc<Cell<u32>>) {
            count.set(count.get() + 1);
            if count.get() < 10 {
                lp.timer(Duration::ZERO, move |lp| rearm(lp, count));
            }
        }
        let mut lp = new_loop(backend);
        let count = Rc::new(Cell::new(0u32));
        let c = count.clone();
        lp.timer(Duration::ZERO, move |lp| rearm(lp, c));
        for tick in 1..=10u32 {
            lp.run_nowait().expect("tick");
            assert_eq!(count.get(), tick, "one firing per tick");
        }
        assert_eq!(lp.timers_pending(), 0);
        // No syscall needed: nothing was in the kernel and nothing had to wait.
        assert_eq!(lp.stats().syscalls, 0, "{:?}", lp.stats());
    }

    fn deferred_functions_and_closures_run_in_the_order_deferred(backend) {
        fn push(lp: &mut Loop, n: u64) {
            lp.extension_mut::<FireOrder>().expect("order").0.push(n as u32);
        }
        let mut lp = new_loop(backend);
        lp.insert_extension(FireOrder(Vec::new()));
        lp.defer_fn(push, 1);
        lp.defer(|lp| push(lp, 2));
        lp.defer_fn(push, 3);
        assert!(lp.extension::<FireOrder>().expect("order").0.is_empty(), "never at once");
        lp.run().expect("run");
        assert_eq!(lp.extension::<FireOrder>().expect("order").0, vec![1, 2, 3]);
        assert_eq!(lp.stats().syscalls, 0, "deferred work needs no syscall");
    }

    fn a_million_timers_insert_cancel_half_and_fire_the_rest_in_order(backend) {
        let mut lp = new_loop(backend);
        lp.insert_extension(FireOrder(Vec::with_capacity(MILLION as usize / 2)));
        // Set from one callback, so every deadline counts from the same instant.
        lp.defer(|lp| {
            let ids: Vec<TimerId> = (0..MILLION)
                .map(|i| {
                    let after = Duration::from_micros(million_deadline_us(i));
                    lp.timer(after, move |lp| {
                        lp.extension_mut::<FireOrder>().expect("order").0.push(i)
                    })
                })
                .collect();
            assert_eq!(lp.timers_pending(), MILLION as usize);
            for id in ids.iter().step_by(2) {
                assert!(lp.cancel_timer(*id));
            }
            assert_eq!(lp.timers_pending(), MILLION as usize / 2);
        });
        let started = Instant::now();
        lp.run().expect("run");
        eprintln!("a million timers: {:?}", started.elapsed());
        let order = &lp.extension::<FireOrder>().expect("order").0;
        assert_eq!(order.len(), MILLION as usize / 2);
        assert!(order.iter().all(|i| i % 2 == 1), "a canceled timer fired");
        // Deadline order, and insertion order among equal deadlines.
        for pair in order.windows(2) {
            let key = |i: u32| (million_deadline_us(i), i);
            assert!(key(pair[0]) < key(pair[1]), "{} fired before {}", pair[0], pair[1]);
        }
        let stats = lp.stats();
        assert_eq!(stats.timers_fired, u64::from(MILLION / 2));
        // Due timers fire in batches: at most one tick per distinct deadline.
        assert!(stats.ticks <= u64::from(MILLION_DISTINCT_DEADLINES) + 2, "{stats:?}");
        assert_eq!(lp.timers_pending(), 0);
    }

    fn the_wait_is_bounded_by_the_next_deadline(backend) {
        let mut lp = new_loop(backend);
        let (fd, _peer) = tcp_pair(backend);
        // A recv that never completes keeps the backend busy waiting.
        let recv = lp.recv(fd, Vec::with_capacity(8), |_, res, _| {
            assert!(res.expect_err("canceled").is_canceled());
        });
        let fired_at = Rc::new(Cell::new(None));
        let f = fired_at.clone();
        let started = Instant::now();
        lp.timer(Duration::from_millis(50), move |lp| {
            f.set(Some(Instant::now()));
            lp.cancel(recv);
        });
        lp.run().expect("run");
        let waited = fired_at.get().expect("fired") - started;
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert!(lp.stats().ticks <= 4, "{:?}", lp.stats());
        close_fd(fd);
    }

    fn run_for_returns_after_its_duration_with_a_long_timer_pending(backend) {
        let mut lp = new_loop(backend);
        lp.timer(Duration::from_secs(60), |_| panic!("must not fire"));
        let started = Instant::now();
        lp.run_for(Duration::from_millis(200)).expect("run_for");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(lp.timers_pending(), 1);
        assert!(lp.stats().ticks <= 3, "{:?}", lp.stats());
    }

    fn run_nowait_does_not_block(backend) {
        let mut lp = new_loop(backend);
        let (fd, _peer) = tcp_pair(backend);
        lp.timer(Duration::from_secs(60), |_| panic!("must not fire"));
        let recv = lp.recv(fd, Vec::with_capacity(8), |_, res, _| {
            assert!(res.expect_err("canceled").is_canceled());
        });
        let started = Instant::now();
        for _ in 0..3 {
            lp.run_nowait().expect("run_nowait");
        }
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert_eq!(lp.stats().ticks, 3);
        assert_eq!(lp.stats().ops_in_flight, 1);
        lp.cancel(recv);
        lp.run_for(Duration::from_secs(5)).expect("run");
        assert_eq!(lp.stats().ops_in_flight, 0);
        close_fd(fd);
    }

    fn run_once_waits_for_an_event(backend) {
        let mut lp = new_loop(backend);
        let fired = Rc::new(Cell::new(false));
        let f = fired.clone();
        lp.timer(Duration::from_millis(20), move |_| f.set(true));
        let started = Instant::now();
        // One tick may end early (a spurious wakeup); a few always suffice.
        for _ in 0..3 {
            if !fired.get() {
                lp.run_once().expect("run_once");
            }
        }
        assert!(fired.get());
        assert!(started.elapsed() >= Duration::from_millis(20));
        let ticks = lp.stats().ticks;
        lp.run_once().expect("nothing pending returns at once");
        assert_eq!(lp.stats().ticks, ticks);
    }

    fn stop_from_a_timer_callback_returns_from_run(backend) {
        let mut lp = new_loop(backend);
        lp.timer(Duration::from_secs(60), |_| panic!("must not fire"));
        lp.timer(Duration::from_millis(1), |lp| lp.stop());
        let started = Instant::now();
        lp.run().expect("run");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(lp.timers_pending(), 1);
        // The stop was consumed: the loop runs again normally.
        let fired = Rc::new(Cell::new(false));
        let f = fired.clone();
        lp.timer(Duration::from_millis(1), move |_| f.set(true));
        lp.run_for(Duration::from_millis(50)).expect("run_for");
        assert!(fired.get());
    }

    fn stop_from_an_op_callback_returns_after_the_tick(backend) {
        let mut lp = new_loop(backend);
        let done = Rc::new(Cell::new(0u32));
        for i in 0..10 {
            let d = done.clone();
            lp.nop(move |lp, res| {
                res.expect("nop");
                d.set(d.get() + 1);
                if i == 0 {
                    lp.stop();
                    // Work queued after stop waits for the next run.
                    lp.timer(Duration::ZERO, |_| {});
                }
            });
        }
        lp.run().expect("run");
        assert_eq!(done.get(), 10, "the tick's other callbacks still ran");
        assert_eq!(lp.stats().ticks, 1);
        assert_eq!(lp.timers_pending(), 1);
        lp.run().expect("run");
        assert_eq!(lp.timers_pending(), 0);
    }
}

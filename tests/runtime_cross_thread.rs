//! `LoopHandle` on both backends: posts wake a loop sleeping in the kernel,
//! `stop()` from another thread, many posters, and posts after the loop died.

mod runtime_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ringvisor::{backend_tests, Loop, LoopGone, LoopHandle};
use runtime_support::*;

/// Generous bound for "woke promptly" on a shared, noisy machine; the loop
/// would otherwise sleep 60 s.
const WAKE_BOUND: Duration = Duration::from_secs(5);
/// Lets the loop reach its kernel wait before the other thread acts; the
/// assertions hold whether or not it got there in time.
const LET_IT_SLEEP: Duration = Duration::from_millis(50);

/// Counts posted closures that ran, in the loop.
struct Ran(u64);

fn sleeping_loop(backend: ringvisor::Backend) -> Loop {
    let mut lp = Loop::builder().backend(backend).build().expect("loop");
    lp.timer(Duration::from_secs(60), |_| panic!("the 60 s timer fired"));
    lp
}

backend_tests! {
    fn post_wakes_a_loop_sleeping_in_the_kernel(backend) {
        let mut lp = sleeping_loop(backend);
        let handle = lp.handle();
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let poster = std::thread::spawn(move || {
            std::thread::sleep(LET_IT_SLEEP);
            let posted_at = Instant::now();
            handle
                .post(move |lp| {
                    r.store(true, Ordering::SeqCst);
                    lp.stop();
                })
                .expect("post");
            posted_at
        });
        let started = Instant::now();
        lp.run().expect("run");
        let returned_at = Instant::now();
        let posted_at = poster.join().expect("poster");
        assert!(ran.load(Ordering::SeqCst), "the posted closure ran");
        assert!(returned_at - started < WAKE_BOUND, "{:?}", returned_at - started);
        eprintln!("{backend}: woke {:?} after the post", returned_at.saturating_duration_since(posted_at));
        let stats = lp.stats();
        assert!(stats.wakeups >= 1, "{stats:?}");
        assert!(stats.ticks <= 3, "{stats:?}");
        assert_eq!(lp.timers_pending(), 1);
    }

    fn handle_stop_from_another_thread_returns_from_run(backend) {
        let mut lp = sleeping_loop(backend);
        let handle = lp.handle();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(LET_IT_SLEEP);
            handle.stop();
        });
        let started = Instant::now();
        lp.run().expect("run");
        assert!(started.elapsed() < WAKE_BOUND, "{:?}", started.elapsed());
        stopper.join().expect("stopper");
        assert_eq!(lp.timers_pending(), 1);
        assert!(lp.stats().ticks <= 3, "{:?}", lp.stats());
        // The stop was consumed: the loop can run again.
        lp.timer(Duration::from_millis(1), |lp| lp.stop());
        lp.run().expect("run");
    }

    fn posts_from_many_threads_all_run_once(backend) {
        const THREADS: u64 = 4;
        const POSTS: u64 = 1000;
        let mut lp = sleeping_loop(backend);
        lp.insert_extension(Ran(0));
        let posters: Vec<_> = (0..THREADS)
            .map(|_| {
                let handle = lp.handle();
                std::thread::spawn(move || {
                    for _ in 0..POSTS {
                        handle.post(count_and_maybe_stop).expect("post");
                    }
                })
            })
            .collect();
        within_loop_run(&mut lp);
        for p in posters {
            p.join().expect("poster");
        }
        assert_eq!(lp.extension::<Ran>().expect("ran").0, THREADS * POSTS);
        let stats = lp.stats();
        assert!(stats.wakeups >= 1 && stats.wakeups <= THREADS * POSTS, "{stats:?}");
    }

    fn post_after_the_loop_is_dropped_is_refused(backend) {
        let lp = Loop::builder().backend(backend).build().expect("loop");
        let handle = lp.handle();
        handle.post(|_| panic!("never runs: the loop is dropped first")).expect("post");
        drop(lp);
        assert_eq!(handle.post(|_| {}).unwrap_err(), LoopGone);
        handle.stop(); // harmless
    }

    fn a_handle_moves_to_another_thread_and_posts_back(backend) {
        let mut lp = sleeping_loop(backend);
        let (tx, rx) = mpsc::channel::<LoopHandle>();
        let worker = std::thread::spawn(move || {
            let handle = rx.recv().expect("handle");
            handle
                .post(|lp| {
                    lp.insert_extension(Ran(42));
                })
                .expect("post");
            handle.post(|lp| lp.stop()).expect("post");
        });
        tx.send(lp.handle()).expect("send");
        lp.run().expect("run");
        worker.join().expect("worker");
        assert_eq!(lp.extension::<Ran>().expect("ran").0, 42);
    }
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Installs a do-nothing SIGUSR1 handler without SA_RESTART, so every signal
/// interrupts a blocking syscall with EINTR. Only this file's tests use SIGUSR1.
fn interrupt_with_sigusr1() {
    // SAFETY: sigaction with a handler that does nothing, set up in a local.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0
        );
    }
}

backend_tests! {
    fn signals_interrupting_the_wait_neither_fail_nor_spin_the_loop(backend) {
        const SIGNALS: u64 = 200;
        interrupt_with_sigusr1();
        let mut lp = Loop::builder().backend(backend).build().expect("loop");
        let (fd, _peer) = tcp_pair(backend);
        lp.recv(fd, Vec::with_capacity(8), |_, res, _| {
            let err = res.expect_err("ended by the close at the end");
            assert_eq!(err.raw_os_error(), Some(libc::ECANCELED));
        });
        let fired = Arc::new(AtomicBool::new(false));
        let f = fired.clone();
        let started = Instant::now();
        lp.timer(Duration::from_millis(300), move |_| f.store(true, Ordering::SeqCst));
        // SAFETY: pthread_self has no preconditions.
        let loop_thread = unsafe { libc::pthread_self() };
        let signaller = std::thread::spawn(move || {
            for _ in 0..SIGNALS {
                // SAFETY: the loop thread outlives this thread (joined below).
                unsafe { libc::pthread_kill(loop_thread, libc::SIGUSR1) };
                std::thread::sleep(Duration::from_micros(500));
            }
        });
        while !fired.load(Ordering::SeqCst) {
            lp.run_once().expect("an interrupted wait is not an error");
        }
        assert!(started.elapsed() >= Duration::from_millis(300));
        signaller.join().expect("signaller");
        let stats = lp.stats();
        // At most one tick per signal, plus the timer's: no spinning.
        assert!(stats.ticks <= SIGNALS + 5, "{stats:?}");
        assert_eq!(stats.ops_in_flight, 1, "the recv still waits");
        lp.close(fd, |_, _| {});
        lp.run().expect("run");
    }
}

fn count_and_maybe_stop(lp: &mut Loop) {
    let ran = lp.extension_mut::<Ran>().expect("ran");
    ran.0 += 1;
    if ran.0 == 4 * 1000 {
        lp.stop();
    }
}

/// Runs `lp` with a watchdog: a second handle stops it after the bound.
fn within_loop_run(lp: &mut Loop) {
    let handle = lp.handle();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let timed_out = done_rx.recv_timeout(CLIENT_TIMEOUT).is_err();
        if timed_out {
            handle.stop();
        }
        timed_out
    });
    lp.run().expect("run");
    let _ = done_tx.send(());
    assert!(
        !watchdog.join().expect("watchdog"),
        "the loop did not finish in time"
    );
}

//! Logging discipline: nothing at info level or louder on the hot path, and
//! op submissions/completions visible at trace level.
//!
//! `tracing` caches per-callsite interest across every dispatcher in the
//! process, so scoped subscribers in concurrent tests can miss events: the
//! tests here take [`TRACING_LOCK`] and run one at a time, in their own binary.

mod runtime_support;

use std::net::Shutdown;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use ringvisor::{backend_tests, ListenOptions, Loop, OpError};
use runtime_support::*;

static TRACING_LOCK: Mutex<()> = Mutex::new(());

fn accept_one(lp: &mut Loop, listener: RawFd) {
    lp.accept(listener, |lp, res| {
        let (fd, _) = res.expect("accept");
        echo(lp, fd);
    });
}

fn echo(lp: &mut Loop, fd: RawFd) {
    lp.recv(fd, Vec::with_capacity(256), move |lp, res, buf| match res {
        Ok(n) if n > 0 => {
            lp.send_all(fd, buf, move |lp, res, _| {
                res.expect("send");
                echo(lp, fd);
            });
        }
        Ok(_) => {
            lp.close(fd, |_, res| res.expect("close"));
        }
        Err(OpError::Canceled) => {}
        Err(e) => panic!("recv: {e}"),
    });
}

backend_tests! {
    fn the_hot_path_logs_nothing_at_info_or_above(backend) {
        let _lock = TRACING_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let counter = LevelCounter::default();
        let (loud, quiet) = (counter.info_or_louder.clone(), counter.quieter.clone());
        tracing::subscriber::with_default(counter, || {
            let mut lp = Loop::builder().backend(backend).build().expect("loop");
            let listener = lp
                .listen_tcp("127.0.0.1:0".parse().expect("addr"), ListenOptions::default())
                .expect("listen");
            let addr = ringvisor::local_addr(listener).expect("addr");
            accept_one(&mut lp, listener);
            let c = std::thread::spawn(move || {
                let mut s = client(addr);
                for i in 0..50 {
                    let msg = format!("message {i}");
                    assert_eq!(echo_once(&mut s, msg.as_bytes()), msg.as_bytes());
                }
                s.shutdown(Shutdown::Write).expect("shutdown");
            });
            lp.run_for(Duration::from_secs(30)).expect("run");
            c.join().expect("client");
            lp.close(listener, |_, res| res.expect("close"));
            lp.run().expect("run");
        });
        assert_eq!(loud.load(Ordering::SeqCst), 0, "info-level events on the hot path");
        // 50 round trips of recv + send, each submitted and completed.
        assert!(quiet.load(Ordering::SeqCst) >= 100, "op submits are traced");
    }
}

//! The batch wait (`LoopBuilder::batch_wait`): a waiting tick on io_uring
//! may hold on for more completions, but never at the cost of a lone
//! exchange's latency. With a deliberately long hold (10 ms), a connection
//! that ping-pongs while 64 others sit idle with receives in the kernel must
//! not wait that long per exchange — neither at first, nor after a burst on
//! every connection made one tick reap a big batch. On poll the setting is
//! ignored; the same test holds there.

mod runtime_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use ringvisor::{backend_tests, Loop};
use runtime_support::*;

const IDLE_CONNECTIONS: usize = 64;
const EXCHANGES: usize = 40;
const HOLD: Duration = Duration::from_millis(10);

/// Echoes whatever arrives on `fd`, forever (until the loop stops).
fn echo_forever(lp: &mut Loop, fd: RawFd) {
    lp.recv(fd, Vec::with_capacity(64), move |lp, res, buf| {
        if matches!(res, Ok(n) if n > 0) {
            lp.send_all(fd, buf, move |lp, res, _| {
                if res.is_ok() {
                    echo_forever(lp, fd);
                }
            });
        }
    });
}

/// Wall time of `EXCHANGES` one-byte round trips on `peer`.
fn ping_pong(peer: &mut TcpStream) -> Duration {
    let started = Instant::now();
    for i in 0..EXCHANGES {
        let byte = [i as u8];
        peer.write_all(&byte).expect("write");
        let mut got = [0u8; 1];
        peer.read_exact(&mut got).expect("read");
        assert_eq!(got, byte);
    }
    started.elapsed()
}

backend_tests! {
    fn lone_exchanges_are_not_held_behind_idle_receives(backend) {
        within(Duration::from_secs(60), move || {
            let mut lp = Loop::builder().backend(backend).batch_wait(HOLD).build().expect("loop");
            let mut peers = Vec::new();
            for _ in 0..=IDLE_CONNECTIONS {
                let (fd, peer) = tcp_pair(backend);
                echo_forever(&mut lp, fd);
                peers.push(peer);
            }
            let handle = lp.handle();
            let client = std::thread::spawn(move || {
                let mut active = peers.pop().expect("one active");
                let first = ping_pong(&mut active);
                // A burst on every connection: one tick reaps them together.
                for peer in &mut peers {
                    peer.write_all(b"x").expect("burst write");
                }
                for peer in &mut peers {
                    let mut got = [0u8; 1];
                    peer.read_exact(&mut got).expect("burst read");
                }
                let after_burst = ping_pong(&mut active);
                handle.post(|lp| lp.stop()).expect("loop alive");
                (first, after_burst)
            });
            lp.run().expect("run");
            let (first, after_burst) = client.join().expect("client");
            // Held exchanges would take at least EXCHANGES x HOLD (400 ms);
            // unheld ones take well under a millisecond each. The bound
            // leaves room for a loaded machine and for one hold right after
            // the burst.
            let bound = HOLD * (EXCHANGES as u32) / 4;
            assert!(first < bound, "{first:?} for {EXCHANGES} exchanges among idle receives");
            assert!(after_burst < bound, "{after_burst:?} for {EXCHANGES} exchanges after a burst");
        });
    }
}

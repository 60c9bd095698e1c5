//! A TCP echo server on the loop.
//!
//! ```text
//! cargo run --release --example echo -- --addr 127.0.0.1:7000 --backend uring
//! ```
//! Prints `listening on ADDR (backend: io_uring|poll)` first; SIGINT/SIGTERM
//! stop it cleanly and print the loop's counters to stderr.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use clap::Parser;
use ringvisor::{Backend, ListenOptions, Loop, OpError, SendRecvDone, SendRecvOutcome};

/// Bytes read per recv.
const RECV_CAPACITY_BYTES: usize = 16 * 1024;
/// Back-off after the process or system ran out of fds.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Parser)]
#[command(about = "TCP echo server on ringvisor's loop")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    /// Backend: auto, uring or poll.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: Backend,
    /// Open the listener with SO_REUSEPORT.
    #[arg(long)]
    reuse_port: bool,
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    Backend::parse(s).ok_or_else(|| format!("unknown backend {s:?}: expected auto, uring or poll"))
}

fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let signals = block_stop_signals();
    let mut lp = Loop::builder().backend(args.backend).build()?;
    let listener = lp.listen_tcp(
        args.addr,
        ListenOptions::default().reuse_port(args.reuse_port),
    )?;
    let local = ringvisor::local_addr(listener)?;
    println!("listening on {local} (backend: {})", lp.backend());
    let handle = lp.handle();
    std::thread::spawn(move || {
        wait_for_signal(&signals);
        handle.stop();
    });
    accept_next(&mut lp, listener);
    lp.run()?;
    eprintln!("stopped: {:?}", lp.stats());
    Ok(())
}

fn accept_next(lp: &mut Loop, listener: RawFd) {
    lp.accept(listener, move |lp, res| {
        match res {
            Ok((fd, _peer)) => {
                let _ = ringvisor::set_nodelay(fd, true);
                recv_next(lp, fd, Vec::with_capacity(RECV_CAPACITY_BYTES));
            }
            Err(OpError::Io(e))
                if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) =>
            {
                tracing::warn!(error = %e, "out of fds; pausing accept");
                lp.timer(ACCEPT_BACKOFF, move |lp| accept_next(lp, listener));
                return;
            }
            Err(OpError::Canceled) => return,
            Err(e) => tracing::debug!(error = %e, "accept failed"),
        }
        accept_next(lp, listener);
    });
}

fn recv_next(lp: &mut Loop, fd: RawFd, buf: Vec<u8>) {
    lp.recv(fd, buf, move |lp, res, buf| match res {
        Ok(n) if n > 0 => echo_then_recv(lp, fd, buf, Vec::with_capacity(RECV_CAPACITY_BYTES)),
        _ => close(lp, fd),
    });
}

/// Echoes `received` and waits for the next message in one op (one kernel
/// entry per message on io_uring, nothing allocated). The two buffers swap
/// roles each time.
fn echo_then_recv(lp: &mut Loop, fd: RawFd, received: Vec<u8>, mut next: Vec<u8>) {
    next.clear();
    lp.send_recv_with::<Echoed>(fd, received, next, fd as u64);
}

/// A message went out and the next came in (or the connection ended).
struct Echoed;

impl SendRecvDone for Echoed {
    fn done(lp: &mut Loop, fd: u64, outcome: SendRecvOutcome, sent: Vec<u8>, next: Vec<u8>) {
        let fd = fd as RawFd;
        match outcome {
            SendRecvOutcome::Received(Ok(n)) if n > 0 => echo_then_recv(lp, fd, next, sent),
            _ => close(lp, fd),
        }
    }
}

fn close(lp: &mut Loop, fd: RawFd) {
    lp.close(fd, |_, _| {});
}

/// Blocks SIGINT and SIGTERM in this thread (and the threads it spawns) so a
/// dedicated thread can take them with `sigwait`.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local set; pthread_sigmask on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is an initialised signal set; `sig` is a live local.
    unsafe {
        libc::sigwait(set, &mut sig);
    }
}

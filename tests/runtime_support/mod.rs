//! Helpers shared by the `runtime_*` integration tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{IntoRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use ringvisor::Backend;

/// How long a client thread waits on a socket before failing the test.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `f` on its own thread and fails if it takes longer than `limit`, so
/// a hang becomes a failure instead of a stuck test run.
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => {
            worker.join().expect("worker finished");
            value
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("worker ended without a value"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("did not finish within {limit:?}"),
    }
}

/// Sockets handed to a loop: nonblocking for poll, as its own ops make them.
pub fn adopt(stream: TcpStream, backend: Backend) -> RawFd {
    stream
        .set_nonblocking(backend == Backend::Poll)
        .expect("set_nonblocking");
    stream.into_raw_fd()
}

/// A connected TCP pair over loopback: the fd for the loop and the peer.
pub fn tcp_pair(backend: Backend) -> (RawFd, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let peer = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (ours, _) = listener.accept().expect("accept");
    peer.set_read_timeout(Some(CLIENT_TIMEOUT))
        .expect("timeout");
    peer.set_write_timeout(Some(CLIENT_TIMEOUT))
        .expect("timeout");
    (adopt(ours, backend), peer)
}

/// A client connection with read/write timeouts.
pub fn client(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT).expect("connect");
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .expect("timeout");
    stream
        .set_write_timeout(Some(CLIENT_TIMEOUT))
        .expect("timeout");
    stream
}

/// Writes `msg` and reads the same number of bytes back.
pub fn echo_once(stream: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    stream.write_all(msg).expect("write");
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).expect("read echo");
    back
}

/// Sets an int socket option.
pub fn set_sock_opt(fd: RawFd, level: i32, name: i32, value: i32) {
    // SAFETY: passes a live local int of the size given.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

/// Closes an fd the test owns outright.
pub fn close_fd(fd: RawFd) {
    // SAFETY: the test owns `fd` and nothing else uses it afterwards.
    let ret = unsafe { libc::close(fd) };
    assert_eq!(ret, 0, "close({fd}): {}", std::io::Error::last_os_error());
}

/// A fresh, empty directory under the system temp dir for one test.
pub fn scratch_dir(name: &str, backend: Backend) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ringvisor-{}-{name}-{}",
        std::process::id(),
        backend.name()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// The byte at `index` of a test pattern that reveals reordering and loss.
pub fn pattern_byte(index: usize) -> u8 {
    (index % 251) as u8
}

/// `len` bytes of the test pattern.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(pattern_byte).collect()
}

/// Counts tracing events by level on the thread that installs it.
#[derive(Default)]
pub struct LevelCounter {
    pub warn: Arc<AtomicUsize>,
    pub info_or_louder: Arc<AtomicUsize>,
    pub quieter: Arc<AtomicUsize>,
}

impl tracing::Subscriber for LevelCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.warn.fetch_add(1, Ordering::SeqCst);
        }
        if *event.metadata().level() <= tracing::Level::INFO {
            eprintln!("loud event: {:?}", event.metadata());
            self.info_or_louder.fetch_add(1, Ordering::SeqCst);
        } else {
            self.quieter.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

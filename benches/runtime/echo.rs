//! Echo ping-pong over loopback TCP, client and server on the same loop:
//! each client connection sends a fixed-size message and waits for it to come
//! back before sending the next. One round trip is four ops (client send,
//! server recv, server send, client recv).

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use ringvisor::{Backend, ListenOptions, Loop};

/// Bytes per message.
pub const MESSAGE_BYTES: usize = 64;

/// Round trips still to start, and clients waiting on a reply.
struct Pings {
    remaining: u64,
    active: usize,
    /// Clients parked between runs, with their buffers.
    idle: Vec<Client>,
}

struct Client {
    fd: RawFd,
    message: Vec<u8>,
    reply: Vec<u8>,
}

/// A loop with `connections` client/server socket pairs on it.
pub struct EchoBench {
    /// The loop (its stats give kernel entries).
    pub lp: Loop,
}

impl EchoBench {
    /// Connects `connections` clients to a server on a fresh loop.
    pub fn new(backend: Backend, connections: usize) -> EchoBench {
        let mut lp = Loop::builder().backend(backend).build().expect("loop");
        let listener = lp
            .listen_tcp(
                "127.0.0.1:0".parse().expect("addr"),
                ListenOptions::default(),
            )
            .expect("listen");
        let addr: SocketAddr = ringvisor::local_addr(listener).expect("local addr");
        lp.insert_extension(Pings {
            remaining: 0,
            active: 0,
            idle: Vec::new(),
        });
        for _ in 0..connections {
            lp.accept(listener, |lp, res| {
                let (fd, _) = res.expect("accept");
                let _ = ringvisor::set_nodelay(fd, true);
                serve(lp, fd, Vec::with_capacity(MESSAGE_BYTES * 4));
            });
            lp.connect(addr, |lp, res| {
                let fd = res.expect("connect");
                let _ = ringvisor::set_nodelay(fd, true);
                pings(lp).idle.push(Client {
                    fd,
                    message: vec![b'x'; MESSAGE_BYTES],
                    reply: Vec::with_capacity(MESSAGE_BYTES),
                });
            });
        }
        while pings(&mut lp).idle.len() < connections {
            lp.run_once().expect("connect");
        }
        EchoBench { lp }
    }

    /// Runs `round_trips` round trips spread over the connections; returns
    /// the time it took.
    pub fn run(&mut self, round_trips: u64) -> Duration {
        let state = pings(&mut self.lp);
        state.remaining = round_trips;
        let clients: Vec<Client> = state.idle.drain(..).collect();
        let start = Instant::now();
        for client in clients {
            if !start_ping(&mut self.lp, client) {
                break;
            }
        }
        if pings(&mut self.lp).active > 0 {
            self.lp.run().expect("run");
        }
        let elapsed = start.elapsed();
        assert_eq!(pings(&mut self.lp).active, 0, "every ping came back");
        elapsed
    }
}

fn pings(lp: &mut Loop) -> &mut Pings {
    lp.extension_mut::<Pings>()
        .expect("installed by EchoBench::new")
}

/// Starts a round trip if any remain; parks the client otherwise.
fn start_ping(lp: &mut Loop, client: Client) -> bool {
    let state = pings(lp);
    if state.remaining == 0 {
        state.idle.push(client);
        return false;
    }
    state.remaining -= 1;
    state.active += 1;
    let Client { fd, message, reply } = client;
    lp.send_all(fd, message, move |lp, res, message| {
        res.expect("client send");
        await_reply(lp, Client { fd, message, reply });
    });
    true
}

fn await_reply(lp: &mut Loop, client: Client) {
    let Client { fd, message, reply } = client;
    lp.recv(fd, reply, move |lp, res, reply| {
        assert!(res.expect("client recv") > 0, "server closed");
        let client = Client { fd, message, reply };
        if client.reply.len() < MESSAGE_BYTES {
            return await_reply(lp, client);
        }
        on_reply(lp, client);
    });
}

fn on_reply(lp: &mut Loop, mut client: Client) {
    client.reply.clear();
    pings(lp).active -= 1;
    if !start_ping(lp, client) && pings(lp).active == 0 {
        lp.stop();
    }
}

/// The server side: receive, send it all back, repeat until the peer closes.
fn serve(lp: &mut Loop, fd: RawFd, mut buf: Vec<u8>) {
    buf.clear();
    lp.recv(fd, buf, move |lp, res, buf| match res {
        Ok(n) if n > 0 => {
            lp.send_all(fd, buf, move |lp, res, buf| match res {
                Ok(_) => serve(lp, fd, buf),
                Err(_) => close(lp, fd),
            });
        }
        _ => close(lp, fd),
    });
}

fn close(lp: &mut Loop, fd: RawFd) {
    lp.close(fd, |_, _| {});
}

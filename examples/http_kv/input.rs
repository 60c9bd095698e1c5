//! A connection's input side: the receive buffer and the incremental
//! assembly of requests (head, then a `Content-Length` or chunked body)
//! from whatever bytes have arrived.
//!
//! Invariants: bytes before `pos` are consumed; a head is parsed only once
//! complete and is bounded by [`HEAD_BYTES_MAX`] (< [`INPUT_CAPACITY_BYTES`],
//! so a head always fits; the buffer starts at [`INPUT_INITIAL_BYTES`] and
//! grows to that only for long heads or deep pipelines); bodies never live in the input buffer for long:
//! they move to the request's own body buffer as they arrive, or are
//! received straight into it.

use std::time::Instant;

use crate::bodies::BodyPool;
use crate::chunked::{self, ChunkedDecoder};
use crate::http::{self, Framing, HttpError, Method, HEAD_BYTES_MAX};
use crate::router::{self, Route};

/// Capacity of a connection's receive buffer.
pub const INPUT_CAPACITY_BYTES: usize = 16 * 1024;
/// Initial capacity of a connection's receive buffer: what an idle
/// keep-alive connection holds in its pending receive.
pub const INPUT_INITIAL_BYTES: usize = 4 * 1024;
const _: () = assert!(HEAD_BYTES_MAX < INPUT_CAPACITY_BYTES);

/// A complete request.
#[derive(Debug)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// Where it goes.
    pub route: Route,
    /// Whether the connection stays open after it.
    pub keep_alive: bool,
    /// Whether keep-alive must be announced (HTTP/1.0 clients).
    pub announce_keep_alive: bool,
    /// The body (empty if none).
    pub body: Vec<u8>,
}

#[derive(Debug)]
enum BodyDecoder {
    Length { remaining_bytes: u64 },
    Chunked(ChunkedDecoder),
}

#[derive(Debug)]
enum ReadState {
    Head {
        scanned: usize,
    },
    Body {
        request: Request,
        decoder: BodyDecoder,
    },
}

/// What assembling input produced.
#[derive(Debug)]
pub enum Step {
    /// A complete request.
    Request(Request),
    /// The head asked `Expect: 100-continue` and its body has not started.
    Continue,
    /// Unacceptable input; answer with the error and close.
    Error(HttpError, Method),
    /// Nothing more until more bytes arrive.
    NeedMore,
}

/// The buffer a receive fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvTarget {
    /// The receive buffer.
    Input,
    /// The body of the request being read (its length is known).
    Body,
}

/// What the router needs to know to route a head.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `--max-value-bytes`.
    pub max_value_bytes: usize,
    /// `--shards`.
    pub shards: usize,
    /// `--chaos`.
    pub chaos: bool,
}

/// The input side of one connection.
#[derive(Debug)]
pub struct Input {
    buf: Vec<u8>,
    pos: usize,
    state: ReadState,
    /// When the first byte of the request in progress arrived.
    pub started: Option<Instant>,
    /// Buffers for bodies that arrived whole (the server's pool).
    bodies: BodyPool,
}

impl Input {
    /// An empty input side taking body buffers from `bodies`.
    pub fn new(bodies: BodyPool) -> Input {
        Input {
            buf: Vec::with_capacity(INPUT_INITIAL_BYTES),
            pos: 0,
            state: ReadState::Head { scanned: 0 },
            started: None,
            bodies,
        }
    }

    /// Bytes received and not yet consumed.
    pub fn unconsumed(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether a receive into the input buffer would find room (after
    /// compaction) or can go straight into a body.
    pub fn has_room(&self) -> bool {
        self.unconsumed() < INPUT_CAPACITY_BYTES
            || matches!(
                self.state,
                ReadState::Body {
                    decoder: BodyDecoder::Length { .. },
                    ..
                }
            )
    }

    /// Whether a request is partly received.
    pub fn in_request(&self) -> bool {
        self.unconsumed() > 0 || matches!(self.state, ReadState::Body { .. })
    }

    /// The method of the request in progress, once its head is parsed.
    pub fn method(&self) -> Method {
        match &self.state {
            ReadState::Body { request, .. } => request.method,
            ReadState::Head { .. } => Method::Other,
        }
    }

    /// Takes the buffer the next receive should fill, with room in it:
    /// the body itself when its length is known and nothing is buffered
    /// (no copy, and never reads past it), else the compacted input buffer.
    pub fn take_recv_buffer(&mut self) -> (RecvTarget, Vec<u8>) {
        if self.unconsumed() == 0 {
            if let ReadState::Body {
                request,
                decoder: BodyDecoder::Length { remaining_bytes },
            } = &mut self.state
            {
                debug_assert!(*remaining_bytes > 0);
                // A receive fills all spare capacity: only hand the body over
                // if that cannot reach past it into a pipelined request.
                let spare = request.body.capacity() - request.body.len();
                if spare as u64 == *remaining_bytes {
                    return (RecvTarget::Body, std::mem::take(&mut request.body));
                }
            }
        }
        self.compact();
        if self.buf.len() == self.buf.capacity() {
            self.buf
                .reserve_exact(INPUT_CAPACITY_BYTES.saturating_sub(self.buf.len()));
        }
        debug_assert!(self.buf.capacity() > self.buf.len(), "a head always fits");
        (RecvTarget::Input, std::mem::take(&mut self.buf))
    }

    /// Puts back the buffer of a finished receive that got `received` bytes.
    pub fn put_recv_buffer(
        &mut self,
        target: RecvTarget,
        buf: Vec<u8>,
        received: usize,
        now: Instant,
    ) {
        match target {
            RecvTarget::Input => self.buf = buf,
            RecvTarget::Body => match &mut self.state {
                ReadState::Body {
                    request,
                    decoder: BodyDecoder::Length { remaining_bytes },
                } => {
                    request.body = buf;
                    debug_assert!(received as u64 <= *remaining_bytes);
                    *remaining_bytes = remaining_bytes.saturating_sub(received as u64);
                }
                // The request was abandoned while the receive was in flight.
                _ => return,
            },
        }
        if received > 0 && self.started.is_none() {
            self.started = Some(now);
        }
    }

    /// Drops whatever was received and any request in progress (lingering
    /// close: nothing more is read as requests).
    pub fn discard(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.state = ReadState::Head { scanned: 0 };
        self.started = None;
    }

    fn compact(&mut self) {
        if self.pos > 0 {
            self.buf.copy_within(self.pos.., 0);
            self.buf.truncate(self.buf.len() - self.pos);
            self.pos = 0;
        }
    }

    /// Assembles as much as the received bytes allow. Inlined into its one
    /// caller (the connection's pump): left to the compiler it flips with
    /// unrelated changes, and a call costs about 40 instructions a request.
    #[inline(always)]
    pub fn step(&mut self, limits: &Limits, now: Instant) -> Step {
        let step = match &mut self.state {
            ReadState::Head { scanned } => {
                let (step, scanned_now) = parse_head(&self.buf[self.pos..], *scanned, limits);
                *scanned = scanned_now;
                match step {
                    HeadStep::NeedMore => Step::NeedMore,
                    HeadStep::Error(e) => Step::Error(e, Method::Other),
                    HeadStep::Complete {
                        used,
                        request,
                        framing,
                        expect_continue,
                    } => {
                        self.pos += used;
                        self.begin_body(request, framing, expect_continue, limits)
                    }
                }
            }
            ReadState::Body { .. } => self.read_body(limits),
        };
        if let Step::Request(_) | Step::Error(..) = step {
            self.state = ReadState::Head { scanned: 0 };
            self.started = (self.unconsumed() > 0).then_some(now);
        }
        step
    }

    fn begin_body(
        &mut self,
        request: Request,
        framing: Framing,
        expect_continue: bool,
        limits: &Limits,
    ) -> Step {
        let decoder = match framing {
            Framing::Empty | Framing::Length(0) => return Step::Request(request),
            Framing::Length(n) if n > limits.max_value_bytes as u64 => {
                return Step::Error(chunked::TOO_LARGE, request.method)
            }
            Framing::Length(n) => BodyDecoder::Length { remaining_bytes: n },
            Framing::Chunked => BodyDecoder::Chunked(ChunkedDecoder::default()),
        };
        let mut request = request;
        if let BodyDecoder::Length { remaining_bytes } = decoder {
            let len = remaining_bytes as usize;
            // A body that arrived whole is copied at once into a pooled
            // buffer and the request is complete (no trip through the body
            // state: most pipelined PUTs); one still to come gets a buffer
            // of exactly its length, which a receive may fill directly (see
            // `take_recv_buffer`).
            if self.unconsumed() >= len {
                let mut body = self.bodies.take(len);
                body.extend_from_slice(&self.buf[self.pos..self.pos + len]);
                self.pos += len;
                request.body = body;
                return Step::Request(request);
            }
            request.body = Vec::with_capacity(len);
        }
        self.state = ReadState::Body { request, decoder };
        if expect_continue && self.unconsumed() == 0 {
            return Step::Continue;
        }
        self.read_body(limits)
    }

    fn read_body(&mut self, limits: &Limits) -> Step {
        let ReadState::Body { request, decoder } = &mut self.state else {
            unreachable!("read_body runs in the body state")
        };
        let input = &self.buf[self.pos..];
        let done = match decoder {
            BodyDecoder::Length { remaining_bytes } => {
                let take = input.len().min(*remaining_bytes as usize);
                request.body.extend_from_slice(&input[..take]);
                self.pos += take;
                *remaining_bytes -= take as u64;
                *remaining_bytes == 0
            }
            BodyDecoder::Chunked(dec) => {
                match dec.decode(input, &mut request.body, limits.max_value_bytes) {
                    Ok(used) => self.pos += used,
                    Err(e) => return Step::Error(e, request.method),
                }
                dec.is_done()
            }
        };
        if !done {
            return Step::NeedMore;
        }
        let ReadState::Body { request, .. } =
            std::mem::replace(&mut self.state, ReadState::Head { scanned: 0 })
        else {
            unreachable!("checked above")
        };
        Step::Request(request)
    }
}

enum HeadStep {
    NeedMore,
    Error(HttpError),
    Complete {
        used: usize,
        request: Request,
        framing: Framing,
        expect_continue: bool,
    },
}

/// Parses a head from `input` if it is complete; returns the step and how
/// far the search for its end got.
fn parse_head(input: &[u8], scanned: usize, limits: &Limits) -> (HeadStep, usize) {
    if input.is_empty() {
        return (HeadStep::NeedMore, 0);
    }
    let Some(end) = http::find_head_end(input, scanned) else {
        return match http::check_partial_head(input) {
            Ok(()) => (HeadStep::NeedMore, input.len()),
            Err(e) => (HeadStep::Error(e), 0),
        };
    };
    let head = match http::parse_head(input, end) {
        Ok(head) => head,
        Err(e) => return (HeadStep::Error(e), 0),
    };
    let route = router::route(head.target, limits.shards, limits.chaos);
    let request = Request {
        method: head.method,
        route,
        keep_alive: head.keep_alive,
        announce_keep_alive: head.keep_alive && head.http10,
        body: Vec::new(),
    };
    let step = HeadStep::Complete {
        used: end,
        request,
        framing: head.framing,
        expect_continue: head.expect_continue,
    };
    (step, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Route;

    fn limits() -> Limits {
        Limits {
            max_value_bytes: 64,
            shards: 4,
            chaos: false,
        }
    }

    fn feed(input: &mut Input, bytes: &[u8]) {
        let (target, mut buf) = input.take_recv_buffer();
        assert_eq!(target, RecvTarget::Input);
        buf.extend_from_slice(bytes);
        input.put_recv_buffer(target, buf, bytes.len(), Instant::now());
    }

    fn requests(input: &mut Input) -> Vec<Result<Request, HttpError>> {
        let mut out = Vec::new();
        loop {
            match input.step(&limits(), Instant::now()) {
                Step::Request(r) => out.push(Ok(r)),
                Step::Error(e, _) => {
                    out.push(Err(e));
                    return out;
                }
                Step::Continue => {}
                Step::NeedMore => return out,
            }
        }
    }

    #[test]
    fn pipelined_requests_come_out_in_order() {
        let mut input = Input::new(BodyPool::default());
        feed(&mut input, b"GET /kv/a HTTP/1.1\r\nHost: x\r\n\r\nPUT /kv/b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyzDELETE /kv/c HTTP/1.1\r\nHost: x\r\n\r\nGET /kv");
        let got = requests(&mut input);
        assert_eq!(got.len(), 3);
        let got: Vec<Request> = got.into_iter().map(Result::unwrap).collect();
        assert_eq!(got[0].route, Route::Key(crate::key::Key::from(&b"a"[..])));
        assert_eq!(
            (got[1].method, &got[1].body[..]),
            (Method::Put, &b"xyz"[..])
        );
        assert_eq!(got[2].method, Method::Delete);
        assert!(input.in_request() && input.started.is_some());
    }

    #[test]
    fn bodies_arrive_straight_into_their_buffer() {
        let mut input = Input::new(BodyPool::default());
        feed(
            &mut input,
            b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
        );
        assert!(matches!(
            input.step(&limits(), Instant::now()),
            Step::NeedMore
        ));
        let (target, mut buf) = input.take_recv_buffer();
        assert_eq!(target, RecvTarget::Body);
        assert_eq!(buf.capacity() - buf.len(), 10);
        buf.extend_from_slice(b"0123456789");
        input.put_recv_buffer(target, buf, 10, Instant::now());
        let Step::Request(r) = input.step(&limits(), Instant::now()) else {
            panic!("complete")
        };
        assert_eq!(r.body, b"0123456789");
        assert!(!input.in_request());
    }

    #[test]
    fn a_body_that_arrived_whole_takes_a_pooled_buffer() {
        let limits = limits();
        let bodies = BodyPool::default();
        let mut given = Vec::with_capacity(16);
        given.extend_from_slice(b"old value");
        let ptr = given.as_ptr();
        bodies.give(given);
        let mut input = Input::new(bodies);
        feed(
            &mut input,
            b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789",
        );
        let Step::Request(r) = input.step(&limits, Instant::now()) else {
            panic!("complete")
        };
        assert_eq!((r.body.as_ptr(), &r.body[..]), (ptr, &b"0123456789"[..]));
        // Pool empty: a body of its own, of exactly its length.
        feed(
            &mut input,
            b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        );
        let Step::Request(r) = input.step(&limits, Instant::now()) else {
            panic!("complete")
        };
        assert_eq!((r.body.capacity(), &r.body[..]), (3, &b"abc"[..]));
    }

    #[test]
    fn expect_continue_and_limits() {
        let mut input = Input::new(BodyPool::default());
        feed(
            &mut input,
            b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
        );
        assert!(matches!(
            input.step(&limits(), Instant::now()),
            Step::Continue
        ));
        let mut input = Input::new(BodyPool::default());
        feed(
            &mut input,
            b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n",
        );
        assert!(
            matches!(input.step(&limits(), Instant::now()), Step::Error(e, Method::Put) if e.status == 413)
        );
        let mut input = Input::new(BodyPool::default());
        feed(
            &mut input,
            b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n",
        );
        assert!(
            matches!(input.step(&limits(), Instant::now()), Step::Error(e, _) if e.status == 413)
        );
        let mut input = Input::new(BodyPool::default());
        feed(&mut input, &[b'a'; HEAD_BYTES_MAX]);
        assert!(
            matches!(input.step(&limits(), Instant::now()), Step::Error(e, _) if e.status == 414)
        );
    }

    #[test]
    fn chunked_body_in_dribbles() {
        let mut input = Input::new(BodyPool::default());
        let raw = b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let mut got = Vec::new();
        for b in raw.chunks(1) {
            feed(&mut input, b);
            got.extend(requests(&mut input));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref().unwrap().body, b"abcde");
    }
}

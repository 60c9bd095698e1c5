//! Key requests gathered per shard for the rest of the tick and sent as one
//! call ([`KvRequest::Batch`]): a pipelined batch of 16 requests over 64
//! connections is about 128 requests per shard per tick, and one message,
//! one shard run and one reply for all of them costs less than a call each
//! (the call path was the largest share of a pipelined request's
//! instructions).
//!
//! Invariants: a shard's pending requests keep the order they were
//! dispatched in (so a connection's PUT then GET of one key see each other
//! in that order); at most [`BATCH_REQUESTS_MAX`] requests and about
//! [`BATCH_VALUE_BYTES_MAX`] value bytes wait per shard (a fuller batch goes
//! at once); whatever waits goes out before the tick's deferred work ends,
//! so batching adds no wait on a tick. A lone request goes as a plain call.
//!
//! `--shard-queue-capacity` bounds requests, not messages: a shard with that
//! many requests queued or unanswered (from every connection) answers the
//! next one 503 at once, as a full mailbox did before requests were batched.

use ringvisor::Loop;

use crate::output::Responder;
use crate::response::Response;
use crate::router::{key_response, shard_error_response};
use crate::server::server_mut;
use crate::shard::{self, KvReply, KvRequest, ShardError};

/// Most requests sent to one shard as one call.
pub const BATCH_REQUESTS_MAX: usize = 64;
/// A shard's batch goes at once when its PUT values reach this many bytes.
pub const BATCH_VALUE_BYTES_MAX: usize = 1 << 20;

/// The requests waiting for each shard.
#[derive(Debug, Default)]
pub struct Batches {
    per_shard: Vec<Pending>,
    flush_deferred: bool,
}

#[derive(Debug, Default)]
struct Pending {
    requests: Vec<KvRequest>,
    responders: Vec<Responder>,
    value_bytes: usize,
    /// Requests queued here or sent and not yet answered.
    unanswered: usize,
}

impl Pending {
    fn take(&mut self) -> (Vec<KvRequest>, Vec<Responder>) {
        self.value_bytes = 0;
        (
            std::mem::take(&mut self.requests),
            std::mem::take(&mut self.responders),
        )
    }
}

/// Queues a key request (`Get`, `Put` or `Delete`) for `shard`; its answer
/// goes to `responder` once the shard replies.
pub fn queue(lp: &mut Loop, shard: usize, request: KvRequest, responder: Responder) {
    debug_assert!(matches!(
        request,
        KvRequest::Get { .. } | KvRequest::Put { .. } | KvRequest::Delete { .. }
    ));
    let server = server_mut(lp);
    let capacity = usize::try_from(server.config.shard_queue_capacity).unwrap_or(usize::MAX);
    let batches = &mut server.batches;
    if batches.per_shard.len() <= shard {
        batches.per_shard.resize_with(shard + 1, Pending::default);
    }
    let pending = &mut batches.per_shard[shard];
    if pending.unanswered >= capacity {
        return responder.send(lp, shard_error_response(ShardError::Overloaded));
    }
    pending.unanswered += 1;
    if let KvRequest::Put { value, .. } = &request {
        pending.value_bytes += value.len();
    }
    pending.requests.push(request);
    pending.responders.push(responder);
    let full = pending.requests.len() >= BATCH_REQUESTS_MAX
        || pending.value_bytes >= BATCH_VALUE_BYTES_MAX;
    let full = full.then(|| pending.take());
    let defer = !std::mem::replace(&mut batches.flush_deferred, true);
    if let Some((requests, responders)) = full {
        send(lp, shard, requests, responders);
    }
    if defer {
        lp.defer_fn(flush, 0);
    }
}

/// Sends every shard's waiting requests (deferred to the end of the work
/// queued in the tick the first of them was queued in).
fn flush(lp: &mut Loop, _: u64) {
    let batches = &mut server_mut(lp).batches;
    batches.flush_deferred = false;
    for shard in 0..batches.per_shard.len() {
        let batches = &mut server_mut(lp).batches;
        if batches.per_shard[shard].requests.is_empty() {
            continue;
        }
        let (requests, responders) = batches.per_shard[shard].take();
        send(lp, shard, requests, responders);
    }
}

fn send(lp: &mut Loop, shard: usize, mut requests: Vec<KvRequest>, responders: Vec<Responder>) {
    debug_assert_eq!(requests.len(), responders.len());
    let server = server_mut(lp);
    let pid = server.shard_pids.get(shard);
    let timeout = server.config.request_timeout();
    if requests.len() == 1 {
        let (request, responder) = (requests.pop().expect("one"), responders[0]);
        return shard::call_pid(lp, pid, request, timeout, move |lp, reply| {
            answered(lp, shard, 1);
            responder.send(lp, key_response(reply));
        });
    }
    shard::call_pid(
        lp,
        pid,
        KvRequest::Batch(requests),
        timeout,
        move |lp, reply| {
            answered(lp, shard, responders.len());
            answer_batch(lp, responders, reply);
        },
    );
}

/// `n` of `shard`'s requests were answered (or failed): room for as many.
fn answered(lp: &mut Loop, shard: usize, n: usize) {
    let pending = &mut server_mut(lp).batches.per_shard[shard];
    debug_assert!(pending.unanswered >= n);
    pending.unanswered -= n;
}

fn answer_batch(lp: &mut Loop, responders: Vec<Responder>, reply: Result<KvReply, ShardError>) {
    match reply {
        Ok(KvReply::Batch(replies)) if replies.len() == responders.len() => {
            for (responder, reply) in responders.into_iter().zip(replies) {
                responder.send(lp, key_response(Ok(reply)));
            }
        }
        Ok(other) => {
            tracing::error!(?other, "shard answered a batch with the wrong reply");
            for responder in responders {
                responder.send(lp, Response::text(500, "internal error\n"));
            }
        }
        Err(e) => {
            for responder in responders {
                responder.send(lp, shard_error_response(e));
            }
        }
    }
}

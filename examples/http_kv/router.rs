//! Routes: request targets to [`Route`]s (keys percent-decoded and checked),
//! and requests to answers — at once for static ones, through the shards
//! for the rest.
//!
//! | path              | methods                 |
//! |-------------------|-------------------------|
//! | `/kv/{key}`       | GET, HEAD, PUT, DELETE  |
//! | `/kv?prefix&limit`| GET, HEAD               |
//! | `/_status`        | GET, HEAD               |
//! | `/metrics`        | GET, HEAD               |
//! | `/_crash/{shard}` | POST (with `--chaos`)   |

use std::cell::RefCell;
use std::rc::Rc;

use ringvisor::Loop;

use crate::http::Method;
use crate::input::{Limits, Request};
use crate::key::Key;
use crate::output::Responder;
use crate::percent;
use crate::response::{self, Body, Response};
use crate::server::server;
use crate::shard::{self, KvReply, KvRequest, ShardError};
use crate::{metrics, status};

/// Longest key, in bytes after percent-decoding (414 above).
pub const KEY_BYTES_MAX: usize = 1024;
/// Keys listed when `limit` is not given.
pub const LIST_LIMIT_DEFAULT: usize = 1000;
/// Largest `limit` accepted (400 above).
pub const LIST_LIMIT_MAX: usize = 10_000;

const ALLOW_KEY: &str = "GET, HEAD, PUT, DELETE";
const ALLOW_READ: &str = "GET, HEAD";
const ALLOW_POST: &str = "POST";

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/kv/{key}`.
    Key(Key),
    /// `/kv?prefix=P&limit=N`.
    List {
        /// Keys must start with this.
        prefix: Vec<u8>,
        /// Most keys listed.
        limit: usize,
    },
    /// `/_status`.
    Status,
    /// `/metrics`.
    Metrics,
    /// `/_crash/{shard}` with `--chaos`, for an existing shard.
    Crash(usize),
    /// Nothing here: 404.
    NotFound,
    /// A path that cannot be served as sent (bad escape, key size).
    Invalid {
        /// The status to answer.
        status: u16,
        /// Why.
        reason: &'static str,
    },
}

/// Routes a request target (origin form, or absolute form whose scheme and
/// authority are ignored).
pub fn route(target: &str, shards: usize, chaos: bool) -> Route {
    // Nearly every request names a key: one scan of it, before the general
    // split of path and query (an origin-form target starting with `/kv/`
    // has no authority to strip).
    if let Some(rest) = target.strip_prefix("/kv/") {
        return key_route(rest.as_bytes());
    }
    let target = strip_authority(target);
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    if let Some(raw_key) = path.strip_prefix("/kv/") {
        return key_route(raw_key.as_bytes());
    }
    match path {
        "/kv" => list_route(query.unwrap_or("")),
        "/_status" => Route::Status,
        "/metrics" => Route::Metrics,
        _ => match path.strip_prefix("/_crash/") {
            Some(n) if chaos => match n.parse::<usize>() {
                Ok(shard) if shard < shards && !n.starts_with('+') => Route::Crash(shard),
                _ => Route::NotFound,
            },
            _ => Route::NotFound,
        },
    }
}

fn strip_authority(target: &str) -> &str {
    for scheme in ["http://", "https://"] {
        if let Some(rest) = target.strip_prefix(scheme) {
            return rest.find('/').map_or("/", |i| &rest[i..]);
        }
    }
    target
}

/// The route of the key segment `rest` (what follows `/kv/`, up to a `?`
/// that starts the query, which is ignored).
fn key_route(rest: &[u8]) -> Route {
    // One pass finds the end of the segment and whether anything in it is
    // escaped (keys are short: a byte loop costs less than two searches).
    let mut end = rest.len();
    let mut escaped = false;
    for (i, &b) in rest.iter().enumerate() {
        if b == b'?' {
            end = i;
            break;
        }
        escaped |= b == b'%';
    }
    let raw = &rest[..end];
    let key = if escaped {
        Key::decode(raw)
    } else {
        Ok(Key::from(raw))
    };
    let Ok(key) = key else {
        return invalid(400, "invalid percent-encoding in key\n");
    };
    match key.len() {
        0 => invalid(400, "empty key\n"),
        n if n > KEY_BYTES_MAX => invalid(414, "key longer than 1024 bytes\n"),
        _ => Route::Key(key),
    }
}

fn list_route(query: &str) -> Route {
    let mut prefix = Vec::new();
    let mut limit = LIST_LIMIT_DEFAULT;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "prefix" => {
                prefix.clear();
                if percent::decode(value.as_bytes(), &mut prefix).is_err() {
                    return invalid(400, "invalid percent-encoding in prefix\n");
                }
            }
            "limit" => match value.parse::<usize>() {
                Ok(n) if n <= LIST_LIMIT_MAX && !value.starts_with('+') => limit = n,
                _ => return invalid(400, "limit must be 0 to 10000\n"),
            },
            _ => {}
        }
    }
    Route::List { prefix, limit }
}

fn invalid(status: u16, reason: &'static str) -> Route {
    Route::Invalid { status, reason }
}

/// Answers `request` through `responder`, now or once shards reply.
pub fn dispatch(lp: &mut Loop, responder: Responder, request: Request, limits: &Limits) {
    let method = request.method;
    let read = matches!(method, Method::Get | Method::Head);
    match request.route {
        Route::Key(key) => match method {
            Method::Get | Method::Head => call_key(lp, responder, KvRequest::Get { key }, limits),
            Method::Put => {
                let value = request.body;
                call_key(lp, responder, KvRequest::Put { key, value }, limits);
            }
            Method::Delete => call_key(lp, responder, KvRequest::Delete { key }, limits),
            _ => responder.send(lp, Response::method_not_allowed(ALLOW_KEY)),
        },
        Route::List { prefix, limit } if read => list(lp, responder, prefix, limit),
        Route::Status if read => {
            let body = status::render(lp);
            responder.send(
                lp,
                Response::with_body(200, response::JSON, Body::Owned(body)),
            );
        }
        Route::Metrics if read => {
            let body = render_metrics(lp);
            responder.send(
                lp,
                Response::with_body(200, response::PROMETHEUS, Body::Owned(body)),
            );
        }
        Route::List { .. } | Route::Status | Route::Metrics => {
            responder.send(lp, Response::method_not_allowed(ALLOW_READ))
        }
        Route::Crash(shard) if method == Method::Post => crash(lp, responder, shard),
        Route::Crash(_) => responder.send(lp, Response::method_not_allowed(ALLOW_POST)),
        Route::NotFound => responder.send(lp, Response::text(404, "not found\n")),
        Route::Invalid { status, reason } => responder.send(lp, Response::text(status, reason)),
    }
}

fn call_key(lp: &mut Loop, responder: Responder, request: KvRequest, limits: &Limits) {
    let key: &[u8] = match &request {
        KvRequest::Get { key } | KvRequest::Delete { key } => key,
        KvRequest::Put { key, .. } => key,
        _ => unreachable!("call_key takes key requests"),
    };
    let shard = shard::shard_for_key(key, limits.shards);
    crate::batch::queue(lp, shard, request, responder);
}

/// The answer to a key request's shard reply.
pub fn key_response(reply: Result<KvReply, ShardError>) -> Response {
    match reply {
        Ok(KvReply::Value(Some(value))) => {
            Response::with_body(200, response::OCTETS, Body::Shared(value))
        }
        Ok(KvReply::Value(None)) | Ok(KvReply::Deleted { existed: false }) => {
            Response::text(404, "no such key\n")
        }
        Ok(KvReply::Stored { created: true }) => Response::empty(201),
        Ok(KvReply::Stored { created: false }) => Response::empty(200),
        Ok(KvReply::Deleted { existed: true }) => Response::empty(204),
        Ok(other) => {
            tracing::error!(?other, "shard answered a key request with the wrong reply");
            Response::text(500, "internal error\n")
        }
        Err(e) => shard_error_response(e),
    }
}

/// The 503 for a shard that gave no answer.
pub fn shard_error_response(e: ShardError) -> Response {
    match e {
        ShardError::Timeout => Response::unavailable("shard timed out\n"),
        ShardError::Overloaded => Response::unavailable("shard overloaded\n"),
        ShardError::Unavailable => Response::unavailable("shard unavailable\n"),
    }
}

struct ListGather {
    waiting: usize,
    keys: Vec<Vec<u8>>,
    error: Option<Response>,
}

/// Asks every shard for its first `limit` keys with `prefix`, merges them in
/// byte order, and answers with the first `limit`, one per line.
fn list(lp: &mut Loop, responder: Responder, prefix: Vec<u8>, limit: usize) {
    let config = &server(lp).config;
    let shards = config.shards;
    let timeout = config.request_timeout();
    let gather = Rc::new(RefCell::new(ListGather {
        waiting: shards,
        keys: Vec::new(),
        error: None,
    }));
    for shard in 0..shards {
        let gather = gather.clone();
        let request = KvRequest::List {
            prefix: prefix.clone(),
            limit,
        };
        shard::call(lp, shard, request, timeout, move |lp, reply| {
            let mut g = gather.borrow_mut();
            match reply {
                Ok(KvReply::Keys(keys)) => g.keys.extend(keys),
                Ok(_) => g.error = Some(Response::text(500, "internal error\n")),
                Err(e) => g.error = Some(shard_error_response(e)),
            }
            g.waiting -= 1;
            if g.waiting > 0 {
                return;
            }
            let response = match g.error.take() {
                Some(error) => error,
                None => listing(std::mem::take(&mut g.keys), limit),
            };
            drop(g);
            responder.send(lp, response);
        });
    }
}

/// The listing body: keys sorted, at most `limit`, one per line.
pub fn listing(mut keys: Vec<Vec<u8>>, limit: usize) -> Response {
    keys.sort_unstable();
    keys.truncate(limit);
    let mut body = Vec::with_capacity(keys.iter().map(|k| k.len() + 1).sum());
    for key in &keys {
        percent::encode_for_line(key, &mut body);
        body.push(b'\n');
    }
    Response::with_body(200, response::TEXT, Body::Owned(body))
}

fn crash(lp: &mut Loop, responder: Responder, shard: usize) {
    tracing::warn!(shard, "crashing shard on request (--chaos)");
    let timeout = server(lp).config.request_timeout();
    shard::call(lp, shard, KvRequest::Crash, timeout, move |lp, reply| {
        let response = match reply {
            Ok(_) => Response::text(200, "crashed\n"),
            Err(e) => shard_error_response(e),
        };
        responder.send(lp, response);
    });
}

fn render_metrics(lp: &Loop) -> Vec<u8> {
    let s = server(lp);
    let shards = shard::info(lp);
    let snapshot = metrics::Snapshot {
        metrics: &s.metrics,
        loop_stats: lp.stats(),
        connections_open: s.conns.len(),
        shards: &shards,
        log: shard::log_info(lp),
        uptime_seconds: lp.now().saturating_duration_since(s.started).as_secs_f64(),
    };
    let mut out = Vec::with_capacity(8 * 1024);
    metrics::render(&snapshot, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_keys_lists_and_admin_paths() {
        assert_eq!(
            route("/kv/a%2Fb", 8, false),
            Route::Key(Key::from(&b"a/b"[..]))
        );
        assert_eq!(
            route("/kv/a/b?x=1", 8, false),
            Route::Key(Key::from(&b"a/b"[..]))
        );
        assert_eq!(
            route("/kv/a%2Fb?x=%zz", 8, false),
            Route::Key(Key::from(&b"a/b"[..])),
            "the query is not part of the key"
        );
        assert_eq!(
            route("http://host:1/kv/z", 8, false),
            Route::Key(Key::from(&b"z"[..]))
        );
        assert_eq!(
            route("/kv", 8, false),
            Route::List {
                prefix: vec![],
                limit: LIST_LIMIT_DEFAULT
            }
        );
        assert_eq!(
            route("/kv?prefix=u%00&limit=5", 8, false),
            Route::List {
                prefix: b"u\0".to_vec(),
                limit: 5
            }
        );
        assert_eq!(route("/_status", 8, false), Route::Status);
        assert_eq!(route("/metrics", 8, false), Route::Metrics);
        assert_eq!(route("/_crash/7", 8, true), Route::Crash(7));
        for missing in ["/_crash/8", "/_crash/x", "/", "/kvx", "/metrics/"] {
            assert_eq!(route(missing, 8, true), Route::NotFound, "{missing}");
        }
        assert_eq!(route("/_crash/1", 8, false), Route::NotFound);
    }

    #[test]
    fn refuses_bad_keys_and_limits() {
        let status = |t: &str| match route(t, 8, false) {
            Route::Invalid { status, .. } => status,
            other => panic!("{t}: {other:?}"),
        };
        assert_eq!(status("/kv/"), 400);
        assert_eq!(status("/kv/%zz"), 400);
        assert_eq!(status("/kv?limit=-1"), 400);
        assert_eq!(status("/kv?limit=10001"), 400);
        assert_eq!(
            status(&format!("/kv/{}", "k".repeat(KEY_BYTES_MAX + 1))),
            414
        );
        assert_eq!(
            status(&format!("/kv/{}", "%41".repeat(KEY_BYTES_MAX + 1))),
            414
        );
        assert!(
            matches!(route(&format!("/kv/{}", "%41".repeat(KEY_BYTES_MAX)), 8, false), Route::Key(k) if k.len() == KEY_BYTES_MAX)
        );
    }

    #[test]
    fn shard_replies_map_to_statuses() {
        let status = |r| key_response(r).status;
        assert_eq!(status(Ok(KvReply::Stored { created: true })), 201);
        assert_eq!(status(Ok(KvReply::Stored { created: false })), 200);
        assert_eq!(status(Ok(KvReply::Deleted { existed: true })), 204);
        assert_eq!(status(Ok(KvReply::Deleted { existed: false })), 404);
        assert_eq!(status(Ok(KvReply::Value(None))), 404);
        assert_eq!(status(Ok(KvReply::Crashed)), 500);
        for e in [
            ShardError::Timeout,
            ShardError::Overloaded,
            ShardError::Unavailable,
        ] {
            let r = key_response(Err(e));
            assert_eq!((r.status, r.retry_after), (503, true));
        }
    }

    #[test]
    fn listing_is_sorted_limited_and_line_safe() {
        let r = listing(vec![b"b".to_vec(), b"a\n".to_vec(), b"c".to_vec()], 2);
        assert_eq!(r.body, Body::Owned(b"a%0A\nb\n".to_vec()));
    }
}

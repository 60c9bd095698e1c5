//! The HTTP key-value API over real TCP, with `ureq`: CRUD, binary and
//! empty values, percent-encoded keys, listings, `/_status`, `/metrics`,
//! method and path errors, the chaos endpoint and shard overload. Each test
//! runs on io_uring and on poll.

mod http_kv_support;

use std::io::{BufReader, Write};

use http_kv_support::*;
use ringvisor::backend_tests;

backend_tests! {
    fn put_get_head_delete_round_trip(backend) {
        let s = Server::start(backend, &[]);
        assert_eq!(put(&s, "/kv/greeting", b"hello"), 201, "new key");
        assert_eq!(put(&s, "/kv/greeting", b"hello, world"), 200, "replaced");
        assert_eq!(get(&s, "/kv/greeting"), (200, b"hello, world".to_vec()));
        let head = agent().head(&s.url("/kv/greeting")).call().unwrap();
        assert_eq!(head.status().as_u16(), 200);
        assert_eq!(head.headers()["content-length"], "12");
        assert_eq!(head.headers()["content-type"], "application/octet-stream");
        assert_eq!(delete(&s, "/kv/greeting"), 204);
        assert_eq!(delete(&s, "/kv/greeting"), 404);
        assert_eq!(get(&s, "/kv/greeting").0, 404);
        let head = agent().head(&s.url("/kv/greeting")).call().unwrap();
        assert_eq!(head.status().as_u16(), 404);
    }

    fn binary_and_empty_values_are_stored_exactly(backend) {
        let s = Server::start(backend, &[]);
        let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        assert_eq!(put(&s, "/kv/bin", &binary), 201);
        assert_eq!(get(&s, "/kv/bin"), (200, binary));
        assert_eq!(put(&s, "/kv/empty", b""), 201);
        assert_eq!(get(&s, "/kv/empty"), (200, Vec::new()));
        let max = vec![7u8; 1 << 20];
        assert_eq!(put(&s, "/kv/max", &max), 201, "exactly --max-value-bytes");
        assert_eq!(get(&s, "/kv/max"), (200, max));
    }

    fn keys_are_percent_decoded_bytes(backend) {
        let s = Server::start(backend, &[]);
        let key: Vec<u8> = (0..=255u8).collect();
        let path = format!("/kv/{}", encode_all(&key));
        assert_eq!(put(&s, &path, b"all bytes"), 201);
        assert_eq!(get(&s, &path), (200, b"all bytes".to_vec()));
        assert_eq!(put(&s, "/kv/a%2Fb", b"slash"), 201);
        assert_eq!(get(&s, "/kv/a/b"), (200, b"slash".to_vec()), "same key either way");
        assert_eq!(get(&s, "/kv/..%2F..%2Fetc%2Fpasswd").0, 404, "a key is data, never a path");
        let longest = format!("/kv/{}", "k".repeat(1024));
        assert_eq!(put(&s, &longest, b"1024"), 201);
        assert_eq!(get(&s, &longest), (200, b"1024".to_vec()));
        let encoded_longest = format!("/kv/{}", encode_all(&[b'k'; 1024]));
        assert_eq!(get(&s, &encoded_longest), (200, b"1024".to_vec()));
        assert_eq!(put(&s, &format!("/kv/{}", "k".repeat(1025)), b"x"), 414);
        assert_eq!(get(&s, "/kv/").0, 400, "empty key");
        assert_eq!(get(&s, "/kv/bad%zzescape").0, 400);
    }

    fn listing_is_sorted_prefixed_and_limited(backend) {
        let s = Server::start(backend, &[]);
        for key in ["user/3", "user/1", "user/2", "users", "admin/1", "user/10"] {
            assert_eq!(put(&s, &format!("/kv/{key}"), key.as_bytes()), 201);
        }
        assert_eq!(put(&s, "/kv/user%2Fnew%0Aline", b"x"), 201);
        let (status, body) = get(&s, "/kv?prefix=user%2F");
        assert_eq!(status, 200);
        assert_eq!(String::from_utf8(body).unwrap(), "user/1\nuser/10\nuser/2\nuser/3\nuser/new%0Aline\n");
        assert_eq!(get(&s, "/kv?prefix=user/&limit=2").1, b"user/1\nuser/10\n");
        assert_eq!(get(&s, "/kv?limit=0").1, b"");
        let (_, all) = get(&s, "/kv");
        assert_eq!(all.iter().filter(|&&b| b == b'\n').count(), 7, "default limit lists all");
        assert!(all.starts_with(b"admin/1\nuser/1\n"));
        let resp = agent().get(&s.url("/kv?prefix=user")).call().unwrap();
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        assert_eq!(get(&s, "/kv?limit=ten").0, 400);
        assert_eq!(get(&s, "/kv?limit=10001").0, 400);
        let head = agent().head(&s.url("/kv?prefix=admin")).call().unwrap();
        assert_eq!(head.headers()["content-length"], "8");
    }

    fn status_reports_backend_shards_and_loop(backend) {
        let s = Server::start(backend, &["--shards", "3"]);
        for i in 0..30 {
            assert_eq!(put(&s, &format!("/kv/k{i}"), b"v"), 201);
        }
        let name = match backend { ringvisor::Backend::Uring => "io_uring", _ => "poll" };
        assert!(s.banner.contains(&format!("(backend: {name}, shards: 3, data: ")), "{}", s.banner);
        let status = s.status();
        assert_eq!(status["backend"], name);
        assert_eq!(status["shards"].as_array().unwrap().len(), 3);
        let keys: u64 = status["shards"].as_array().unwrap().iter().map(|sh| sh["keys"].as_u64().unwrap()).sum();
        assert_eq!(keys, 30);
        assert_eq!(status["keys_total"], 30);
        assert!(status["shards"][0]["keys"].as_u64().unwrap() > 0, "keys spread over shards");
        assert!(status["uptime_ms"].is_u64());
        assert!(status.get("supervision").is_some());
        assert!(status["loop"]["ticks"].as_u64().unwrap() > 0);
        assert!(status["loop"]["completions"].as_u64().unwrap() > 0);
        assert!(status["requests_total"].as_u64().unwrap() >= 30);
        assert_eq!(status["connections"]["max"], 10_000);
    }

    fn metrics_count_requests_latency_and_loop(backend) {
        let s = Server::start(backend, &[]);
        for i in 0..5 {
            assert_eq!(put(&s, &format!("/kv/m{i}"), b"v"), 201);
        }
        assert_eq!(get(&s, "/kv/missing").0, 404);
        let (status, body) = get(&s, "/metrics");
        assert_eq!(status, 200);
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("http_requests_total{method=\"PUT\",code=\"201\"} 5\n"), "{text}");
        assert!(text.contains("http_requests_total{method=\"GET\",code=\"404\"} 1\n"));
        assert!(text.contains("# TYPE http_request_duration_seconds histogram\n"));
        assert!(text.contains("http_request_duration_seconds_bucket{le=\"+Inf\"} 6\n"));
        assert!(text.contains("http_request_duration_seconds_count 6\n"));
        for name in ["ringvisor_loop_syscalls_total", "ringvisor_loop_sqes_submitted_total",
                     "ringvisor_loop_completions_per_tick", "ringvisor_shard_restarts_total{shard=\"0\"}",
                     "http_connections_open"] {
            assert!(text.contains(name), "{name} missing");
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(!series.is_empty() && value.parse::<f64>().is_ok(), "bad line {line:?}");
        }
    }

    fn wrong_paths_and_methods_get_404_and_405(backend) {
        let s = Server::start(backend, &[]);
        assert_eq!(get(&s, "/").0, 404);
        assert_eq!(get(&s, "/nope").0, 404);
        let resp = agent().post(&s.url("/kv/x")).send(&b"v"[..]).unwrap();
        assert_eq!(resp.status().as_u16(), 405);
        assert_eq!(resp.headers()["allow"], "GET, HEAD, PUT, DELETE");
        let resp = agent().delete(&s.url("/_status")).call().unwrap();
        assert_eq!(resp.status().as_u16(), 405);
        assert_eq!(resp.headers()["allow"], "GET, HEAD");
        assert_eq!(agent().put(&s.url("/kv")).send(&b""[..]).unwrap().status().as_u16(), 405);
        assert_eq!(agent().post(&s.url("/_crash/0")).send(&b""[..]).unwrap().status().as_u16(), 404, "needs --chaos");
    }

    fn chaos_crash_endpoint(backend) {
        let s = Server::start(backend, &["--chaos", "--shards", "2"]);
        assert_eq!(agent().post(&s.url("/_crash/2")).send(&b""[..]).unwrap().status().as_u16(), 404);
        assert_eq!(agent().get(&s.url("/_crash/0")).call().unwrap().status().as_u16(), 405);
        assert_eq!(agent().post(&s.url("/_crash/1")).send(&b""[..]).unwrap().status().as_u16(), 200);
        let status = s.status();
        assert_eq!(status["shards"][1]["restarts"], 1);
        assert_eq!(status["shards"][0]["restarts"], 0);
        assert_eq!(put(&s, "/kv/after", b"crash"), 201, "still serving");
    }

    fn full_shard_queue_answers_503(backend) {
        let s = Server::start(backend, &["--shard-queue-capacity", "4"]);
        let mut conn = s.connect();
        let requests: Vec<u8> = (0..50).flat_map(|_| b"GET /kv/same HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()).collect();
        conn.write_all(&requests).unwrap();
        let mut r = BufReader::new(conn);
        let mut statuses = Vec::new();
        for _ in 0..50 {
            let resp = read_response(&mut r, false).unwrap();
            if resp.status == 503 {
                assert_eq!(resp.header("retry-after"), Some("1"));
            }
            statuses.push(resp.status);
        }
        assert!(statuses.iter().all(|&st| st == 404 || st == 503), "{statuses:?}");
        assert!(statuses.contains(&503), "a queue of 4 overflows: {statuses:?}");
        assert!(statuses.contains(&404), "the first 4 are served: {statuses:?}");
        assert_eq!(get(&s, "/kv/same").0, 404, "serving again once the queue drained");
    }
}

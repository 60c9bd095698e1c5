//! HTTP/1.x behaviour on raw sockets: keep-alive, pipelining, chunked
//! bodies, HTTP/1.0, `Connection: close`, `Expect: 100-continue`, and every
//! error status for malformed or oversized input. Each test runs on
//! io_uring and on poll.

mod http_kv_support;

use std::io::{BufReader, Read, Write};

use http_kv_support::*;
use ringvisor::backend_tests;

fn req(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

backend_tests! {
    fn keep_alive_serves_a_thousand_requests_on_one_connection(backend) {
        let s = Server::start(backend, &[]);
        let mut r = BufReader::new(s.connect());
        for i in 0..500 {
            let value = format!("value-{i}");
            r.get_mut().write_all(&req("PUT", &format!("/kv/k{}", i % 50), value.as_bytes())).unwrap();
            let resp = read_response(&mut r, false).unwrap();
            assert!(resp.status == 201 || resp.status == 200, "{resp:?}");
            assert_eq!(resp.header("connection"), None, "keep-alive is the 1.1 default");
            r.get_mut().write_all(&req("GET", &format!("/kv/k{}", i % 50), b"")).unwrap();
            let resp = read_response(&mut r, false).unwrap();
            assert_eq!((resp.status, resp.body), (200, value.into_bytes()));
        }
        let status = s.status();
        assert_eq!(status["connections"]["accepted_total"], 2, "one for the 1,000 requests, one for /_status");
    }

    fn two_hundred_pipelined_requests_answer_in_order(backend) {
        let s = Server::start(backend, &[]);
        let mut batch = Vec::new();
        for i in 0..100 {
            batch.extend(req("PUT", &format!("/kv/p{i}"), format!("v{i}").as_bytes()));
            batch.extend(req("GET", &format!("/kv/p{i}"), b""));
        }
        let mut r = BufReader::new(s.connect());
        r.get_mut().write_all(&batch).unwrap();
        for i in 0..100 {
            assert_eq!(read_response(&mut r, false).unwrap().status, 201);
            let got = read_response(&mut r, false).unwrap();
            assert_eq!((got.status, got.body), (200, format!("v{i}").into_bytes()), "response {i} in order");
        }
    }

    fn pipelined_responses_share_sends(backend) {
        let s = Server::start(backend, &[]);
        let mut r = BufReader::new(s.connect());
        r.get_mut().write_all(&req("GET", "/kv/warm", b"")).unwrap();
        read_response(&mut r, false).unwrap();
        let before = s.status()["loop"]["sqes_submitted"].as_u64().unwrap();
        let batch: Vec<u8> = (0..100).flat_map(|i| req("GET", &format!("/kv/x{i}"), b"")).collect();
        r.get_mut().write_all(&batch).unwrap();
        for _ in 0..100 {
            assert_eq!(read_response(&mut r, false).unwrap().status, 404);
        }
        let after = s.status()["loop"]["sqes_submitted"].as_u64().unwrap();
        // One send per response would be over 100 ops; batched, it is a few
        // recvs and sends plus the /_status connections' own ops.
        assert!(after - before < 40, "{} ops for 100 pipelined requests", after - before);
    }

    fn a_slow_reader_of_large_responses_gets_them_all(backend) {
        let s = Server::start(backend, &[]);
        let value: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
        assert_eq!(put(&s, "/kv/big", &value), 201);
        let mut r = BufReader::new(s.connect());
        // 40 MiB of answers asked for at once, read only afterwards: the
        // server stops reading requests while its output backs up.
        let batch: Vec<u8> = (0..40).flat_map(|_| req("GET", "/kv/big", b"")).collect();
        r.get_mut().write_all(&batch).unwrap();
        s.wait_status("the output to back up", |st| st["connections"]["in_progress"] == 2);
        for _ in 0..40 {
            let resp = read_response(&mut r, false).unwrap();
            assert_eq!(resp.status, 200);
            assert!(resp.body == value, "intact");
        }
    }

    fn chunked_request_bodies(backend) {
        let s = Server::start(backend, &["--max-value-bytes", "100"]);
        let head = b"PUT /kv/chunky HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(b"5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: yes\r\n\r\n");
        bytes.extend(req("GET", "/kv/chunky", b""));
        let mut r = BufReader::new(s.connect());
        // Dribbled in small writes to cross every parser state.
        for piece in bytes.chunks(7) {
            r.get_mut().write_all(piece).unwrap();
        }
        assert_eq!(read_response(&mut r, false).unwrap().status, 201);
        assert_eq!(read_response(&mut r, false).unwrap().body, b"hello world");
        let mut big = head.to_vec();
        big.extend_from_slice(b"65\r\n");
        let (resp, mut r) = raw_exchange(&s, &big);
        assert_eq!(resp.status, 413);
        assert!(closed(&mut r));
        let mut bad = head.to_vec();
        bad.extend_from_slice(b"zz\r\n");
        let (resp, mut r) = raw_exchange(&s, &bad);
        assert_eq!(resp.status, 400);
        assert!(closed(&mut r));
    }

    fn http10_closes_unless_keep_alive_is_asked(backend) {
        let s = Server::start(backend, &[]);
        assert_eq!(put(&s, "/kv/old", b"school"), 201);
        let (resp, mut r) = raw_exchange(&s, b"GET /kv/old HTTP/1.0\r\n\r\n");
        assert_eq!((resp.status, &resp.body[..]), (200, &b"school"[..]));
        assert_eq!(resp.header("connection"), Some("close"));
        assert!(closed(&mut r));
        let (resp, mut r) = raw_exchange(&s, b"GET /kv/old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(resp.header("connection"), Some("keep-alive"));
        r.get_mut().write_all(b"HEAD /kv/old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        let resp = read_response(&mut r, true).unwrap();
        assert_eq!((resp.status, resp.header("content-length")), (200, Some("6")));
    }

    fn connection_close_is_honoured(backend) {
        let s = Server::start(backend, &[]);
        let (resp, mut r) = raw_exchange(&s, b"GET /kv/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /kv/y HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!((resp.status, resp.header("connection")), (404, Some("close")));
        assert!(closed(&mut r), "nothing after the close, even with a request pipelined behind it");
    }

    fn expect_continue_gets_100_then_the_answer(backend) {
        let s = Server::start(backend, &["--max-value-bytes", "4096"]);
        let mut r = BufReader::new(s.connect());
        r.get_mut().write_all(b"PUT /kv/big HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2000\r\n\r\n").unwrap();
        let interim = read_response(&mut r, false).unwrap();
        assert_eq!(interim.status, 100);
        r.get_mut().write_all(&[b'b'; 2000]).unwrap();
        assert_eq!(read_response(&mut r, false).unwrap().status, 201);
        assert_eq!(get(&s, "/kv/big"), (200, vec![b'b'; 2000]));
        let (resp, mut r) = raw_exchange(&s, b"PUT /kv/big HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n");
        assert_eq!(resp.status, 413, "refused before the body is sent");
        assert!(closed(&mut r));
    }

    fn malformed_requests_get_400_and_a_close(backend) {
        let s = Server::start(backend, &[]);
        for bad in [
            &b"HELLO\r\n\r\n"[..],
            b"GET /kv/x HTTP/1.1\r\n\r\n",
            b"GET /kv/x HTTP/3.0\r\nHost: t\r\n\r\n",
            b"GET /kv/x HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n",
            b"PUT /kv/x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
            b"PUT /kv/x HTTP/1.1\r\nHost: t\r\nContent-Length: 3x\r\n\r\nabc",
            b"PUT /kv/x HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
            b"PUT /kv/x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"PUT /kv/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"\x00\x01\x02\xff\r\n\r\n",
        ] {
            let (resp, mut r) = raw_exchange(&s, bad);
            assert_eq!(resp.status, 400, "{:?}", String::from_utf8_lossy(bad));
            assert_eq!(resp.header("connection"), Some("close"));
            assert!(closed(&mut r), "closed after 400");
        }
        assert_eq!(put(&s, "/kv/x", b"fine"), 201, "everyone else is still served");
    }

    fn oversized_heads_and_bodies_get_431_414_413(backend) {
        let s = Server::start(backend, &["--max-value-bytes", "1000"]);
        let mut long_header = b"GET /kv/x HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
        long_header.extend(std::iter::repeat_n(b'a', 9000));
        long_header.extend_from_slice(b"\r\n\r\n");
        let (resp, mut r) = raw_exchange(&s, &long_header);
        assert_eq!(resp.status, 431);
        assert!(closed(&mut r));
        let mut many = b"GET /kv/x HTTP/1.1\r\nHost: t\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(raw_exchange(&s, &many).0.status, 431);
        let long_line = format!("GET /kv/{} HTTP/1.1\r\nHost: t\r\n\r\n", "k".repeat(9000));
        assert_eq!(raw_exchange(&s, long_line.as_bytes()).0.status, 414);
        let (resp, mut r) = raw_exchange(&s, &req("GET", &format!("/kv/{}", "k".repeat(1025)), b""));
        assert_eq!(resp.status, 414, "key over 1024 bytes");
        r.get_mut().write_all(&req("GET", "/kv/k", b"")).unwrap();
        assert_eq!(read_response(&mut r, false).unwrap().status, 404, "a long key keeps the connection");
        let (resp, mut r) = raw_exchange(&s, &req("PUT", "/kv/big", &[0u8; 1001]));
        assert_eq!(resp.status, 413);
        assert!(closed(&mut r));
        assert_eq!(raw_exchange(&s, &req("PUT", "/kv/fits", &[0u8; 1000])).0.status, 201);
    }
}

/// Garbage of every shape never takes the server down: each connection gets
/// an answer or a close, and the server serves on.
#[test]
fn random_garbage_never_stops_the_server() {
    for backend in ringvisor::testing::BACKENDS {
        let s = Server::start(backend, &[]);
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let prefixes: [&[u8]; 4] = [
            b"",
            b"GET /kv/a HTTP/1.1\r\n",
            b"PUT /kv/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /kv/%",
        ];
        for i in 0..60 {
            let mut bytes = prefixes[i % prefixes.len()].to_vec();
            let len = (next() % 600) as usize;
            bytes.extend((0..len).map(|_| next() as u8));
            bytes.extend_from_slice(b"\r\n\r\n");
            let mut conn = s.connect();
            let _ = conn.write_all(&bytes);
            let _ = conn.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            // An answer then EOF, or a reset: either way it ends.
            let _ = conn.read_to_end(&mut sink);
            if !sink.is_empty() {
                assert!(
                    sink.starts_with(b"HTTP/1.1 "),
                    "{:?}",
                    String::from_utf8_lossy(&sink)
                );
            }
        }
        assert_eq!(put(&s, "/kv/alive", b"yes"), 201);
    }
}

//! Answers linked to the next receive (`send_recv`): a keep-alive client
//! asking one request at a time costs the server one kernel entry per
//! request on io_uring, a connection waiting for its next request counts as
//! idle, and a client that sends its next request before reading the answer
//! is still answered in order. Each test runs on io_uring and on poll.

mod http_kv_support;

use std::io::{BufReader, Write};

use http_kv_support::*;
use ringvisor::backend_tests;

const GET_BENCH: &[u8] = b"GET /kv/bench HTTP/1.1\r\nHost: t\r\n\r\n";

fn loop_syscalls(s: &Server) -> u64 {
    s.status()["loop"]["syscalls"].as_u64().expect("syscalls")
}

backend_tests! {
    fn one_request_at_a_time_costs_one_kernel_entry_per_request(backend) {
        const REQUESTS: u64 = 300;
        let s = Server::start(backend, &["--sync", "never"]);
        assert_eq!(put(&s, "/kv/bench", b"value"), 201);
        let mut r = BufReader::new(s.connect());
        r.get_mut().write_all(GET_BENCH).unwrap();
        assert_eq!(read_response(&mut r, false).unwrap().status, 200);
        let before = loop_syscalls(&s);
        for _ in 0..REQUESTS {
            r.get_mut().write_all(GET_BENCH).unwrap();
            let resp = read_response(&mut r, false).unwrap();
            assert_eq!((resp.status, &resp.body[..]), (200, &b"value"[..]));
        }
        let entries = loop_syscalls(&s) - before;
        if backend == ringvisor::Backend::Uring {
            // Each exchange: one enter that sends the answer and waits for
            // the next request. The two /_status requests add a few.
            assert!(entries <= REQUESTS + 20, "{entries} kernel entries for {REQUESTS} requests");
        }
    }

    fn a_connection_waiting_for_its_next_request_is_idle(backend) {
        let s = Server::start(backend, &[]);
        let (resp, _idle) = raw_exchange(&s, GET_BENCH);
        assert_eq!(resp.status, 404);
        // Only the /_status request itself is in progress.
        s.wait_status("the idle connection", |st| {
            st["connections"]["open"] == 2 && st["connections"]["in_progress"] == 1
        });
    }

    fn the_next_request_sent_before_the_answer_is_read_is_answered(backend) {
        let s = Server::start(backend, &["--sync", "never"]);
        let mut r = BufReader::new(s.connect());
        for i in 0..100 {
            let put = format!("PUT /kv/k{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nv");
            r.get_mut().write_all(put.as_bytes()).unwrap();
            // Sent before the PUT's answer is read.
            let get = format!("GET /kv/k{i} HTTP/1.1\r\nHost: t\r\n\r\n");
            r.get_mut().write_all(get.as_bytes()).unwrap();
            assert_eq!(read_response(&mut r, false).unwrap().status, 201);
            let resp = read_response(&mut r, false).unwrap();
            assert_eq!((resp.status, &resp.body[..]), (200, &b"v"[..]), "request {i}");
        }
    }
}

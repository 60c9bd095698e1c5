//! Connections over time: idle and slow-request timeouts, hundreds of
//! concurrent connections, the connection limit, abrupt resets, and a
//! graceful SIGTERM. Each test runs on io_uring and on poll.

mod http_kv_support;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use http_kv_support::*;
use ringvisor::backend_tests;

const GET_A: &[u8] = b"GET /kv/a HTTP/1.1\r\nHost: t\r\n\r\n";

backend_tests! {
    fn idle_keep_alive_connections_close_after_the_idle_timeout(backend) {
        let s = Server::start(backend, &["--idle-timeout-ms", "300"]);
        let (resp, mut r) = raw_exchange(&s, GET_A);
        assert_eq!(resp.status, 404);
        let answered = Instant::now();
        assert!(closed(&mut r), "closed while idle");
        let waited = answered.elapsed();
        assert!(waited >= Duration::from_millis(250), "closed after {waited:?}, before the timeout");
        let status = s.status();
        assert_eq!(status["connections"]["open"], 1, "only the /_status connection is left");
    }

    fn slow_headers_get_408_and_a_close(backend) {
        let s = Server::start(backend, &["--request-timeout-ms", "300", "--idle-timeout-ms", "5000"]);
        let mut conn = s.connect();
        let start = Instant::now();
        conn.write_all(b"GET /kv/a HTTP/1.1\r\n").unwrap();
        let writer = conn.try_clone().unwrap();
        // Dribble a header byte every 20 ms: alive, but never finishing in time.
        let dribbler = std::thread::spawn(move || {
            let mut writer = writer;
            for _ in 0..500 {
                if writer.write_all(b"X").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let mut r = BufReader::new(conn);
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!(resp.status, 408);
        assert_eq!(resp.header("connection"), Some("close"));
        assert!(start.elapsed() >= Duration::from_millis(250), "cut off after {:?}", start.elapsed());
        assert!(closed(&mut r));
        r.get_ref().shutdown(std::net::Shutdown::Both).ok();
        dribbler.join().unwrap();
    }

    fn slow_bodies_get_408(backend) {
        let s = Server::start(backend, &["--request-timeout-ms", "300"]);
        let mut r = BufReader::new(s.connect());
        r.get_mut().write_all(b"PUT /kv/slow HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345").unwrap();
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!(resp.status, 408);
        assert!(closed(&mut r));
        assert_eq!(get(&s, "/kv/slow").0, 404, "the cut-off write never happened");
    }

    fn hundreds_of_concurrent_connections(backend) {
        let s = Server::start(backend, &[]);
        let mut conns: Vec<BufReader<TcpStream>> = (0..400).map(|_| BufReader::new(s.connect())).collect();
        for (i, c) in conns.iter_mut().enumerate() {
            let body = format!("c{i}");
            let r = format!("PUT /kv/c{i} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            c.get_mut().write_all(r.as_bytes()).unwrap();
        }
        for c in conns.iter_mut() {
            assert_eq!(read_response(c, false).unwrap().status, 201);
        }
        let status = s.status();
        assert_eq!(status["connections"]["open"], 401, "all held open at once");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let url = s.url("");
                std::thread::spawn(move || {
                    let agent = agent();
                    for i in (t..400).step_by(4) {
                        let mut resp = agent.get(&format!("{url}/kv/c{i}")).call().unwrap();
                        assert_eq!(resp.body_mut().read_to_string().unwrap(), format!("c{i}"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for (i, c) in conns.iter_mut().enumerate() {
            c.get_mut().write_all(format!("DELETE /kv/c{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).unwrap();
        }
        let deleted = conns.iter_mut().map(|c| read_response(c, false).unwrap().status).filter(|&st| st == 204).count();
        assert_eq!(deleted, 400);
    }

    fn the_listener_pauses_at_max_connections(backend) {
        let s = Server::start(backend, &["--max-connections", "3"]);
        let mut held: Vec<BufReader<TcpStream>> = (0..3).map(|_| BufReader::new(s.connect())).collect();
        for c in held.iter_mut() {
            c.get_mut().write_all(GET_A).unwrap();
            assert_eq!(read_response(c, false).unwrap().status, 404);
        }
        // The kernel completes the handshake (backlog), but the server does
        // not accept, so nothing answers.
        let mut waiting = s.connect();
        waiting.write_all(GET_A).unwrap();
        waiting.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut byte = [0u8; 1];
        let err = waiting.read(&mut byte).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{err}");
        drop(held.pop());
        waiting.set_read_timeout(Some(WAIT_MAX)).unwrap();
        let mut r = BufReader::new(waiting);
        assert_eq!(read_response(&mut r, false).unwrap().status, 404, "accepted once below the limit");
    }

    fn running_out_of_fds_pauses_accepting_then_resumes(backend) {
        // Far fewer fds than connections: accepts fail with EMFILE until
        // answered connections close. The 8 durable shards hold about 24
        // fds (lock, directory, log segment each), so 64 leaves ~30 for 80
        // connections.
        let s = Server::start_with_fd_limit(backend, &[], Some(64));
        let mut pending: Vec<BufReader<TcpStream>> = (0..80).map(|_| BufReader::new(s.connect())).collect();
        for c in pending.iter_mut() {
            c.get_mut().write_all(GET_A).unwrap();
        }
        // Answer in arrival order isn't promised: read each in turn; the
        // ones not yet accepted are served as earlier ones close.
        for mut c in pending.drain(..) {
            assert_eq!(read_response(&mut c, false).unwrap().status, 404);
        }
        assert_eq!(put(&s, "/kv/after", b"emfile"), 201);
    }

    fn abrupt_resets_leave_the_server_serving(backend) {
        let s = Server::start(backend, &[]);
        let big = vec![b'x'; 200_000];
        for i in 0..60 {
            let mut conn = s.connect();
            match i % 4 {
                0 => conn.write_all(b"GET /kv/a HTT").unwrap(),
                1 => conn.write_all(&[GET_A; 20].concat()).unwrap(),
                2 => {
                    let head = format!("PUT /kv/r HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", big.len());
                    conn.write_all(head.as_bytes()).unwrap();
                    let _ = conn.write_all(&big[..50_000]);
                }
                _ => {
                    // A large answer the client will never read.
                    let batch: Vec<u8> = (0..100).flat_map(|_| b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()).collect();
                    conn.write_all(&batch).unwrap();
                }
            }
            socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO)).unwrap();
            drop(conn); // RST
        }
        assert_eq!(put(&s, "/kv/after", b"resets"), 201);
        s.wait_status("reset connections to be closed", |st| st["connections"]["open"] == 1);
        assert_eq!(get(&s, "/kv/r").0, 404, "a reset mid-body writes nothing");
    }

    fn sigterm_finishes_in_flight_requests_then_exits_zero(backend) {
        let mut s = Server::start(backend, &[]);
        assert_eq!(put(&s, "/kv/k", b"before"), 201);
        let (_, mut idle) = raw_exchange(&s, GET_A);
        let mut busy = BufReader::new(s.connect());
        busy.get_mut().write_all(b"PUT /kv/k HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nin").unwrap();
        // The partial request has reached the server (it and this /_status
        // request are in progress) before the signal goes.
        s.wait_status("the partial request", |st| st["connections"]["in_progress"] == 2);
        // SAFETY: kill(2) on the server child's pid.
        unsafe {
            libc::kill(s.pid() as i32, libc::SIGTERM);
        }
        assert!(closed(&mut idle), "idle connections close at once");
        busy.get_mut().write_all(b"flight").unwrap();
        let resp = read_response(&mut busy, false).unwrap();
        assert_eq!(resp.status, 200, "the request in flight completes");
        assert_eq!(resp.header("connection"), Some("close"));
        assert!(closed(&mut busy));
        let status = s.signal_and_wait(0);
        assert_eq!(status.code(), Some(0), "{status:?}");
        assert!(TcpStream::connect(s.addr).is_err(), "no longer listening");
    }

    fn sigint_on_an_idle_server_exits_zero(backend) {
        let mut s = Server::start(backend, &[]);
        assert_eq!(put(&s, "/kv/k", b"v"), 201);
        let status = s.signal_and_wait(libc::SIGINT);
        assert_eq!(status.code(), Some(0), "{status:?}");
    }
}

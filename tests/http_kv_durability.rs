//! The HTTP KV service keeps every acknowledged write: across a `--chaos`
//! shard crash, a SIGTERM and restart, and SIGKILLs under write load. Each
//! test runs on io_uring and on poll.

mod http_kv_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_kv_support::{get, put, Server};
use ringvisor::backend_tests;

fn value_of(key: &str) -> Vec<u8> {
    format!("value of {key} ").repeat(3).into_bytes()
}

/// The shard `http_kv` routes `key` to (FNV-1a 64, as the server does).
fn shard_of(key: &[u8], shards: u64) -> u64 {
    let hash = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    hash % shards
}

backend_tests! {
    fn chaos_crash_restarts_the_shard_and_keeps_its_writes(backend) {
        let s = Server::start(backend, &["--chaos"]);
        let keys: Vec<String> = (0..64).map(|i| format!("k{i}")).collect();
        for key in &keys {
            assert_eq!(put(&s, &format!("/kv/{key}"), &value_of(key)), 201);
        }
        let shards = s.wait_status("the status", |_| true)["shards"].as_array().map_or(0, |a| a.len());
        assert!(shards > 1, "the default has several shards");
        let victim = shard_of(keys[0].as_bytes(), shards as u64);
        let crash = http_kv_support::agent().post(&s.url(&format!("/_crash/{victim}"))).send_empty();
        assert_eq!(crash.map(|r| r.status().as_u16()).unwrap_or(0), 200);
        let status = s.wait_status("the shard restarted", |st| {
            let shard = &st["shards"][victim as usize];
            shard["restarts"] == 1 && shard["state"] == "running"
        });
        let tree = &status["supervision"];
        assert_eq!(tree["children"][0]["id"], "shards", "{tree}");
        for key in &keys {
            assert_eq!(get(&s, &format!("/kv/{key}")), (200, value_of(key)), "{key} after the crash");
        }
        assert_eq!(put(&s, "/kv/after-crash", b"x"), 201);
    }

    fn sigterm_then_restart_has_every_key(backend) {
        let mut s = Server::start(backend, &[]);
        let keys: Vec<String> = (0..300).map(|i| format!("key/{i}")).collect();
        for key in &keys {
            assert_eq!(put(&s, &format!("/kv/{key}"), &value_of(key)), 201);
        }
        assert_eq!(http_kv_support::delete(&s, "/kv/key/7"), 204);
        let status = s.signal_and_wait(libc::SIGTERM);
        assert!(status.success(), "exit 0 on SIGTERM: {status:?}");
        let s = Server::start_in(backend, &[], None, s.into_dir());
        for key in &keys {
            let expected = if key == "key/7" { (404, b"".to_vec()) } else { (200, value_of(key)) };
            let got = get(&s, &format!("/kv/{key}"));
            assert_eq!(got.0, expected.0, "{key}");
            if expected.0 == 200 {
                assert_eq!(got.1, expected.1, "{key}");
            }
        }
        // Overwrites still say "replaced" after the restart.
        assert_eq!(put(&s, "/kv/key/1", b"new"), 200);
    }

    fn sigkill_under_write_load_loses_no_acknowledged_write(backend) {
        let mut dir = tempfile::tempdir().unwrap();
        let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
        // Seeded kill moments (ms after the writers start), varied per round.
        for (round, kill_after_ms) in [70u64, 160, 110, 230].into_iter().enumerate() {
            let mut s = Server::start_in(backend, &[], None, dir);
            let stop = Arc::new(AtomicBool::new(false));
            let writers: Vec<_> = (0..4)
                .map(|w| {
                    let (url, stop, acked) = (s.url("/kv/"), stop.clone(), acknowledged.clone());
                    std::thread::spawn(move || {
                        let agent = http_kv_support::agent();
                        for i in 0.. {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            let key = format!("r{round}-w{w}-{i}");
                            match agent.put(&format!("{url}{key}")).send(&value_of(&key)[..]) {
                                Ok(r) if r.status().as_u16() == 201 => acked.lock().unwrap().push(key),
                                _ => break, // the server is gone: this write was never acknowledged
                            }
                        }
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(kill_after_ms));
            let status = s.signal_and_wait(libc::SIGKILL);
            assert!(!status.success());
            stop.store(true, Ordering::Relaxed);
            for writer in writers {
                writer.join().unwrap();
            }
            dir = s.into_dir();
            let s = Server::start_in(backend, &[], None, dir);
            let acked = acknowledged.lock().unwrap().clone();
            assert!(!acked.is_empty(), "round {round}: some writes were acknowledged");
            for key in &acked {
                assert_eq!(get(&s, &format!("/kv/{key}")), (200, value_of(key)), "round {round}: {key} was acknowledged");
            }
            dir = s.into_dir();
        }
    }
}

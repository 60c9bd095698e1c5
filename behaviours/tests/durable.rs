//! Durable gen_servers: recovery after crashes and restarts, snapshots,
//! replies held until durable.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use common::{new_loop, run_until};
use ringvisor_behaviours::durable::{self, Decision, Durable, DurableOptions, DurableServer};
use ringvisor_behaviours::gen_server::{self, ServerRef, StartOptions};
use ringvisor_behaviours::persist::{DecodeError, Durability, Options, SharedLog};
use ringvisor_behaviours::supervisor::{self, ChildSpec, Flags, Strategy};
use ringvisor_behaviours::{whereis, CallError, ExitReason};
use ringvisor_runtime::{backend_tests, Loop};

/// The seeds' counter, durable: Reset on 0 is still the deliberate bug.
struct Counter(u64);

#[derive(Debug, Clone, Copy)]
enum Cmd {
    Increment,
    Read,
    Reset,
}

impl DurableServer for Counter {
    type Args = ();
    type Call = Cmd;
    type Reply = u64;
    type Entry = Option<u64>; // Some(1): increment, None: reset
    fn initial(_: &()) -> Self {
        Counter(0)
    }
    fn handle_call(&self, cmd: Cmd) -> Decision<Self> {
        match cmd {
            Cmd::Increment => Decision::Record(Some(1)),
            Cmd::Read => Decision::Reply(self.0),
            Cmd::Reset => {
                assert!(self.0 != 0, "reset of a counter that is already 0");
                Decision::Record(None)
            }
        }
    }
    fn apply(&mut self, entry: Option<u64>) -> u64 {
        match entry {
            Some(n) => self.0 += n,
            None => self.0 = 0,
        }
        self.0
    }
    fn encode_entry(entry: &Option<u64>, out: &mut Vec<u8>) {
        out.push(u8::from(entry.is_some()));
    }
    fn decode_entry(bytes: &[u8]) -> Result<Option<u64>, DecodeError> {
        match bytes {
            [1] => Ok(Some(1)),
            [0] => Ok(None),
            _ => Err(DecodeError::new("bad counter entry")),
        }
    }
    fn encode_state(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_le_bytes());
    }
    fn decode_state(_: &(), bytes: &[u8]) -> Result<Self, DecodeError> {
        bytes
            .try_into()
            .map(|b| Counter(u64::from_le_bytes(b)))
            .map_err(|_| DecodeError::new("bad state"))
    }
}

type Results = Rc<RefCell<Vec<Result<u64, CallError>>>>;

fn call(lp: &mut Loop, server: ServerRef<Durable<Counter>>, cmd: Cmd, results: &Results) {
    let r = results.clone();
    gen_server::call(lp, server, cmd, Duration::from_secs(5), move |_, reply| {
        r.borrow_mut().push(reply)
    });
}

fn options(dir: &std::path::Path) -> DurableOptions {
    DurableOptions::new(dir)
}

backend_tests! {
    // A crash (the deliberate bug) restarts the server from its durable state.
    fn supervised_crash_recovers_durable_state(backend) {
        let dir = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let path = dir.path().to_path_buf();
        let spec = ChildSpec::from_fn("counter", move |lp, parent| {
            let start = StartOptions { parent: Some(parent), ..StartOptions::named("counter") };
            durable::start::<Counter>(lp, (), options(&path), start).map(|s| s.pid())
        });
        let flags = Flags::new(Strategy::OneForOne).intensity(5, Duration::from_secs(10));
        supervisor::start(&mut lp, "sup", flags, vec![spec], StartOptions::default()).unwrap();
        let results = Results::default();
        let first = ServerRef::from_pid(whereis(&lp, "counter").unwrap());
        for cmd in [Cmd::Increment, Cmd::Increment, Cmd::Increment, Cmd::Reset, Cmd::Reset] {
            call(&mut lp, first, cmd, &results);
        }
        run_until(&mut lp, |_| results.borrow().len() == 5);
        {
            let r = results.borrow();
            assert_eq!(r[..4], [Ok(1), Ok(2), Ok(3), Ok(0)]);
            assert!(matches!(r[4], Err(CallError::Exit(ExitReason::Panic(_)))), "{:?}", r[4]);
        }
        run_until(&mut lp, |lp| whereis(lp, "counter").is_some_and(|p| p != first.pid()));
        let second = ServerRef::from_pid(whereis(&lp, "counter").unwrap());
        call(&mut lp, second, Cmd::Increment, &results);
        call(&mut lp, second, Cmd::Read, &results);
        run_until(&mut lp, |_| results.borrow().len() == 7);
        assert_eq!(results.borrow()[5..], [Ok(1), Ok(1)], "recovered 0 (after the reset), then +1");
    }

    // Snapshots every N entries; a new process recovers snapshot + log.
    fn snapshot_and_replay_across_restarts(backend) {
        let dir = tempfile::tempdir().unwrap();
        for round in 1..=3u64 {
            let mut lp = new_loop(backend);
            let opts = DurableOptions { snapshot_every_entries: 7, ..options(dir.path()) };
            let server = durable::start::<Counter>(&mut lp, (), opts, StartOptions::default()).unwrap();
            let results = Results::default();
            for _ in 0..25 {
                call(&mut lp, server, Cmd::Increment, &results);
            }
            call(&mut lp, server, Cmd::Read, &results);
            run_until(&mut lp, |_| results.borrow().len() == 26);
            assert_eq!(results.borrow()[25], Ok(25 * round), "round {round}");
            gen_server::stop(&mut lp, server, ExitReason::Shutdown);
            lp.run().unwrap();
        }
        assert!(dir.path().join(ringvisor_behaviours::persist::SNAPSHOT_FILE).exists());
    }

    // A read in the same tick as a write is answered after the write, never before.
    fn read_waits_behind_an_unsynced_write(backend) {
        let dir = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let server = durable::start::<Counter>(&mut lp, (), options(dir.path()), StartOptions::default()).unwrap();
        let results = Results::default();
        call(&mut lp, server, Cmd::Increment, &results);
        call(&mut lp, server, Cmd::Read, &results);
        call(&mut lp, server, Cmd::Increment, &results);
        run_until(&mut lp, |_| results.borrow().len() == 3);
        assert_eq!(*results.borrow(), [Ok(1), Ok(1), Ok(2)]);
    }

    // Durability::Never keeps state in memory and snapshots it on a clean stop.
    fn memory_only_snapshots_on_clean_shutdown(backend) {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        opts.store.durability = Durability::Never;
        for expected in [3u64, 6] {
            let mut lp = new_loop(backend);
            let server = durable::start::<Counter>(&mut lp, (), opts.clone(), StartOptions::default()).unwrap();
            let results = Results::default();
            for _ in 0..3 {
                call(&mut lp, server, Cmd::Increment, &results);
            }
            run_until(&mut lp, |_| results.borrow().len() == 3);
            assert_eq!(results.borrow()[2], Ok(expected));
            gen_server::stop(&mut lp, server, ExitReason::Shutdown);
            lp.run().unwrap();
        }
    }

    // A second server on a locked directory fails to start its recovery.
    fn locked_directory_refuses_a_second_server(backend) {
        let dir = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let first = durable::start::<Counter>(&mut lp, (), options(dir.path()), StartOptions::default()).unwrap();
        let results = Results::default();
        call(&mut lp, first, Cmd::Increment, &results);
        run_until(&mut lp, |_| results.borrow().len() == 1);
        let second = durable::start::<Counter>(&mut lp, (), options(dir.path()), StartOptions::default()).unwrap();
        call(&mut lp, second, Cmd::Read, &results);
        run_until(&mut lp, |_| results.borrow().len() == 2);
        let second_reply = results.borrow()[1].clone();
        match second_reply {
            Err(CallError::Exit(ExitReason::Error(m))) => assert!(m.contains("recovery failed"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    // Two servers on one shared log: one crashes with its entries in
    // flight; it recovers them, and the other is untouched.
    fn servers_on_a_shared_log_recover_their_own_state_after_a_crash(backend) {
        let dir = tempfile::tempdir().unwrap();
        let mut lp = new_loop(backend);
        let log = SharedLog::open_blocking(&mut lp, &dir.path().join("log"), Options::default()).unwrap();
        let specs: Vec<ChildSpec> = (0..2u32)
            .map(|i| {
                let name = format!("counter-{i}");
                let opts = DurableOptions::shared(dir.path().join(&name), &log, i);
                ChildSpec::from_fn(name.clone(), move |lp, parent| {
                    let start = StartOptions { parent: Some(parent), ..StartOptions::named(&name) };
                    durable::start::<Counter>(lp, (), opts.clone(), start).map(|s| s.pid())
                })
            })
            .collect();
        let flags = Flags::new(Strategy::OneForOne).intensity(5, Duration::from_secs(10));
        supervisor::start(&mut lp, "sup", flags, specs, StartOptions::default()).unwrap();
        let results = Results::default();
        let first = ServerRef::from_pid(whereis(&lp, "counter-0").unwrap());
        let other = ServerRef::from_pid(whereis(&lp, "counter-1").unwrap());
        for _ in 0..4 {
            call(&mut lp, other, Cmd::Increment, &results);
        }
        for cmd in [Cmd::Increment, Cmd::Increment, Cmd::Reset, Cmd::Increment, Cmd::Reset, Cmd::Reset] {
            call(&mut lp, first, cmd, &results);
        }
        run_until(&mut lp, |_| results.borrow().len() == 10);
        assert!(matches!(results.borrow()[9], Err(CallError::Exit(ExitReason::Panic(_)))), "{:?}", results.borrow()[9]);
        run_until(&mut lp, |lp| whereis(lp, "counter-0").is_some_and(|p| p != first.pid()));
        let second = ServerRef::from_pid(whereis(&lp, "counter-0").unwrap());
        call(&mut lp, second, Cmd::Read, &results);
        call(&mut lp, other, Cmd::Read, &results);
        run_until(&mut lp, |_| results.borrow().len() == 12);
        assert_eq!(results.borrow()[10..], [Ok(0), Ok(4)], "each recovered its own entries");
        assert_eq!(log.stats().entries_written, 9, "one log for both servers");
    }
}

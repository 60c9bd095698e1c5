//! The seeds' counter: `Increment`, `Read`, `Reset`, where `Reset` on 0 panics
//! (the deliberate bug). Two counters run under a `OneForOne` supervisor.
//! Each is a durable gen_server ([`ringvisor::behaviours::durable`]): its
//! changes are logged in its own data directory (`DIR/counter1`,
//! `DIR/counter2`) and replayed on start, so a value survives the crash, the
//! supervisor's restart and a restart of the whole process.
//!
//! ```text
//! cargo run --example counter                         # the crash-and-restart demo
//! cargo run --example counter -- --serve 127.0.0.1:7100   # then: nc 127.0.0.1 7100
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use clap::Parser;
use ringvisor::behaviours::codec::LineCodec;
use ringvisor::behaviours::durable::{self, Decision, Durable, DurableOptions, DurableServer};
use ringvisor::behaviours::gen_server::{self, ServerRef, StartOptions};
use ringvisor::behaviours::listener::{self, ListenerOptions};
use ringvisor::behaviours::persist::DecodeError;
use ringvisor::behaviours::step::StateMachine;

mod machine;
use machine::{Counter, Input, Output};
use ringvisor::behaviours::supervisor::{self, ChildSpec, Flags, Strategy};
use ringvisor::behaviours::{whereis, CallError, ExitReason};
use ringvisor::{ListenOptions, Loop};

#[derive(Parser)]
#[command(about = "The supervised counter from the seeds")]
struct Args {
    /// Where the counters keep their logs (one subdirectory per counter).
    #[arg(long, default_value = "./counter-data")]
    dir: PathBuf,
    /// Serve counter1 over TCP (lines: increment, read, reset) instead of the demo.
    #[arg(long)]
    serve: Option<SocketAddr>,
}

/// A change of a counter, as logged: an event already validated by
/// `handle_call`, so replaying it never runs into the `Reset`-on-0 bug.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Change {
    Increment,
    Reset,
}

impl Change {
    /// The machine input that makes this change.
    fn input(self) -> Input {
        match self {
            Change::Increment => Input::Increment,
            Change::Reset => Input::Reset,
        }
    }
}

/// The counter as a durable server: the machine's state plus its name.
struct DurableCounter {
    name: String,
    value: u64,
}

impl DurableServer for DurableCounter {
    type Args = String;
    type Call = Input;
    type Reply = Output;
    type Entry = Change;

    fn initial(name: &String) -> Self {
        DurableCounter {
            name: name.clone(),
            value: 0,
        }
    }

    fn handle_call(&self, input: Input) -> Decision<Self> {
        // A dry run of the machine on a copy decides; it panics on Reset of 0
        // (the deliberate bug), here, before anything is logged.
        let mut next = self.value;
        let output = Counter::step(input, &mut next);
        match input {
            Input::Read => Decision::Reply(output),
            Input::Increment => Decision::Record(Change::Increment),
            Input::Reset => Decision::Record(Change::Reset),
        }
    }

    fn apply(&mut self, change: Change) -> Output {
        debug_assert!(change != Change::Reset || self.value != 0, "validated");
        Counter::step(change.input(), &mut self.value)
    }

    fn encode_entry(change: &Change, out: &mut Vec<u8>) {
        out.push(match change {
            Change::Increment => 1,
            Change::Reset => 0,
        });
    }

    fn decode_entry(bytes: &[u8]) -> Result<Change, DecodeError> {
        match bytes {
            [1] => Ok(Change::Increment),
            [0] => Ok(Change::Reset),
            _ => Err(DecodeError::new("bad counter entry")),
        }
    }

    fn encode_state(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.value.to_le_bytes());
    }

    fn decode_state(name: &String, bytes: &[u8]) -> Result<Self, DecodeError> {
        let value = bytes
            .try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| DecodeError::new("bad counter snapshot"))?;
        Ok(DurableCounter {
            name: name.clone(),
            value,
        })
    }

    fn recovered(&mut self) {
        println!("{} starting with {}", self.name, self.value);
    }
}

type CounterRef = ServerRef<Durable<DurableCounter>>;

/// A supervised counter registered as `name`, logging to `dir/name`.
fn counter_spec(name: &'static str, dir: &Path) -> ChildSpec {
    let options = DurableOptions::new(dir.join(name));
    ChildSpec::from_fn(name, move |lp, parent| {
        let start = StartOptions {
            name: Some(name.to_string()),
            parent: Some(parent),
            ..StartOptions::default()
        };
        durable::start::<DurableCounter>(lp, name.to_string(), options.clone(), start)
            .map(|s| s.pid())
    })
}

type Step = (&'static str, Input);

/// Runs the demo's calls one after another.
fn run_demo(lp: &mut Loop, mut steps: VecDeque<Step>) {
    let Some((name, input)) = steps.pop_front() else {
        lp.stop();
        return;
    };
    let Some(pid) = whereis(lp, name) else {
        println!("{name} is not running");
        lp.stop();
        return;
    };
    gen_server::call(
        lp,
        CounterRef::from_pid(pid),
        input,
        Duration::from_secs(1),
        move |lp, r| {
            match r {
                Ok(output) => println!("{name} {input:?} -> {output:?}"),
                Err(CallError::Exit(reason)) => println!("{name} {input:?} -> crashed: {reason}"),
                Err(e) => println!("{name} {input:?} -> {e}"),
            }
            // Give a crashed counter time to be restarted.
            lp.timer(Duration::from_millis(20), move |lp| run_demo(lp, steps));
        },
    );
}

fn parse_line(line: &str) -> Result<Input, String> {
    match line.to_ascii_lowercase().as_str() {
        "increment" => Ok(Input::Increment),
        "read" => Ok(Input::Read),
        "reset" => Ok(Input::Reset),
        other => Err(format!(
            "unknown command {other:?} (increment, read, reset)"
        )),
    }
}

fn format_output(output: &Output) -> String {
    match output {
        Output::Ack => "ok".to_string(),
        Output::Value(n) => n.to_string(),
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)?;
    let mut lp = Loop::new()?;
    let children = vec![
        counter_spec("counter1", &args.dir),
        counter_spec("counter2", &args.dir),
    ];
    let flags = Flags::new(Strategy::OneForOne).intensity(10, Duration::from_secs(5));
    let sup = supervisor::start(
        &mut lp,
        "counters",
        flags,
        children,
        StartOptions::default(),
    )
    .map_err(std::io::Error::other)?;
    if let Some(addr) = args.serve {
        let fd = lp.listen_tcp(addr, ListenOptions::default())?;
        println!(
            "listening on {} (backend: {})",
            ringvisor::local_addr(fd)?,
            lp.backend()
        );
        let resolve = Rc::new(|lp: &mut Loop| whereis(lp, "counter1").map(CounterRef::from_pid));
        listener::serve(
            &mut lp,
            fd,
            resolve,
            || LineCodec::new(parse_line, format_output),
            ListenerOptions::default(),
        );
        lp.run()?;
        return Ok(());
    }
    use Input::*;
    let demo: VecDeque<Step> = VecDeque::from(vec![
        ("counter1", Increment),
        ("counter1", Increment),
        ("counter1", Read),
        ("counter2", Increment),
        ("counter1", Reset),
        ("counter1", Reset),
        ("counter1", Read),
        ("counter2", Read),
    ]);
    run_demo(&mut lp, demo);
    lp.run()?;
    // Shut the tree down: each counter flushes its log and snapshots its value.
    gen_server::stop(&mut lp, sup, ExitReason::Shutdown);
    lp.run()?;
    println!("counters stopped");
    Ok(())
}

//! The seeds' counter: `Increment`, `Read`, `Reset`, where `Reset` on 0 panics
//! (the deliberate bug). Two counters run under a `OneForOne` supervisor.
//! `init` loads a saved value from the data directory and `terminate` saves
//! it, both through the loop's file ops.
//!
//! ```text
//! cargo run --example counter                         # the crash-and-restart demo
//! cargo run --example counter -- --serve 127.0.0.1:7100   # then: nc 127.0.0.1 7100
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use clap::Parser;
use ringvisor::behaviours::codec::LineCodec;
use ringvisor::behaviours::gen_server::{
    self, Ctx, GenServer, Init, Reply, ServerRef, StartOptions,
};
use ringvisor::behaviours::listener::{self, ListenerOptions};
use ringvisor::behaviours::step::StateMachine;

mod machine;
use machine::{Counter, Input, Output};
use ringvisor::behaviours::supervisor::{self, ChildSpec, Flags, Strategy};
use ringvisor::behaviours::{whereis, CallError, ExitReason, From};
use ringvisor::{ListenOptions, Loop};

#[derive(Parser)]
#[command(about = "The supervised counter from the seeds")]
struct Args {
    /// Where the counters save their values.
    #[arg(long, default_value = "./counter-data")]
    dir: PathBuf,
    /// Serve counter1 over TCP (lines: increment, read, reset) instead of the demo.
    #[arg(long)]
    serve: Option<SocketAddr>,
}

/// The counter served as a gen_server with its value saved on disk.
struct SavedCounter {
    name: String,
    path: PathBuf,
    value: u64,
    /// Calls that arrived before the saved value was loaded.
    waiting: Option<Vec<(Input, From<Output>)>>,
}

impl GenServer for SavedCounter {
    type Args = (String, PathBuf);
    type Call = Input;
    type Reply = Output;
    type Cast = ();
    type Info = ();
    type Continue = ();

    fn init((name, dir): (String, PathBuf), ctx: &mut Ctx<Self>) -> Init<Self> {
        let path = dir.join(format!("{name}.txt"));
        let load = path.clone();
        // Load asynchronously; calls wait (deferred replies) until it is done.
        ctx.io(
            move |lp, done| {
                lp.open(&load, libc::O_RDONLY, 0, move |lp, fd| match fd {
                    Err(_) => done.complete(lp, None),
                    Ok(fd) => {
                        lp.read_at(fd, Vec::with_capacity(32), 0, move |lp, _, buf| {
                            lp.close(fd, |_, _| {});
                            done.complete(lp, Some(buf));
                        });
                    }
                })
            },
            |me: &mut SavedCounter, ctx, saved: Option<Vec<u8>>| {
                let text = saved.map(|b| String::from_utf8_lossy(&b).trim().to_string());
                me.value = text.and_then(|t| t.parse().ok()).unwrap_or(0);
                println!("{} starting with {}", me.name, me.value);
                for (input, from) in me.waiting.take().unwrap_or_default() {
                    let output = Counter::step(input, &mut me.value);
                    ctx.reply(from, output);
                }
            },
        );
        Init::ok(SavedCounter {
            name,
            path,
            value: 0,
            waiting: Some(Vec::new()),
        })
    }

    fn handle_call(
        &mut self,
        input: Input,
        from: From<Output>,
        _ctx: &mut Ctx<Self>,
    ) -> Reply<Self> {
        if let Some(waiting) = &mut self.waiting {
            waiting.push((input, from));
            return Reply::later();
        }
        Reply::now(Counter::step(input, &mut self.value))
    }

    fn terminate(&mut self, reason: &ExitReason, ctx: &mut Ctx<Self>) {
        println!(
            "{} terminating ({reason}), saving {}",
            self.name, self.value
        );
        let (path, bytes) = (self.path.clone(), self.value.to_string().into_bytes());
        // Write, fdatasync, close: the process lingers until this is done
        // (or its shutdown timeout passes).
        ctx.io(
            move |lp, done| {
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
                lp.open(&path, flags, 0o644, move |lp, fd| match fd {
                    Err(e) => done.complete(lp, Err(e.to_string())),
                    Ok(fd) => {
                        lp.write_at(fd, bytes, 0, move |lp, written, _| {
                            lp.fdatasync(fd, move |lp, synced| {
                                lp.close(fd, |_, _| {});
                                let ok = written.is_ok() && synced.is_ok();
                                done.complete(
                                    lp,
                                    if ok {
                                        Ok(())
                                    } else {
                                        Err("write failed".into())
                                    },
                                );
                            });
                        });
                    }
                })
            },
            |me: &mut SavedCounter, _ctx, saved: Result<(), String>| match saved {
                Ok(()) => println!("{} saved", me.name),
                Err(e) => println!("{} could not save: {e}", me.name),
            },
        );
    }
}

fn counter_spec(name: &'static str, dir: PathBuf) -> ChildSpec {
    ChildSpec::named_worker::<SavedCounter>(name, move || (name.to_string(), dir.clone()))
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
        ServerRef::<SavedCounter>::from_pid(pid),
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
        counter_spec("counter1", args.dir.clone()),
        counter_spec("counter2", args.dir.clone()),
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
        let resolve = Rc::new(|lp: &mut Loop| {
            whereis(lp, "counter1").map(ServerRef::<SavedCounter>::from_pid)
        });
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
    // Shut the tree down: each counter saves its value on the way out.
    gen_server::stop(&mut lp, sup, ExitReason::Shutdown);
    lp.run()?;
    Ok(())
}

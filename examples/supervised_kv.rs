//! The seeds' supervised key-value tree: `OneForOne [kv1, RestForOne [kv2, kv3]]`.
//!
//! ```text
//! cargo run --example supervised_kv
//! ```
//! Stores `x = 1` in kv2, looks it up, crashes kv2 with `Lookup "crash"` (the
//! deliberate bug), and shows that kv2 and kv3 restart (losing their
//! in-memory state) while kv1 does not.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use ringvisor::behaviours::gen_server::{
    self, Ctx, GenServer, Init, Reply, ServerRef, StartOptions,
};
use ringvisor::behaviours::supervisor::{self, ChildSpec, Flags, Strategy};
use ringvisor::behaviours::{whereis, CallError, ExitReason, From};
use ringvisor::Loop;

#[derive(Debug, Clone)]
enum Request {
    Store(String, i64),
    Lookup(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Response {
    Ack,
    Result(Option<i64>),
}

struct KvStore {
    name: String,
    map: HashMap<String, i64>,
}

impl GenServer for KvStore {
    type Args = String;
    type Call = Request;
    type Reply = Response;
    type Cast = ();
    type Info = ();
    type Continue = ();

    fn init(name: String, _ctx: &mut Ctx<Self>) -> Init<Self> {
        println!("KV store starting: {name}");
        Init::ok(KvStore {
            name,
            map: HashMap::new(),
        })
    }

    fn handle_call(
        &mut self,
        request: Request,
        _from: From<Response>,
        _ctx: &mut Ctx<Self>,
    ) -> Reply<Self> {
        match request {
            Request::Store(key, value) => {
                self.map.insert(key, value);
                Reply::now(Response::Ack)
            }
            // The deliberate bug from the seeds: a division by zero.
            Request::Lookup(key) if key == "crash" => {
                let zero = self.map.len() as i64 - self.map.len() as i64;
                Reply::now(Response::Result(Some(1 / zero)))
            }
            Request::Lookup(key) => Reply::now(Response::Result(self.map.get(&key).copied())),
        }
    }

    fn terminate(&mut self, reason: &ExitReason, _ctx: &mut Ctx<Self>) {
        if let ExitReason::Panic(message) = reason {
            println!("{} threw: {message}", self.name);
        }
        println!("KV store terminating: {}", self.name);
    }
}

fn kv(name: &'static str) -> ChildSpec {
    ChildSpec::named_worker::<KvStore>(name, move || name.to_string())
}

/// Calls the store registered as `name` and runs `next` with the reply.
fn call(
    lp: &mut Loop,
    name: &str,
    request: Request,
    next: impl FnOnce(&mut Loop, Result<Response, CallError>) + 'static,
) {
    println!("Calling {name}: {request:?}");
    let Some(pid) = whereis(lp, name) else {
        next(lp, Err(CallError::NoProc));
        return;
    };
    gen_server::call(
        lp,
        ServerRef::<KvStore>::from_pid(pid),
        request,
        Duration::from_secs(1),
        next,
    );
}

type Step = Box<dyn FnOnce(&mut Loop, Box<dyn FnOnce(&mut Loop)>)>;

/// Runs steps one after another, each when the previous one's reply came.
fn run_script(lp: &mut Loop, mut steps: VecDeque<Step>) {
    if let Some(step) = steps.pop_front() {
        step(lp, Box::new(move |lp| run_script(lp, steps)));
    } else {
        lp.stop();
    }
}

fn step(name: &'static str, request: Request) -> Step {
    Box::new(move |lp, next| {
        call(lp, name, request, move |lp, reply| {
            match reply {
                Ok(response) => println!("Right {response:?}"),
                Err(e) => println!("Left {e}"),
            }
            // Let the supervisor finish restarting before the next call.
            lp.timer(Duration::from_millis(10), next);
        })
    })
}

fn main() -> std::io::Result<()> {
    let mut lp = Loop::new()?;
    let tree = vec![
        kv("kv1"),
        ChildSpec::supervisor("kv-rest", Flags::new(Strategy::RestForOne), || {
            vec![kv("kv2"), kv("kv3")]
        }),
    ];
    let flags = Flags::new(Strategy::OneForOne);
    supervisor::start(&mut lp, "kv-root", flags, tree, StartOptions::default())
        .map_err(std::io::Error::other)?;
    let script: VecDeque<Step> = VecDeque::from(vec![
        step("kv2", Request::Store("x".into(), 1)),
        step("kv2", Request::Lookup("x".into())),
        step("kv2", Request::Lookup("crash".into())),
        step("kv2", Request::Lookup("x".into())),
        step("kv2", Request::Lookup("y".into())),
    ]);
    run_script(&mut lp, script);
    lp.run()?;
    Ok(())
}

//! A test worker whose behaviour is steered by a shared config, and a watcher.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use ringvisor_behaviours::gen_server::{self, Ctx, GenServer, Init, Next, Reply, ServerRef};
use ringvisor_behaviours::supervisor::ChildSpec;
use ringvisor_behaviours::{ExitReason, From, Info, Pid};
use ringvisor_runtime::{Backend, Loop};

pub type Log = Rc<RefCell<Vec<String>>>;

/// What a worker does in init and terminate.
#[derive(Clone, Default)]
pub struct Config {
    pub fail_init: bool,
    /// In terminate, start a nop op and log "flushed ID" when it completes.
    pub flush_on_terminate: bool,
    /// In terminate, start a recv that never completes (lingers until killed).
    pub hang_on_terminate: bool,
}

#[derive(Clone, Default)]
pub struct World {
    pub log: Log,
    pub config: Rc<RefCell<HashMap<String, Config>>>,
    /// Sockets kept open so hanging recvs stay pending.
    pub hang_sockets: Rc<RefCell<Vec<UnixStream>>>,
}

impl World {
    pub fn set(&self, id: &str, config: Config) {
        self.config.borrow_mut().insert(id.to_string(), config);
    }
    pub fn entries(&self) -> Vec<String> {
        self.log.borrow().clone()
    }
    pub fn clear(&self) {
        self.log.borrow_mut().clear();
    }
    pub fn spec(&self, id: &str) -> ChildSpec {
        let world = self.clone();
        let id_owned = id.to_string();
        ChildSpec::worker::<Worker>(id, move || (id_owned.clone(), world.clone()))
    }
}

pub struct Worker {
    id: String,
    world: World,
}

pub enum Cmd {
    Ping,
    Crash,
    Exit(ExitReason),
}

impl GenServer for Worker {
    type Args = (String, World);
    type Call = Cmd;
    type Reply = String;
    type Cast = ();
    type Info = ();
    type Continue = ();

    fn init((id, world): (String, World), _ctx: &mut Ctx<Self>) -> Init<Self> {
        let config = world.config.borrow().get(&id).cloned().unwrap_or_default();
        if config.fail_init {
            world.log.borrow_mut().push(format!("init-failed {id}"));
            return Init::Stop(ExitReason::error("init failed"));
        }
        world.log.borrow_mut().push(format!("start {id}"));
        Init::ok(Worker { id, world })
    }

    fn handle_call(&mut self, cmd: Cmd, _from: From<String>, _ctx: &mut Ctx<Self>) -> Reply<Self> {
        match cmd {
            Cmd::Ping => Reply::now(self.id.clone()),
            Cmd::Crash => panic!("{} crashed on purpose", self.id),
            Cmd::Exit(reason) => Reply::Stop(reason, Some(self.id.clone())),
        }
    }

    fn terminate(&mut self, reason: &ExitReason, ctx: &mut Ctx<Self>) {
        self.world
            .log
            .borrow_mut()
            .push(format!("terminate {} {reason}", self.id));
        let config = self
            .world
            .config
            .borrow()
            .get(&self.id)
            .cloned()
            .unwrap_or_default();
        if config.flush_on_terminate {
            ctx.io(
                |lp, done| lp.nop(move |lp, res| done.complete(lp, res.is_ok())),
                |me: &mut Worker, _ctx, ok| {
                    me.world
                        .log
                        .borrow_mut()
                        .push(format!("flushed {} {ok}", me.id))
                },
            );
        }
        if config.hang_on_terminate {
            let (a, b) = UnixStream::pair().expect("socketpair");
            let fd: RawFd = a.as_raw_fd();
            self.world.hang_sockets.borrow_mut().push(a);
            self.world.hang_sockets.borrow_mut().push(b);
            ctx.io(
                move |lp, done| {
                    lp.recv(fd, Vec::with_capacity(8), move |lp, res, _| {
                        done.complete(lp, res.is_ok())
                    })
                },
                |me: &mut Worker, _ctx, _| {
                    me.world
                        .log
                        .borrow_mut()
                        .push(format!("hang-done {}", me.id))
                },
            );
        }
    }
}

/// Records `Down` infos of the processes it monitors.
pub struct Watcher {
    pub log: Log,
}

impl GenServer for Watcher {
    type Args = (Log, Vec<Pid>);
    type Call = ();
    type Reply = ();
    type Cast = ();
    type Info = ();
    type Continue = ();

    fn init((log, pids): (Log, Vec<Pid>), ctx: &mut Ctx<Self>) -> Init<Self> {
        for pid in pids {
            ctx.monitor(pid);
        }
        Init::ok(Watcher { log })
    }

    fn handle_call(&mut self, _: (), _: From<()>, _: &mut Ctx<Self>) -> Reply<Self> {
        Reply::now(())
    }

    fn handle_info(&mut self, info: Info<()>, _ctx: &mut Ctx<Self>) -> Next<Self> {
        if let Info::Down { reason, .. } = info {
            self.log.borrow_mut().push(format!("down {reason}"));
        }
        Next::Wait
    }
}

pub fn new_loop(backend: Backend) -> Loop {
    Loop::builder().backend(backend).build().expect("loop")
}

/// Runs the loop until `done` holds, failing the test after 5 s of loop time.
pub fn run_until(lp: &mut Loop, mut done: impl FnMut(&mut Loop) -> bool) {
    let start = std::time::Instant::now();
    while !done(lp) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "condition not reached in 5 s"
        );
        lp.run_for(Duration::from_millis(5)).expect("loop runs");
        if lp.stats().ops_in_flight == 0 && lp.timers_pending() == 0 {
            // Nothing can change any more without new input.
            assert!(done(lp), "loop went idle before the condition held");
            return;
        }
    }
}

/// Sends a call and drives the loop until it is answered.
pub fn call_now<S: GenServer>(
    lp: &mut Loop,
    server: ServerRef<S>,
    request: S::Call,
) -> Result<S::Reply, ringvisor_behaviours::CallError>
where
    S::Reply: Clone,
{
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    gen_server::call(lp, server, request, Duration::from_secs(5), move |_, r| {
        *o.borrow_mut() = Some(r)
    });
    let o = out.clone();
    run_until(lp, move |_| o.borrow().is_some());
    let result = out.borrow_mut().take().expect("answered");
    result
}

//! `supervisor`: starts children in order, restarts them by strategy within
//! a restart intensity, stops them in reverse order, and escalates to its own
//! parent when restarts come too fast.
//!
//! A supervisor is itself a gen_server: children's exits reach it as
//! [`Info::Exit`], and the OTP API (`which_children`, `start_child`, ...) is
//! calls. Restarts run as a queue of steps so a child that lingers after
//! `terminate` (flushing state, say) is awaited before its successor starts.
//!
//! ```
//! use ringvisor_behaviours::supervisor::{self, ChildSpec, Flags, Strategy};
//! # use ringvisor_behaviours::gen_server::{Ctx, GenServer, Init, Reply};
//! # use ringvisor_behaviours::From;
//! # struct Worker;
//! # impl GenServer for Worker {
//! #     type Args = (); type Call = (); type Reply = (); type Cast = (); type Info = (); type Continue = ();
//! #     fn init(_: (), _: &mut Ctx<Self>) -> Init<Self> { Init::ok(Worker) }
//! #     fn handle_call(&mut self, _: (), _: From<()>, _: &mut Ctx<Self>) -> Reply<Self> { Reply::now(()) }
//! # }
//! let mut lp = ringvisor_runtime::Loop::new().unwrap();
//! let children = vec![ChildSpec::worker::<Worker>("a", || ()), ChildSpec::worker::<Worker>("b", || ())];
//! let sup = supervisor::start(&mut lp, "top", Flags::new(Strategy::OneForOne), children, Default::default()).unwrap();
//! supervisor::which_children(&mut lp, sup, |lp, children| {
//!     assert_eq!(children.unwrap().len(), 2);
//!     lp.stop();
//! });
//! lp.run().unwrap();
//! ```

mod api;
mod spec;

pub use api::{
    count_children, delete_child, restart_child, start_child, terminate_child, which_children,
};

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ringvisor_runtime::Loop;

pub use spec::{
    ChildCounts, ChildInfo, ChildKind, ChildSpec, ChildState, Flags, Restart, Shutdown, StartFn,
    Strategy, SupervisorError, WORKER_SHUTDOWN_DEFAULT,
};

use crate::call::From;
use crate::gen_server::{
    self, Ctx, GenServer, Info, Init, Next, Reply, ServerRef, StartError, StartOptions,
};
use crate::pid::{ExitReason, Pid};
use crate::process::{self, Kill};

/// Timeout of the supervisor API calls made through this module's functions.
pub const SUPERVISOR_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What a supervisor starts from.
pub struct SupervisorArgs {
    /// Name used in reports.
    pub name: String,
    /// Strategy and intensity.
    pub flags: Flags,
    /// Children, in start order (for `SimpleOneForOne`: one template).
    pub children: Vec<ChildSpec>,
}

/// Requests a supervisor answers.
pub enum SupervisorCall {
    /// List the children.
    WhichChildren,
    /// Count the children.
    CountChildren,
    /// Add and start a child (a dynamic child for `SimpleOneForOne`).
    StartChild(ChildSpec),
    /// Stop a child, keeping its spec (unless temporary).
    TerminateChild(String),
    /// Start a stopped child again.
    RestartChild(String),
    /// Remove a stopped child's spec.
    DeleteChild(String),
}

/// A supervisor's answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorReply {
    /// For `WhichChildren`.
    Children(Vec<ChildInfo>),
    /// For `CountChildren`.
    Counts(ChildCounts),
    /// For `StartChild`/`RestartChild`: the pid, or `None` if ignored.
    Started(Result<Option<Pid>, SupervisorError>),
    /// For `TerminateChild`/`DeleteChild`.
    Done(Result<(), SupervisorError>),
}

struct Child {
    key: u64,
    spec: ChildSpec,
    state: ChildState,
    restarts: u32,
}

enum Step {
    Stop(u64),
    Start { key: u64, restart: bool },
    Reply(From<SupervisorReply>, SupervisorReply),
    Escalate,
}

/// The supervisor behaviour (a gen_server).
pub struct Supervisor {
    name: String,
    flags: Flags,
    children: Vec<Child>,
    next_key: u64,
    restarts: VecDeque<Instant>,
    steps: VecDeque<Step>,
    waiting_for: Option<Pid>,
    /// A failed restart waits for its retry message before steps go on.
    retry_pending: bool,
    expected_exits: Vec<Pid>,
    template: Option<ChildSpec>,
}

/// Starts a supervisor and its children, in order.
pub fn start(
    lp: &mut Loop,
    name: impl Into<String>,
    flags: Flags,
    children: Vec<ChildSpec>,
    options: StartOptions,
) -> Result<ServerRef<Supervisor>, StartError> {
    let args = SupervisorArgs {
        name: name.into(),
        flags,
        children,
    };
    gen_server::start::<Supervisor>(lp, args, options)
}

impl ChildSpec {
    /// A child that is itself a supervisor (shutdown `Infinity`).
    pub fn supervisor(
        id: impl Into<String>,
        flags: Flags,
        children: impl Fn() -> Vec<ChildSpec> + 'static,
    ) -> ChildSpec {
        let id = id.into();
        let name = id.clone();
        ChildSpec::from_fn(id, move |lp, parent| {
            let options = StartOptions {
                parent: Some(parent),
                ..StartOptions::default()
            };
            start(lp, name.clone(), flags, children(), options).map(|s| s.pid())
        })
        .kind(ChildKind::Supervisor)
    }
}

fn kill_for(shutdown: Shutdown) -> Kill {
    match shutdown {
        Shutdown::BrutalKill => Kill::Brutal,
        Shutdown::Timeout(d) => Kill::Terminate(d),
        Shutdown::Infinity => Kill::Terminate(Duration::MAX),
    }
}

impl GenServer for Supervisor {
    type Args = SupervisorArgs;
    type Call = SupervisorCall;
    type Reply = SupervisorReply;
    type Cast = ();
    type Info = ();
    type Continue = ();

    fn init(args: SupervisorArgs, ctx: &mut Ctx<Self>) -> Init<Self> {
        let mut sup = Supervisor {
            name: args.name,
            flags: args.flags,
            children: Vec::new(),
            next_key: 0,
            restarts: VecDeque::new(),
            steps: VecDeque::new(),
            waiting_for: None,
            retry_pending: false,
            expected_exits: Vec::new(),
            template: None,
        };
        if sup.flags.strategy == Strategy::SimpleOneForOne {
            sup.template = args.children.into_iter().next();
            return Init::ok(sup);
        }
        for spec in args.children {
            let id = spec.id.clone();
            let key = sup.add(spec);
            if let Err(e) = sup.start_now(ctx, key) {
                tracing::error!(supervisor = %sup.name, child = %id, error = %e, "child failed to start; rolling back");
                sup.stop_all_now(ctx);
                return Init::Stop(ExitReason::shutdown_with(format!(
                    "failed_to_start_child {id}: {e}"
                )));
            }
        }
        sup.publish(ctx.lp());
        Init::ok(sup)
    }

    fn handle_call(
        &mut self,
        call: SupervisorCall,
        from: From<SupervisorReply>,
        ctx: &mut Ctx<Self>,
    ) -> Reply<Self> {
        let reply = match call {
            SupervisorCall::WhichChildren => {
                Reply::now(SupervisorReply::Children(self.which_children()))
            }
            SupervisorCall::CountChildren => {
                Reply::now(SupervisorReply::Counts(self.count_children()))
            }
            SupervisorCall::StartChild(spec) => {
                Reply::now(SupervisorReply::Started(self.start_child(ctx, spec)))
            }
            SupervisorCall::RestartChild(id) => {
                Reply::now(SupervisorReply::Started(self.restart_child(ctx, &id)))
            }
            SupervisorCall::DeleteChild(id) => {
                Reply::now(SupervisorReply::Done(self.delete_child(&id)))
            }
            SupervisorCall::TerminateChild(id) => match self.find_id(&id) {
                None => Reply::now(SupervisorReply::Done(Err(SupervisorError::NotFound))),
                Some(key) => {
                    self.steps.push_back(Step::Stop(key));
                    self.steps
                        .push_back(Step::Reply(from, SupervisorReply::Done(Ok(()))));
                    self.pump(ctx);
                    Reply::later()
                }
            },
        };
        self.publish(ctx.lp());
        reply
    }

    fn handle_info(&mut self, info: Info<()>, ctx: &mut Ctx<Self>) -> Next<Self> {
        if let Info::Msg(()) = info {
            // The retry of a failed restart.
            self.retry_pending = false;
            self.pump(ctx);
        } else if let Info::Exit { pid, reason } = info {
            if let Some(pos) = self.expected_exits.iter().position(|p| *p == pid) {
                self.expected_exits.swap_remove(pos);
                if self.waiting_for == Some(pid) {
                    self.waiting_for = None;
                }
            } else if let Some(key) = self.find_pid(pid) {
                self.child_exited(ctx, key, reason);
            }
            self.pump(ctx);
        }
        self.publish(ctx.lp());
        Next::Wait
    }

    fn terminate(&mut self, reason: &ExitReason, ctx: &mut Ctx<Self>) {
        tracing::debug!(supervisor = %self.name, %reason, "supervisor terminating");
        self.stop_all_now(ctx);
        if let Some(reports) = ctx.lp().extension_mut::<Reports>() {
            reports.0.retain(|(name, _)| *name != self.name);
        }
    }
}

/// The latest children of each live supervisor, by name, for status pages
/// that cannot wait for a call.
#[derive(Default)]
struct Reports(Vec<(String, Vec<ChildInfo>)>);

/// The children of the supervisor named `name` (its first argument to
/// [`start`]) as of its last change; `None` if no such supervisor runs.
pub fn report(lp: &Loop, name: &str) -> Option<Vec<ChildInfo>> {
    let reports = lp.extension::<Reports>()?;
    reports
        .0
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, c)| c.clone())
}

impl Supervisor {
    /// Publishes the children for [`report`] (control plane: on changes only).
    fn publish(&self, lp: &mut Loop) {
        let children = self.which_children();
        let reports = lp.extension_or_insert_with(Reports::default);
        match reports.0.iter_mut().find(|(n, _)| *n == self.name) {
            Some((_, c)) => *c = children,
            None => reports.0.push((self.name.clone(), children)),
        }
    }

    fn add(&mut self, spec: ChildSpec) -> u64 {
        self.next_key += 1;
        self.children.push(Child {
            key: self.next_key,
            spec,
            state: ChildState::Undefined,
            restarts: 0,
        });
        self.next_key
    }

    fn index(&self, key: u64) -> Option<usize> {
        self.children.iter().position(|c| c.key == key)
    }

    fn find_id(&self, id: &str) -> Option<u64> {
        self.children
            .iter()
            .find(|c| c.spec.id == id)
            .map(|c| c.key)
    }

    fn find_pid(&self, pid: Pid) -> Option<u64> {
        self.children
            .iter()
            .find(|c| c.state == ChildState::Running(pid))
            .map(|c| c.key)
    }

    /// Starts a child now; `Ok(None)` if it was ignored.
    fn start_now(&mut self, ctx: &mut Ctx<Self>, key: u64) -> Result<Option<Pid>, StartError> {
        let index = self.index(key).expect("child exists");
        let start = self.children[index].spec.start.clone();
        let me = ctx.pid();
        match start(ctx.lp(), me) {
            Ok(pid) => {
                self.children[index].state = ChildState::Running(pid);
                Ok(Some(pid))
            }
            Err(StartError::Ignored) => {
                self.children[index].state = ChildState::Undefined;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Stops every running child now, in reverse start order.
    fn stop_all_now(&mut self, ctx: &mut Ctx<Self>) {
        for index in (0..self.children.len()).rev() {
            if let ChildState::Running(pid) = self.children[index].state {
                self.children[index].state = ChildState::Undefined;
                self.expected_exits.push(pid);
                let kill = kill_for(self.children[index].spec.shutdown);
                process::stop(ctx.lp(), pid, ExitReason::Shutdown, kill);
            }
        }
        self.children
            .retain(|c| c.spec.restart != Restart::Temporary);
    }

    /// Records a restart; false if that exceeds the intensity.
    fn record_restart(&mut self, now: Instant) -> bool {
        self.restarts.push_back(now);
        while let Some(first) = self.restarts.front() {
            if now.duration_since(*first) > self.flags.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.len() as u64 <= self.flags.max_restarts as u64
    }

    fn escalate(&mut self) {
        self.steps.clear();
        self.retry_pending = false;
        for child in self.children.iter().rev() {
            if matches!(child.state, ChildState::Running(_)) {
                self.steps.push_back(Step::Stop(child.key));
            }
        }
        self.steps.push_back(Step::Escalate);
    }

    fn child_exited(&mut self, ctx: &mut Ctx<Self>, key: u64, reason: ExitReason) {
        let index = self.index(key).expect("child exists");
        let child = &mut self.children[index];
        child.state = ChildState::Undefined;
        let id = child.spec.id.clone();
        let restart = match child.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => !reason.is_normal(),
            Restart::Temporary => false,
        };
        if !restart {
            if !reason.is_normal() {
                tracing::error!(supervisor = %self.name, child = %id, %reason, action = "none", "child terminated");
            }
            if child.spec.restart == Restart::Temporary {
                self.children.remove(index);
            }
            return;
        }
        if !self.record_restart(ctx.now()) {
            tracing::error!(supervisor = %self.name, child = %id, %reason, action = "shutdown",
                "reached max restart intensity");
            self.escalate();
            return;
        }
        tracing::error!(supervisor = %self.name, child = %id, %reason, action = "restart", "child terminated");
        self.plan_restart(index);
    }

    /// Queues the stops and starts the strategy asks for after child `index` exited.
    fn plan_restart(&mut self, index: usize) {
        let range = match self.flags.strategy {
            Strategy::OneForOne | Strategy::SimpleOneForOne => index..index + 1,
            Strategy::OneForAll => 0..self.children.len(),
            Strategy::RestForOne => index..self.children.len(),
        };
        let keys: Vec<u64> = self.children[range].iter().map(|c| c.key).collect();
        for key in keys.iter().rev() {
            self.steps.push_back(Step::Stop(*key));
        }
        for key in keys {
            self.steps.push_back(Step::Start { key, restart: true });
        }
    }

    /// Runs queued steps until one has to wait for a lingering child.
    fn pump(&mut self, ctx: &mut Ctx<Self>) {
        while self.waiting_for.is_none() && !self.retry_pending {
            let Some(step) = self.steps.pop_front() else {
                return;
            };
            match step {
                Step::Stop(key) => self.stop_step(ctx, key),
                Step::Start { key, restart } => self.start_step(ctx, key, restart),
                Step::Reply(from, reply) => {
                    ctx.reply(from, reply);
                }
                Step::Escalate => {
                    ctx.stop(ExitReason::shutdown_with(
                        ExitReason::REACHED_MAX_RESTART_INTENSITY,
                    ));
                    return;
                }
            }
        }
    }

    fn stop_step(&mut self, ctx: &mut Ctx<Self>, key: u64) {
        let Some(index) = self.index(key) else { return };
        if let ChildState::Running(pid) = self.children[index].state {
            self.children[index].state = ChildState::Undefined;
            self.expected_exits.push(pid);
            let kill = kill_for(self.children[index].spec.shutdown);
            process::stop(ctx.lp(), pid, ExitReason::Shutdown, kill);
            if process::exists(ctx.lp(), pid) {
                self.waiting_for = Some(pid);
            }
        }
        if self.children[index].spec.restart == Restart::Temporary {
            self.children.remove(index);
        }
    }

    fn start_step(&mut self, ctx: &mut Ctx<Self>, key: u64, restart: bool) {
        let Some(index) = self.index(key) else { return };
        if matches!(self.children[index].state, ChildState::Running(_)) {
            return;
        }
        if restart {
            self.children[index].restarts += 1;
        }
        if let Err(e) = self.start_now(ctx, key) {
            let id = self.children[index].spec.id.clone();
            tracing::error!(supervisor = %self.name, child = %id, error = %e, action = "retry", "restart failed");
            self.children[index].state = ChildState::Restarting;
            if self.record_restart(ctx.now()) {
                // Retry from a message, as OTP does, so the supervisor stays
                // responsive (which_children shows the child as restarting).
                self.steps.push_front(Step::Start {
                    key,
                    restart: false,
                });
                self.retry_pending = true;
                ctx.send_after(Duration::ZERO, ());
            } else {
                self.escalate();
            }
        }
    }

    fn which_children(&self) -> Vec<ChildInfo> {
        self.children
            .iter()
            .map(|c| ChildInfo {
                id: c.spec.id.clone(),
                state: c.state,
                kind: c.spec.kind,
                restarts: c.restarts,
            })
            .collect()
    }

    fn count_children(&self) -> ChildCounts {
        let mut counts = ChildCounts {
            specs: self.children.len(),
            ..ChildCounts::default()
        };
        for child in &self.children {
            if matches!(child.state, ChildState::Running(_)) {
                counts.active += 1;
            }
            match child.spec.kind {
                ChildKind::Worker => counts.workers += 1,
                ChildKind::Supervisor => counts.supervisors += 1,
            }
        }
        counts
    }

    fn start_child(
        &mut self,
        ctx: &mut Ctx<Self>,
        mut spec: ChildSpec,
    ) -> Result<Option<Pid>, SupervisorError> {
        if let Some(template) = &self.template {
            // Dynamic children take the template's restart and shutdown, and a unique id.
            spec.restart = template.restart;
            spec.shutdown = template.shutdown;
            spec.kind = template.kind;
            spec.id = format!("{}-{}", template.id, self.next_key + 1);
        } else if let Some(key) = self.find_id(&spec.id) {
            let index = self.index(key).expect("found");
            return match self.children[index].state {
                ChildState::Running(pid) => Err(SupervisorError::AlreadyStarted(pid)),
                _ => Err(SupervisorError::AlreadyPresent),
            };
        }
        let key = self.add(spec);
        match self.start_now(ctx, key) {
            Ok(pid) => Ok(pid),
            Err(e) => {
                let index = self.index(key).expect("just added");
                self.children.remove(index);
                Err(SupervisorError::StartFailed(e))
            }
        }
    }

    fn restart_child(
        &mut self,
        ctx: &mut Ctx<Self>,
        id: &str,
    ) -> Result<Option<Pid>, SupervisorError> {
        if self.template.is_some() {
            return Err(SupervisorError::NotSupported);
        }
        let key = self.find_id(id).ok_or(SupervisorError::NotFound)?;
        let index = self.index(key).expect("found");
        match self.children[index].state {
            ChildState::Running(_) => Err(SupervisorError::Running),
            ChildState::Restarting => Err(SupervisorError::Restarting),
            ChildState::Undefined => self
                .start_now(ctx, key)
                .map_err(SupervisorError::StartFailed),
        }
    }

    fn delete_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        if self.template.is_some() {
            return Err(SupervisorError::NotSupported);
        }
        let key = self.find_id(id).ok_or(SupervisorError::NotFound)?;
        let index = self.index(key).expect("found");
        match self.children[index].state {
            ChildState::Running(_) => Err(SupervisorError::Running),
            ChildState::Restarting => Err(SupervisorError::Restarting),
            ChildState::Undefined => {
                self.children.remove(index);
                Ok(())
            }
        }
    }
}

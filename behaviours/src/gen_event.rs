//! `gen_event`: an event manager process with handlers added and removed at
//! run time. Every handler sees every event, in the order handlers were added.
//!
//! A handler that panics is removed (its `terminate` runs with the error) and
//! the manager and the other handlers carry on. A supervised handler (added
//! with [`add_sup_handler`]) is tied to an owner process: if the owner exits,
//! the handler is removed; whenever the handler is removed, the owner gets a
//! [`HandlerRemoved`] info.
//!
//! ```
//! use ringvisor_behaviours::gen_event::{self, EventHandler, HandlerAction};
//! use ringvisor_runtime::Loop;
//! use std::{cell::RefCell, rc::Rc};
//!
//! struct Collect(Rc<RefCell<Vec<u32>>>);
//! impl EventHandler<u32> for Collect {
//!     fn handle_event(&mut self, event: &u32, _lp: &mut Loop) -> HandlerAction<u32> {
//!         self.0.borrow_mut().push(*event);
//!         HandlerAction::Keep
//!     }
//! }
//!
//! let mut lp = Loop::new().unwrap();
//! let seen = Rc::new(RefCell::new(Vec::new()));
//! let mgr = gen_event::start::<u32>(&mut lp, Default::default()).unwrap();
//! gen_event::add_handler(&mut lp, mgr, "collect", Box::new(Collect(seen.clone())), |_, r| r.unwrap());
//! gen_event::notify(&mut lp, mgr, 1).unwrap();
//! gen_event::sync_notify(&mut lp, mgr, 2, |lp, r| { r.unwrap(); lp.stop() });
//! lp.run().unwrap();
//! assert_eq!(*seen.borrow(), vec![1, 2]);
//! ```

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use ringvisor_runtime::Loop;

use crate::call::{CallError, From};
use crate::gen_server::{
    self, Ctx, GenServer, Info, Init, Next, Reply, ServerRef, StartError, StartOptions,
};
use crate::pid::{ExitReason, MonitorRef, Pid};
use crate::process::SendError;

/// Timeout of the manager calls made through this module's functions.
pub const EVENT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What a handler's event callback wants next.
pub enum HandlerAction<E> {
    /// Stay installed.
    Keep,
    /// Remove me (terminate runs with `RemoveReason::Normal`).
    Remove,
    /// Replace me: my terminate's result goes to the new handler's init.
    Swap(String, Box<dyn EventHandler<E>>),
}

/// Why a handler was removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveReason {
    /// Deleted, or it asked to be removed.
    Normal,
    /// The manager stopped.
    Shutdown,
    /// Replaced by `swap_handler` or a `Swap` action.
    Swapped,
    /// Its owner (of a supervised handler) exited with this reason.
    OwnerExited(ExitReason),
    /// It panicked (or its init failed).
    Error(ExitReason),
}

/// An event handler. Callbacks get the loop, so a handler can log, count, or
/// start I/O.
pub trait EventHandler<E>: 'static {
    /// Runs when the handler is installed; `swapped` carries the previous
    /// handler's terminate result after a swap. An error refuses the install.
    fn init(&mut self, _swapped: Option<Box<dyn Any>>, _lp: &mut Loop) -> Result<(), String> {
        Ok(())
    }

    /// Handles one event.
    fn handle_event(&mut self, event: &E, lp: &mut Loop) -> HandlerAction<E>;

    /// Answers a `gen_event::call` addressed to this handler.
    fn handle_call(&mut self, _request: Box<dyn Any>, _lp: &mut Loop) -> Box<dyn Any> {
        Box::new(())
    }

    /// Runs when the handler is removed; its result goes to a swap successor.
    fn terminate(&mut self, _reason: &RemoveReason, _lp: &mut Loop) -> Box<dyn Any> {
        Box::new(())
    }
}

/// The info a supervised handler's owner gets when the handler is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerRemoved {
    /// The manager.
    pub manager: Pid,
    /// The handler's id.
    pub handler: String,
    /// Why it was removed.
    pub reason: RemoveReason,
}

/// Errors of the manager API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// No handler with this id is installed.
    NotInstalled,
    /// A handler with this id is already installed.
    AlreadyInstalled,
    /// The handler's init refused.
    InitFailed(String),
    /// The handler panicked during the call (it was removed).
    Crashed(ExitReason),
    /// The manager did not answer.
    Manager(CallError),
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for HandlerError {}

type OwnerNotify = Box<dyn Fn(&mut Loop, HandlerRemoved)>;

struct Installed<E> {
    id: String,
    handler: Box<dyn EventHandler<E>>,
    owner: Option<(Pid, MonitorRef, OwnerNotify)>,
}

/// Requests to a manager (use this module's functions).
pub enum ManagerCall<E> {
    /// Install a handler.
    Add(String, Box<dyn EventHandler<E>>, Option<(Pid, OwnerNotify)>),
    /// Remove a handler.
    Delete(String),
    /// Replace a handler.
    Swap(String, String, Box<dyn EventHandler<E>>),
    /// Deliver an event and answer once every handler ran.
    SyncNotify(E),
    /// Call one handler.
    Call(String, Box<dyn Any>),
    /// List handlers.
    Which,
}

/// A manager's answers.
pub enum ManagerReply {
    /// Done.
    Ok,
    /// A handler's answer (or terminate result on delete).
    Value(Box<dyn Any>),
    /// Installed handler ids, in order.
    Handlers(Vec<String>),
    /// Refused.
    Err(HandlerError),
}

/// The manager process.
pub struct EventManager<E: 'static> {
    handlers: Vec<Installed<E>>,
    me: Pid,
}

/// Starts an event manager for events of type `E`.
pub fn start<E: 'static>(
    lp: &mut Loop,
    options: StartOptions,
) -> Result<ServerRef<EventManager<E>>, StartError> {
    gen_server::start::<EventManager<E>>(lp, (), options)
}

impl<E: 'static> GenServer for EventManager<E> {
    type Args = ();
    type Call = ManagerCall<E>;
    type Reply = ManagerReply;
    type Cast = E;
    type Info = ();
    type Continue = ();

    fn init(_: (), ctx: &mut Ctx<Self>) -> Init<Self> {
        Init::ok(EventManager {
            handlers: Vec::new(),
            me: ctx.pid(),
        })
    }

    fn handle_call(
        &mut self,
        call: ManagerCall<E>,
        _from: From<ManagerReply>,
        ctx: &mut Ctx<Self>,
    ) -> Reply<Self> {
        let reply = match call {
            ManagerCall::Add(id, handler, owner) => {
                self.add(ctx, id, handler, owner, None, usize::MAX)
            }
            ManagerCall::Delete(id) => match self.position(&id) {
                None => ManagerReply::Err(HandlerError::NotInstalled),
                Some(index) => {
                    ManagerReply::Value(self.remove(ctx.lp(), index, RemoveReason::Normal))
                }
            },
            ManagerCall::Swap(old, new_id, handler) => self.swap(ctx, &old, new_id, handler),
            ManagerCall::SyncNotify(event) => {
                self.dispatch(ctx, &event);
                ManagerReply::Ok
            }
            ManagerCall::Call(id, request) => self.call_handler(ctx.lp(), &id, request),
            ManagerCall::Which => {
                ManagerReply::Handlers(self.handlers.iter().map(|h| h.id.clone()).collect())
            }
        };
        Reply::now(reply)
    }

    fn handle_cast(&mut self, event: E, ctx: &mut Ctx<Self>) -> Next<Self> {
        self.dispatch(ctx, &event);
        Next::Wait
    }

    fn handle_info(&mut self, info: Info<()>, ctx: &mut Ctx<Self>) -> Next<Self> {
        if let Info::Down { pid, reason, .. } = info {
            while let Some(index) = self
                .handlers
                .iter()
                .position(|h| h.owner.as_ref().is_some_and(|o| o.0 == pid))
            {
                self.remove(ctx.lp(), index, RemoveReason::OwnerExited(reason.clone()));
            }
        }
        Next::Wait
    }

    fn terminate(&mut self, _reason: &ExitReason, ctx: &mut Ctx<Self>) {
        while !self.handlers.is_empty() {
            self.remove(ctx.lp(), 0, RemoveReason::Shutdown);
        }
    }
}

impl<E: 'static> EventManager<E> {
    fn position(&self, id: &str) -> Option<usize> {
        self.handlers.iter().position(|h| h.id == id)
    }

    fn add(
        &mut self,
        ctx: &mut Ctx<Self>,
        id: String,
        mut handler: Box<dyn EventHandler<E>>,
        owner: Option<(Pid, OwnerNotify)>,
        swapped: Option<Box<dyn Any>>,
        position: usize,
    ) -> ManagerReply {
        if self.position(&id).is_some() {
            return ManagerReply::Err(HandlerError::AlreadyInstalled);
        }
        let lp = ctx.lp();
        match catch_unwind(AssertUnwindSafe(|| handler.init(swapped, lp))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return ManagerReply::Err(HandlerError::InitFailed(e)),
            Err(panic) => {
                return ManagerReply::Err(HandlerError::InitFailed(
                    ExitReason::from_panic(panic).to_string(),
                ))
            }
        }
        let owner = owner.map(|(pid, notify)| (pid, ctx.monitor(pid), notify));
        let position = position.min(self.handlers.len());
        self.handlers
            .insert(position, Installed { id, handler, owner });
        ManagerReply::Ok
    }

    /// Removes handler `index`: terminate, tell its owner, stop monitoring.
    fn remove(&mut self, lp: &mut Loop, index: usize, reason: RemoveReason) -> Box<dyn Any> {
        let mut installed = self.handlers.remove(index);
        let result = catch_unwind(AssertUnwindSafe(|| {
            installed.handler.terminate(&reason, lp)
        }))
        .unwrap_or_else(|_| Box::new(()));
        if let Some((owner, monitor, notify)) = installed.owner {
            crate::process::demonitor(lp, owner, monitor);
            let removed = HandlerRemoved {
                manager: self.me,
                handler: installed.id,
                reason,
            };
            notify(lp, removed);
        }
        result
    }

    fn swap(
        &mut self,
        ctx: &mut Ctx<Self>,
        old: &str,
        new_id: String,
        new: Box<dyn EventHandler<E>>,
    ) -> ManagerReply {
        let Some(index) = self.position(old) else {
            return ManagerReply::Err(HandlerError::NotInstalled);
        };
        // Supervision passes to the new handler: take the owner before removal
        // so the old one's removal is reported as Swapped only.
        let owner = self.handlers[index].owner.take();
        let lp = ctx.lp();
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.handlers[index]
                .handler
                .terminate(&RemoveReason::Swapped, lp)
        }))
        .unwrap_or_else(|_| Box::new(()));
        self.handlers.remove(index);
        let owner = owner.map(|(pid, monitor, notify)| {
            crate::process::demonitor(ctx.lp(), pid, monitor);
            notify(
                ctx.lp(),
                HandlerRemoved {
                    manager: self.me,
                    handler: old.to_string(),
                    reason: RemoveReason::Swapped,
                },
            );
            (pid, notify)
        });
        // The new handler takes the old one's place in the order.
        self.add(ctx, new_id, new, owner, Some(result), index)
    }

    /// Delivers an event to every handler, in order.
    fn dispatch(&mut self, ctx: &mut Ctx<Self>, event: &E) {
        let mut index = 0;
        while index < self.handlers.len() {
            let lp = ctx.lp();
            let handler = &mut self.handlers[index].handler;
            match catch_unwind(AssertUnwindSafe(|| handler.handle_event(event, lp))) {
                Ok(HandlerAction::Keep) => index += 1,
                Ok(HandlerAction::Remove) => {
                    self.remove(ctx.lp(), index, RemoveReason::Normal);
                }
                Ok(HandlerAction::Swap(new_id, new)) => {
                    // The new handler takes the old one's place and, as in
                    // OTP, does not see the event that caused the swap.
                    let old = self.handlers[index].id.clone();
                    self.swap(ctx, &old, new_id.clone(), new);
                    if self.handlers.get(index).is_some_and(|h| h.id == new_id) {
                        index += 1;
                    }
                }
                Err(panic) => {
                    let reason = ExitReason::from_panic(panic);
                    let id = self.handlers[index].id.clone();
                    tracing::error!(manager = %self.me, handler = %id, %reason, "event handler crashed; removed");
                    self.remove(ctx.lp(), index, RemoveReason::Error(reason));
                }
            }
        }
    }

    fn call_handler(&mut self, lp: &mut Loop, id: &str, request: Box<dyn Any>) -> ManagerReply {
        let Some(index) = self.position(id) else {
            return ManagerReply::Err(HandlerError::NotInstalled);
        };
        let handler = &mut self.handlers[index].handler;
        match catch_unwind(AssertUnwindSafe(|| handler.handle_call(request, lp))) {
            Ok(value) => ManagerReply::Value(value),
            Err(panic) => {
                let reason = ExitReason::from_panic(panic);
                self.remove(lp, index, RemoveReason::Error(reason.clone()));
                ManagerReply::Err(HandlerError::Crashed(reason))
            }
        }
    }
}

fn call_mgr<E: 'static, T: 'static>(
    lp: &mut Loop,
    mgr: ServerRef<EventManager<E>>,
    call: ManagerCall<E>,
    map: fn(ManagerReply) -> Result<T, HandlerError>,
    then: impl FnOnce(&mut Loop, Result<T, HandlerError>) + 'static,
) {
    gen_server::call(lp, mgr, call, EVENT_CALL_TIMEOUT, move |lp, r| {
        then(lp, r.map_err(HandlerError::Manager).and_then(map))
    });
}

fn unit(reply: ManagerReply) -> Result<(), HandlerError> {
    match reply {
        ManagerReply::Err(e) => Err(e),
        _ => Ok(()),
    }
}

fn value(reply: ManagerReply) -> Result<Box<dyn Any>, HandlerError> {
    match reply {
        ManagerReply::Value(v) => Ok(v),
        ManagerReply::Err(e) => Err(e),
        _ => Ok(Box::new(())),
    }
}

/// Installs a handler.
pub fn add_handler<E: 'static>(
    lp: &mut Loop,
    mgr: ServerRef<EventManager<E>>,
    id: impl Into<String>,
    handler: Box<dyn EventHandler<E>>,
    then: impl FnOnce(&mut Loop, Result<(), HandlerError>) + 'static,
) {
    call_mgr(
        lp,
        mgr,
        ManagerCall::Add(id.into(), handler, None),
        unit,
        then,
    );
}

/// Installs a handler supervised by `owner`: removed if the owner exits; the
/// owner gets [`HandlerRemoved`] (converted into its info type) whenever the
/// handler is removed.
pub fn add_sup_handler<E: 'static, S: GenServer>(
    lp: &mut Loop,
    mgr: ServerRef<EventManager<E>>,
    id: impl Into<String>,
    handler: Box<dyn EventHandler<E>>,
    owner: ServerRef<S>,
    then: impl FnOnce(&mut Loop, Result<(), HandlerError>) + 'static,
) where
    S::Info: std::convert::From<HandlerRemoved>,
{
    let notify: OwnerNotify = Box::new(move |lp, removed| {
        let _ = gen_server::send_info::<S>(lp, owner, removed.into());
    });
    call_mgr(
        lp,
        mgr,
        ManagerCall::Add(id.into(), handler, Some((owner.pid(), notify))),
        unit,
        then,
    );
}

/// Removes a handler; the result is its terminate's return value.
pub fn delete_handler<E: 'static>(
    lp: &mut Loop,
    mgr: ServerRef<EventManager<E>>,
    id: impl Into<String>,
    then: impl FnOnce(&mut Loop, Result<Box<dyn Any>, HandlerError>) + 'static,
) {
    call_mgr(lp, mgr, ManagerCall::Delete(id.into()), value, then);
}

/// Replaces handler `old` with `new` (old's terminate result goes to new's init).
pub fn swap_handler<E: 'static>(
    lp: &mut Loop,
    mgr: ServerRef<EventManager<E>>,
    old: impl Into<String>,
    new_id: impl Into<String>,
    new: Box<dyn EventHandler<E>>,
    then: impl FnOnce(&mut Loop, Result<(), HandlerError>) + 'static,
) {
    call_mgr(
        lp,
        mgr,
        ManagerCall::Swap(old.into(), new_id.into(), new),
        unit,
        then,
    );
}

/// Sends an event without waiting.
pub fn notify<E: 'static>(
    lp: &mut Loop,
    mgr: ServerRef<EventManager<E>>,
    event: E,
) -> Result<(), SendError> {
    gen_server::cast(lp, mgr, event)
}

/// Sends an event; `then` runs once every handler has handled it.
pub fn sync_notify<E: 'static>(
    lp: &mut Loop,
    mgr: ServerRef<EventManager<E>>,
    event: E,
    then: impl FnOnce(&mut Loop, Result<(), HandlerError>) + 'static,
) {
    call_mgr(lp, mgr, ManagerCall::SyncNotify(event), unit, then);
}

/// Calls one handler.
pub fn call<E: 'static>(
    lp: &mut Loop,
    mgr: ServerRef<EventManager<E>>,
    id: impl Into<String>,
    request: Box<dyn Any>,
    then: impl FnOnce(&mut Loop, Result<Box<dyn Any>, HandlerError>) + 'static,
) {
    call_mgr(lp, mgr, ManagerCall::Call(id.into(), request), value, then);
}

/// Lists installed handlers, in order.
pub fn which_handlers<E: 'static>(
    lp: &mut Loop,
    mgr: ServerRef<EventManager<E>>,
    then: impl FnOnce(&mut Loop, Result<Vec<String>, HandlerError>) + 'static,
) {
    fn handlers(reply: ManagerReply) -> Result<Vec<String>, HandlerError> {
        match reply {
            ManagerReply::Handlers(h) => Ok(h),
            ManagerReply::Err(e) => Err(e),
            _ => Ok(Vec::new()),
        }
    }
    call_mgr(lp, mgr, ManagerCall::Which, handlers, then);
}

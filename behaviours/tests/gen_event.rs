//! gen_event conformance, modelled on OTP's gen_event_SUITE.

mod common;

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use common::{new_loop, run_until, Log};
use ringvisor_behaviours::gen_event::{
    self, EventHandler, HandlerAction, HandlerError, HandlerRemoved, RemoveReason,
};
use ringvisor_behaviours::gen_server::{self, Ctx, GenServer, Init, Next, Reply, StartOptions};
use ringvisor_behaviours::{ExitReason, From, Info};
use ringvisor_runtime::{backend_tests, Loop};

struct Rec {
    name: &'static str,
    log: Log,
}

impl EventHandler<String> for Rec {
    fn init(&mut self, swapped: Option<Box<dyn Any>>, _lp: &mut Loop) -> Result<(), String> {
        if let Some(state) = swapped {
            let from = state.downcast::<String>().map(|s| *s).unwrap_or_default();
            self.log
                .borrow_mut()
                .push(format!("{} init from {from}", self.name));
        }
        Ok(())
    }
    fn handle_event(&mut self, event: &String, _lp: &mut Loop) -> HandlerAction<String> {
        self.log
            .borrow_mut()
            .push(format!("{} got {event}", self.name));
        match event.as_str() {
            "crash" if self.name == "fragile" => panic!("fragile handler broke"),
            "leave" if self.name == "leaver" => HandlerAction::Remove,
            "swap" if self.name == "old" => HandlerAction::Swap(
                "new".into(),
                Box::new(Rec {
                    name: "new",
                    log: self.log.clone(),
                }),
            ),
            _ => HandlerAction::Keep,
        }
    }
    fn handle_call(&mut self, request: Box<dyn Any>, _lp: &mut Loop) -> Box<dyn Any> {
        let n = request.downcast::<u32>().map(|n| *n).unwrap_or(0);
        Box::new(n * 2)
    }
    fn terminate(&mut self, reason: &RemoveReason, _lp: &mut Loop) -> Box<dyn Any> {
        self.log
            .borrow_mut()
            .push(format!("{} terminate {reason:?}", self.name));
        Box::new(format!("{}-state", self.name))
    }
}

/// Owner of supervised handlers: records HandlerRemoved infos.
struct Owner {
    log: Log,
}

enum OwnerInfo {
    Removed(HandlerRemoved),
}

impl std::convert::From<HandlerRemoved> for OwnerInfo {
    fn from(r: HandlerRemoved) -> OwnerInfo {
        OwnerInfo::Removed(r)
    }
}

impl GenServer for Owner {
    type Args = Log;
    type Call = ();
    type Reply = ();
    type Cast = ();
    type Info = OwnerInfo;
    type Continue = ();
    fn init(log: Log, _: &mut Ctx<Self>) -> Init<Self> {
        Init::ok(Owner { log })
    }
    fn handle_call(&mut self, _: (), _: From<()>, _: &mut Ctx<Self>) -> Reply<Self> {
        Reply::now(())
    }
    fn handle_info(&mut self, info: Info<OwnerInfo>, _: &mut Ctx<Self>) -> Next<Self> {
        if let Info::Msg(OwnerInfo::Removed(r)) = info {
            self.log
                .borrow_mut()
                .push(format!("owner: {} removed {:?}", r.handler, r.reason));
        }
        Next::Wait
    }
}

fn rec(name: &'static str, log: &Log) -> Box<dyn EventHandler<String>> {
    Box::new(Rec {
        name,
        log: log.clone(),
    })
}

type Answer = Rc<RefCell<Option<Result<(), HandlerError>>>>;

fn done() -> (Answer, impl FnOnce(&mut Loop, Result<(), HandlerError>)) {
    let cell: Answer = Rc::new(RefCell::new(None));
    let c = cell.clone();
    (cell, move |_: &mut Loop, r| *c.borrow_mut() = Some(r))
}

backend_tests! {
    // gen_event_SUITE: sync_notify — returns after every handler, in install order
    fn sync_notify_runs_every_handler_in_order(backend) {
        let mut lp = new_loop(backend);
        let log = Log::default();
        let mgr = gen_event::start::<String>(&mut lp, StartOptions::default()).unwrap();
        for name in ["h1", "h2", "h3"] {
            gen_event::add_handler(&mut lp, mgr, name, rec(name, &log), |_, r| r.unwrap());
        }
        gen_event::notify(&mut lp, mgr, "a".into()).unwrap();
        let (got, k) = done();
        let l = log.clone();
        gen_event::sync_notify(&mut lp, mgr, "b".into(), move |lp, r| {
            // Every handler has seen "b" by the time we are answered.
            assert_eq!(l.borrow().len(), 6);
            k(lp, r)
        });
        run_until(&mut lp, |_| got.borrow().is_some());
        assert_eq!(*log.borrow(), ["h1 got a", "h2 got a", "h3 got a", "h1 got b", "h2 got b", "h3 got b"]);
        let which = Rc::new(RefCell::new(Vec::new()));
        let w = which.clone();
        gen_event::which_handlers(&mut lp, mgr, move |_, r| *w.borrow_mut() = r.unwrap());
        run_until(&mut lp, |_| !which.borrow().is_empty());
        assert_eq!(*which.borrow(), ["h1", "h2", "h3"]);
    }

    // gen_event_SUITE: crashing handler is removed; sup handler's owner is told; others carry on
    fn crashing_handler_is_removed_and_owner_told(backend) {
        let mut lp = new_loop(backend);
        let log = Log::default();
        let mgr = gen_event::start::<String>(&mut lp, StartOptions::default()).unwrap();
        let owner = gen_server::start::<Owner>(&mut lp, log.clone(), StartOptions::default()).unwrap();
        gen_event::add_sup_handler(&mut lp, mgr, "fragile", rec("fragile", &log), owner, |_, r| r.unwrap());
        gen_event::add_handler(&mut lp, mgr, "steady", rec("steady", &log), |_, r| r.unwrap());
        let (got, k) = done();
        gen_event::sync_notify(&mut lp, mgr, "crash".into(), k);
        run_until(&mut lp, |_| got.borrow().is_some() && log.borrow().iter().any(|l| l.starts_with("owner:")));
        let log = log.borrow();
        assert!(log.contains(&"steady got crash".to_string()), "{log:?}");
        assert!(log.iter().any(|l| l.starts_with("fragile terminate Error(Panic(")), "{log:?}");
        assert!(log.iter().any(|l| l.starts_with("owner: fragile removed Error(Panic(")), "{log:?}");
    }

    // gen_event_SUITE: delete_handler (reason normal), call on a missing handler is an error
    fn delete_and_call(backend) {
        let mut lp = new_loop(backend);
        let log = Log::default();
        let mgr = gen_event::start::<String>(&mut lp, StartOptions::default()).unwrap();
        let owner = gen_server::start::<Owner>(&mut lp, log.clone(), StartOptions::default()).unwrap();
        gen_event::add_sup_handler(&mut lp, mgr, "h", rec("h", &log), owner, |_, r| r.unwrap());
        let answer = Rc::new(RefCell::new(None));
        let a = answer.clone();
        gen_event::call(&mut lp, mgr, "h", Box::new(21u32), move |_, r| *a.borrow_mut() = Some(*r.unwrap().downcast::<u32>().unwrap()));
        run_until(&mut lp, |_| answer.borrow().is_some());
        assert_eq!(*answer.borrow(), Some(42));
        let deleted = Rc::new(RefCell::new(None));
        let d = deleted.clone();
        gen_event::delete_handler(&mut lp, mgr, "h", move |_, r| *d.borrow_mut() = Some(*r.unwrap().downcast::<String>().unwrap()));
        run_until(&mut lp, |_| deleted.borrow().is_some() && log.borrow().len() >= 2);
        assert_eq!(deleted.borrow().as_deref(), Some("h-state"));
        assert_eq!(*log.borrow(), ["h terminate Normal", "owner: h removed Normal"]);
        let missing = Rc::new(RefCell::new(None));
        let m = missing.clone();
        gen_event::call(&mut lp, mgr, "h", Box::new(1u32), move |_, r| *m.borrow_mut() = Some(r.err()));
        run_until(&mut lp, |_| missing.borrow().is_some());
        assert_eq!(*missing.borrow(), Some(Some(HandlerError::NotInstalled)));
    }

    // gen_event_SUITE: swap_handler — terminate's result goes to the new init; supervision passes over
    fn swap_hands_state_and_supervision_over(backend) {
        let mut lp = new_loop(backend);
        let log = Log::default();
        let mgr = gen_event::start::<String>(&mut lp, StartOptions::default()).unwrap();
        let owner = gen_server::start::<Owner>(&mut lp, log.clone(), StartOptions::default()).unwrap();
        gen_event::add_sup_handler(&mut lp, mgr, "old", rec("old", &log), owner, |_, r| r.unwrap());
        let (got, k) = done();
        gen_event::sync_notify(&mut lp, mgr, "swap".into(), k);
        run_until(&mut lp, |_| got.borrow().is_some());
        let (got, k) = done();
        gen_event::sync_notify(&mut lp, mgr, "after".into(), k);
        run_until(&mut lp, |_| got.borrow().is_some());
        // Owner exits: the (new) supervised handler is removed.
        gen_server::stop(&mut lp, owner, ExitReason::Normal);
        lp.run_for(Duration::from_millis(20)).unwrap();
        assert_eq!(
            *log.borrow(),
            ["old got swap", "old terminate Swapped", "new init from old-state", "owner: old removed Swapped",
             "new got after", "new terminate OwnerExited(Normal)"]
        );
    }

    // A handler asking to be removed; the manager stopping removes the rest with Shutdown.
    fn remove_action_and_manager_shutdown(backend) {
        let mut lp = new_loop(backend);
        let log = Log::default();
        let mgr = gen_event::start::<String>(&mut lp, StartOptions::default()).unwrap();
        gen_event::add_handler(&mut lp, mgr, "leaver", rec("leaver", &log), |_, r| r.unwrap());
        gen_event::add_handler(&mut lp, mgr, "stayer", rec("stayer", &log), |_, r| r.unwrap());
        let (got, k) = done();
        gen_event::sync_notify(&mut lp, mgr, "leave".into(), k);
        run_until(&mut lp, |_| got.borrow().is_some());
        gen_server::stop(&mut lp, mgr, ExitReason::Shutdown);
        lp.run_for(Duration::from_millis(10)).unwrap();
        assert_eq!(
            *log.borrow(),
            ["leaver got leave", "leaver terminate Normal", "stayer got leave", "stayer terminate Shutdown"]
        );
    }
}

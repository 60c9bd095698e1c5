//! supervisor conformance, modelled on OTP's supervisor_SUITE.

mod common;

use std::time::Duration;

use common::{call_now, new_loop, run_until, Cmd, Config, Watcher, Worker, World};
use ringvisor_behaviours::gen_server::{self, ServerRef, StartOptions};
use ringvisor_behaviours::supervisor::{
    self, ChildInfo, ChildKind, ChildSpec, ChildState, Flags, Restart, Shutdown, Strategy,
    Supervisor, SupervisorCall, SupervisorError, SupervisorReply,
};
use ringvisor_behaviours::{is_alive, CallError, ExitReason, Pid};
use ringvisor_runtime::{backend_tests, Loop};

fn children(lp: &mut Loop, sup: ServerRef<Supervisor>) -> Vec<ChildInfo> {
    match call_now(lp, sup, SupervisorCall::WhichChildren) {
        Ok(SupervisorReply::Children(c)) => c,
        other => panic!("which_children: {other:?}"),
    }
}

fn pid_of(lp: &mut Loop, sup: ServerRef<Supervisor>, id: &str) -> Option<Pid> {
    children(lp, sup)
        .into_iter()
        .find(|c| c.id == id)
        .and_then(|c| match c.state {
            ChildState::Running(pid) => Some(pid),
            _ => None,
        })
}

fn crash(lp: &mut Loop, sup: ServerRef<Supervisor>, id: &str) {
    let pid = pid_of(lp, sup, id).expect("child running");
    let r = call_now(lp, ServerRef::<Worker>::from_pid(pid), Cmd::Crash);
    assert!(
        matches!(r, Err(CallError::Exit(ExitReason::Panic(_)))),
        "{r:?}"
    );
    // Let the supervisor handle the exit.
    run_until(lp, |lp| {
        !is_alive(lp, sup.pid()) || pid_of(lp, sup, id).is_some_and(|p| p != pid)
    });
}

fn three(world: &World) -> Vec<ChildSpec> {
    vec![world.spec("a"), world.spec("b"), world.spec("c")]
}

fn start_sup(lp: &mut Loop, strategy: Strategy, specs: Vec<ChildSpec>) -> ServerRef<Supervisor> {
    let flags = Flags::new(strategy).intensity(10, Duration::from_secs(60));
    supervisor::start(lp, "sup", flags, specs, StartOptions::default()).expect("supervisor starts")
}

backend_tests! {
    // supervisor_SUITE: one_for_one
    fn one_for_one_restarts_only_the_failed_child(backend) {
        let mut lp = new_loop(backend);
        let world = World::default();
        let sup = start_sup(&mut lp, Strategy::OneForOne, three(&world));
        assert_eq!(world.entries(), ["start a", "start b", "start c"]);
        let (a, c) = (pid_of(&mut lp, sup, "a"), pid_of(&mut lp, sup, "c"));
        world.clear();
        crash(&mut lp, sup, "b");
        assert_eq!(world.entries(), ["terminate b panic: b crashed on purpose", "start b"]);
        assert_eq!(pid_of(&mut lp, sup, "a"), a);
        assert_eq!(pid_of(&mut lp, sup, "c"), c);
        let b = children(&mut lp, sup).into_iter().find(|c| c.id == "b").unwrap();
        assert_eq!(b.restarts, 1);
    }

    // supervisor_SUITE: one_for_all — stop the others in reverse, start all in order
    fn one_for_all_restarts_every_child(backend) {
        let mut lp = new_loop(backend);
        let world = World::default();
        let sup = start_sup(&mut lp, Strategy::OneForAll, three(&world));
        world.clear();
        crash(&mut lp, sup, "b");
        run_until(&mut lp, |_| world.entries().len() >= 6);
        assert_eq!(
            world.entries(),
            ["terminate b panic: b crashed on purpose", "terminate c shutdown", "terminate a shutdown",
             "start a", "start b", "start c"]
        );
    }

    // supervisor_SUITE: rest_for_one
    fn rest_for_one_restarts_the_failed_and_later_children(backend) {
        let mut lp = new_loop(backend);
        let world = World::default();
        let sup = start_sup(&mut lp, Strategy::RestForOne, three(&world));
        let a = pid_of(&mut lp, sup, "a");
        world.clear();
        crash(&mut lp, sup, "b");
        run_until(&mut lp, |_| world.entries().len() >= 4);
        assert_eq!(
            world.entries(),
            ["terminate b panic: b crashed on purpose", "terminate c shutdown", "start b", "start c"]
        );
        assert_eq!(pid_of(&mut lp, sup, "a"), a);
    }

    // Strategies with supervisor children: a crashing sub-supervisor is restarted with its tree.
    fn supervisor_children_are_restarted_with_their_tree(backend) {
        for strategy in [Strategy::OneForOne, Strategy::OneForAll, Strategy::RestForOne] {
            let mut lp = new_loop(backend);
            let world = World::default();
            let w = world.clone();
            let inner = ChildSpec::supervisor("inner", Flags::new(Strategy::OneForOne), move || vec![w.spec("x")]);
            let sup = start_sup(&mut lp, strategy, vec![world.spec("a"), inner, world.spec("c")]);
            let inner_pid = pid_of(&mut lp, sup, "inner").unwrap();
            world.clear();
            ringvisor_behaviours::stop_process(&mut lp, inner_pid, ExitReason::error("boom"), ringvisor_behaviours::Kill::Brutal);
            run_until(&mut lp, |lp| pid_of(lp, sup, "inner").is_some_and(|p| p != inner_pid));
            let entries = world.entries();
            assert!(entries.contains(&"start x".to_string()), "{strategy:?}: {entries:?}");
            let restarted_a = entries.contains(&"start a".to_string());
            assert_eq!(restarted_a, strategy == Strategy::OneForAll, "{strategy:?}: {entries:?}");
            let restarted_c = entries.contains(&"start c".to_string());
            assert_eq!(restarted_c, strategy != Strategy::OneForOne, "{strategy:?}: {entries:?}");
            let info = children(&mut lp, sup).into_iter().find(|c| c.id == "inner").unwrap();
            assert_eq!(info.kind, ChildKind::Supervisor);
        }
    }

    // supervisor_SUITE: restart intensity, escalated through three levels.
    fn max_restart_intensity_escalates_through_three_levels(backend) {
        let mut lp = new_loop(backend);
        let world = World::default();
        let zero = |s| Flags::new(s).intensity(0, Duration::from_secs(60));
        let w = world.clone();
        let level3 = ChildSpec::supervisor("l3", zero(Strategy::OneForOne), move || vec![w.spec("worker")]);
        let level2 = ChildSpec::supervisor("l2", zero(Strategy::OneForOne), move || vec![level3.clone()]);
        let top = supervisor::start(&mut lp, "l1", zero(Strategy::OneForOne), vec![level2], StartOptions::default()).unwrap();
        let watch_log = common::Log::default();
        gen_server::start::<Watcher>(&mut lp, (watch_log.clone(), vec![top.pid()]), StartOptions::default()).unwrap();
        let l2 = pid_of(&mut lp, top, "l2").unwrap();
        let l3 = pid_of(&mut lp, ServerRef::from_pid(l2), "l3").unwrap();
        let worker = pid_of(&mut lp, ServerRef::from_pid(l3), "worker").unwrap();
        let r = call_now(&mut lp, ServerRef::<Worker>::from_pid(worker), Cmd::Crash);
        assert!(matches!(r, Err(CallError::Exit(_))));
        run_until(&mut lp, |_| !watch_log.borrow().is_empty());
        assert_eq!(*watch_log.borrow(), ["down {shutdown, reached_max_restart_intensity}"]);
        for pid in [top.pid(), l2, l3, worker] {
            assert!(!is_alive(&mut lp, pid));
        }
        assert_eq!(ringvisor_behaviours::process_count(&mut lp), 1, "only the watcher is left");
    }

    // Within the intensity, restarts go on; one more and the supervisor gives up.
    fn intensity_counts_restarts_within_the_period(backend) {
        let mut lp = new_loop(backend);
        let world = World::default();
        let flags = Flags::new(Strategy::OneForOne).intensity(2, Duration::from_secs(60));
        let sup = supervisor::start(&mut lp, "s", flags, vec![world.spec("a")], StartOptions::default()).unwrap();
        crash(&mut lp, sup, "a");
        crash(&mut lp, sup, "a");
        assert!(is_alive(&mut lp, sup.pid()));
        crash(&mut lp, sup, "a");
        assert!(!is_alive(&mut lp, sup.pid()));
    }

    // supervisor_SUITE: transient_child (restarted only on abnormal exits)
    fn transient_restarts_only_on_abnormal_exit(backend) {
        let mut lp = new_loop(backend);
        let world = World::default();
        let specs = vec![world.spec("t").restart(Restart::Transient)];
        let sup = start_sup(&mut lp, Strategy::OneForOne, specs);
        for reason in [ExitReason::Normal, ExitReason::Shutdown, ExitReason::shutdown_with("done")] {
            supervisor::restart_child(&mut lp, sup, "t", |_, _| {});
            run_until(&mut lp, |lp| pid_of(lp, sup, "t").is_some());
            let pid = pid_of(&mut lp, sup, "t").unwrap();
            let _ = call_now(&mut lp, ServerRef::<Worker>::from_pid(pid), Cmd::Exit(reason.clone()));
            run_until(&mut lp, |lp| pid_of(lp, sup, "t").is_none());
            lp.run_for(Duration::from_millis(10)).unwrap();
            assert_eq!(pid_of(&mut lp, sup, "t"), None, "not restarted after {reason}");
        }
        supervisor::restart_child(&mut lp, sup, "t", |_, _| {});
        run_until(&mut lp, |lp| pid_of(lp, sup, "t").is_some());
        crash(&mut lp, sup, "t");
        assert!(pid_of(&mut lp, sup, "t").is_some(), "restarted after a panic");
    }

    // supervisor_SUITE: temporary_normal / temporary_abnormal, and never restarted by a sibling.
    fn temporary_is_never_restarted_and_its_spec_is_dropped(backend) {
        let mut lp = new_loop(backend);
        let world = World::default();
        let specs = vec![world.spec("p"), world.spec("tmp").restart(Restart::Temporary)];
        let sup = start_sup(&mut lp, Strategy::OneForAll, specs);
        world.clear();
        crash(&mut lp, sup, "p");
        run_until(&mut lp, |_| world.entries().contains(&"start p".to_string()));
        let ids: Vec<String> = children(&mut lp, sup).into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["p"], "the temporary sibling was stopped and dropped");
        assert!(!world.entries().contains(&"start tmp".to_string()));
        // A temporary child that crashes itself is dropped too.
        supervisor::start_child(&mut lp, sup, world.spec("tmp2").restart(Restart::Temporary), |_, r| assert!(r.is_ok()));
        run_until(&mut lp, |lp| pid_of(lp, sup, "tmp2").is_some());
        let pid = pid_of(&mut lp, sup, "tmp2").unwrap();
        let _ = call_now(&mut lp, ServerRef::<Worker>::from_pid(pid), Cmd::Crash);
        run_until(&mut lp, |lp| children(lp, sup).len() == 1);
    }

    // supervisor_SUITE: shutdown timeout honoured — terminate's async work may finish.
    fn timeout_shutdown_lets_terminate_finish_async_work(backend) {
        let mut lp = new_loop(backend);
        let world = World::default();
        world.set("f", Config { flush_on_terminate: true, ..Config::default() });
        let specs = vec![world.spec("f").shutdown(Shutdown::Timeout(Duration::from_secs(5)))];
        let sup = start_sup(&mut lp, Strategy::OneForOne, specs);
        let done = std::rc::Rc::new(std::cell::Cell::new(false));
        let d = done.clone();
        supervisor::terminate_child(&mut lp, sup, "f", move |_, r| { assert_eq!(r, Ok(())); d.set(true) });
        run_until(&mut lp, |_| done.get());
        assert_eq!(world.entries()[1..], ["terminate f shutdown", "flushed f true"]);
    }

    // A terminate whose async work never ends is killed at the shutdown timeout.
    fn timeout_shutdown_kills_lingering_child(backend) {
        let mut lp = new_loop(backend);
        let world = World::default();
        world.set("h", Config { hang_on_terminate: true, ..Config::default() });
        let specs = vec![world.spec("h").shutdown(Shutdown::Timeout(Duration::from_millis(50)))];
        let sup = start_sup(&mut lp, Strategy::OneForOne, specs);
        let pid = pid_of(&mut lp, sup, "h").unwrap();
        let done = std::rc::Rc::new(std::cell::Cell::new(false));
        let d = done.clone();
        let started = std::time::Instant::now();
        supervisor::terminate_child(&mut lp, sup, "h", move |_, r| { assert_eq!(r, Ok(())); d.set(true) });
        run_until(&mut lp, |_| done.get());
        assert!(started.elapsed() >= Duration::from_millis(45), "waited for the timeout");
        assert!(!is_alive(&mut lp, pid));
        assert!(!world.entries().iter().any(|e| e.starts_with("hang-done")), "its op was canceled, not delivered");
    }

    // supervisor_SUITE: brutal_kill skips terminate.
    fn brutal_kill_skips_terminate(backend) {
        let mut lp = new_loop(backend);
        let world = World::default();
        let sup = start_sup(&mut lp, Strategy::OneForOne, vec![world.spec("k").shutdown(Shutdown::BrutalKill)]);
        world.clear();
        supervisor::terminate_child(&mut lp, sup, "k", |_, r| assert_eq!(r, Ok(())));
        run_until(&mut lp, |lp| pid_of(lp, sup, "k").is_none());
        lp.run_for(Duration::from_millis(10)).unwrap();
        assert!(world.entries().is_empty(), "{:?}", world.entries());
    }

    // supervisor_SUITE: sup_start_fail — started children are stopped in reverse order.
    fn start_failure_rolls_back_started_children(backend) {
        let mut lp = new_loop(backend);
        let world = World::default();
        world.set("c", Config { fail_init: true, ..Config::default() });
        let flags = Flags::new(Strategy::OneForOne);
        let r = supervisor::start(&mut lp, "s", flags, three(&world), StartOptions::default());
        assert!(matches!(r, Err(ringvisor_behaviours::StartError::Stopped(ExitReason::ShutdownWith(_)))), "{r:?}");
        assert_eq!(
            world.entries(),
            ["start a", "start b", "init-failed c", "terminate b shutdown", "terminate a shutdown"]
        );
        lp.run_for(Duration::from_millis(10)).unwrap();
        assert_eq!(ringvisor_behaviours::process_count(&mut lp), 0);
    }

    // supervisor_SUITE: simple_one_for_one — dynamic children restart like one_for_one.
    fn dynamic_children_of_one_template(backend) {
        let mut lp = new_loop(backend);
        let world = World::default();
        let flags = Flags::new(Strategy::SimpleOneForOne).intensity(5, Duration::from_secs(60));
        let template = world.spec("dyn").restart(Restart::Transient);
        let sup = supervisor::start(&mut lp, "pool", flags, vec![template], StartOptions::default()).unwrap();
        for i in 0..3 {
            supervisor::start_child(&mut lp, sup, world.spec(&format!("w{i}")), |_, r| assert!(matches!(r, Ok(Some(_)))));
        }
        run_until(&mut lp, |lp| children(lp, sup).len() == 3);
        let counts = match call_now(&mut lp, sup, SupervisorCall::CountChildren) {
            Ok(SupervisorReply::Counts(c)) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!((counts.specs, counts.active, counts.workers), (3, 3, 3));
        let first = children(&mut lp, sup)[0].clone();
        crash(&mut lp, sup, &first.id);
        assert_eq!(children(&mut lp, sup).len(), 3);
        let r = call_now(&mut lp, sup, SupervisorCall::DeleteChild(first.id.clone()));
        assert_eq!(r, Ok(SupervisorReply::Done(Err(SupervisorError::NotSupported))));
    }

    // supervisor_SUITE: the OTP API's error cases.
    fn api_error_cases(backend) {
        let mut lp = new_loop(backend);
        let world = World::default();
        let sup = start_sup(&mut lp, Strategy::OneForOne, vec![world.spec("a")]);
        let a = pid_of(&mut lp, sup, "a").unwrap();
        let started = |lp: &mut Loop, call| match call_now(lp, sup, call) {
            Ok(SupervisorReply::Started(r)) => r,
            other => panic!("{other:?}"),
        };
        let done = |lp: &mut Loop, call| match call_now(lp, sup, call) {
            Ok(SupervisorReply::Done(r)) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(started(&mut lp, SupervisorCall::StartChild(world.spec("a"))), Err(SupervisorError::AlreadyStarted(a)));
        assert_eq!(done(&mut lp, SupervisorCall::DeleteChild("a".into())), Err(SupervisorError::Running));
        assert_eq!(started(&mut lp, SupervisorCall::RestartChild("a".into())), Err(SupervisorError::Running));
        assert_eq!(done(&mut lp, SupervisorCall::TerminateChild("zz".into())), Err(SupervisorError::NotFound));
        assert_eq!(done(&mut lp, SupervisorCall::TerminateChild("a".into())), Ok(()));
        assert_eq!(started(&mut lp, SupervisorCall::StartChild(world.spec("a"))), Err(SupervisorError::AlreadyPresent));
        assert!(matches!(started(&mut lp, SupervisorCall::RestartChild("a".into())), Ok(Some(_))));
        assert_eq!(done(&mut lp, SupervisorCall::TerminateChild("a".into())), Ok(()));
        assert_eq!(done(&mut lp, SupervisorCall::DeleteChild("a".into())), Ok(()));
        assert_eq!(done(&mut lp, SupervisorCall::DeleteChild("a".into())), Err(SupervisorError::NotFound));
        world.set("bad", Config { fail_init: true, ..Config::default() });
        assert!(matches!(started(&mut lp, SupervisorCall::StartChild(world.spec("bad"))), Err(SupervisorError::StartFailed(_))));
        assert!(children(&mut lp, sup).is_empty());
    }

    // A restart that fails is retried, counts toward the intensity, and shows as restarting.
    fn failed_restart_is_retried_and_counted(backend) {
        let mut lp = new_loop(backend);
        let world = World::default();
        let flags = Flags::new(Strategy::OneForOne).intensity(3, Duration::from_secs(60));
        let sup = supervisor::start(&mut lp, "s", flags, vec![world.spec("r")], StartOptions::default()).unwrap();
        world.set("r", Config { fail_init: true, ..Config::default() });
        let pid = pid_of(&mut lp, sup, "r").unwrap();
        let _ = call_now(&mut lp, ServerRef::<Worker>::from_pid(pid), Cmd::Crash);
        run_until(&mut lp, |lp| !is_alive(lp, sup.pid()) || children(lp, sup)[0].state == ChildState::Restarting);
        if is_alive(&mut lp, sup.pid()) {
            assert_eq!(children(&mut lp, sup)[0].state, ChildState::Restarting);
        }
        run_until(&mut lp, |lp| !is_alive(lp, sup.pid()));
        let fails = world.entries().iter().filter(|e| e.starts_with("init-failed")).count();
        assert_eq!(fails, 3, "1 crash + 3 failed restarts exceed an intensity of 3: {:?}", world.entries());
    }
}

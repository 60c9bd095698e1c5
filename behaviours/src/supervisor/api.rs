//! The supervisor API as functions: OTP's `which_children`, `start_child`,
//! ... as calls with continuations.

use ringvisor_runtime::Loop;

use super::{
    ChildCounts, ChildInfo, ChildSpec, Supervisor, SupervisorCall, SupervisorError,
    SupervisorReply, SUPERVISOR_CALL_TIMEOUT,
};
use crate::call::CallError;
use crate::gen_server::{self, ServerRef, StartError};
use crate::pid::{ExitReason, Pid};

fn call_sup(
    lp: &mut Loop,
    sup: ServerRef<Supervisor>,
    call: SupervisorCall,
    then: impl FnOnce(&mut Loop, Result<SupervisorReply, CallError>) + 'static,
) {
    gen_server::call(lp, sup, call, SUPERVISOR_CALL_TIMEOUT, then);
}

/// Lists a supervisor's children (OTP's `which_children`).
pub fn which_children(
    lp: &mut Loop,
    sup: ServerRef<Supervisor>,
    then: impl FnOnce(&mut Loop, Result<Vec<ChildInfo>, CallError>) + 'static,
) {
    call_sup(lp, sup, SupervisorCall::WhichChildren, move |lp, r| {
        then(
            lp,
            r.map(|reply| match reply {
                SupervisorReply::Children(children) => children,
                _ => Vec::new(),
            }),
        )
    });
}

/// Counts a supervisor's children (OTP's `count_children`).
pub fn count_children(
    lp: &mut Loop,
    sup: ServerRef<Supervisor>,
    then: impl FnOnce(&mut Loop, Result<ChildCounts, CallError>) + 'static,
) {
    call_sup(lp, sup, SupervisorCall::CountChildren, move |lp, r| {
        then(
            lp,
            r.map(|reply| match reply {
                SupervisorReply::Counts(counts) => counts,
                _ => ChildCounts::default(),
            }),
        )
    });
}

fn started(reply: Result<SupervisorReply, CallError>) -> Result<Option<Pid>, SupervisorError> {
    match reply {
        Ok(SupervisorReply::Started(result)) => result,
        Ok(_) => Err(SupervisorError::NotSupported),
        Err(e) => Err(SupervisorError::StartFailed(StartError::Stopped(
            ExitReason::error(e.to_string()),
        ))),
    }
}

fn done(reply: Result<SupervisorReply, CallError>) -> Result<(), SupervisorError> {
    match reply {
        Ok(SupervisorReply::Done(result)) => result,
        Ok(_) => Err(SupervisorError::NotSupported),
        Err(_) => Err(SupervisorError::NotFound),
    }
}

/// Adds and starts a child (a dynamic one for `SimpleOneForOne`).
pub fn start_child(
    lp: &mut Loop,
    sup: ServerRef<Supervisor>,
    spec: ChildSpec,
    then: impl FnOnce(&mut Loop, Result<Option<Pid>, SupervisorError>) + 'static,
) {
    call_sup(lp, sup, SupervisorCall::StartChild(spec), move |lp, r| {
        then(lp, started(r))
    });
}

/// Starts a stopped child again.
pub fn restart_child(
    lp: &mut Loop,
    sup: ServerRef<Supervisor>,
    id: impl Into<String>,
    then: impl FnOnce(&mut Loop, Result<Option<Pid>, SupervisorError>) + 'static,
) {
    call_sup(
        lp,
        sup,
        SupervisorCall::RestartChild(id.into()),
        move |lp, r| then(lp, started(r)),
    );
}

/// Stops a child (its spec stays, unless it is temporary).
pub fn terminate_child(
    lp: &mut Loop,
    sup: ServerRef<Supervisor>,
    id: impl Into<String>,
    then: impl FnOnce(&mut Loop, Result<(), SupervisorError>) + 'static,
) {
    call_sup(
        lp,
        sup,
        SupervisorCall::TerminateChild(id.into()),
        move |lp, r| then(lp, done(r)),
    );
}

/// Removes a stopped child's spec.
pub fn delete_child(
    lp: &mut Loop,
    sup: ServerRef<Supervisor>,
    id: impl Into<String>,
    then: impl FnOnce(&mut Loop, Result<(), SupervisorError>) + 'static,
) {
    call_sup(
        lp,
        sup,
        SupervisorCall::DeleteChild(id.into()),
        move |lp, r| then(lp, done(r)),
    );
}

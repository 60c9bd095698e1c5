//! The exit sequence: refuse messages, run `terminate` (unless killed),
//! cancel what the process owned, linger while `terminate`'s async work
//! finishes (bounded by the grace period), then release everything and tell
//! monitors and the parent.

use ringvisor_runtime::Loop;

use super::{deliver_sys, table, CallFailer, Kill, Pending, SysMsg};
use crate::pid::{ExitReason, Pid};

/// Frees the slot of a process whose init failed: releases what init
/// acquired and fails messages that arrived meanwhile. Nobody is notified:
/// the starter gets the error directly, as with OTP's `start_link`.
pub(crate) fn abandon(
    lp: &mut Loop,
    pid: Pid,
    reason: &ExitReason,
    fail: fn(&mut Loop, Pending, &ExitReason),
) {
    let procs = table(lp);
    let Some(slot) = procs.slot_mut(pid) else {
        return;
    };
    slot.exiting = Some(reason.clone());
    let overflow = std::mem::take(&mut slot.overflow);
    let timers = std::mem::take(&mut slot.timers);
    let ops = std::mem::take(&mut slot.ops);
    let fds = std::mem::take(&mut slot.fds);
    if let Some(name) = slot.name.take() {
        procs.names.remove(&name);
    }
    for timer in timers {
        lp.cancel_timer(timer);
    }
    for op in ops {
        lp.cancel(op);
    }
    for fd in fds {
        lp.close(fd, |_, _| {});
    }
    for pending in overflow {
        fail(lp, pending, reason);
    }
    let failers: Vec<(CallFailer, usize)> = table(lp).call_failers.clone();
    for (failer, calls) in failers {
        failer(lp, calls, pid, reason);
    }
    table(lp).slots.remove(pid.index as usize);
}

/// Registers an outstanding continuation; returns its epoch.
pub(crate) fn hold(lp: &mut Loop, pid: Pid) -> u32 {
    match table(lp).slot_mut(pid) {
        Some(slot) => {
            slot.holds += 1;
            slot.hold_epoch
        }
        None => u32::MAX,
    }
}

/// True if a continuation of `epoch` still counts (the process did not exit
/// since it was made, or it was made by `terminate`).
pub(crate) fn hold_is_current(lp: &mut Loop, pid: Pid, epoch: u32) -> bool {
    table(lp).slot(pid).is_some_and(|s| s.hold_epoch == epoch)
}

/// A continuation of `epoch` completed or was dropped.
pub(crate) fn release(lp: &mut Loop, pid: Pid, epoch: u32) {
    let Some(slot) = table(lp).slot_mut(pid) else {
        return;
    };
    if slot.hold_epoch != epoch {
        return;
    }
    debug_assert!(slot.holds > 0);
    slot.holds = slot.holds.saturating_sub(1);
    finish_lingering_if_idle(lp, pid);
}

/// A lingering process with no more async work finishes exiting.
pub(super) fn finish_lingering_if_idle(lp: &mut Loop, pid: Pid) {
    let Some(slot) = table(lp).slot_mut(pid) else {
        return;
    };
    if slot.ops.is_empty() && slot.holds == 0 && slot.linger_timer.is_some() {
        let timer = slot.linger_timer.take().expect("checked");
        lp.cancel_timer(timer);
        // Finish after the continuation being delivered now has run.
        lp.defer(move |lp| finalize(lp, pid));
    }
}

/// Stops a process from outside (a supervisor's shutdown, a kill). Returns
/// false if it was not alive. With `Kill::Terminate`, `terminate` runs now and
/// the process may linger until its owned async work is done or `grace`
/// passes; its parent and monitors hear of the exit when it is final.
pub fn stop(lp: &mut Loop, pid: Pid, reason: ExitReason, how: Kill) -> bool {
    match table(lp).slot(pid) {
        Some(slot) if slot.exiting.is_none() => {}
        Some(slot) if slot.linger_timer.is_some() && how == Kill::Brutal => {
            // Already lingering after terminate: cut it short.
            let timer = table(lp)
                .slot_mut(pid)
                .and_then(|s| s.linger_timer.take())
                .expect("checked");
            lp.cancel_timer(timer);
            if let Some(slot) = table(lp).slot_mut(pid) {
                slot.exiting = Some(ExitReason::Killed);
            }
            finalize(lp, pid);
            return true;
        }
        _ => return false,
    }
    exit_process(lp, pid, reason, how);
    true
}

/// The exit sequence: refuse messages, run terminate (unless brutal), cancel
/// timers, and either linger for owned ops or finalize now.
pub(super) fn exit_process(lp: &mut Loop, pid: Pid, reason: ExitReason, how: Kill) {
    let procs = table(lp);
    let Some(slot) = procs.slot_mut(pid) else {
        return;
    };
    if slot.exiting.is_some() {
        return;
    }
    let reason = if how == Kill::Brutal {
        ExitReason::Killed
    } else {
        reason
    };
    slot.exiting = Some(reason.clone());
    if let Some(name) = slot.name.take() {
        procs.names.remove(&name);
    }
    // Ops from the process's life are canceled now; only work `terminate`
    // starts may hold the process (lingering) until it completes.
    let ops = table(lp)
        .slot_mut(pid)
        .map(|s| {
            // Continuations made before the exit no longer count.
            s.holds = 0;
            s.hold_epoch = s.hold_epoch.wrapping_add(1);
            std::mem::take(&mut s.ops)
        })
        .unwrap_or_default();
    for op in ops {
        lp.cancel(op);
    }
    if let Kill::Terminate(grace) = how {
        let process = table(lp).slot_mut(pid).and_then(|s| s.process.take());
        if let Some(mut process) = process {
            process.terminate(lp, pid, &reason);
            if let Some(slot) = table(lp).slot_mut(pid) {
                slot.process = Some(process);
            }
        }
        let timers = table(lp)
            .slot_mut(pid)
            .map(|s| std::mem::take(&mut s.timers))
            .unwrap_or_default();
        for timer in timers {
            lp.cancel_timer(timer);
        }
        let lingering = table(lp)
            .slot(pid)
            .is_some_and(|s| !s.ops.is_empty() || s.holds > 0);
        if lingering {
            tracing::debug!(%pid, ?grace, "process lingers for its async work after terminate");
            let timer = lp.timer(grace, move |lp| {
                if let Some(slot) = table(lp).slot_mut(pid) {
                    slot.linger_timer = None;
                    slot.exiting = Some(ExitReason::Killed);
                }
                finalize(lp, pid);
            });
            if let Some(slot) = table(lp).slot_mut(pid) {
                slot.linger_timer = Some(timer);
            }
            return;
        }
    }
    finalize(lp, pid);
}

/// Releases everything the process owns and tells those who care.
fn finalize(lp: &mut Loop, pid: Pid) {
    let procs = table(lp);
    let Some(slot) = procs.slot_mut(pid) else {
        return;
    };
    let reason = slot.exiting.clone().unwrap_or(ExitReason::Killed);
    let mut process = slot.process.take();
    let timers = std::mem::take(&mut slot.timers);
    let ops = std::mem::take(&mut slot.ops);
    let fds = std::mem::take(&mut slot.fds);
    let monitors = std::mem::take(&mut slot.monitors);
    let parent = slot.parent;
    if let Some(timer) = slot.linger_timer.take() {
        lp.cancel_timer(timer);
    }
    for timer in timers {
        lp.cancel_timer(timer);
    }
    for op in ops {
        lp.cancel(op);
    }
    for fd in fds {
        lp.close(fd, |_, _| {});
    }
    if let Some(process) = process.as_deref_mut() {
        process.fail_queued(lp, &reason);
    }
    let failers: Vec<(CallFailer, usize)> = table(lp).call_failers.clone();
    for (failer, calls) in failers {
        failer(lp, calls, pid, &reason);
    }
    table(lp).slots.remove(pid.index as usize);
    drop(process);
    for (monitor, watcher) in monitors {
        let down = SysMsg::Down {
            pid,
            reason: reason.clone(),
            monitor,
        };
        deliver_sys(lp, watcher, down);
    }
    if let Some(parent) = parent {
        deliver_sys(lp, parent, SysMsg::Exit { pid, reason });
    }
}

//! The backend a loop runs on, as an enum rather than a `Box<dyn Driver>`:
//! the loop calls `push` once per op, and a direct call lets the compiler
//! inline the io_uring push into the loop's flush instead of paying an
//! indirect call and its register spills per op.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::{poll::PollDriver, Backend, Driver, Push, Wake};
use crate::op::{OpId, OpKind, OpTable, RawCompletion};
use crate::stats::Stats;

#[cfg(target_os = "linux")]
use super::uring::UringDriver;

/// One of the backends, chosen once when the loop is built.
// One per loop, held inline in it: boxing the bigger variant would only add
// a pointer chase to every push.
#[allow(clippy::large_enum_variant)]
pub(crate) enum AnyDriver {
    #[cfg(target_os = "linux")]
    Uring(UringDriver),
    Poll(PollDriver),
}

/// Calls `$method` on whichever backend this is.
macro_rules! each {
    ($self:ident, $d:ident => $call:expr) => {
        match $self {
            #[cfg(target_os = "linux")]
            AnyDriver::Uring($d) => $call,
            AnyDriver::Poll($d) => $call,
        }
    };
}

impl Driver for AnyDriver {
    fn kind(&self) -> Backend {
        each!(self, d => d.kind())
    }

    fn wants_nonblocking_sockets(&self) -> bool {
        each!(self, d => d.wants_nonblocking_sockets())
    }

    #[inline]
    fn push(
        &mut self,
        id: OpId,
        kind: &mut OpKind,
        done: &mut Vec<RawCompletion>,
        stats: &mut Stats,
    ) -> Push {
        each!(self, d => d.push(id, kind, done, stats))
    }

    #[inline]
    fn push_now(&mut self, id: OpId, kind: &mut OpKind) -> bool {
        each!(self, d => d.push_now(id, kind))
    }

    fn flush(&mut self, done: &mut Vec<RawCompletion>, stats: &mut Stats) -> io::Result<()> {
        each!(self, d => d.flush(done, stats))
    }

    fn cancel(
        &mut self,
        id: OpId,
        kind: &OpKind,
        done: &mut Vec<RawCompletion>,
        stats: &mut Stats,
    ) {
        each!(self, d => d.cancel(id, kind, done, stats))
    }

    fn wait(
        &mut self,
        timeout: Option<Duration>,
        ops: &mut OpTable,
        done: &mut Vec<RawCompletion>,
        stats: &mut Stats,
    ) -> io::Result<()> {
        each!(self, d => d.wait(timeout, ops, done, stats))
    }

    #[inline]
    fn next_completion(&mut self) -> Option<RawCompletion> {
        each!(self, d => d.next_completion())
    }

    fn waker(&self) -> Arc<dyn Wake> {
        each!(self, d => d.waker())
    }
}

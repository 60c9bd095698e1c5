//! Durable gen_servers: state that survives crashes, supervisor restarts and
//! restarts of the whole OS process.
//!
//! A [`DurableServer`] is a deterministic state machine. For each call it
//! either answers from its state ([`Decision::Reply`]) or decides on an
//! **entry** ([`Decision::Record`]): a state change, applied at once and
//! appended to a write-ahead log ([`crate::persist::Store`]). Entries are
//! *events* (what changed, already validated), not the commands that asked
//! for them: replay then never re-runs validation or a command's bug (the
//! counter's `Reset` on 0 panics as a command, never as an entry), and
//! applying them is pure.
//!
//! Replies wait for durability: with [`Durability::Always`] a reply to a call
//! is released only once every entry recorded up to that call is on disk
//! (group commit: one `fdatasync` per tick for all of them), and a reply that
//! only reads also waits behind earlier unsynced entries, so nobody ever sees
//! a state that could still be lost. With [`Durability::Never`] (memory
//! only: no entry is written) a write's reply goes at once. On start the server recovers: latest
//! snapshot, then every log entry after it; calls that arrive meanwhile wait.
//! Every `snapshot_every_entries` entries the state is snapshotted and the
//! log compacted. `terminate` flushes and closes the store (a supervisor's
//! `Timeout` shutdown waits for that) and, with `Durability::Never`, takes
//! a final snapshot first.
//!
//! ```
//! use ringvisor_behaviours::durable::{self, Decision, DurableOptions, DurableServer};
//! use ringvisor_behaviours::persist::DecodeError;
//! use ringvisor_behaviours::gen_server::{self, StartOptions};
//! use std::time::Duration;
//!
//! struct Total(u64);
//! impl DurableServer for Total {
//!     type Args = ();
//!     type Call = Option<u64>; // Some(n): add n; None: read
//!     type Reply = u64;
//!     type Entry = u64;
//!     fn initial(_: &()) -> Self { Total(0) }
//!     fn handle_call(&self, call: Option<u64>) -> Decision<Self> {
//!         match call { Some(n) => Decision::Record(n), None => Decision::Reply(self.0) }
//!     }
//!     fn apply(&mut self, n: u64) -> u64 { self.0 += n; self.0 }
//!     fn encode_entry(n: &u64, out: &mut Vec<u8>) { out.extend_from_slice(&n.to_le_bytes()) }
//!     fn decode_entry(b: &[u8]) -> Result<u64, DecodeError> {
//!         b.try_into().map(u64::from_le_bytes).map_err(|_| DecodeError::new("not 8 bytes"))
//!     }
//!     fn encode_state(&self, out: &mut Vec<u8>) { Self::encode_entry(&self.0, out) }
//!     fn decode_state(_: &(), b: &[u8]) -> Result<Self, DecodeError> { Self::decode_entry(b).map(Total) }
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! for expected in [5, 10] {
//!     let mut lp = ringvisor_runtime::Loop::new().unwrap();
//!     let total = durable::start::<Total>(&mut lp, (), DurableOptions::new(dir.path()), StartOptions::default()).unwrap();
//!     gen_server::call(&mut lp, total, Some(5), Duration::from_secs(5), move |lp, r| {
//!         assert_eq!(r, Ok(expected)); // 5, then 10 after a "restart"
//!         gen_server::stop(lp, total, ringvisor_behaviours::ExitReason::Shutdown);
//!     });
//!     lp.run().unwrap();
//! }
//! ```

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;

use ringvisor_runtime::Loop;

use crate::call::From;
use crate::gen_server::{self, Ctx, GenServer, Init, Reply, ServerRef, StartError, StartOptions};
use crate::persist::{
    DecodeError, Durability, OpenError, Options, Recovered, SharedLog, Store, StoreStats,
};
use crate::pid::ExitReason;

/// Entries between snapshots by default.
pub const SNAPSHOT_EVERY_ENTRIES_DEFAULT: u64 = 10_000;

/// What a durable server does with a call.
pub enum Decision<D: DurableServer> {
    /// Answer from the state; nothing changes.
    Reply(D::Reply),
    /// Change the state: apply this entry (its result is the reply) and log it.
    Record(D::Entry),
}

/// A deterministic state machine whose changes are logged.
pub trait DurableServer: Sized + 'static {
    /// What the server starts from (and recovers with).
    type Args: 'static;
    /// Requests.
    type Call: 'static;
    /// Replies.
    type Reply: 'static;
    /// A state change, as logged.
    type Entry: 'static;

    /// The state when nothing was recovered.
    fn initial(args: &Self::Args) -> Self;
    /// Decides how to answer `call` (no state change here: record an entry).
    fn handle_call(&self, call: Self::Call) -> Decision<Self>;
    /// Applies an entry, live or on replay; returns the reply for a live call.
    /// Must be deterministic, do no I/O and not panic (a logged entry that
    /// panics would panic again on every replay): validate in `handle_call`.
    fn apply(&mut self, entry: Self::Entry) -> Self::Reply;
    /// Appends the encoding of an entry.
    fn encode_entry(entry: &Self::Entry, out: &mut Vec<u8>);
    /// Decodes an entry.
    fn decode_entry(bytes: &[u8]) -> Result<Self::Entry, DecodeError>;
    /// Appends a snapshot of the state.
    fn encode_state(&self, out: &mut Vec<u8>);
    /// Rebuilds the state from a snapshot.
    fn decode_state(args: &Self::Args, bytes: &[u8]) -> Result<Self, DecodeError>;

    /// Sees the store's counters after each acknowledged batch (for status
    /// pages); does nothing by default.
    fn observe(&mut self, _stats: &StoreStats) {}

    /// Runs once recovery is complete, before any call is served (a hook
    /// for readiness checks); does nothing by default.
    fn recovered(&mut self) {}
}

/// Where and how a durable server keeps its state.
#[derive(Debug, Clone)]
pub struct DurableOptions {
    /// Its data directory (one per server; locked while open). With a
    /// shared log: the directory of its snapshots.
    pub dir: PathBuf,
    /// The store's durability and limits (ignored with a shared log, whose
    /// own options apply).
    pub store: Options,
    /// Snapshot (and compact the log) after this many entries.
    pub snapshot_every_entries: u64,
    /// Log to a stream of this shared log instead of a log of its own.
    pub log: Option<(SharedLog, u32)>,
}

impl DurableOptions {
    /// Defaults (`Durability::Always`) in `dir`, with a log of its own.
    pub fn new(dir: impl Into<PathBuf>) -> DurableOptions {
        DurableOptions {
            dir: dir.into(),
            store: Options::default(),
            snapshot_every_entries: SNAPSHOT_EVERY_ENTRIES_DEFAULT,
            log: None,
        }
    }

    /// Defaults, logging to stream `stream` of `log` (one writer and one
    /// `fdatasync` per tick for every server on it), snapshots in `dir`.
    ///
    /// ```
    /// use ringvisor_behaviours::durable::DurableOptions;
    /// use ringvisor_behaviours::persist::{Options, SharedLog};
    /// let tmp = tempfile::tempdir().unwrap();
    /// let mut lp = ringvisor_runtime::Loop::new().unwrap();
    /// let log = SharedLog::open_blocking(&mut lp, &tmp.path().join("log"), Options::default()).unwrap();
    /// let options = DurableOptions::shared(tmp.path().join("server-0"), &log, 0);
    /// assert_eq!(options.log.map(|(_, stream)| stream), Some(0));
    /// ```
    pub fn shared(dir: impl Into<PathBuf>, log: &SharedLog, stream: u32) -> DurableOptions {
        DurableOptions {
            log: Some((log.clone(), stream)),
            ..DurableOptions::new(dir)
        }
    }
}

enum Phase<D: DurableServer> {
    /// Opening the store; calls wait here.
    Recovering(Vec<(D::Call, From<D::Reply>)>),
    Ready {
        state: D,
        store: Store,
    },
    Closed,
}

/// The gen_server that runs a [`DurableServer`].
pub struct Durable<D: DurableServer> {
    args: D::Args,
    options: DurableOptions,
    phase: Phase<D>,
    /// Replies waiting for the entry with this seq (or an earlier one) to be durable.
    held: VecDeque<(u64, From<D::Reply>, D::Reply)>,
    /// Seq of the last recorded entry, and of the last durable one.
    last_seq: u64,
    durable_seq: u64,
    entries_since_snapshot: u64,
    snapshotting: bool,
    /// What the store has reported since this server last looked.
    progress: Rc<Progress>,
}

/// Durability reports gathered for the server: each appended entry's
/// callback records its seq here, and only the first of a tick's reports
/// sends the server a message (a batch of 64 entries costs one wake-up,
/// not 64).
#[derive(Default)]
struct Progress {
    durable_seq: Cell<u64>,
    failure: RefCell<Option<String>>,
    wake_sent: Cell<bool>,
}

/// A typed reference to a durable server.
pub type DurableRef<D> = ServerRef<Durable<D>>;

/// Starts a durable server: it recovers its state, then serves calls.
pub fn start<D: DurableServer>(
    lp: &mut Loop,
    args: D::Args,
    options: DurableOptions,
    start: StartOptions,
) -> Result<DurableRef<D>, StartError> {
    gen_server::start::<Durable<D>>(lp, (args, options), start)
}

impl<D: DurableServer> GenServer for Durable<D> {
    type Args = (D::Args, DurableOptions);
    type Call = D::Call;
    type Reply = D::Reply;
    type Cast = ();
    type Info = ();
    type Continue = ();

    fn init((args, options): Self::Args, ctx: &mut Ctx<Self>) -> Init<Self> {
        let opened = ctx.later(|me: &mut Durable<D>, ctx, result| me.recovered(ctx, result));
        let (dir, store_options) = (options.dir.clone(), options.store.clone());
        let on_open = move |lp: &mut Loop, result| opened.complete(lp, result);
        match &options.log {
            Some((log, stream)) => log.open_stream(ctx.lp(), *stream, dir, on_open),
            None => Store::open(ctx.lp(), dir, store_options, on_open),
        }
        Init::ok(Durable {
            args,
            options,
            phase: Phase::Recovering(Vec::new()),
            held: VecDeque::new(),
            last_seq: 0,
            durable_seq: 0,
            entries_since_snapshot: 0,
            snapshotting: false,
            progress: Rc::default(),
        })
    }

    fn handle_call(
        &mut self,
        call: D::Call,
        from: From<D::Reply>,
        ctx: &mut Ctx<Self>,
    ) -> Reply<Self> {
        match &mut self.phase {
            Phase::Recovering(waiting) => {
                waiting.push((call, from));
                Reply::later()
            }
            Phase::Ready { .. } => {
                self.serve(ctx, call, from);
                Reply::later()
            }
            Phase::Closed => Reply::later(),
        }
    }

    fn terminate(&mut self, reason: &ExitReason, ctx: &mut Ctx<Self>) {
        let Phase::Ready { state, store } = std::mem::replace(&mut self.phase, Phase::Closed)
        else {
            return;
        };
        let memory_only = store.durability() == Durability::Never;
        if reason.is_normal()
            && (memory_only || self.entries_since_snapshot > 0)
            && !self.snapshotting
        {
            // A clean stop snapshots: the next start replays nothing, and
            // for a memory-only store the snapshot is all that survives.
            let mut bytes = Vec::new();
            state.encode_state(&mut bytes);
            let _ = store.snapshot(ctx.lp(), bytes, self.last_seq, |_, _| {});
        }
        let closed = ctx.later(|me: &mut Durable<D>, ctx, result: std::io::Result<()>| {
            if let Err(e) = result {
                tracing::error!(dir = %me.options.dir.display(), error = %e, "closing the store failed");
                return;
            }
            // Everything appended is on disk now.
            me.release(ctx, u64::MAX);
        });
        if let Err(e) = store.close(ctx.lp(), move |lp, result| closed.complete(lp, result)) {
            tracing::error!(error = %e, "store close refused");
        }
    }
}

/// One entry's durability outcome, from the store: recorded in `progress`,
/// and the server woken unless a wake-up is already on its way.
fn report<D: DurableServer>(
    lp: &mut Loop,
    me: crate::pid::Pid,
    progress: &Progress,
    result: std::io::Result<u64>,
) {
    match result {
        Ok(seq) => progress
            .durable_seq
            .set(progress.durable_seq.get().max(seq)),
        Err(e) => {
            let mut failure = progress.failure.borrow_mut();
            failure.get_or_insert_with(|| e.to_string());
        }
    }
    if !progress.wake_sent.replace(true) {
        // A server that is gone has nobody left to release.
        let _ = gen_server::send_run::<Durable<D>>(lp, me, |me, ctx| me.progressed(ctx));
    }
}

impl<D: DurableServer> Durable<D> {
    /// The store opened (or did not): rebuild the state, serve waiting calls.
    fn recovered(&mut self, ctx: &mut Ctx<Self>, result: Result<(Store, Recovered), OpenError>) {
        let (store, recovered) = match result {
            Ok(opened) => opened,
            Err(e) => {
                tracing::error!(dir = %self.options.dir.display(), error = %e, "durable server cannot recover");
                ctx.stop(ExitReason::error(format!("recovery failed: {e}")));
                return;
            }
        };
        let state = match self.replay(&recovered) {
            Ok(mut state) => {
                state.recovered();
                state
            }
            Err(message) => {
                tracing::error!(dir = %self.options.dir.display(), %message, "durable server cannot replay");
                ctx.stop(ExitReason::error(message));
                return;
            }
        };
        self.last_seq = recovered.next_seq - 1;
        self.durable_seq = self.last_seq;
        self.entries_since_snapshot = recovered.entries.len() as u64;
        tracing::debug!(dir = %self.options.dir.display(), entries = recovered.entries.len(), "recovered");
        let Phase::Recovering(waiting) =
            std::mem::replace(&mut self.phase, Phase::Ready { state, store })
        else {
            unreachable!("recovery completes once")
        };
        for (call, from) in waiting {
            self.serve(ctx, call, from);
        }
    }

    fn replay(&self, recovered: &Recovered) -> Result<D, String> {
        let mut state = match &recovered.snapshot {
            Some(bytes) => {
                D::decode_state(&self.args, bytes).map_err(|e| format!("snapshot: {e}"))?
            }
            None => D::initial(&self.args),
        };
        for (seq, bytes) in &recovered.entries {
            let entry = D::decode_entry(bytes).map_err(|e| format!("log entry {seq}: {e}"))?;
            state.apply(entry);
        }
        Ok(state)
    }

    /// Answers or records one call.
    fn serve(&mut self, ctx: &mut Ctx<Self>, call: D::Call, from: From<D::Reply>) {
        let Phase::Ready { state, store } = &mut self.phase else {
            return;
        };
        match state.handle_call(call) {
            // Replies join the batch's buffer: the scheduler ends a run of
            // them to one call site together.
            Decision::Reply(reply) if self.held.is_empty() => {
                ctx.reply_now(from, reply);
            }
            // Reads wait behind unsynced writes: never show what may be lost.
            Decision::Reply(reply) => self.held.push_back((self.last_seq, from, reply)),
            Decision::Record(entry) => {
                // A memory-only store writes no entry: the entry is as
                // durable as it gets once it has its seq, and its reply
                // goes now, with no callback to wait a tick for.
                let appended = match store.append_unlogged() {
                    Ok(Some(seq)) => Ok((seq, true)),
                    Ok(None) => {
                        let me = ctx.pid();
                        let progress = self.progress.clone();
                        store
                            .append_with(
                                ctx.lp(),
                                |buf| D::encode_entry(&entry, buf),
                                move |lp, result| report::<D>(lp, me, &progress, result),
                            )
                            .map(|seq| (seq, false))
                    }
                    Err(e) => Err(e),
                };
                match appended {
                    Ok((seq, durable)) => {
                        // Logged first, applied second: `apply` must not panic.
                        let reply = state.apply(entry);
                        self.last_seq = seq;
                        self.entries_since_snapshot += 1;
                        if durable && self.held.is_empty() {
                            // Nothing waits ahead of it: answer now (what
                            // `release` would do, without the queue).
                            self.durable_seq = self.durable_seq.max(seq);
                            ctx.reply_now(from, reply);
                        } else {
                            self.held.push_back((seq, from, reply));
                            if durable {
                                self.release(ctx, seq);
                            }
                        }
                        self.maybe_snapshot(ctx);
                    }
                    Err(e) => {
                        // The state changed but cannot be logged: crash, so the
                        // supervisor restarts from what is durable.
                        ctx.stop(ExitReason::error(format!("log append failed: {e}")));
                    }
                }
            }
        }
    }

    /// Appends reported durable (or lost): release the replies now durable,
    /// or crash.
    fn progressed(&mut self, ctx: &mut Ctx<Self>) {
        self.progress.wake_sent.set(false);
        if let Some(e) = self.progress.failure.borrow_mut().take() {
            return ctx.stop(ExitReason::error(format!("log write failed: {e}")));
        }
        if let Phase::Ready { state, store } = &mut self.phase {
            state.observe(&store.stats());
        }
        self.release(ctx, self.progress.durable_seq.get())
    }

    fn release(&mut self, ctx: &mut Ctx<Self>, seq: u64) {
        self.durable_seq = self.durable_seq.max(seq);
        while let Some((needed, _, _)) = self.held.front() {
            if *needed > self.durable_seq {
                break;
            }
            let (_, from, reply) = self.held.pop_front().expect("checked");
            ctx.reply_now(from, reply);
        }
    }

    fn maybe_snapshot(&mut self, ctx: &mut Ctx<Self>) {
        if self.snapshotting || self.entries_since_snapshot < self.options.snapshot_every_entries {
            return;
        }
        let Phase::Ready { state, store } = &self.phase else {
            return;
        };
        let mut bytes = Vec::new();
        state.encode_state(&mut bytes);
        let me = ctx.pid();
        let done = move |lp: &mut Loop, result: std::io::Result<()>| {
            gen_server::send_run::<Durable<D>>(lp, me, move |me, _ctx| {
                me.snapshotting = false;
                // A memory-only store reports no batches: its counters
                // (snapshots) change here.
                if let Phase::Ready { state, store } = &mut me.phase {
                    state.observe(&store.stats());
                }
                if let Err(e) = result {
                    tracing::warn!(dir = %me.options.dir.display(), error = %e, "snapshot failed; the log keeps everything");
                }
            });
        };
        match store.snapshot(ctx.lp(), bytes, self.last_seq, done) {
            Ok(()) => {
                self.snapshotting = true;
                self.entries_since_snapshot = 0;
            }
            Err(e) => tracing::warn!(error = %e, "snapshot refused"),
        }
    }

    /// Number of entries recorded (for status pages).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

//! The usual Rust actor pattern, measured in the same shapes as ringvisor's
//! `benches/behaviours.rs`: a `tokio::spawn`ed task owning a counter, fed by a
//! bounded `mpsc` mailbox, replying through `oneshot` channels, on a
//! current-thread runtime.
//!
//! ```text
//! cargo bench -p ringvisor-peers --bench actor
//! ```
//!
//! Shapes (same names, batch sizes and element counts as `behaviours.rs`):
//! - `in_loop_cast/cast`: 100,000 `try_send` casts from outside the runtime
//!   into a mailbox with room for all of them (like the gen_server bench's
//!   `mailbox_capacity: BATCH + 1`), then `block_on` one call, which returns
//!   once the actor has processed every cast before it.
//! - `in_loop_cast/cast_backpressure_1024`: the same 100,000 casts sent with
//!   `send().await` from a task into the 1024-slot mailbox, then one call.
//! - `in_loop_call/sequential_round_trips`: one spawned task makes 100,000
//!   calls one after another (send with a oneshot, await the reply).
//! - `in_loop_call/64_concurrent_callers`: 64 spawned tasks, 100,000 / 64
//!   calls each.
//! - `cross_thread_call/blocking_call`: per iteration a fresh runtime and
//!   actor on the bench thread and a client thread making 2,000
//!   `blocking_send` + `blocking_recv` calls, then closing the mailbox.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Messages per measured batch (as in `behaviours.rs`).
const BATCH: u64 = 100_000;

/// Slots in the actor's mailbox, unless a bench says otherwise.
const MAILBOX_CAPACITY: usize = 1024;

/// Concurrent callers in the `64_concurrent_callers` shape.
const CALLERS: u64 = 64;

/// Calls per iteration of the cross-thread shape (as in `behaviours.rs`).
const CROSS_THREAD_CALLS: u64 = 2_000;

#[derive(Debug)]
enum Msg {
    Cast(u64),
    Call(u64, oneshot::Sender<u64>),
}

type Mailbox = mpsc::Sender<Msg>;

/// The actor: owns a counter, adds every cast and call to it, replies to
/// calls with the new count. Ends when every sender is gone.
async fn actor(mut inbox: mpsc::Receiver<Msg>) {
    let mut count: u64 = 0;
    while let Some(msg) = inbox.recv().await {
        match msg {
            Msg::Cast(n) => count = count.wrapping_add(n),
            Msg::Call(n, reply) => {
                count = count.wrapping_add(n);
                let _ = reply.send(count);
            }
        }
    }
}

fn new_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime")
}

/// Spawns the actor on `rt` with a mailbox of `capacity` slots.
fn start_actor(rt: &Runtime, capacity: usize) -> (Mailbox, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(capacity);
    let task = rt.spawn(actor(rx));
    (tx, task)
}

async fn call(mailbox: &Mailbox, n: u64) -> u64 {
    let (tx, rx) = oneshot::channel();
    mailbox.send(Msg::Call(n, tx)).await.expect("actor alive");
    rx.await.expect("reply")
}

async fn call_chain(mailbox: Mailbox, calls: u64) {
    for _ in 0..calls {
        call(&mailbox, 1).await;
    }
}

fn casts(c: &mut Criterion) {
    let mut group = c.benchmark_group("in_loop_cast");
    group.throughput(Throughput::Elements(BATCH));
    let rt = new_runtime();
    let (roomy, _roomy_task) = start_actor(&rt, BATCH as usize + 1);
    group.bench_function("cast", |b| {
        b.iter(|| {
            for i in 0..BATCH {
                roomy.try_send(Msg::Cast(i)).expect("room in the mailbox");
            }
            rt.block_on(call(&roomy, 0));
        })
    });
    let (bounded, _bounded_task) = start_actor(&rt, MAILBOX_CAPACITY);
    group.bench_function("cast_backpressure_1024", |b| {
        b.iter(|| {
            let mailbox = bounded.clone();
            rt.block_on(async move {
                for i in 0..BATCH {
                    mailbox.send(Msg::Cast(i)).await.expect("actor alive");
                }
                call(&mailbox, 0).await;
            });
        })
    });
    group.finish();
}

fn calls(c: &mut Criterion) {
    let mut group = c.benchmark_group("in_loop_call");
    group.throughput(Throughput::Elements(BATCH));
    let rt = new_runtime();
    let (mailbox, _task) = start_actor(&rt, MAILBOX_CAPACITY);
    group.bench_function("sequential_round_trips", |b| {
        b.iter(|| {
            let caller = rt.spawn(call_chain(mailbox.clone(), BATCH));
            rt.block_on(caller).expect("caller");
        })
    });
    group.bench_function("64_concurrent_callers", |b| {
        b.iter(|| {
            let callers: Vec<_> = (0..CALLERS)
                .map(|_| rt.spawn(call_chain(mailbox.clone(), BATCH / CALLERS)))
                .collect();
            rt.block_on(async move {
                for caller in callers {
                    caller.await.expect("caller");
                }
            });
        })
    });
    group.finish();
}

fn cross_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("cross_thread_call");
    group.throughput(Throughput::Elements(CROSS_THREAD_CALLS));
    group.sample_size(10);
    group.bench_function("blocking_call", |b| {
        b.iter_batched(
            || (),
            |()| {
                let rt = new_runtime();
                let (mailbox, task) = start_actor(&rt, MAILBOX_CAPACITY);
                let client = std::thread::spawn(move || {
                    for _ in 0..CROSS_THREAD_CALLS {
                        let (tx, rx) = oneshot::channel();
                        mailbox
                            .blocking_send(Msg::Call(1, tx))
                            .expect("actor alive");
                        rx.blocking_recv().expect("reply");
                    }
                    // Dropping the mailbox ends the actor, which ends block_on.
                });
                rt.block_on(task).expect("actor");
                client.join().expect("client");
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, casts, calls, cross_thread);
criterion_main!(benches);

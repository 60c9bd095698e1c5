//! Behaviours on the loop: in-loop cast throughput, in-loop call round trips,
//! and calls from another thread.
//!
//! ```text
//! cargo bench --bench behaviours
//! ```

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringvisor::behaviours::gen_server::{
    self, Ctx, GenServer, Init, Next, Reply, ServerRef, StartOptions,
};
use ringvisor::behaviours::remote::ServerHandle;
use ringvisor::behaviours::From;
use ringvisor::{Backend, Loop};

/// Messages per measured batch.
const BATCH: u64 = 100_000;

struct Sink {
    count: u64,
}

impl GenServer for Sink {
    type Args = ();
    type Call = u64;
    type Reply = u64;
    type Cast = u64;
    type Info = ();
    type Continue = ();
    fn init(_: (), _: &mut Ctx<Self>) -> Init<Self> {
        Init::ok(Sink { count: 0 })
    }
    fn handle_call(&mut self, n: u64, _: From<u64>, _: &mut Ctx<Self>) -> Reply<Self> {
        self.count += n;
        Reply::now(self.count)
    }
    fn handle_cast(&mut self, n: u64, _: &mut Ctx<Self>) -> Next<Self> {
        self.count += n;
        Next::Wait
    }
}

fn new_loop() -> Loop {
    Loop::builder()
        .backend(Backend::Uring)
        .build()
        .expect("io_uring loop")
}

fn start_sink(lp: &mut Loop) -> ServerRef<Sink> {
    let options = StartOptions {
        mailbox_capacity: BATCH as usize + 1,
        ..StartOptions::default()
    };
    gen_server::start::<Sink>(lp, (), options).expect("sink starts")
}

fn casts(c: &mut Criterion) {
    let mut group = c.benchmark_group("in_loop_cast");
    group.throughput(Throughput::Elements(BATCH));
    let mut lp = new_loop();
    let sink = start_sink(&mut lp);
    group.bench_function("cast", |b| {
        b.iter(|| {
            for i in 0..BATCH {
                gen_server::cast(&mut lp, sink, i).expect("room in the mailbox");
            }
            lp.run().expect("loop runs");
        })
    });
    group.finish();
}

/// Issues the next call from the previous call's continuation.
fn call_chain(lp: &mut Loop, sink: ServerRef<Sink>, left: Rc<Cell<u64>>) {
    if left.get() == 0 {
        return;
    }
    left.set(left.get() - 1);
    gen_server::call(lp, sink, 1, Duration::from_secs(5), move |lp, reply| {
        assert!(reply.is_ok());
        call_chain(lp, sink, left);
    });
}

fn calls(c: &mut Criterion) {
    let mut group = c.benchmark_group("in_loop_call");
    group.throughput(Throughput::Elements(BATCH));
    let mut lp = new_loop();
    let sink = start_sink(&mut lp);
    group.bench_function("sequential_round_trips", |b| {
        b.iter(|| {
            call_chain(&mut lp, sink, Rc::new(Cell::new(BATCH)));
            lp.run().expect("loop runs");
        })
    });
    // Many callers at once: 64 chains sharing the batch.
    group.bench_function("64_concurrent_callers", |b| {
        b.iter(|| {
            for _ in 0..64 {
                call_chain(&mut lp, sink, Rc::new(Cell::new(BATCH / 64)));
            }
            lp.run().expect("loop runs");
        })
    });
    group.finish();
}

fn cross_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("cross_thread_call");
    let calls = 2_000u64;
    group.throughput(Throughput::Elements(calls));
    group.sample_size(10);
    group.bench_function("blocking_call", |b| {
        b.iter_batched(
            || (),
            |()| {
                let mut lp = new_loop();
                let sink = start_sink(&mut lp);
                let handle = ServerHandle::new(lp.handle(), sink);
                let client = std::thread::spawn(move || {
                    for _ in 0..calls {
                        handle.call(1, Duration::from_secs(5)).expect("reply");
                    }
                    handle.stop_loop();
                });
                lp.timer(Duration::from_secs(60), |_| {});
                lp.run().expect("loop runs");
                client.join().expect("client");
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, casts, calls, cross_thread);
criterion_main!(benches);

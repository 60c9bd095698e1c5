//! In-loop gen_server micro-benchmarks (issue 8): casts and calls between
//! callbacks on one loop, no I/O.
//!
//! ```text
//! cargo bench --bench behaviours
//! ```

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringvisor::behaviours::gen_server::{self, Ctx, GenServer, Init, Next, Reply, StartOptions};
use ringvisor::behaviours::{From, ServerRef};
use ringvisor::{Backend, Loop};

/// Messages per measured iteration (within the default mailbox capacity).
const BATCHES: [usize; 2] = [1, 256];
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

struct Counter(u64);

impl GenServer for Counter {
    type Args = ();
    type Call = u64;
    type Reply = u64;
    type Cast = u64;
    type Info = ();
    type Continue = ();

    fn init(_: (), _ctx: &mut Ctx<Self>) -> Init<Self> {
        Init::ok(Counter(0))
    }

    fn handle_call(&mut self, n: u64, _from: From<u64>, _ctx: &mut Ctx<Self>) -> Reply<Self> {
        self.0 += n;
        Reply::now(self.0)
    }

    fn handle_cast(&mut self, n: u64, _ctx: &mut Ctx<Self>) -> Next<Self> {
        self.0 += n;
        Next::Wait
    }
}

/// Replies received by call continuations, kept in the loop.
struct Replies(u64);

fn setup() -> (Loop, ServerRef<Counter>) {
    let mut lp = Loop::builder()
        .backend(Backend::Auto)
        .build()
        .expect("loop");
    lp.insert_extension(Replies(0));
    let server = gen_server::start::<Counter>(&mut lp, (), StartOptions::default()).expect("start");
    (lp, server)
}

fn casts(lp: &mut Loop, server: ServerRef<Counter>, batch: usize) {
    for _ in 0..batch {
        gen_server::cast(lp, server, 1).expect("mailbox has room");
    }
    lp.run_nowait().expect("run");
}

fn calls(lp: &mut Loop, server: ServerRef<Counter>, batch: usize) {
    let want = lp.extension::<Replies>().map_or(0, |r| r.0) + batch as u64;
    for _ in 0..batch {
        gen_server::call(lp, server, 1, CALL_TIMEOUT, |lp, reply| {
            assert!(reply.is_ok());
            if let Some(r) = lp.extension_mut::<Replies>() {
                r.0 += 1;
            }
        });
    }
    while lp.extension::<Replies>().map_or(0, |r| r.0) < want {
        lp.run_nowait().expect("run");
    }
}

fn gen_server_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("gen_server");
    for batch in BATCHES {
        group.throughput(Throughput::Elements(batch as u64));
        let (mut lp, server) = setup();
        group.bench_with_input(BenchmarkId::new("cast", batch), &batch, |b, &n| {
            b.iter(|| casts(&mut lp, server, n))
        });
        let (mut lp, server) = setup();
        group.bench_with_input(BenchmarkId::new("call", batch), &batch, |b, &n| {
            b.iter(|| calls(&mut lp, server, n))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = gen_server_benches
}
criterion_main!(benches);

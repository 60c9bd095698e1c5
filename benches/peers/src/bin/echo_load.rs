//! Echo load client: many connections, each sending a fixed-size message and
//! waiting for it to come back (one message in flight per connection), for a
//! bounded time. Runs on one thread (tokio current-thread) so it can be pinned
//! to one core, and reports its own CPU use so a reader sees when the client,
//! not the server, is the bottleneck.
//!
//! Prints one line of `key=value` pairs:
//! `msgs=N total_msgs=T msgs_per_s=R p50_us=A p99_us=B client_cpu_pct=C errors=E`,
//! where `msgs` counts the measured window and `total_msgs` the warm-up too.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use ringvisor_peers::latency::{percentile_us, process_cpu_time};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections a run may open.
const CONNECTIONS_MAX: usize = 10_000;

#[derive(Parser, Debug)]
#[command(about = "Echo load client for benches/run.sh")]
struct Args {
    /// Server address.
    #[arg(long)]
    addr: SocketAddr,
    /// Concurrent connections, one message in flight on each.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    size_bytes: usize,
    /// Measured time, after the warm-up.
    #[arg(long, default_value_t = 5000)]
    duration_ms: u64,
    /// Warm-up time, not counted.
    #[arg(long, default_value_t = 500)]
    warmup_ms: u64,
}

#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    assert!(
        (1..=CONNECTIONS_MAX).contains(&args.connections),
        "--connections must be 1..={CONNECTIONS_MAX}"
    );
    assert!(args.size_bytes > 0, "--size-bytes must be positive");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let cpu_before = process_cpu_time();
    let (mut samples_ns, total_msgs, errors) = rt.block_on(run(&args))?;
    let wall = started.elapsed();
    let cpu = process_cpu_time() - cpu_before;
    let measured_s = Duration::from_millis(args.duration_ms).as_secs_f64();
    let msgs = samples_ns.len();
    println!(
        "msgs={msgs} total_msgs={total_msgs} msgs_per_s={:.0} p50_us={:.1} p99_us={:.1} client_cpu_pct={:.1} errors={errors}",
        msgs as f64 / measured_s,
        percentile_us(&mut samples_ns, 50.0),
        percentile_us(&mut samples_ns, 99.0),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
    );
    Ok(())
}

async fn run(args: &Args) -> std::io::Result<(Vec<u64>, u64, usize)> {
    let mut streams = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let stream = TcpStream::connect(args.addr).await?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    let now = Instant::now();
    let measure_from = now + Duration::from_millis(args.warmup_ms);
    let window = Window {
        measure_from,
        end: measure_from + Duration::from_millis(args.duration_ms),
    };
    let local = tokio::task::LocalSet::new();
    let mut tasks = Vec::with_capacity(streams.len());
    for stream in streams {
        let size = args.size_bytes;
        tasks.push(local.spawn_local(async move { ping_pong(stream, size, window).await }));
    }
    local.await;
    let mut samples_ns = Vec::new();
    let mut total_msgs = 0;
    let mut errors = 0;
    for task in tasks {
        match task.await {
            Ok(Ok((mut samples, total))) => {
                samples_ns.append(&mut samples);
                total_msgs += total;
            }
            _ => errors += 1,
        }
    }
    Ok((samples_ns, total_msgs, errors))
}

async fn ping_pong(
    mut stream: TcpStream,
    size_bytes: usize,
    window: Window,
) -> std::io::Result<(Vec<u64>, u64)> {
    let message = vec![b'x'; size_bytes];
    let mut reply = vec![0u8; size_bytes];
    let mut samples_ns = Vec::new();
    let mut total = 0;
    loop {
        let sent_at = Instant::now();
        if sent_at >= window.end {
            return Ok((samples_ns, total));
        }
        stream.write_all(&message).await?;
        stream.read_exact(&mut reply).await?;
        total += 1;
        if sent_at >= window.measure_from {
            samples_ns.push(sent_at.elapsed().as_nanos() as u64);
        }
    }
}

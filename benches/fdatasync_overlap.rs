//! Do concurrent `fdatasync`s overlap on this machine, on one file as they
//! do on several? `chains` write→fdatasync chains run at once on the loop,
//! all appending to one file or each to its own; the table shows syncs/s.
//! If one file's syncs serialize in the kernel, a shared log cannot gain
//! from having several batches in flight on one file.
//!
//! ```text
//! cargo bench --bench fdatasync_overlap
//! ```

use std::cell::Cell;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringvisor::{Backend, Loop};

const BATCH_BYTES: usize = 640;
const RUN: Duration = Duration::from_millis(1500);
const REPS: usize = 3;

struct File {
    fd: RawFd,
    len_bytes: Cell<u64>,
}

struct Probe {
    synced: Cell<u64>,
    deadline: Instant,
    in_flight: Cell<u64>,
}

fn chain(lp: &mut Loop, file: &Rc<File>, probe: &Rc<Probe>) {
    if lp.now() >= probe.deadline {
        return;
    }
    let offset = file.len_bytes.get();
    file.len_bytes.set(offset + BATCH_BYTES as u64);
    probe.in_flight.set(probe.in_flight.get() + 1);
    let (f, p) = (file.clone(), probe.clone());
    lp.write_at(
        file.fd,
        vec![0x5a; BATCH_BYTES],
        offset,
        move |lp, res, _| {
            assert_eq!(res.expect("write"), BATCH_BYTES);
            let fd = f.fd;
            lp.fdatasync(fd, move |lp, res| {
                res.expect("fdatasync");
                p.synced.set(p.synced.get() + 1);
                p.in_flight.set(p.in_flight.get() - 1);
                chain(lp, &f, &p);
            });
        },
    );
}

fn syncs_per_sec(backend: Backend, chains: usize, files: usize) -> f64 {
    let dir = tempfile::tempdir_in(std::env::var("PROBE_DIR").unwrap_or_else(|_| ".".into()))
        .expect("dir");
    let mut lp = Loop::builder().backend(backend).build().expect("loop");
    let mut owned = Vec::new();
    let files: Vec<Rc<File>> = (0..files)
        .map(|i| {
            let f = std::fs::File::create(dir.path().join(format!("f{i}"))).expect("create");
            let file = Rc::new(File {
                fd: std::os::fd::AsRawFd::as_raw_fd(&f),
                len_bytes: Cell::new(0),
            });
            owned.push(f);
            file
        })
        .collect();
    let probe = Rc::new(Probe {
        synced: Cell::new(0),
        deadline: Instant::now() + RUN,
        in_flight: Cell::new(0),
    });
    let start = Instant::now();
    for c in 0..chains {
        chain(&mut lp, &files[c % files.len()], &probe);
    }
    while probe.in_flight.get() > 0 {
        lp.run_once().expect("tick");
    }
    probe.synced.get() as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    println!("| backend | chains | syncs/s, one file | syncs/s, a file per chain |");
    println!("|---|---|---|---|");
    for backend in [Backend::Uring, Backend::Poll] {
        for chains in [1, 2, 4, 8] {
            let mut one = Vec::new();
            let mut many = Vec::new();
            for _ in 0..REPS {
                one.push(syncs_per_sec(backend, chains, 1));
                many.push(syncs_per_sec(backend, chains, chains));
            }
            one.sort_by(f64::total_cmp);
            many.sort_by(f64::total_cmp);
            println!(
                "| {backend:?} | {chains} | {:.0} | {:.0} |",
                one[REPS / 2],
                many[REPS / 2]
            );
        }
    }
}

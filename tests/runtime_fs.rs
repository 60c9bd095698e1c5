//! File-system ops on both backends: write + fdatasync + read back, vectored
//! writes, atomic rename, mkdir/unlink/rmdir and their errors.

mod runtime_support;

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use ringvisor::{backend_tests, Loop, OpResult};
use runtime_support::*;

const RUN_BOUND: Duration = Duration::from_secs(30);

fn new_loop(backend: ringvisor::Backend) -> Loop {
    Loop::builder().backend(backend).build().expect("loop")
}

/// Runs one op-producing closure to completion and returns what its callback
/// produced.
fn run_op<T: 'static, R>(
    lp: &mut Loop,
    start: impl FnOnce(&mut Loop, Box<dyn FnOnce(T)>) -> R,
) -> T {
    let slot: Rc<RefCell<Option<T>>> = Rc::default();
    let s = slot.clone();
    start(lp, Box::new(move |value| *s.borrow_mut() = Some(value)));
    lp.run_for(RUN_BOUND).expect("run");
    let value = slot.borrow_mut().take();
    value.expect("the op completed")
}

fn open(lp: &mut Loop, path: &Path, flags: i32, mode: u32) -> OpResult<RawFd> {
    let path = path.to_path_buf();
    run_op(lp, move |lp, done| {
        lp.open(path, flags, mode, move |_, res| done(res));
    })
}

fn close(lp: &mut Loop, fd: RawFd) {
    run_op(lp, move |lp, done| {
        lp.close(fd, move |_, res| done(res));
    })
    .expect("close");
}

fn read_at(lp: &mut Loop, fd: RawFd, capacity: usize, offset: u64) -> (OpResult<usize>, Vec<u8>) {
    run_op(lp, move |lp, done| {
        lp.read_at(
            fd,
            Vec::with_capacity(capacity),
            offset,
            move |_, res, buf| done((res, buf)),
        );
    })
}

fn unit_op<R>(
    lp: &mut Loop,
    start: impl FnOnce(&mut Loop, Box<dyn FnOnce(OpResult<()>)>) -> R,
) -> OpResult<()> {
    run_op(lp, start)
}

fn errno<T: std::fmt::Debug>(res: OpResult<T>) -> i32 {
    res.expect_err("the op fails")
        .raw_os_error()
        .expect("an errno")
}

fn create(lp: &mut Loop, path: &Path) -> RawFd {
    open(
        lp,
        path,
        libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC,
        0o644,
    )
    .expect("create")
}

fn scratch(name: &str, backend: ringvisor::Backend) -> PathBuf {
    scratch_dir(name, backend)
}

backend_tests! {
    fn write_fdatasync_and_read_back(backend) {
        let dir = scratch("write-sync-read", backend);
        let path = dir.join("data");
        let mut lp = new_loop(backend);
        let fd = create(&mut lp, &path);
        let data = pattern(100_000);
        let (res, back) = run_op(&mut lp, |lp, done| {
            lp.write_at(fd, data.clone(), 0, move |_, res, buf| done((res, buf)));
        });
        assert_eq!(res.expect("write"), 100_000);
        assert_eq!(back, data, "the buffer comes back");
        unit_op(&mut lp, |lp, done| {
            lp.fdatasync(fd, move |_, res| done(res));
        })
        .expect("fdatasync");
        unit_op(&mut lp, |lp, done| {
            lp.fsync(fd, move |_, res| done(res));
        })
        .expect("fsync");
        let (res, got) = read_at(&mut lp, fd, 200_000, 0);
        assert_eq!(res.expect("read"), 100_000);
        assert_eq!(got, data);
        let (res, tail) = read_at(&mut lp, fd, 10, 99_995);
        assert_eq!(res.expect("read tail"), 5);
        assert_eq!(tail, &data[99_995..]);
        let (res, eof) = read_at(&mut lp, fd, 10, 100_000);
        assert_eq!(res.expect("read at eof"), 0);
        assert!(eof.is_empty());
        close(&mut lp, fd);
        assert_eq!(std::fs::read(&path).expect("read with std"), data);
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    fn write_vectored_at_writes_every_buffer_in_order(backend) {
        let dir = scratch("writev", backend);
        let path = dir.join("data");
        std::fs::write(&path, b"0123456789").expect("seed");
        let mut lp = new_loop(backend);
        let fd = open(&mut lp, &path, libc::O_RDWR, 0).expect("open");
        let bufs = vec![b"abc".to_vec(), Vec::new(), b"defg".to_vec(), vec![b'z'; 5000]];
        let (res, back) = run_op(&mut lp, |lp, done| {
            lp.write_vectored_at(fd, bufs.clone(), 4, move |_, res, bufs| done((res, bufs)));
        });
        assert_eq!(res.expect("writev"), 3 + 4 + 5000);
        assert_eq!(back, bufs, "the buffers come back");
        close(&mut lp, fd);
        let mut expected = b"0123abcdefg".to_vec();
        expected.extend(vec![b'z'; 5000]);
        assert_eq!(std::fs::read(&path).expect("read"), expected);
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    fn rename_replaces_the_target_atomically(backend) {
        let dir = scratch("rename", backend);
        let (target, tmp) = (dir.join("state"), dir.join("state.tmp"));
        std::fs::write(&target, b"old contents").expect("seed");
        let mut lp = new_loop(backend);
        let fd = create(&mut lp, &tmp);
        run_op(&mut lp, |lp, done| {
            lp.write_at(fd, b"new contents".to_vec(), 0, move |_, res, _| done(res));
        })
        .expect("write");
        unit_op(&mut lp, |lp, done| lp.fdatasync(fd, move |_, res| done(res))).expect("sync");
        close(&mut lp, fd);
        // A reader holding the old file keeps seeing the old contents.
        let old_reader = open(&mut lp, &target, libc::O_RDONLY, 0).expect("open old");
        let (t, f) = (tmp.clone(), target.clone());
        unit_op(&mut lp, move |lp, done| lp.rename(t, f, move |_, res| done(res))).expect("rename");
        assert_eq!(errno(open(&mut lp, &tmp, libc::O_RDONLY, 0)), libc::ENOENT, "old name gone");
        let new_reader = open(&mut lp, &target, libc::O_RDONLY, 0).expect("open new");
        assert_eq!(read_at(&mut lp, new_reader, 64, 0).1, b"new contents");
        assert_eq!(read_at(&mut lp, old_reader, 64, 0).1, b"old contents");
        close(&mut lp, new_reader);
        close(&mut lp, old_reader);
        assert_eq!(std::fs::read_dir(&dir).expect("list").count(), 1);
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    fn mkdir_unlink_rmdir_and_their_errors(backend) {
        let dir = scratch("mkdir", backend);
        let sub = dir.join("sub");
        let file = sub.join("f");
        let mut lp = new_loop(backend);
        let s = sub.clone();
        unit_op(&mut lp, move |lp, done| lp.mkdir(s, 0o755, move |_, res| done(res))).expect("mkdir");
        assert!(sub.is_dir());
        let s = sub.clone();
        let again = unit_op(&mut lp, move |lp, done| lp.mkdir(s, 0o755, move |_, res| done(res)));
        assert_eq!(errno(again), libc::EEXIST);
        let fd = create(&mut lp, &file);
        close(&mut lp, fd);
        let s = sub.clone();
        let busy = unit_op(&mut lp, move |lp, done| lp.rmdir(s, move |_, res| done(res)));
        assert_eq!(errno(busy), libc::ENOTEMPTY);
        let f = file.clone();
        unit_op(&mut lp, move |lp, done| lp.unlink(f, move |_, res| done(res))).expect("unlink");
        assert!(!file.exists());
        let f = file.clone();
        let gone = unit_op(&mut lp, move |lp, done| lp.unlink(f, move |_, res| done(res)));
        assert_eq!(errno(gone), libc::ENOENT);
        let s = sub.clone();
        unit_op(&mut lp, move |lp, done| lp.rmdir(s, move |_, res| done(res))).expect("rmdir");
        assert!(!sub.exists());
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    fn open_of_a_missing_file_is_enoent(backend) {
        let dir = scratch("missing", backend);
        let mut lp = new_loop(backend);
        assert_eq!(errno(open(&mut lp, &dir.join("nope"), libc::O_RDONLY, 0)), libc::ENOENT);
        // A path with a NUL byte fails too, through the callback, not a panic.
        let bad = PathBuf::from("bad\0path");
        let err = open(&mut lp, &bad, libc::O_RDONLY, 0).expect_err("NUL in path");
        assert!(!err.is_canceled(), "{err}");
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    fn many_file_ops_at_once_all_complete(backend) {
        let dir = scratch("many", backend);
        let path = dir.join("data");
        let mut lp = new_loop(backend);
        let fd = create(&mut lp, &path);
        let done = Rc::new(RefCell::new(0usize));
        for i in 0..256u64 {
            let d = done.clone();
            lp.write_at(fd, vec![i as u8; 512], i * 512, move |_, res, _| {
                assert_eq!(res.expect("write"), 512);
                *d.borrow_mut() += 1;
            });
        }
        lp.run_for(RUN_BOUND).expect("run");
        assert_eq!(*done.borrow(), 256);
        close(&mut lp, fd);
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(bytes.len(), 256 * 512);
        assert!(bytes.chunks(512).enumerate().all(|(i, c)| c.iter().all(|b| *b == i as u8)));
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}

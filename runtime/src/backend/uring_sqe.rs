//! Building the SQE of each op kind. Every pointer in an SQE goes to heap
//! memory owned by the op's slot, which stays in the op table until the op's
//! completion.

use io_uring::{opcode, squeue, types};

use crate::op::OpKind;

/// Builds the SQE for an op. Pointers go to heap memory owned by the op slot.
#[inline]
pub(super) fn build_sqe(kind: &mut OpKind) -> squeue::Entry {
    match kind {
        OpKind::Nop => opcode::Nop::new().build(),
        OpKind::Accept { fd, addr } => opcode::Accept::new(
            types::Fd(*fd),
            &mut addr.storage as *mut _ as *mut libc::sockaddr,
            &mut addr.len,
        )
        .flags(libc::SOCK_CLOEXEC)
        .build(),
        OpKind::Connect { fd, addr, .. } => opcode::Connect::new(
            types::Fd(*fd),
            &addr.storage as *const _ as *const libc::sockaddr,
            addr.len,
        )
        .build(),
        OpKind::Recv { fd, buf } => {
            let spare = buf.spare_capacity_mut();
            let len = spare.len().min(u32::MAX as usize) as u32;
            opcode::Recv::new(types::Fd(*fd), spare.as_mut_ptr() as *mut u8, len).build()
        }
        OpKind::Send {
            fd, buf, offset, ..
        } => {
            let rest = &buf[*offset..];
            let len = rest.len().min(u32::MAX as usize) as u32;
            opcode::Send::new(types::Fd(*fd), rest.as_ptr(), len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        }
        // The first of a send_recv's linked pair (see `push_send_recv`).
        OpKind::SendRecv { fd, bufs } => {
            let rest = &bufs.out[bufs.sent..];
            opcode::Send::new(types::Fd(*fd), rest.as_ptr(), rest.len() as u32)
                .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
                .build()
        }
        OpKind::Shutdown { fd, how } => opcode::Shutdown::new(types::Fd(*fd), *how).build(),
        OpKind::Close { fd } => opcode::Close::new(types::Fd(*fd)).build(),
        OpKind::Open { path, flags, mode } => {
            opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
                .flags(*flags)
                .mode(*mode)
                .build()
        }
        OpKind::Read { fd, buf, offset } => {
            let spare = buf.spare_capacity_mut();
            let len = spare.len().min(u32::MAX as usize) as u32;
            opcode::Read::new(types::Fd(*fd), spare.as_mut_ptr() as *mut u8, len)
                .offset(*offset)
                .build()
        }
        OpKind::Write { fd, buf, offset } => {
            let len = buf.len().min(u32::MAX as usize) as u32;
            opcode::Write::new(types::Fd(*fd), buf.as_ptr(), len)
                .offset(*offset)
                .build()
        }
        OpKind::Writev { fd, vecs, offset } => {
            let iovecs = &vecs.iovecs;
            opcode::Writev::new(types::Fd(*fd), iovecs.as_ptr(), iovecs.len() as u32)
                .offset(*offset)
                .build()
        }
        OpKind::Fsync { fd, datasync } => {
            let flags = if *datasync {
                types::FsyncFlags::DATASYNC
            } else {
                types::FsyncFlags::empty()
            };
            opcode::Fsync::new(types::Fd(*fd)).flags(flags).build()
        }
        OpKind::Rename { from, to } => opcode::RenameAt::new(
            types::Fd(libc::AT_FDCWD),
            from.as_ptr(),
            types::Fd(libc::AT_FDCWD),
            to.as_ptr(),
        )
        .build(),
        OpKind::Unlink { path, dir } => {
            opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
                .flags(if *dir { libc::AT_REMOVEDIR } else { 0 })
                .build()
        }
        OpKind::Mkdir { path, mode } => {
            opcode::MkDirAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
                .mode(*mode)
                .build()
        }
    }
}

//! io_uring submission, and the ring behind [`IoUringNetwork`](crate::uring::IoUringNetwork):
//! a table of operations that own the memory their entries point at, from submission until
//! the completion hands it back.

use std::io;
use std::net::TcpStream;
use std::os::fd::{FromRawFd, RawFd};
use std::time::Duration;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{IoUring, opcode, squeue, types};

use super::addr::RawAddr;
use crate::uring::{Completion, PrepareError, UringStats};

/// Queues `e` on `ring`'s submission queue; false when the queue is full.
///
/// # Safety
///
/// Every buffer `e` points at must stay allocated and in place, and must not be read or
/// written by Rust code where the kernel writes it, until `e`'s last completion is reaped from
/// `ring` (or until `ring` is dropped, after which the memory must be leaked unless every
/// completion was reaped).
#[inline]
pub(super) unsafe fn push_sqe(ring: &mut IoUring, e: &squeue::Entry) -> bool {
    // SAFETY: the caller upholds `SubmissionQueue::push`'s contract (above).
    unsafe { ring.submission().push(e) }.is_ok()
}

enum OpKind {
    Accept(Box<RawAddr>),
    Recv(Vec<u8>),
    Send(Vec<u8>),
}

struct Op {
    token: u64,
    kind: OpKind,
}

/// An io_uring whose operations own their buffers: an entry points only into its operation's
/// heap memory (a boxed address or a `Vec`'s buffer), which stays in the table, untouched,
/// until its completion is reaped, and is leaked if the kernel never answers.
pub(crate) struct OpRing {
    ring: IoUring,
    ops: Vec<Option<Op>>,
    free: Vec<u32>,
    in_flight: usize,
    stats: UringStats,
}

impl OpRing {
    pub(crate) fn new(entries: u32) -> io::Result<Self> {
        Ok(OpRing {
            ring: IoUring::new(entries)?,
            ops: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            stats: UringStats::default(),
        })
    }

    #[inline]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    #[inline]
    pub(crate) fn stats(&self) -> UringStats {
        self.stats
    }

    fn slot(&mut self, op: Op) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.ops[i as usize] = Some(op);
                i
            }
            None => {
                self.ops.push(Some(op));
                // More than u32::MAX operations in flight cannot fit a ring anyway.
                (self.ops.len() - 1) as u32
            }
        }
    }

    fn push(&mut self, idx: u32, entry: squeue::Entry) -> Result<(), io::Error> {
        let entry = entry.user_data(u64::from(idx));
        for attempt in 0..2 {
            // SAFETY: the entry was built by `queue` from `self.ops[idx]` and points only at
            // that operation's heap memory (a boxed address or a Vec's buffer), which stays in
            // place, untouched, until its completion is reaped in `process_completions`, or is
            // leaked in `drop`.
            if unsafe { push_sqe(&mut self.ring, &entry) } {
                self.in_flight += 1;
                self.stats.prepared += 1;
                return Ok(());
            }
            if attempt == 0 {
                // Full submission queue: hand it to the kernel, then retry.
                self.stats.sq_full_flushes += 1;
                self.submit()?;
            }
        }
        Err(io::Error::other("submission queue full"))
    }

    fn queue(&mut self, op: Op, build: impl FnOnce(&mut Op) -> squeue::Entry) -> Result<(), PrepareError> {
        let idx = self.slot(op);
        let entry = match self.ops[idx as usize].as_mut() {
            Some(op) => build(op),
            None => unreachable!("slot just filled"),
        };
        self.push(idx, entry).map_err(|error| {
            let op = self.ops[idx as usize].take();
            self.free.push(idx);
            PrepareError {
                error,
                buf: match op.map(|o| o.kind) {
                    Some(OpKind::Recv(b) | OpKind::Send(b)) => Some(b),
                    _ => None,
                },
            }
        })
    }

    /// Queues an accept on listening socket `fd`.
    pub(crate) fn queue_accept(&mut self, fd: RawFd, token: u64) -> Result<(), PrepareError> {
        let op = Op { token, kind: OpKind::Accept(Box::new(RawAddr::zeroed())) };
        self.queue(op, |op| match &mut op.kind {
            OpKind::Accept(addr) => opcode::Accept::new(
                types::Fd(fd),
                (&mut addr.storage as *mut libc::sockaddr_storage).cast(),
                &mut addr.len,
            )
            .flags(libc::SOCK_CLOEXEC)
            .build(),
            _ => unreachable!("accept op"),
        })
    }

    /// Queues a receive on `fd` into all of `buf`'s length.
    pub(crate) fn queue_recv(&mut self, fd: RawFd, buf: Vec<u8>, token: u64) -> Result<(), PrepareError> {
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        self.queue(Op { token, kind: OpKind::Recv(buf) }, |op| match &mut op.kind {
            OpKind::Recv(b) => opcode::Recv::new(types::Fd(fd), b.as_mut_ptr(), len).build(),
            _ => unreachable!("recv op"),
        })
    }

    /// Queues a send of all of `buf` on `fd`.
    pub(crate) fn queue_send(&mut self, fd: RawFd, buf: Vec<u8>, token: u64) -> Result<(), PrepareError> {
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        self.queue(Op { token, kind: OpKind::Send(buf) }, |op| match &mut op.kind {
            OpKind::Send(b) => {
                opcode::Send::new(types::Fd(fd), b.as_ptr(), len).flags(libc::MSG_NOSIGNAL).build()
            }
            _ => unreachable!("send op"),
        })
    }

    pub(crate) fn submit(&mut self) -> io::Result<usize> {
        self.stats.submits += 1;
        self.ring.submit()
    }

    pub(crate) fn submit_and_wait(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<usize> {
        // Completions not yet reaped count in `in_flight`, so this many can always arrive.
        let want = want.min(self.in_flight);
        self.stats.submits += 1;
        let r = match timeout {
            Some(t) => {
                let ts = Timespec::from(t);
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
            None => self.ring.submit_and_wait(want),
        };
        match r {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => Ok(0),
            r => r,
        }
    }

    pub(crate) fn process_completions(&mut self, mut f: impl FnMut(Completion)) -> usize {
        let mut n = 0;
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            let idx = cqe.user_data() as usize;
            let Some(op) = self.ops.get_mut(idx).and_then(Option::take) else {
                continue;
            };
            self.free.push(idx as u32);
            self.in_flight -= 1;
            self.stats.completed += 1;
            n += 1;
            let res = cqe.result();
            let result = if res < 0 { Err(io::Error::from_raw_os_error(-res)) } else { Ok(res as usize) };
            let c = match op.kind {
                OpKind::Accept(addr) => Completion::Accepted {
                    token: op.token,
                    result: result.and_then(|fd| {
                        let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("bad fd"))?;
                        // SAFETY: a successful accept returns a new fd that we now own.
                        let stream = unsafe { TcpStream::from_raw_fd(fd) };
                        let peer = addr
                            .socket_addr()
                            .or_else(|| stream.peer_addr().ok())
                            .ok_or_else(|| io::Error::other("unknown peer address"))?;
                        Ok((stream, peer))
                    }),
                },
                OpKind::Recv(buf) => Completion::Received { token: op.token, buf, result },
                OpKind::Send(buf) => Completion::Sent { token: op.token, buf, result },
            };
            f(c);
        }
        n
    }
}

impl Drop for OpRing {
    fn drop(&mut self) {
        if self.in_flight == 0 {
            return;
        }
        for idx in 0..self.ops.len() {
            if self.ops[idx].is_some() {
                let cancel = opcode::AsyncCancel::new(idx as u64).build().user_data(u64::MAX);
                // SAFETY: a cancel entry points at no memory.
                if !unsafe { push_sqe(&mut self.ring, &cancel) } {
                    // Full: hand the queue to the kernel, then this cancel gets its room.
                    let _ = self.ring.submit();
                    // SAFETY: as above, a cancel entry points at no memory.
                    let _ = unsafe { push_sqe(&mut self.ring, &cancel) };
                }
            }
        }
        for _ in 0..100 {
            if self.in_flight == 0 {
                return;
            }
            let _ = self.submit_and_wait(1, Some(Duration::from_millis(10)));
            self.process_completions(drop);
        }
        // The kernel still holds some buffers: leak them rather than free them under it.
        for op in self.ops.drain(..).flatten() {
            std::mem::forget(op);
        }
    }
}

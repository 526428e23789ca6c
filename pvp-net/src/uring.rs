//! [`IoUringNetwork`]: a low-level io_uring wrapper for stream sockets (TCP accept, recv,
//! send) and connected datagram sockets, for fronts such as a matchmaking gateway.
//!
//! It owns every buffer while the kernel uses it: `prepare_recv` / `prepare_send` take the
//! `Vec<u8>` by value and [`Completion`] hands it back, so a caller cannot free or reuse a
//! buffer the kernel still writes to. A full submission queue is flushed to the kernel, never
//! silently skipped. Dropping the network with operations in flight cancels them and waits; any
//! the kernel does not finish in time have their buffers leaked, never freed under the kernel.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::{TcpListener, TcpStream};
//! use std::time::Duration;
//! use pvp_net::uring::{Completion, IoUringNetwork};
//!
//! if pvp_net::driver::io_uring_unavailable().is_some() {
//!     return; // kernel without io_uring: nothing to show
//! }
//! let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//! let mut net = IoUringNetwork::new(64).unwrap();
//! net.prepare_accept(&listener, 1).unwrap();
//! net.submit().unwrap();
//! let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
//! let mut accepted = None;
//! while accepted.is_none() {
//!     net.submit_and_wait(1, Some(Duration::from_millis(100))).unwrap();
//!     net.process_completions(|c| {
//!         if let Completion::Accepted { result, .. } = c {
//!             accepted = Some(result.unwrap().0);
//!         }
//!     });
//! }
//! let stream = accepted.unwrap();
//! net.prepare_send(&stream, b"hi".to_vec(), 2).map_err(|e| e.error).unwrap();
//! net.submit().unwrap();
//! let mut got = [0u8; 2];
//! client.read_exact(&mut got).unwrap();
//! assert_eq!(&got, b"hi");
//! client.write_all(b"x").unwrap();
//! ```

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::Duration;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{IoUring, opcode, squeue, types};
use thiserror::Error;

use crate::sys::RawAddr;

/// A finished operation, with the buffer it used handed back.
#[derive(Debug)]
#[non_exhaustive]
pub enum Completion {
    /// An accept finished.
    Accepted {
        /// The caller's token.
        token: u64,
        /// The new connection and its peer.
        result: io::Result<(TcpStream, SocketAddr)>,
    },
    /// A receive finished; `Ok(0)` on a stream means the peer closed.
    Received {
        /// The caller's token.
        token: u64,
        /// The buffer given to `prepare_recv`; the first `n` bytes are new.
        buf: Vec<u8>,
        /// Bytes received.
        result: io::Result<usize>,
    },
    /// A send finished.
    Sent {
        /// The caller's token.
        token: u64,
        /// The buffer given to `prepare_send`.
        buf: Vec<u8>,
        /// Bytes sent (a stream may take fewer than offered).
        result: io::Result<usize>,
    },
}

/// A prepare call that could not queue its operation; the buffer comes back.
#[derive(Debug, Error)]
#[error("could not queue io_uring operation: {error}")]
pub struct PrepareError {
    /// Why.
    pub error: io::Error,
    /// The buffer handed in, if the operation had one.
    pub buf: Option<Vec<u8>>,
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

/// Counters of an [`IoUringNetwork`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct UringStats {
    /// Operations queued.
    pub prepared: u64,
    /// Completions handled.
    pub completed: u64,
    /// Times a full submission queue was flushed to make room.
    pub sq_full_flushes: u64,
    /// `io_uring_enter` calls.
    pub submits: u64,
}

/// An io_uring instance whose operations own their buffers.
pub struct IoUringNetwork {
    ring: IoUring,
    ops: Vec<Option<Op>>,
    free: Vec<u32>,
    in_flight: usize,
    stats: UringStats,
}

impl std::fmt::Debug for IoUringNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoUringNetwork")
            .field("in_flight", &self.in_flight)
            .field("stats", &self.stats)
            .finish()
    }
}

impl IoUringNetwork {
    /// A ring with `entries` submission slots (rounded up to a power of two by the kernel).
    pub fn new(entries: u32) -> io::Result<Self> {
        Ok(IoUringNetwork {
            ring: IoUring::new(entries)?,
            ops: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            stats: UringStats::default(),
        })
    }

    /// Operations submitted or queued and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Counters.
    pub fn stats(&self) -> UringStats {
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
            // SAFETY: the entry points only at memory owned by `self.ops[idx]` (a boxed
            // address or a Vec's heap buffer), which stays in place until its completion is
            // reaped in `process_completions` (or is leaked in `drop`).
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
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

    /// Queues an accept on a listening socket. The socket must stay open until the
    /// completion arrives.
    pub fn prepare_accept(&mut self, listener: &impl AsRawFd, token: u64) -> Result<(), PrepareError> {
        let fd = listener.as_raw_fd();
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

    /// Queues a receive into `buf` (its whole length, not its capacity: an empty `buf` is
    /// refused with [`io::ErrorKind::InvalidInput`], since its `Ok(0)` would read as "peer
    /// closed"). The socket must stay open until the completion, which hands `buf` back.
    pub fn prepare_recv(
        &mut self,
        socket: &impl AsRawFd,
        buf: Vec<u8>,
        token: u64,
    ) -> Result<(), PrepareError> {
        if buf.is_empty() {
            let error = io::Error::new(io::ErrorKind::InvalidInput, "receive buffer of length 0");
            return Err(PrepareError { error, buf: Some(buf) });
        }
        let fd = socket.as_raw_fd();
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        self.queue(Op { token, kind: OpKind::Recv(buf) }, |op| match &mut op.kind {
            OpKind::Recv(b) => opcode::Recv::new(types::Fd(fd), b.as_mut_ptr(), len).build(),
            _ => unreachable!("recv op"),
        })
    }

    /// Queues a send of all of `buf`. The socket must stay open until the completion, which
    /// hands `buf` back.
    pub fn prepare_send(
        &mut self,
        socket: &impl AsRawFd,
        buf: Vec<u8>,
        token: u64,
    ) -> Result<(), PrepareError> {
        let fd = socket.as_raw_fd();
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        self.queue(Op { token, kind: OpKind::Send(buf) }, |op| match &mut op.kind {
            OpKind::Send(b) => {
                opcode::Send::new(types::Fd(fd), b.as_ptr(), len).flags(libc::MSG_NOSIGNAL).build()
            }
            _ => unreachable!("send op"),
        })
    }

    /// Hands every queued operation to the kernel in one system call.
    pub fn submit(&mut self) -> io::Result<usize> {
        self.stats.submits += 1;
        self.ring.submit()
    }

    /// Submits, then waits until `want` completions are ready or `timeout` passes. It never
    /// waits for more completions than operations are [in flight](Self::in_flight): with
    /// none in flight it returns at once rather than block forever.
    pub fn submit_and_wait(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<usize> {
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

    /// Calls `f` for each finished operation, handing its buffer back; returns how many.
    pub fn process_completions(&mut self, mut f: impl FnMut(Completion)) -> usize {
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

impl Drop for IoUringNetwork {
    fn drop(&mut self) {
        if self.in_flight == 0 {
            return;
        }
        for idx in 0..self.ops.len() {
            if self.ops[idx].is_some() {
                let cancel = opcode::AsyncCancel::new(idx as u64).build().user_data(u64::MAX);
                // SAFETY: a cancel entry points at no memory.
                if unsafe { self.ring.submission().push(&cancel) }.is_err() {
                    // Full: hand the queue to the kernel, then this cancel gets its room.
                    let _ = self.ring.submit();
                    // SAFETY: as above, a cancel entry points at no memory.
                    let _ = unsafe { self.ring.submission().push(&cancel) };
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

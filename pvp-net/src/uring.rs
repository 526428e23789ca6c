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
use std::os::fd::AsRawFd;
use std::time::Duration;

use thiserror::Error;

use crate::sys::OpRing;

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
    ring: OpRing,
}

impl std::fmt::Debug for IoUringNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoUringNetwork")
            .field("in_flight", &self.ring.in_flight())
            .field("stats", &self.ring.stats())
            .finish()
    }
}

impl IoUringNetwork {
    /// A ring with `entries` submission slots (rounded up to a power of two by the kernel).
    pub fn new(entries: u32) -> io::Result<Self> {
        Ok(IoUringNetwork { ring: OpRing::new(entries)? })
    }

    /// Operations submitted or queued and not yet completed.
    #[inline]
    pub fn in_flight(&self) -> usize {
        self.ring.in_flight()
    }

    /// Counters.
    #[inline]
    pub fn stats(&self) -> UringStats {
        self.ring.stats()
    }

    /// Queues an accept on a listening socket. The socket must stay open until the
    /// completion arrives.
    pub fn prepare_accept(&mut self, listener: &impl AsRawFd, token: u64) -> Result<(), PrepareError> {
        self.ring.queue_accept(listener.as_raw_fd(), token)
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
        self.ring.queue_recv(socket.as_raw_fd(), buf, token)
    }

    /// Queues a send of all of `buf`. The socket must stay open until the completion, which
    /// hands `buf` back.
    pub fn prepare_send(
        &mut self,
        socket: &impl AsRawFd,
        buf: Vec<u8>,
        token: u64,
    ) -> Result<(), PrepareError> {
        self.ring.queue_send(socket.as_raw_fd(), buf, token)
    }

    /// Hands every queued operation to the kernel in one system call.
    pub fn submit(&mut self) -> io::Result<usize> {
        self.ring.submit()
    }

    /// Submits, then waits until `want` completions are ready or `timeout` passes. It never
    /// waits for more completions than operations are [in flight](Self::in_flight): with
    /// none in flight it returns at once rather than block forever.
    pub fn submit_and_wait(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<usize> {
        self.ring.submit_and_wait(want, timeout)
    }

    /// Calls `f` for each finished operation, handing its buffer back; returns how many.
    pub fn process_completions(&mut self, f: impl FnMut(Completion)) -> usize {
        self.ring.process_completions(f)
    }
}

//! Every `unsafe` block of pvp-net lives in this module (the crate root is
//! `#![deny(unsafe_code)]`, with this module its one `#[allow(unsafe_code)]`): raw syscalls
//! (sockets and their options, `recvmmsg` / `sendmmsg`, `poll`, epoll, CPU affinity, clocks),
//! the kernel's layouts (socket addresses, message headers, control messages), and every piece
//! of memory the kernel reads or writes after a call returns (io_uring).
//!
//! The rest of the crate reaches the kernel only through the safe `pub(crate)` interfaces
//! here, and none of them takes a raw pointer, a raw `msghdr` / `mmsghdr` or an io_uring
//! entry from outside:
//!
//! - [`msg`]: every header handed to the kernel is built here and points only into memory of
//!   the type that holds it ([`MmsgRecv`], [`SendSlots`], [`GsoMsg`]); a synchronous call
//!   ([`MmsgRecv::recv`], [`MmsgSend::send`]) borrows that memory for its duration.
//! - [`uring`]: [`OpRing`], the ring behind [`IoUringNetwork`](crate::uring::IoUringNetwork),
//!   whose operations own their buffers from submission until the completion hands them back.
//! - [`udp_ring`]: [`UdpRing`], the io_uring UDP worker's ring, which owns its buffer ring
//!   ([`buf_ring`]), receive slots, outbox and GSO pool, queues every entry and reaps every
//!   completion itself, so it knows what the kernel holds.
//! - io_uring memory outlives the kernel's use of it: each ring is dropped before that memory,
//!   and memory the kernel has not given back within a bounded wait at drop is leaked, never
//!   freed.
//!
//! What this module cannot check and relies on: raw fds passed in name sockets the caller
//! keeps open (a wrong fd makes a call fail or act on another socket; it never makes the kernel
//! touch memory of ours beyond the buffers named above). And [`UdpRing::out`] lends the
//! [`Outbox`](crate::endpoint::Outbox) to handlers by `&mut`: crate code that replaced the
//! whole outbox (or its [`SendSlots`]) while sends were in flight would let the kernel read,
//! never write, freed memory until those sends complete; nothing in the crate does, and code
//! outside it cannot (the outbox has no public constructor).

mod addr;
mod buf_ring;
mod msg;
mod process;
mod socket;
mod udp_ring;
mod uring;

use std::io;

pub(crate) use msg::{GsoMsg, MmsgRecv, MmsgSend, OutMsg, SendSlots};
pub(crate) use process::io_uring_disabled;
pub use process::{allowed_cpus, pin_to_cpu, process_cpu_time, resident_bytes};
pub(crate) use socket::{Epoll, enable_pktinfo, gso_supported, poll_readable, udp_socket};
pub(crate) use udp_ring::UdpRing;
pub(crate) use uring::OpRing;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

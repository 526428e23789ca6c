//! The io_uring UDP worker's ring ([`driver::uring`](crate::driver::uring)): multishot
//! `RecvMsgMulti` into a provided buffer ring (kernel >= 5.19; single-shot `RecvMsg` on owned
//! slots otherwise), batched `SendMsg` / `SendMsgZc` from the outbox's slots and GSO messages,
//! the socket as a registered file.
//!
//! Buffer ownership: a receive buffer belongs to the kernel from the moment it is published in
//! the ring (or its `RecvMsg` is queued) until its completion names it; a send slot or GSO
//! message belongs to the kernel from its SQE until its last completion. [`UdpRing`] owns all
//! of that memory together with the io_uring, and only its own methods queue entries and reap
//! completions, so it always knows what the kernel holds. Dropping it cancels the receive and
//! waits for every completion, then drops the io_uring before the memory, and leaks the memory
//! if the kernel does not answer in time rather than free it under the kernel.

use std::io;
use std::mem::{ManuallyDrop, size_of};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use io_uring::types::{RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::addr::{RawAddr, STORAGE_LEN, parse_sockaddr};
use super::buf_ring::BufRing;
use super::msg::{msghdr_for, msghdr_zeroed};
use super::uring::push_sqe;
use crate::endpoint::{MAX_DATAGRAM, Outbox, SharedStats, UdpServerConfig, count_tx};
use crate::gso::Gso;

const RECV_TAG: u64 = 1 << 63;
const SEND_TAG: u64 = 1 << 62;
const CANCEL_TAG: u64 = 1 << 61;
const GSO_TAG: u64 = 1 << 60;
/// With SEND_TAG or GSO_TAG: a zero-copy send (a result CQE, then a notification CQE).
const ZC_TAG: u64 = 1 << 59;
/// GSO messages one worker may have in flight.
const GSO_POOL: usize = 64;
const INDEX_MASK: u64 = 0xffff_ffff;
const BGID: u16 = 0;

/// One single-shot receive: its own address, iovec, msghdr and buffer.
struct RecvSlot {
    addr: RawAddr,
    iov: libc::iovec,
    msg: libc::msghdr,
    armed: bool,
    buf: [u8; MAX_DATAGRAM + 1],
}

enum Recv {
    Multishot { bufs: BufRing, msg: Box<libc::msghdr>, armed: bool },
    Single(Box<[RecvSlot]>),
}

impl Recv {
    fn armed(&self) -> bool {
        match self {
            Recv::Multishot { armed, .. } => *armed,
            Recv::Single(slots) => slots.iter().any(|s| s.armed),
        }
    }
}

fn single_slots(batch: usize) -> Recv {
    let n = batch.clamp(1, 256);
    let mut slots: Box<[RecvSlot]> = (0..n)
        .map(|_| RecvSlot {
            addr: RawAddr::zeroed(),
            iov: libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 },
            msg: msghdr_zeroed(),
            armed: false,
            buf: [0; MAX_DATAGRAM + 1],
        })
        .collect();
    for s in slots.iter_mut() {
        s.iov = libc::iovec { iov_base: s.buf.as_mut_ptr().cast(), iov_len: s.buf.len() };
        s.msg = msghdr_for(&mut s.addr, &mut s.iov);
    }
    Recv::Single(slots)
}

/// Queues `e`, flushing a full submission queue to the kernel once.
///
/// # Safety
///
/// As [`push_sqe`]: the memory `e` points at stays allocated, in place and (where the kernel
/// writes it) untouched until `e`'s last completion is reaped, or is leaked.
unsafe fn push(ring: &mut IoUring, e: &squeue::Entry) -> io::Result<()> {
    for _ in 0..2 {
        // SAFETY: the caller upholds push_sqe's contract for `e`.
        if unsafe { push_sqe(ring, e) } {
            return Ok(());
        }
        // Full submission queue: flush it to the kernel, then retry.
        ring.submit()?;
    }
    Err(io::Error::other("submission queue still full after flush"))
}

macro_rules! with_fd {
    ($fixed:expr, $fd:expr, |$f:ident| $body:expr) => {
        if $fixed {
            let $f = types::Fixed(0);
            $body
        } else {
            let $f = types::Fd($fd);
            $body
        }
    };
}

/// One worker's io_uring with every buffer the kernel may touch through it: the receive side
/// (buffer ring or single-shot slots), the outbox and the GSO pool.
pub(crate) struct UdpRing {
    /// Dropped by hand in `drop`, before the memory below.
    ring: ManuallyDrop<IoUring>,
    fixed: bool,
    fd: RawFd,
    stats: Arc<SharedStats>,
    /// Sends whose last completion has not been reaped.
    in_flight_sends: usize,
    recv: ManuallyDrop<Recv>,
    out: ManuallyDrop<Outbox>,
    gso: ManuallyDrop<Gso>,
}

impl UdpRing {
    /// A ring of `sq` entries for socket `fd` (which must outlive it), set up as `config` asks.
    pub(crate) fn new(
        fd: RawFd,
        sq: u32,
        config: &UdpServerConfig,
        stats: Arc<SharedStats>,
    ) -> io::Result<Self> {
        let batch = config.batch;
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(sq)
            .or_else(|_| IoUring::new(sq))?;
        let fixed = ring.submitter().register_files(&[fd]).is_ok();
        let recv = match config.uring_multishot.then(|| BufRing::new(config.ring_buffers)).transpose()? {
            Some(bufs) => {
                // SAFETY: on success `bufs` moves into `recv`, which `drop` frees only after
                // the io_uring is gone (or leaks); on failure nothing was registered.
                match unsafe { bufs.register(&ring.submitter(), BGID) } {
                    Ok(()) => {
                        let mut msg = Box::new(msghdr_zeroed());
                        msg.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
                        Recv::Multishot { bufs, msg, armed: false }
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "no provided buffer rings; single-shot RecvMsg");
                        single_slots(batch)
                    }
                }
            }
            None => single_slots(batch),
        };
        // Send completions queue behind up to a full CQ (2 x SQ) of receive completions, so the
        // outbox needs that many slots in flight plus a batch of new ones.
        let out = Outbox::new(sq as usize * 2 + batch * 4);
        let gso = Gso::new(config.gso, fd, GSO_POOL);
        Ok(UdpRing {
            ring: ManuallyDrop::new(ring),
            fixed,
            fd,
            stats,
            in_flight_sends: 0,
            recv: ManuallyDrop::new(recv),
            out: ManuallyDrop::new(out),
            gso: ManuallyDrop::new(gso),
        })
    }

    /// The outbox, for handlers to queue datagrams into.
    #[inline]
    pub(crate) fn out(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// Submits everything queued and waits for one completion or `args`' timeout.
    #[inline]
    pub(crate) fn submit_and_wait(&mut self, args: &SubmitArgs<'_, '_>) -> io::Result<usize> {
        self.ring.submitter().submit_with_args(1, args)
    }

    /// Submits everything queued.
    #[inline]
    pub(crate) fn submit(&mut self) -> io::Result<usize> {
        self.ring.submit()
    }

    /// Queues the receive (multishot) or every receive slot the kernel does not hold.
    pub(crate) fn arm_recv(&mut self) -> io::Result<()> {
        let (ring, fd, fixed) = (&mut *self.ring, self.fd, self.fixed);
        match &mut *self.recv {
            Recv::Multishot { msg, armed, .. } => {
                if !*armed {
                    let e = with_fd!(fixed, fd, |f| opcode::RecvMsgMulti::new(f, &**msg, BGID)
                        .build()
                        .user_data(RECV_TAG));
                    // SAFETY: the entry points at the boxed msghdr (read at submission) and
                    // selects buffers from the registered buffer ring; both are owned by
                    // `self.recv`, freed only after the io_uring (see `drop`), and a buffer is
                    // read only once a completion names it.
                    unsafe { push(ring, &e) }?;
                    *armed = true;
                }
            }
            Recv::Single(slots) => {
                for (i, s) in slots.iter_mut().enumerate() {
                    if !s.armed {
                        s.addr.len = STORAGE_LEN;
                        s.msg.msg_namelen = s.addr.len;
                        s.msg.msg_flags = 0;
                        let e = with_fd!(fixed, fd, |f| opcode::RecvMsg::new(f, &mut s.msg)
                            .build()
                            .user_data(RECV_TAG | i as u64));
                        // SAFETY: the entry points at slot i's msghdr, address, iovec and
                        // buffer, boxed in `self.recv` and freed only after the io_uring (see
                        // `drop`); the slot stays armed, and is not read, until its completion.
                        unsafe { push(ring, &e) }?;
                        s.armed = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues every datagram in the outbox's queue (GSO runs as one message each, single
    /// datagrams of at least `zc` bytes as zero-copy sends); returns how many sends.
    pub(crate) fn queue_sends(&mut self, zc: Option<usize>) -> usize {
        let (ring, out, gso, stats) = (&mut *self.ring, &mut *self.out, &mut *self.gso, &*self.stats);
        let (fixed, fd) = (self.fixed, self.fd);
        let zc_for = |bytes: usize| zc.is_some_and(|t| bytes >= t);
        count_tx(stats, out);
        let mut n = 0;
        while !out.queued.is_empty() {
            let run = gso.run_at(out, 0);
            let msg = if run > 1 { gso.free.pop() } else { None };
            if let Some(g) = msg {
                let m = &mut gso.pool[g as usize];
                m.set_members(out.queued.range(..run).copied());
                out.queued.drain(..run);
                // Never zero-copy: a zero-copy GSO send over up to 64 separate slot buffers needs
                // more page fragments than an skb holds (the kernel answers EMSGSIZE).
                let e = with_fd!(fixed, fd, |f| opcode::SendMsg::new(f, m.header(&out.slots))
                    .build()
                    .user_data(GSO_TAG | u64::from(g)));
                // SAFETY: the entry points at message g's header, iovecs and cmsg (boxed in
                // the GSO pool) and its members' slots (in the outbox); this struct owns both,
                // frees them only after the io_uring (see `drop`), and the kernel only reads
                // them. Message g stays off the free list until its last completion.
                if unsafe { push(ring, &e) }.is_err() {
                    stats.tx_dropped.fetch_add(run as u64, Ordering::Relaxed);
                    for &idx in m.members() {
                        out.release(idx);
                    }
                    gso.free.push(g);
                    continue;
                }
                n += 1;
                continue;
            }
            let Some(idx) = out.queued.pop_front() else { break };
            gso.popped(1);
            let hdr = out.slots.msg(idx);
            let e = if zc_for(out.slots.datagram_len(idx)) {
                with_fd!(fixed, fd, |f| opcode::SendMsgZc::new(f, hdr)
                    .build()
                    .user_data(SEND_TAG | ZC_TAG | u64::from(idx)))
            } else {
                with_fd!(fixed, fd, |f| opcode::SendMsg::new(f, hdr)
                    .build()
                    .user_data(SEND_TAG | u64::from(idx)))
            };
            // SAFETY: the entry points at slot idx's header, address, iovec, control buffer and
            // payload, in the outbox this struct owns and frees only after the io_uring (see
            // `drop`); the kernel only reads them, and the slot is released only by its last
            // completion.
            if unsafe { push(ring, &e) }.is_err() {
                stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
                out.release(idx);
                continue;
            }
            n += 1;
        }
        self.in_flight_sends += n;
        n
    }

    /// Handles up to `limit` completions, handing each datagram received to `deliver` (with
    /// the outbox); returns how many completions it saw.
    pub(crate) fn reap<F>(&mut self, mut deliver: Option<F>, limit: usize) -> usize
    where
        F: FnMut(SocketAddr, &[u8], &mut Outbox),
    {
        let (ring, recv, out, gso, stats) =
            (&mut *self.ring, &mut *self.recv, &mut *self.out, &mut *self.gso, &*self.stats);
        let mut sends_done = 0;
        let mut seen = 0;
        let mut rx = 0u64;
        let mut tx = 0u64;
        for cqe in ring.completion().take(limit) {
            seen += 1;
            let ud = cqe.user_data();
            let mut res = cqe.result();
            let flags = cqe.flags();
            if ud & ZC_TAG != 0 && ud & (SEND_TAG | GSO_TAG) != 0 {
                // Zero-copy: the first CQE carries the result and, with MORE, promises a
                // notification; the buffers stay the kernel's until that notification.
                let i = (ud & INDEX_MASK) as usize;
                let held = if ud & GSO_TAG != 0 {
                    gso.pool.get_mut(i).map(|m| &mut m.zc_res)
                } else {
                    out.slots.zc_res_mut(i)
                };
                let Some(held) = held else { continue };
                if cqueue::notif(flags) {
                    res = *held;
                } else if cqueue::more(flags) {
                    *held = res;
                    continue;
                }
                if res >= 0 {
                    stats.tx_zc_sends.fetch_add(1, Ordering::Relaxed);
                }
            }
            if ud & GSO_TAG != 0 {
                sends_done += 1;
                let g = (ud & INDEX_MASK) as u32;
                let Some(m) = gso.pool.get(g as usize) else { continue };
                let segs = m.members().len();
                if res < 0 {
                    // No segmentation on the device, or a segment above the route's MTU: requeue
                    // the datagrams at the front, in order, to go one by one.
                    for &idx in m.members().iter().rev() {
                        out.queued.push_front(idx);
                    }
                    gso.failed(-res, segs);
                } else {
                    for &idx in m.members() {
                        out.release(idx);
                    }
                    tx += segs as u64;
                    stats.tx_gso_sends.fetch_add(1, Ordering::Relaxed);
                    stats.tx_gso_segments.fetch_add(segs as u64, Ordering::Relaxed);
                }
                gso.free.push(g);
            } else if ud & SEND_TAG != 0 {
                sends_done += 1;
                out.release((ud & INDEX_MASK) as u32);
                if res < 0 {
                    stats.tx_errors.fetch_add(1, Ordering::Relaxed);
                } else {
                    tx += 1;
                }
            } else if ud & RECV_TAG != 0 {
                match recv {
                    Recv::Multishot { bufs, msg, armed } => {
                        if !cqueue::more(flags) {
                            *armed = false;
                        }
                        let Some(bid) = cqueue::buffer_select(flags) else {
                            continue; // an error or the end of the multishot; re-armed next loop
                        };
                        if res >= 0 {
                            rx += 1;
                            let len = res as usize;
                            if let Some(buf) = bufs.buf(bid).and_then(|b| b.get(..len)) {
                                match RecvMsgOut::parse(buf, msg) {
                                    Ok(m)
                                        if !m.is_payload_truncated()
                                            && !m.is_name_data_truncated()
                                            && m.payload_data().len() <= MAX_DATAGRAM =>
                                    {
                                        match (parse_sockaddr(m.name_data()), deliver.as_mut()) {
                                            (Some(from), Some(f)) => f(from, m.payload_data(), out),
                                            (None, _) => {
                                                stats.rx_truncated.fetch_add(1, Ordering::Relaxed);
                                            }
                                            _ => {}
                                        }
                                    }
                                    _ => {
                                        stats.rx_truncated.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                        }
                        bufs.push(bid);
                    }
                    Recv::Single(slots) => {
                        let Some(s) = slots.get_mut((ud & INDEX_MASK) as usize) else {
                            continue;
                        };
                        s.armed = false;
                        if res >= 0 {
                            rx += 1;
                            s.addr.set_len(s.msg.msg_namelen);
                            let len = (res as usize).min(MAX_DATAGRAM);
                            // The buffer holds MAX_DATAGRAM + 1 bytes: a full one was too long.
                            let truncated =
                                s.msg.msg_flags & libc::MSG_TRUNC != 0 || res as usize > MAX_DATAGRAM;
                            match (s.addr.socket_addr(), deliver.as_mut()) {
                                (Some(from), Some(f)) if !truncated => f(from, &s.buf[..len], out),
                                (_, Some(_)) => {
                                    stats.rx_truncated.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
        if let Recv::Multishot { bufs, .. } = recv {
            bufs.publish();
        }
        stats.rx_packets.fetch_add(rx, Ordering::Relaxed);
        stats.tx_packets.fetch_add(tx, Ordering::Relaxed);
        self.in_flight_sends -= sends_done;
        seen
    }
}

impl Drop for UdpRing {
    /// Shutdown: cancel receives, wait for every completion before memory is freed.
    fn drop(&mut self) {
        let cancel = opcode::AsyncCancel::new(RECV_TAG).build().user_data(CANCEL_TAG);
        if matches!(*self.recv, Recv::Multishot { armed: true, .. }) {
            // SAFETY: a cancel entry points at no memory.
            let _ = unsafe { push(&mut self.ring, &cancel) };
        } else if let Recv::Single(slots) = &*self.recv {
            for (i, s) in slots.iter().enumerate() {
                if s.armed {
                    let c = opcode::AsyncCancel::new(RECV_TAG | i as u64).build().user_data(CANCEL_TAG);
                    // SAFETY: a cancel entry points at no memory.
                    let _ = unsafe { push(&mut self.ring, &c) };
                }
            }
        }
        let short = Timespec::from(Duration::from_millis(10));
        let short_args = SubmitArgs::new().timespec(&short);
        for _ in 0..200 {
            if !self.recv.armed() && self.in_flight_sends == 0 {
                break;
            }
            let _ = self.ring.submitter().submit_with_args(1, &short_args);
            self.reap(None::<fn(SocketAddr, &[u8], &mut Outbox)>, usize::MAX);
        }
        let outstanding = self.recv.armed() || self.in_flight_sends > 0;
        if outstanding {
            tracing::warn!("io_uring operations outstanding at shutdown; leaking their buffers");
        } else if self.fixed {
            // The ring's teardown runs later in the kernel and would keep a registered socket
            // (and so its port) open past shutdown: let go of it now.
            let _ = self.ring.submitter().unregister_files();
        }
        // SAFETY: `ring` is dropped once, here, and not used after; it goes before the memory
        // its entries point at.
        unsafe { ManuallyDrop::drop(&mut self.ring) };
        if !outstanding {
            // SAFETY: every completion was reaped, so the kernel holds none of this memory, and
            // the io_uring (with its buffer-ring registration) is gone; each field is dropped
            // once, here, and not used after.
            unsafe {
                ManuallyDrop::drop(&mut self.recv);
                ManuallyDrop::drop(&mut self.out);
                ManuallyDrop::drop(&mut self.gso);
            }
        }
        // Otherwise `recv`, `out` and `gso` stay leaked: the kernel may still use them.
    }
}

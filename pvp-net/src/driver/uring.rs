//! io_uring worker loop: multishot `RecvMsgMulti` into a provided buffer ring (kernel >= 5.19;
//! single-shot `RecvMsg` on owned slots otherwise), batched `SendMsg` from the outbox's slots,
//! the socket as a registered file, one `io_uring_enter` per loop that submits and waits.
//!
//! Buffer ownership: a receive buffer belongs to the kernel from the moment it is published in
//! the ring until its completion names it; a send slot belongs to the kernel from its SQE
//! until its completion. Neither is touched or freed in between; at shutdown the loop cancels
//! the receive and waits for every completion, and leaks the memory if the kernel does not
//! answer in time rather than free it under the kernel.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::mem::size_of;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use io_uring::types::{BufRingEntry, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue, types};

use crate::endpoint::{DatagramHandler, MAX_DATAGRAM, Outbox, SharedStats, WorkerCtx, count_tx};
use crate::gso::Gso;
use crate::sys::{self, RawAddr};

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
/// Completions handled between two hand-offs of replies to the kernel.
const REAP_CHUNK: usize = 64;
/// Each provided buffer: the kernel's `io_uring_recvmsg_out` header, an IPv6 socket address,
/// then the payload.
const BUF_SIZE: usize = 2048;

/// A provided-buffer ring: `entries` ring slots (page-aligned, shared with the kernel) and one
/// buffer per slot.
struct BufRing {
    ring: *mut BufRingEntry,
    layout: Layout,
    entries: u16,
    bufs: Box<[u8]>,
    tail: u16,
}

impl BufRing {
    fn new(entries: u16) -> io::Result<Self> {
        let layout = Layout::from_size_align(usize::from(entries) * size_of::<BufRingEntry>(), 4096)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: layout has non-zero size (entries >= 1, checked by the config).
        let ring = unsafe { alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if ring.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut r = BufRing {
            ring,
            layout,
            entries,
            bufs: vec![0u8; usize::from(entries) * BUF_SIZE].into_boxed_slice(),
            tail: 0,
        };
        for bid in 0..entries {
            r.push(bid);
        }
        r.publish();
        Ok(r)
    }

    /// Hands buffer `bid` back to the kernel (visible after [`publish`](Self::publish)).
    fn push(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.entries - 1));
        let addr = self.bufs[usize::from(bid) * BUF_SIZE..].as_mut_ptr() as u64;
        // SAFETY: idx < entries, inside the allocation; the kernel only reads entries between
        // its head and the published tail, and this one is past the published tail.
        let e = unsafe { &mut *self.ring.add(idx) };
        e.set_addr(addr);
        e.set_len(BUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lives in the first entry, inside our allocation, and the
        // kernel reads it atomically; a release store orders the entry writes before it.
        unsafe {
            let tail = BufRingEntry::tail(self.ring).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    fn buf(&self, bid: u16) -> Option<&[u8]> {
        let start = usize::from(bid) * BUF_SIZE;
        self.bufs.get(start..start + BUF_SIZE)
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the worker drops the ring (or leaks
        // this struct) before the kernel could still use it.
        unsafe { dealloc(self.ring.cast(), self.layout) };
    }
}

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

fn push(ring: &mut IoUring, e: &squeue::Entry) -> io::Result<()> {
    for _ in 0..2 {
        // SAFETY: every entry built in this module points at memory owned by the worker
        // (buffer ring, recv slots, outbox slots, boxed msghdr) that stays allocated and
        // untouched until the entry's completion is reaped (or is leaked at shutdown).
        if unsafe { ring.submission().push(e) }.is_ok() {
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

pub(crate) fn run<H: DatagramHandler>(
    socket: UdpSocket,
    mut handler: H,
    ctx: WorkerCtx,
    ready: Sender<io::Result<()>>,
) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    let batch = ctx.config.batch;
    let sq = u32::try_from((batch * 8).next_power_of_two().clamp(64, 4096)).unwrap_or(4096);
    let setup = (|| -> io::Result<(IoUring, bool, Recv)> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(sq)
            .or_else(|_| IoUring::new(sq))?;
        let fixed = ring.submitter().register_files(&[fd]).is_ok();
        let force_single = !ctx.config.uring_multishot;
        let recv = match (!force_single).then(|| BufRing::new(ctx.config.ring_buffers)).transpose()? {
            Some(bufs) => {
                // SAFETY: the ring memory stays allocated until after the io_uring is
                // dropped (see the drop order at the end of `run`).
                let reg = unsafe {
                    ring.submitter().register_buf_ring_with_flags(bufs.ring as u64, bufs.entries, BGID, 0)
                };
                match reg {
                    Ok(()) => {
                        // SAFETY: msghdr is plain old data; zero is a valid value.
                        let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
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
        Ok((ring, fixed, recv))
    })();
    // Declared before `ring` so it is dropped after it.
    let (mut recv, mut out);
    let mut ring;
    let fixed;
    match setup {
        Ok((r, f, rv)) => {
            ring = r;
            fixed = f;
            recv = rv;
            // Send completions queue behind up to a full CQ (2 x SQ) of receive completions, so the
            // outbox needs that many slots in flight plus a batch of new ones.
            out = Outbox::new(sq as usize * 2 + batch * 4);
            let _ = ready.send(Ok(()));
        }
        Err(e) => {
            let _ = ready.send(Err(io::Error::new(e.kind(), e.to_string())));
            return Err(e);
        }
    }
    let stats = &*ctx.stats;
    let ts = Timespec::from(ctx.config.tick);
    let args = SubmitArgs::new().timespec(&ts);
    let mut in_flight_sends = 0usize;
    let mut gso = Gso::new(ctx.config.gso, fd, GSO_POOL);
    let zc = ctx.config.uring_send_zc.filter(|_| super::probe_opcode(opcode::SendMsgZc::CODE));
    let mut result = Ok(());
    while !ctx.stop.load(Ordering::Acquire) {
        if let Err(e) = arm(&mut ring, &mut recv, fd, fixed) {
            result = Err(e);
            break;
        }
        let sends = queue_sends(&mut ring, &mut out, &mut gso, zc, fd, fixed, stats);
        in_flight_sends += sends;
        match ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        stats.rx_syscalls.fetch_add(1, Ordering::Relaxed);
        if sends > 0 {
            stats.tx_syscalls.fetch_add(1, Ordering::Relaxed);
        }
        let now = Instant::now();
        // Reap in chunks; between chunks hand replies to the kernel so the outbox never
        // fills while completions are still waiting.
        loop {
            let (done, seen) =
                reap(&mut ring, &mut recv, &mut out, &mut gso, Some((&mut handler, now)), stats, REAP_CHUNK);
            in_flight_sends -= done;
            if seen < REAP_CHUNK {
                break;
            }
            if !out.queued.is_empty() {
                in_flight_sends += queue_sends(&mut ring, &mut out, &mut gso, zc, fd, fixed, stats);
                if ring.submit().is_ok() {
                    stats.tx_syscalls.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        handler.on_tick(now, &mut out);
    }
    // Shutdown: cancel receives, wait for every completion before memory is freed.
    let cancel = opcode::AsyncCancel::new(RECV_TAG).build().user_data(CANCEL_TAG);
    if matches!(recv, Recv::Multishot { armed: true, .. }) {
        let _ = push(&mut ring, &cancel);
    } else if let Recv::Single(slots) = &recv {
        for (i, s) in slots.iter().enumerate() {
            if s.armed {
                let c = opcode::AsyncCancel::new(RECV_TAG | i as u64).build().user_data(CANCEL_TAG);
                let _ = push(&mut ring, &c);
            }
        }
    }
    let short = Timespec::from(Duration::from_millis(10));
    let short_args = SubmitArgs::new().timespec(&short);
    for _ in 0..200 {
        if !recv.armed() && in_flight_sends == 0 {
            break;
        }
        let _ = ring.submitter().submit_with_args(1, &short_args);
        in_flight_sends -= reap::<H>(&mut ring, &mut recv, &mut out, &mut gso, None, stats, usize::MAX).0;
    }
    if recv.armed() || in_flight_sends > 0 {
        tracing::warn!("io_uring operations outstanding at shutdown; leaking their buffers");
        drop(ring);
        std::mem::forget(recv);
        std::mem::forget(out);
        std::mem::forget(gso);
    } else {
        // The ring's teardown runs later in the kernel and would keep a registered socket
        // (and so its port) open past shutdown: let go of it now, then close it.
        if fixed {
            let _ = ring.submitter().unregister_files();
        }
        drop(ring);
        drop(socket);
    }
    result
}

fn single_slots(batch: usize) -> Recv {
    let n = batch.clamp(1, 256);
    let mut slots: Box<[RecvSlot]> = (0..n)
        .map(|_| RecvSlot {
            addr: RawAddr::zeroed(),
            iov: libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 },
            // SAFETY: msghdr is plain old data; zero is a valid value.
            msg: unsafe { std::mem::zeroed() },
            armed: false,
            buf: [0; MAX_DATAGRAM + 1],
        })
        .collect();
    for s in slots.iter_mut() {
        s.iov = libc::iovec { iov_base: s.buf.as_mut_ptr().cast(), iov_len: s.buf.len() };
        s.msg = sys::msghdr_for(&mut s.addr, &mut s.iov);
    }
    Recv::Single(slots)
}

fn arm(ring: &mut IoUring, recv: &mut Recv, fd: i32, fixed: bool) -> io::Result<()> {
    match recv {
        Recv::Multishot { msg, armed, .. } => {
            if !*armed {
                let e = with_fd!(fixed, fd, |f| opcode::RecvMsgMulti::new(f, &**msg, BGID)
                    .build()
                    .user_data(RECV_TAG));
                push(ring, &e)?;
                *armed = true;
            }
        }
        Recv::Single(slots) => {
            for (i, s) in slots.iter_mut().enumerate() {
                if !s.armed {
                    s.addr.len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                    s.msg.msg_namelen = s.addr.len;
                    s.msg.msg_flags = 0;
                    let e = with_fd!(fixed, fd, |f| opcode::RecvMsg::new(f, &mut s.msg)
                        .build()
                        .user_data(RECV_TAG | i as u64));
                    push(ring, &e)?;
                    s.armed = true;
                }
            }
        }
    }
    Ok(())
}

fn queue_sends(
    ring: &mut IoUring,
    out: &mut Outbox,
    gso: &mut Gso,
    zc: Option<usize>,
    fd: i32,
    fixed: bool,
    stats: &SharedStats,
) -> usize {
    let zc_for = |bytes: usize| zc.is_some_and(|t| bytes >= t);
    count_tx(stats, out);
    let mut n = 0;
    while !out.queued.is_empty() {
        let run = gso.run_at(out, 0);
        if run > 1
            && let Some(g) = gso.free.pop()
        {
            let m = &mut gso.pool[g as usize];
            m.build(out, out.queued.range(..run).copied());
            out.queued.drain(..run);
            // Never zero-copy: a zero-copy GSO send over up to 64 separate slot buffers needs
            // more page fragments than an skb holds (the kernel answers EMSGSIZE).
            let e = with_fd!(fixed, fd, |f| opcode::SendMsg::new(f, &m.msg)
                .build()
                .user_data(GSO_TAG | u64::from(g)));
            if push(ring, &e).is_err() {
                stats.tx_dropped.fetch_add(run as u64, Ordering::Relaxed);
                for &idx in &m.members {
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
        let slot = &out.slots[idx as usize];
        let e = if zc_for(slot.len) {
            with_fd!(fixed, fd, |f| opcode::SendMsgZc::new(f, &slot.msg)
                .build()
                .user_data(SEND_TAG | ZC_TAG | u64::from(idx)))
        } else {
            with_fd!(fixed, fd, |f| opcode::SendMsg::new(f, &slot.msg)
                .build()
                .user_data(SEND_TAG | u64::from(idx)))
        };
        if push(ring, &e).is_err() {
            stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
            out.release(idx);
            continue;
        }
        n += 1;
    }
    n
}

/// Handles up to `limit` completions; returns (sends completed, completions seen).
fn reap<H: DatagramHandler>(
    ring: &mut IoUring,
    recv: &mut Recv,
    out: &mut Outbox,
    gso: &mut Gso,
    mut handler: Option<(&mut H, Instant)>,
    stats: &SharedStats,
    limit: usize,
) -> (usize, usize) {
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
                out.slots.get_mut(i).map(|s| &mut s.zc_res)
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
            let segs = m.members.len();
            if res < 0 {
                // No segmentation on the device, or a segment above the route's MTU: requeue
                // the datagrams at the front, in order, to go one by one.
                for &idx in m.members.iter().rev() {
                    out.queued.push_front(idx);
                }
                gso.failed(-res, segs);
            } else {
                for &idx in &m.members {
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
                                    match (sys::parse_sockaddr(m.name_data()), handler.as_mut()) {
                                        (Some(from), Some((h, now))) => {
                                            h.on_datagram(*now, from, m.payload_data(), out)
                                        }
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
                        s.addr.len = s.msg.msg_namelen;
                        let len = (res as usize).min(MAX_DATAGRAM);
                        // The buffer holds MAX_DATAGRAM + 1 bytes: a full one was too long.
                        let truncated = s.msg.msg_flags & libc::MSG_TRUNC != 0 || res as usize > MAX_DATAGRAM;
                        match (s.addr.socket_addr(), handler.as_mut()) {
                            (Some(from), Some((h, now))) if !truncated => {
                                h.on_datagram(*now, from, &s.buf[..len], out)
                            }
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
    (sends_done, seen)
}

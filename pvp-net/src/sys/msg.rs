//! Message headers and the memory they point at: `msghdr` / `mmsghdr` construction, control
//! messages (`IP_PKTINFO`, `UDP_SEGMENT`), the receive batch for `recvmmsg`, the outbox's send
//! slots, GSO messages and the send batch for `sendmmsg`.
//!
//! Every header the kernel reads is built here, and points only into memory of the type that
//! holds it (a slot's own address, iovec, control buffer and payload; a GSO message's own
//! iovecs and control buffer, and the payloads of the slots it was built from). Those types
//! keep their header-bearing parts private and hand out no `&mut` to a whole slot, so the
//! pointers stay where they were set; the syscalls here borrow the memory for their duration.

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::RawFd;

use super::addr::{RawAddr, STORAGE_LEN};
use crate::endpoint::MAX_DATAGRAM;
use crate::gso::MAX_SEGMENTS;

/// `UDP_SEGMENT` (linux/udp.h; not in the libc crate).
pub(super) const UDP_SEGMENT: libc::c_int = 103;

/// An empty `msghdr`: no name, no iovecs, no control data.
#[inline]
pub(super) fn msghdr_zeroed() -> libc::msghdr {
    // SAFETY: msghdr is plain old data (integers and raw pointers, plus padding on some libcs);
    // all-zero bytes are a valid value, with every pointer null and every length 0.
    unsafe { std::mem::zeroed() }
}

/// A `msghdr` for one datagram to (or from) `addr` in `iov`.
#[inline]
pub(super) fn msghdr_for(addr: &mut RawAddr, iov: &mut libc::iovec) -> libc::msghdr {
    let mut h = msghdr_zeroed();
    h.msg_name = (&mut addr.storage as *mut libc::sockaddr_storage).cast();
    h.msg_namelen = addr.len.min(STORAGE_LEN);
    h.msg_iov = iov;
    h.msg_iovlen = 1;
    h
}

/// Control-message space, aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(super) struct CmsgBuf<const N: usize>([u8; N]);

impl<const N: usize> CmsgBuf<N> {
    #[inline]
    pub(super) const fn new() -> Self {
        CmsgBuf([0; N])
    }
}

/// Points `msg`'s control data at `buf`, holding one control message (`level`, `kind`) whose
/// data is `value`. `msg` then points into `buf`: the caller keeps both together.
#[inline]
fn write_cmsg<T: Copy, const N: usize>(
    msg: &mut libc::msghdr,
    buf: &mut CmsgBuf<N>,
    level: libc::c_int,
    kind: libc::c_int,
    value: T,
) {
    buf.0.fill(0);
    // SAFETY: CMSG_SPACE / CMSG_LEN are pure size computations.
    let (space, len) =
        unsafe { (libc::CMSG_SPACE(size_of::<T>() as u32) as usize, libc::CMSG_LEN(size_of::<T>() as u32)) };
    assert!(space <= N, "control message does not fit its buffer");
    msg.msg_control = buf.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `buf` (8-aligned, as cmsghdr needs, and `space` <= N bytes,
    // checked above); with msg_controllen = space >= size_of::<cmsghdr>(), CMSG_FIRSTHDR
    // returns `buf`'s start (not null), and the header plus CMSG_DATA's `size_of::<T>()` bytes
    // lie within `space`; the data write is unaligned-safe.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(msg);
        (*c).cmsg_level = level;
        (*c).cmsg_type = kind;
        (*c).cmsg_len = len as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<T>(), value);
    }
}

/// Receive buffers and headers for `recvmmsg`, built once; the raw pointers inside point into
/// the struct's own boxed slices, which never move or resize.
pub(crate) struct MmsgRecv {
    hdrs: Box<[libc::mmsghdr]>,
    _iovs: Box<[libc::iovec]>,
    addrs: Box<[RawAddr]>,
    bufs: Box<[u8]>,
    slot: usize,
    /// Control-message space per header, when the socket reports `IP_PKTINFO`.
    ctrl: Option<Box<[CmsgBuf<64>]>>,
}

impl MmsgRecv {
    pub(crate) fn new(batch: usize, slot: usize) -> Self {
        let mut bufs = vec![0u8; batch * slot].into_boxed_slice();
        let mut addrs = vec![RawAddr::zeroed(); batch].into_boxed_slice();
        let mut iovs: Box<[libc::iovec]> = (0..batch)
            .map(|i| libc::iovec {
                // In bounds: i < batch and bufs has batch * slot bytes.
                iov_base: bufs[i * slot..].as_mut_ptr().cast(),
                iov_len: slot,
            })
            .collect();
        let hdrs: Box<[libc::mmsghdr]> = (0..batch)
            .map(|i| libc::mmsghdr { msg_hdr: msghdr_for(&mut addrs[i], &mut iovs[i]), msg_len: 0 })
            .collect();
        MmsgRecv { hdrs, _iovs: iovs, addrs, bufs, slot, ctrl: None }
    }

    /// As [`new`](Self::new), with room for each datagram's `IP_PKTINFO` (its destination
    /// address; the socket must have [`enable_pktinfo`](super::enable_pktinfo) set).
    pub(crate) fn with_pktinfo(batch: usize, slot: usize) -> Self {
        let mut r = Self::new(batch, slot);
        let mut ctrl = vec![CmsgBuf::<64>::new(); batch].into_boxed_slice();
        for (h, c) in r.hdrs.iter_mut().zip(ctrl.iter_mut()) {
            h.msg_hdr.msg_control = c.0.as_mut_ptr().cast();
        }
        r.ctrl = Some(ctrl);
        r
    }

    /// The destination IPv4 address of datagram `i` of the last `recv` (sockets made with
    /// [`with_pktinfo`](Self::with_pktinfo) only).
    pub(crate) fn destination(&self, i: usize) -> Option<Ipv4Addr> {
        self.ctrl.as_ref()?;
        let h = &self.hdrs.get(i)?.msg_hdr;
        if h.msg_controllen == 0 {
            return None;
        }
        // SAFETY: with `ctrl` present, msg_control points at this header's own 64-byte buffer
        // and the kernel wrote `msg_controllen` (<= 64, the length `recv` offered) bytes of
        // control messages into it; CMSG_FIRSTHDR/CMSG_NXTHDR walk only within that length,
        // and the pktinfo read is unaligned-safe.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                    let info = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>());
                    return Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        None
    }

    /// Receives up to the batch size without blocking; `Ok(0)` when nothing is waiting.
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let ctrl_len = if self.ctrl.is_some() { size_of::<CmsgBuf<64>>() } else { 0 };
        for h in self.hdrs.iter_mut() {
            h.msg_hdr.msg_namelen = STORAGE_LEN;
            h.msg_hdr.msg_flags = 0;
            h.msg_hdr.msg_controllen = ctrl_len as _;
        }
        let n = libc::c_uint::try_from(self.hdrs.len()).unwrap_or(libc::c_uint::MAX);
        // SAFETY: every header points at this struct's own live buffers, addresses and
        // control space, sized as declared; the kernel writes within them during the call.
        let r = unsafe {
            libc::recvmmsg(fd, self.hdrs.as_mut_ptr(), n, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let r = r as usize;
        for i in 0..r {
            self.addrs[i].set_len(self.hdrs[i].msg_hdr.msg_namelen);
        }
        Ok(r)
    }

    /// Datagram `i` of the last `recv`: sender, bytes, and whether it was truncated.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> (Option<SocketAddr>, &[u8], bool) {
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(self.slot);
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (self.addrs[i].socket_addr(), &self.bufs[i * self.slot..i * self.slot + len], truncated)
    }
}

/// One send slot: a datagram buffer, its peer, and the header that points at both.
struct SendSlot {
    addr: RawAddr,
    iov: libc::iovec,
    msg: libc::msghdr,
    len: usize,
    /// io_uring SEND_ZC: the send's result, held until the kernel's notification.
    zc_res: i32,
    /// Control message (`IP_PKTINFO` source) for [`SendSlots::set_source`].
    ctrl: CmsgBuf<64>,
    buf: [u8; MAX_DATAGRAM],
}

/// The outbox's send slots, allocated once and never resized. Each slot's header points into
/// the slot itself (address, iovec, control buffer, payload); this type hands out no `&mut` to
/// a slot, so no slot moves and the header stays valid for as long as the slots live.
pub(crate) struct SendSlots(Box<[SendSlot]>);

impl SendSlots {
    pub(crate) fn new(n: usize) -> Self {
        SendSlots(
            (0..n)
                .map(|_| SendSlot {
                    addr: RawAddr::zeroed(),
                    iov: libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 },
                    msg: msghdr_zeroed(),
                    len: 0,
                    zc_res: 0,
                    ctrl: CmsgBuf::new(),
                    buf: [0; MAX_DATAGRAM],
                })
                .collect(),
        )
    }

    /// Number of slots.
    #[inline]
    pub(crate) fn count(&self) -> usize {
        self.0.len()
    }

    /// Slot `i`'s payload buffer, to write a datagram into before [`set`](Self::set).
    #[inline]
    pub(crate) fn buf_mut(&mut self, i: u32) -> &mut [u8; MAX_DATAGRAM] {
        &mut self.0[i as usize].buf
    }

    /// Makes slot `i` a datagram of its first `len` bytes (at most [`MAX_DATAGRAM`]) to `to`,
    /// with no control message.
    #[inline]
    pub(crate) fn set(&mut self, i: u32, to: &SocketAddr, len: usize) {
        let s = &mut self.0[i as usize];
        s.len = len.min(MAX_DATAGRAM);
        s.addr.set(to);
        s.iov = libc::iovec { iov_base: s.buf.as_mut_ptr().cast(), iov_len: s.len };
        s.msg = msghdr_for(&mut s.addr, &mut s.iov);
    }

    /// Adds an `IP_PKTINFO` control message to slot `i` (after [`set`](Self::set)) that makes
    /// its datagram leave from local address `src`.
    #[inline]
    pub(crate) fn set_source(&mut self, i: u32, src: Ipv4Addr) {
        let s = &mut self.0[i as usize];
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: libc::in_addr { s_addr: u32::from(src).to_be() },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        write_cmsg(&mut s.msg, &mut s.ctrl, libc::IPPROTO_IP, libc::IP_PKTINFO, info);
    }

    /// Slot `i`'s datagram length.
    #[inline]
    pub(crate) fn datagram_len(&self, i: u32) -> usize {
        self.0[i as usize].len
    }

    /// Slot `i`'s peer address bytes (equal keys: same peer).
    #[inline]
    pub(crate) fn peer_key(&self, i: u32) -> &[u8] {
        self.0[i as usize].addr.key()
    }

    /// Slot `i`'s held zero-copy send result, if `i` is a slot.
    #[inline]
    pub(crate) fn zc_res_mut(&mut self, i: usize) -> Option<&mut i32> {
        self.0.get_mut(i).map(|s| &mut s.zc_res)
    }

    /// Slot `i`'s header (points into the slot).
    #[inline]
    pub(super) fn msg(&self, i: u32) -> &libc::msghdr {
        &self.0[i as usize].msg
    }
}

/// One GSO send: the member slots, their iovecs, the control message and the header. Boxed
/// (see [`new`](Self::new)), since the header points into the struct itself.
pub(crate) struct GsoMsg {
    iovs: [libc::iovec; MAX_SEGMENTS],
    cmsg: CmsgBuf<32>,
    msg: libc::msghdr,
    /// io_uring SEND_ZC: the send's result, held until the kernel's notification.
    pub(crate) zc_res: i32,
    /// Outbox slot indices, in send order.
    members: Vec<u32>,
}

impl GsoMsg {
    pub(crate) fn new() -> Box<Self> {
        Box::new(GsoMsg {
            iovs: [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_SEGMENTS],
            cmsg: CmsgBuf::new(),
            msg: msghdr_zeroed(),
            zc_res: 0,
            members: Vec::with_capacity(MAX_SEGMENTS),
        })
    }

    /// The outbox slots this message carries, in send order.
    #[inline]
    pub(crate) fn members(&self) -> &[u32] {
        &self.members
    }

    /// Makes this a send of the datagrams in slots `members` (2..=MAX_SEGMENTS, same peer, all
    /// but the last of the first one's size; more than MAX_SEGMENTS are cut). The header is
    /// built from the slots when the message is sent.
    #[inline]
    pub(crate) fn set_members(&mut self, members: impl Iterator<Item = u32>) {
        self.members.clear();
        self.members.extend(members.take(MAX_SEGMENTS));
    }

    /// Builds the header from `slots`: the first member's peer, one iovec per member's payload
    /// and a `UDP_SEGMENT` cmsg of the first member's size. The header then points into this
    /// message and into `slots`' payloads.
    #[inline]
    pub(super) fn header(&mut self, slots: &SendSlots) -> &libc::msghdr {
        for (iov, &idx) in self.iovs.iter_mut().zip(&self.members) {
            *iov = slots.0[idx as usize].iov;
        }
        let first = self.members.first().copied().unwrap_or(0);
        let seg = u16::try_from(slots.datagram_len(first)).unwrap_or(u16::MAX);
        let mut msg = *slots.msg(first);
        msg.msg_iov = self.iovs.as_mut_ptr();
        msg.msg_iovlen = self.members.len() as _;
        write_cmsg(&mut msg, &mut self.cmsg, libc::SOL_UDP, UDP_SEGMENT, seg);
        self.msg = msg;
        &self.msg
    }
}

/// One message of a [`MmsgSend`] batch.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OutMsg {
    /// A single datagram: an outbox slot.
    Slot(u32),
    /// A GSO message: an index into the GSO pool.
    Gso(usize),
}

/// The header array for `sendmmsg`, kept between calls so a send allocates nothing.
pub(crate) struct MmsgSend {
    hdrs: Vec<libc::mmsghdr>,
}

impl MmsgSend {
    pub(crate) fn with_capacity(n: usize) -> Self {
        MmsgSend { hdrs: Vec::with_capacity(n) }
    }

    /// Sends `msgs` (slots of `slots`, GSO messages of `gso` built from those slots) with one
    /// `sendmmsg`; returns how many the kernel took (`Ok(0)` when there is nothing to send or
    /// the socket buffer is full).
    pub(crate) fn send(
        &mut self,
        fd: RawFd,
        slots: &SendSlots,
        gso: &mut [Box<GsoMsg>],
        msgs: impl IntoIterator<Item = OutMsg>,
    ) -> io::Result<usize> {
        self.hdrs.clear();
        for m in msgs {
            let msg_hdr = match m {
                OutMsg::Slot(i) => *slots.msg(i),
                OutMsg::Gso(g) => *gso[g].header(slots),
            };
            self.hdrs.push(libc::mmsghdr { msg_hdr, msg_len: 0 });
        }
        if self.hdrs.is_empty() {
            return Ok(0);
        }
        let n = libc::c_uint::try_from(self.hdrs.len()).unwrap_or(libc::c_uint::MAX);
        // SAFETY: every header was built by `SendSlots` or `GsoMsg::header` and points only
        // into `slots` (a slot's own address, iovec, control buffer and payload) or into one of
        // `gso`'s boxed messages (its iovecs and control buffer); both are borrowed for this
        // call, and the kernel only reads them.
        let r = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), n, libc::MSG_DONTWAIT) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        Ok(r as usize)
    }
}

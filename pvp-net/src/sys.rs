//! Every raw syscall of this crate: socket setup, recvmmsg/sendmmsg, epoll, CPU pinning and
//! socket address conversion. Everything above this module is safe code.

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// A socket address in the kernel's layout.
#[derive(Clone, Copy)]
pub(crate) struct RawAddr {
    pub(crate) storage: libc::sockaddr_storage,
    pub(crate) len: libc::socklen_t,
}

impl RawAddr {
    pub(crate) fn zeroed() -> Self {
        // SAFETY: sockaddr_storage is plain old data; all-zero bytes are a valid value.
        let storage = unsafe { MaybeUninit::<libc::sockaddr_storage>::zeroed().assume_init() };
        RawAddr { storage, len: size_of::<libc::sockaddr_storage>() as libc::socklen_t }
    }

    pub(crate) fn from_socket_addr(addr: &SocketAddr) -> Self {
        let mut raw = RawAddr::zeroed();
        raw.set(addr);
        raw
    }

    pub(crate) fn set(&mut self, addr: &SocketAddr) {
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe {
                    std::ptr::write(
                        (&mut self.storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>(),
                        sin,
                    )
                };
                self.len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe {
                    std::ptr::write(
                        (&mut self.storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>(),
                        sin6,
                    )
                };
                self.len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
    }

    /// The address bytes the kernel reads (equal keys: same peer).
    pub(crate) fn key(&self) -> &[u8] {
        // SAFETY: `storage` is fully initialised (zeroed, then written by us or the kernel).
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&self.storage as *const libc::sockaddr_storage).cast::<u8>(),
                size_of::<libc::sockaddr_storage>(),
            )
        };
        &bytes[..(self.len as usize).min(bytes.len())]
    }

    pub(crate) fn socket_addr(&self) -> Option<SocketAddr> {
        // SAFETY: `storage` is fully initialised (zeroed, then written by us or the kernel).
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&self.storage as *const libc::sockaddr_storage).cast::<u8>(),
                size_of::<libc::sockaddr_storage>(),
            )
        };
        parse_sockaddr(&bytes[..(self.len as usize).min(bytes.len())])
    }
}

/// Parses a kernel socket address from its bytes (as io_uring's `RecvMsgOut` hands them).
pub(crate) fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*b.first()?, *b.get(1)?]);
    let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    if family == libc::AF_INET as u16 {
        let ip: [u8; 4] = b.get(4..8)?.try_into().ok()?;
        Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
    } else if family == libc::AF_INET6 as u16 {
        let flow = u32::from_ne_bytes(b.get(4..8)?.try_into().ok()?);
        let ip: [u8; 16] = b.get(8..24)?.try_into().ok()?;
        let scope = u32::from_ne_bytes(b.get(24..28)?.try_into().ok()?);
        Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, flow, scope)))
    } else {
        None
    }
}

fn setsockopt_int(fd: RawFd, level: libc::c_int, opt: libc::c_int, val: libc::c_int) -> io::Result<()> {
    // SAFETY: `val` is a live c_int and its size is passed; fd is a socket we own.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&val as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// A non-blocking UDP socket bound to `bind`, with `SO_REUSEPORT` when asked (one per worker
/// on the same port; the kernel spreads flows across them) and the given buffer sizes.
pub(crate) fn udp_socket(bind: SocketAddr, reuseport: bool, buf_bytes: usize) -> io::Result<UdpSocket> {
    let family = if bind.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain syscall; the returned fd is checked and owned below.
    let fd =
        cvt(unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is a fresh socket no one else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if reuseport {
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    let size = libc::c_int::try_from(buf_bytes).unwrap_or(libc::c_int::MAX);
    // Buffer sizes are hints the kernel caps at net.core.[rw]mem_max; with CAP_NET_ADMIN the
    // FORCE variants pass the cap. Failing to raise them is not fatal.
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
        let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, size);
    }
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, size).is_err() {
        let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, size);
    }
    let raw = RawAddr::from_socket_addr(&bind);
    // SAFETY: `raw` holds a valid sockaddr of `raw.len` bytes.
    cvt(unsafe { libc::bind(fd, (&raw.storage as *const libc::sockaddr_storage).cast(), raw.len) })?;
    Ok(UdpSocket::from(owned))
}

/// Pins the calling thread to one CPU (`sched_setaffinity`).
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: cpu_set_t is plain old data; CPU_SET writes within it (cpu checked above);
    // sched_setaffinity(0, ..) affects only the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        cvt(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)).map(drop)
    }
}

/// CPUs this process may run on (its affinity mask), for [`UdpServerConfig::cpus`](crate::UdpServerConfig::cpus).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity writes at most size_of::<cpu_set_t>() bytes into `set`;
    // CPU_ISSET reads within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// `/proc/sys/kernel/io_uring_disabled`: 0 allowed, 1 only for a group, 2 disabled. `None`
/// where the file does not exist (older kernels: allowed).
pub(crate) fn io_uring_disabled() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok().and_then(|s| s.trim().parse().ok())
}

/// An epoll instance.
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the fd is checked and owned.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    pub(crate) fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` lives across the call; both fds are valid.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(drop)
    }

    pub(crate) fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        let max = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: the kernel writes at most `max` events into `events`.
        match cvt(unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) }) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
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
    ctrl: Option<Box<[CmsgSpace]>>,
}

/// 64 bytes of control-message space, aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct CmsgSpace(pub(crate) [u8; 64]);

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
            .map(|i| {
                // SAFETY: msghdr is plain old data; zero is a valid (empty) value.
                let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                h.msg_name = (&mut addrs[i].storage as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_iov = &mut iovs[i];
                h.msg_iovlen = 1;
                libc::mmsghdr { msg_hdr: h, msg_len: 0 }
            })
            .collect();
        MmsgRecv { hdrs, _iovs: iovs, addrs, bufs, slot, ctrl: None }
    }

    /// As [`new`](Self::new), with room for each datagram's `IP_PKTINFO` (its destination
    /// address; the socket must have [`enable_pktinfo`] set).
    pub(crate) fn with_pktinfo(batch: usize, slot: usize) -> Self {
        let mut r = Self::new(batch, slot);
        let mut ctrl = vec![CmsgSpace([0; 64]); batch].into_boxed_slice();
        for (h, c) in r.hdrs.iter_mut().zip(ctrl.iter_mut()) {
            h.msg_hdr.msg_control = c.0.as_mut_ptr().cast();
        }
        r.ctrl = Some(ctrl);
        r
    }

    /// The destination IPv4 address of datagram `i` of the last `recv` (sockets made with
    /// [`with_pktinfo`](Self::with_pktinfo) only).
    pub(crate) fn destination(&self, i: usize) -> Option<std::net::Ipv4Addr> {
        self.ctrl.as_ref()?;
        let h = &self.hdrs.get(i)?.msg_hdr;
        if h.msg_controllen == 0 {
            return None;
        }
        // SAFETY: the kernel wrote `msg_controllen` bytes of control messages into this
        // header's own 64-byte buffer; CMSG_FIRSTHDR/CMSG_NXTHDR walk only within it, and the
        // pktinfo read is unaligned-safe.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                    let info = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>());
                    return Some(std::net::Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        None
    }

    /// Receives up to the batch size without blocking; `Ok(0)` when nothing is waiting.
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let ctrl_len = if self.ctrl.is_some() { size_of::<CmsgSpace>() } else { 0 };
        for h in self.hdrs.iter_mut() {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_hdr.msg_controllen = ctrl_len as _;
        }
        let n = libc::c_uint::try_from(self.hdrs.len()).unwrap_or(libc::c_uint::MAX);
        // SAFETY: every header points at this struct's own live buffers and addresses, sized
        // as declared; the kernel writes within them.
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
            self.addrs[i].len = self.hdrs[i].msg_hdr.msg_namelen;
        }
        Ok(r)
    }

    /// Datagram `i` of the last `recv`: sender, bytes, and whether it was truncated.
    pub(crate) fn get(&self, i: usize) -> (Option<SocketAddr>, &[u8], bool) {
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(self.slot);
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (self.addrs[i].socket_addr(), &self.bufs[i * self.slot..i * self.slot + len], truncated)
    }
}

/// Sends `msgs` with one `sendmmsg`; returns how many the kernel took (`Ok(0)` when the socket
/// buffer is full).
pub(crate) fn sendmmsg(fd: RawFd, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    if msgs.is_empty() {
        return Ok(0);
    }
    let n = libc::c_uint::try_from(msgs.len()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: the caller built every header from buffers that live across this call.
    let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n, libc::MSG_DONTWAIT) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(e),
        };
    }
    Ok(r as usize)
}

/// A `msghdr` for one datagram to `addr` from `iov`.
pub(crate) fn msghdr_for(addr: &mut RawAddr, iov: &mut libc::iovec) -> libc::msghdr {
    // SAFETY: msghdr is plain old data; zero is a valid (empty) value.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_name = (&mut addr.storage as *mut libc::sockaddr_storage).cast();
    h.msg_namelen = addr.len;
    h.msg_iov = iov;
    h.msg_iovlen = 1;
    h
}

/// Bytes of the calling process's resident memory (`/proc/self/statm`).
pub fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// CPU time (user + system) the calling process used.
pub fn process_cpu_time() -> Option<std::time::Duration> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a live timespec the kernel writes.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return None;
    }
    Some(std::time::Duration::new(u64::try_from(ts.tv_sec).ok()?, u32::try_from(ts.tv_nsec).ok()?))
}

/// Waits until `fd` is readable or `timeout_ms` passes; true if readable.
pub(crate) fn poll_readable(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one live pollfd.
    match cvt(unsafe { libc::poll(&mut p, 1, timeout_ms) }) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}

/// `UDP_SEGMENT` (linux/udp.h; not in the libc crate).
const UDP_SEGMENT: libc::c_int = 103;

/// Whether the kernel knows `UDP_SEGMENT` (Linux >= 4.18): `getsockopt` on the socket.
pub(crate) fn gso_supported(fd: RawFd) -> bool {
    let mut val: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `val` and `len` are live and sized as declared; fd is a socket we own.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_UDP, UDP_SEGMENT, (&mut val as *mut libc::c_int).cast(), &mut len)
    };
    r == 0
}

/// Asks the kernel to report each datagram's destination address (`IP_PKTINFO`).
pub(crate) fn enable_pktinfo(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
}

/// Points `msg`'s control data at `buf` holding one `IP_PKTINFO` cmsg that makes the
/// datagram leave from local address `src`. `buf` must outlive every use of `msg`.
pub(crate) fn set_pktinfo_cmsg(msg: &mut libc::msghdr, buf: &mut CmsgSpace, src: std::net::Ipv4Addr) {
    buf.0.fill(0);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) } as usize;
    debug_assert!(space <= buf.0.len());
    msg.msg_control = buf.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr { s_addr: u32::from(src).to_be() },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    // SAFETY: msg_control points at `buf` (8-aligned, `space` <= 64 bytes); CMSG_FIRSTHDR and
    // CMSG_DATA stay inside it; the pktinfo write is unaligned-safe.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(msg);
        (*c).cmsg_level = libc::IPPROTO_IP;
        (*c).cmsg_type = libc::IP_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>(), info);
    }
}

/// Points `msg`'s control data at `buf` holding one `UDP_SEGMENT` cmsg with `segment` bytes
/// per datagram. `buf` must be aligned for `cmsghdr` and outlive every use of `msg`.
pub(crate) fn set_udp_segment_cmsg(msg: &mut libc::msghdr, buf: &mut [u8; 32], segment: u16) {
    buf.fill(0);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
    debug_assert!(space <= buf.len());
    msg.msg_control = buf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `buf` (aligned for cmsghdr by the caller's type, at least
    // `space` bytes); CMSG_FIRSTHDR/CMSG_DATA stay inside it; the u16 write is unaligned-safe.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(msg);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment);
    }
}

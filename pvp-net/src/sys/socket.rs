//! Socket set-up and readiness: the UDP socket, its options, `poll` and epoll.

use std::io;
use std::mem::size_of;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::addr::RawAddr;
use super::cvt;
use super::msg::UDP_SEGMENT;

fn setsockopt_int(fd: RawFd, level: libc::c_int, opt: libc::c_int, val: libc::c_int) -> io::Result<()> {
    // SAFETY: `val` is a live c_int and its size is passed; the kernel only reads it. A wrong
    // fd makes the call fail (or set an option on that socket); it touches no memory of ours.
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
    // SAFETY: `raw` holds a valid sockaddr of `raw.len` bytes; the kernel only reads it.
    cvt(unsafe { libc::bind(fd, (&raw.storage as *const libc::sockaddr_storage).cast(), raw.len) })?;
    Ok(UdpSocket::from(owned))
}

/// Whether the kernel knows `UDP_SEGMENT` (Linux >= 4.18): `getsockopt` on the socket.
pub(crate) fn gso_supported(fd: RawFd) -> bool {
    let mut val: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `val` and `len` are live and sized as declared; the kernel writes at most `len`
    // bytes into `val`.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_UDP, UDP_SEGMENT, (&mut val as *mut libc::c_int).cast(), &mut len)
    };
    r == 0
}

/// Asks the kernel to report each datagram's destination address (`IP_PKTINFO`).
pub(crate) fn enable_pktinfo(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
}

/// Waits until `fd` is readable or `timeout_ms` passes; true if readable.
pub(crate) fn poll_readable(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one live pollfd, and the count passed is 1.
    match cvt(unsafe { libc::poll(&mut p, 1, timeout_ms) }) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
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
        // SAFETY: `ev` lives across the call and the kernel only reads it; the epoll fd is
        // ours, a wrong `fd` makes the call fail.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(drop)
    }

    pub(crate) fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        let max = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: the kernel writes at most `max` (<= events.len()) events into `events`.
        match cvt(unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) }) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }
}

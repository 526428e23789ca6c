//! The two drivers and the start-up choice between them.

use std::io;

use crate::endpoint::EndpointError;
use crate::sys;

pub(crate) mod epoll;
pub(crate) mod uring;

/// Which driver a server should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriverChoice {
    /// io_uring unless the kernel or a seccomp policy forbids it, then epoll.
    #[default]
    Auto,
    /// io_uring or fail.
    IoUring,
    /// epoll with recvmmsg / sendmmsg.
    Epoll,
}

/// The driver a server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverKind {
    /// io_uring: multishot RecvMsgMulti into a provided buffer ring, batched SendMsg.
    IoUring,
    /// epoll + recvmmsg / sendmmsg.
    Epoll,
}

impl DriverKind {
    /// `"io_uring"` or `"epoll"` (the `driver` label of the `pvp_net_driver` gauge).
    pub const fn as_str(self) -> &'static str {
        match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Epoll => "epoll",
        }
    }
}

/// The environment variable that overrides the configured driver (`epoll` or `io_uring`).
pub const DRIVER_ENV: &str = "PVP_NET_DRIVER";

/// Why io_uring cannot be used here, or `None` if it can (a ring opens and the opcodes the
/// driver needs are supported).
pub fn io_uring_unavailable() -> Option<io::Error> {
    if sys::io_uring_disabled() == Some(2) {
        return Some(io::Error::new(io::ErrorKind::PermissionDenied, "kernel.io_uring_disabled = 2"));
    }
    let ring = match io_uring::IoUring::new(8) {
        Ok(r) => r,
        Err(e) => return Some(e),
    };
    let mut probe = io_uring::Probe::new();
    if let Err(e) = ring.submitter().register_probe(&mut probe) {
        return Some(e);
    }
    for code in [io_uring::opcode::RecvMsg::CODE, io_uring::opcode::SendMsg::CODE] {
        if !probe.is_supported(code) {
            return Some(io::Error::new(io::ErrorKind::Unsupported, "io_uring lacks RecvMsg/SendMsg"));
        }
    }
    None
}

/// Whether the kernel supports UDP GSO (`UDP_SEGMENT`, Linux >= 4.18), probed on a fresh
/// loopback socket; [`UdpServerConfig::gso`](crate::UdpServerConfig::gso) takes effect only
/// where it does.
pub fn udp_gso_available() -> bool {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .map(|s| sys::gso_supported(std::os::fd::AsRawFd::as_raw_fd(&s)))
        .unwrap_or(false)
}

/// Whether io_uring here has the zero-copy `SendMsgZc` opcode (Linux >= 6.1), used by
/// [`UdpServerConfig::uring_send_zc`](crate::UdpServerConfig::uring_send_zc).
pub fn io_uring_send_zc_available() -> bool {
    io_uring_unavailable().is_none() && probe_opcode(io_uring::opcode::SendMsgZc::CODE)
}

pub(crate) fn probe_opcode(code: u8) -> bool {
    let Ok(ring) = io_uring::IoUring::new(8) else { return false };
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe).is_ok() && probe.is_supported(code)
}

pub(crate) fn choose(configured: DriverChoice) -> Result<(DriverKind, String), EndpointError> {
    let mut choice = configured;
    let mut why = "configured";
    if cfg!(pvp_force_epoll) {
        choice = DriverChoice::Epoll;
        why = "built with --cfg pvp_force_epoll";
    }
    match std::env::var(DRIVER_ENV).ok().as_deref() {
        Some("epoll") => {
            choice = DriverChoice::Epoll;
            why = "PVP_NET_DRIVER=epoll";
        }
        Some("io_uring" | "iouring" | "uring") => {
            choice = DriverChoice::IoUring;
            why = "PVP_NET_DRIVER=io_uring";
        }
        _ => {}
    }
    match choice {
        DriverChoice::Epoll => Ok((DriverKind::Epoll, why.to_string())),
        DriverChoice::IoUring => match io_uring_unavailable() {
            None => Ok((DriverKind::IoUring, why.to_string())),
            Some(e) => Err(EndpointError::IoUringUnavailable(e)),
        },
        DriverChoice::Auto => match io_uring_unavailable() {
            None => Ok((DriverKind::IoUring, "io_uring available".to_string())),
            Some(e) => Ok((DriverKind::Epoll, format!("io_uring unavailable: {e}"))),
        },
    }
}

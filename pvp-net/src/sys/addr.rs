//! Socket addresses in the kernel's layout.

use std::mem::{MaybeUninit, size_of};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// A socket address in the kernel's layout. `len` is what `set` or the kernel wrote; every
/// reader (and every header built from it) caps it at the size of `storage`.
#[derive(Clone, Copy)]
pub(crate) struct RawAddr {
    pub(super) storage: libc::sockaddr_storage,
    pub(super) len: libc::socklen_t,
}

/// `size_of::<sockaddr_storage>()` as the kernel's length type.
pub(super) const STORAGE_LEN: libc::socklen_t = size_of::<libc::sockaddr_storage>() as libc::socklen_t;

impl RawAddr {
    #[inline]
    pub(crate) fn zeroed() -> Self {
        // SAFETY: sockaddr_storage is plain old data; all-zero bytes are a valid value.
        let storage = unsafe { MaybeUninit::<libc::sockaddr_storage>::zeroed().assume_init() };
        RawAddr { storage, len: STORAGE_LEN }
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

    /// The length the kernel reported (or `set` wrote), capped at the storage size.
    #[inline]
    pub(super) fn set_len(&mut self, len: libc::socklen_t) {
        self.len = len.min(STORAGE_LEN);
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        // SAFETY: `storage` is fully initialised (zeroed, then written by us or the kernel)
        // plain old data, and the slice covers exactly its bytes for the borrow of `self`.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&self.storage as *const libc::sockaddr_storage).cast::<u8>(),
                size_of::<libc::sockaddr_storage>(),
            )
        };
        &bytes[..(self.len as usize).min(bytes.len())]
    }

    /// The address bytes the kernel reads (equal keys: same peer).
    #[inline]
    pub(crate) fn key(&self) -> &[u8] {
        self.bytes()
    }

    #[inline]
    pub(crate) fn socket_addr(&self) -> Option<SocketAddr> {
        parse_sockaddr(self.bytes())
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

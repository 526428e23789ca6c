//! Sync datagrams over a UDP socket (one per region), for examples and real deployments on a
//! trusted network. Datagrams from addresses that are not a configured peer are counted and
//! dropped.

use super::transport::{Transport, TransportError};
use pvp_core::RegionId;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// A [`Transport`] over one non-blocking UDP socket.
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
    peers: HashMap<RegionId, SocketAddr>,
    by_addr: HashMap<SocketAddr, RegionId>,
    buf: Vec<u8>,
    unknown_source: u64,
}

impl UdpTransport {
    /// Binds `local` (e.g. `127.0.0.1:0`).
    pub fn bind(local: SocketAddr) -> Result<Self, TransportError> {
        let socket = UdpSocket::bind(local)?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            peers: HashMap::new(),
            by_addr: HashMap::new(),
            buf: vec![0; 65_536],
            unknown_source: 0,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        Ok(self.socket.local_addr()?)
    }

    /// Registers `region`'s address.
    pub fn add_peer(&mut self, region: RegionId, addr: SocketAddr) {
        if let Some(old) = self.peers.insert(region, addr) {
            self.by_addr.remove(&old);
        }
        self.by_addr.insert(addr, region);
    }

    /// Datagrams dropped because their source is not a registered peer.
    pub const fn unknown_source(&self) -> u64 {
        self.unknown_source
    }
}

impl Transport for UdpTransport {
    fn send(&mut self, _now: Duration, to: RegionId, payload: &[u8]) -> Result<(), TransportError> {
        let addr = *self.peers.get(&to).ok_or(TransportError::UnknownPeer(to))?;
        match self.socket.send_to(payload, addr) {
            Ok(_) => Ok(()),
            // A full socket buffer, or an ICMP error left by an earlier datagram to a peer that is
            // down, is a lost datagram; the protocol retransmits.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::ConnectionRefused | ErrorKind::Interrupted
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn recv(&mut self, _now: Duration, buf: &mut Vec<u8>) -> Result<Option<RegionId>, TransportError> {
        loop {
            match self.socket.recv_from(&mut self.buf) {
                Ok((n, src)) => {
                    let Some(&region) = self.by_addr.get(&src) else {
                        self.unknown_source += 1;
                        metrics::counter!("pvp_global_sync_udp_unknown_source_total").increment(1);
                        continue;
                    };
                    buf.clear();
                    buf.extend_from_slice(&self.buf[..n]);
                    return Ok(Some(region));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                // ICMP port unreachable from a peer that is down: not our error.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn wait(&mut self, timeout: Duration) -> Result<(), TransportError> {
        let timeout = timeout.max(Duration::from_micros(100));
        self.socket.set_nonblocking(false)?;
        self.socket.set_read_timeout(Some(timeout))?;
        let mut probe = [0u8; 1];
        let r = self.socket.peek_from(&mut probe);
        self.socket.set_nonblocking(true)?;
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

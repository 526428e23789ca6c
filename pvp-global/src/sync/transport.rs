//! How sync datagrams move between regions: the [`Transport`] trait, implemented by the
//! simulated network ([`SimNetwork`](super::SimNetwork)) and by UDP sockets
//! ([`UdpTransport`](super::UdpTransport)).

use pvp_core::RegionId;
use std::time::Duration;

/// Why a transport call failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The destination region has no known address.
    #[error("no address for region {0}")]
    UnknownPeer(RegionId),
    /// An operating-system error.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// A best-effort datagram transport between regions. Datagrams may be lost, duplicated or
/// reordered; the sync protocol copes with all three.
pub trait Transport {
    /// Sends `payload` to `to` at time `now`.
    fn send(&mut self, now: Duration, to: RegionId, payload: &[u8]) -> Result<(), TransportError>;

    /// Takes the next datagram that has arrived by `now` into `buf` (cleared first) and returns
    /// its sender; `None` when nothing is waiting. Never blocks.
    fn recv(&mut self, now: Duration, buf: &mut Vec<u8>) -> Result<Option<RegionId>, TransportError>;

    /// Blocks up to `timeout` until a datagram may be waiting. Simulated transports return at
    /// once (their time is virtual).
    fn wait(&mut self, timeout: Duration) -> Result<(), TransportError> {
        let _ = timeout;
        Ok(())
    }
}

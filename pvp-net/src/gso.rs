//! UDP generic segmentation offload (GSO) on the send path: consecutive queued datagrams to
//! the same peer with the same size (the last may be shorter) leave as one `sendmsg` whose
//! iovecs point at the outbox slots and whose `UDP_SEGMENT` cmsg gives the segment size; the
//! kernel splits it back into datagrams (in software on loopback, in the NIC where it can).

use crate::endpoint::Outbox;
use crate::sys::GsoMsg;

/// Most segments in one GSO send (the kernel's `UDP_MAX_SEGMENTS` is 64 before 5.x's 128).
pub(crate) const MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO send (an IPv4 datagram holds at most 65,507).
pub(crate) const MAX_BYTES: usize = 65_000;

/// How many items from the front of `items` (peer, length) form one GSO send: the first item,
/// then each following item with the same peer and the same length, plus at most one shorter
/// last item, up to `max_segments` items and `max_bytes` bytes. 0 only for an empty input.
pub(crate) fn run_len<K: PartialEq>(
    items: impl IntoIterator<Item = (K, usize)>,
    max_segments: usize,
    max_bytes: usize,
) -> usize {
    let mut it = items.into_iter();
    let Some((key, seg)) = it.next() else {
        return 0;
    };
    let mut n = 1;
    let mut bytes = seg;
    for (k, len) in it {
        if n >= max_segments || k != key || len > seg || len == 0 || bytes + len > max_bytes {
            break;
        }
        n += 1;
        bytes += len;
        if len < seg {
            break; // a shorter datagram ends the run
        }
    }
    n
}

/// One worker's GSO state: whether it is on, a pool of messages, and how many datagrams at
/// the front of the queue must leave one by one (after a GSO send failed).
pub(crate) struct Gso {
    pub(crate) on: bool,
    /// Boxed: each header points into its own message, which must not move when the pool
    /// grows (the epoll driver grows it) or while an io_uring send holds it.
    #[allow(clippy::vec_box)]
    pub(crate) pool: Vec<Box<GsoMsg>>,
    pub(crate) free: Vec<u32>,
    pub(crate) solo: usize,
}

impl Gso {
    /// `wanted`: the config switch; the kernel is probed on `fd`. `pool`: messages in flight.
    pub(crate) fn new(wanted: bool, fd: i32, pool: usize) -> Self {
        let on = wanted && crate::sys::gso_supported(fd);
        let pool: Vec<Box<GsoMsg>> = if on { (0..pool).map(|_| GsoMsg::new()).collect() } else { Vec::new() };
        Gso { on, free: (0..pool.len() as u32).rev().collect(), pool, solo: 0 }
    }

    /// Length of the run starting at queue position `pos` (1 when GSO is off or the front
    /// datagrams must go alone).
    pub(crate) fn run_at(&self, out: &Outbox, pos: usize) -> usize {
        if !self.on || pos < self.solo {
            return 1;
        }
        run_len(
            out.queued.range(pos..).map(|&i| (out.slots.peer_key(i), out.slots.datagram_len(i))),
            MAX_SEGMENTS,
            MAX_BYTES,
        )
        .max(1)
    }

    /// A failed GSO send of `n` datagrams: `EIO` (the device cannot segment) turns GSO off;
    /// either way the caller resends them one by one.
    pub(crate) fn failed(&mut self, err: i32, n: usize) {
        if err == libc::EIO {
            self.on = false;
        }
        self.solo += n;
    }

    /// `n` datagrams left the front of the queue.
    pub(crate) fn popped(&mut self, n: usize) {
        self.solo = self.solo.saturating_sub(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_same_peer_same_size() {
        let v = [(1, 100), (1, 100), (1, 100), (2, 100)];
        assert_eq!(run_len(v, 64, 65_000), 3);
    }

    #[test]
    fn shorter_last_ends_run() {
        let v = [(1, 100), (1, 100), (1, 40), (1, 100)];
        assert_eq!(run_len(v, 64, 65_000), 3);
    }

    #[test]
    fn longer_breaks_run() {
        let v = [(1, 100), (1, 200), (1, 200)];
        assert_eq!(run_len(v, 64, 65_000), 1);
    }

    #[test]
    fn limits_segments_and_bytes() {
        let v = vec![(7, 1000); 200];
        assert_eq!(run_len(v.clone(), 64, 65_000), 64);
        assert_eq!(run_len(v.clone(), 10, 65_000), 10);
        assert_eq!(run_len(v, 64, 5_500), 5);
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(run_len(Vec::<(u8, usize)>::new(), 64, 65_000), 0);
        assert_eq!(run_len([(3, 10)], 64, 65_000), 1);
        assert_eq!(run_len([(3, 10), (4, 10)], 64, 65_000), 1);
    }
}

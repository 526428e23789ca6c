//! io_uring worker loop: multishot `RecvMsgMulti` into a provided buffer ring (kernel >= 5.19;
//! single-shot `RecvMsg` on owned slots otherwise), batched `SendMsg` from the outbox's slots,
//! the socket as a registered file, one `io_uring_enter` per loop that submits and waits.
//!
//! The ring and every buffer the kernel may touch through it live in
//! [`sys::UdpRing`](crate::sys::UdpRing), which owns them together: a receive buffer belongs to
//! the kernel from the moment it is published until its completion names it, a send slot from
//! its SQE until its completion. At shutdown (dropping the ring) it cancels the receive and
//! waits for every completion, and leaks the memory if the kernel does not answer in time
//! rather than free it under the kernel. This loop only decides when to arm, send, wait and
//! tick.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::time::Instant;

use io_uring::opcode;
use io_uring::types::{SubmitArgs, Timespec};

use crate::endpoint::{DatagramHandler, Outbox, WorkerCtx};
use crate::sys::UdpRing;

/// Completions handled between two hand-offs of replies to the kernel.
const REAP_CHUNK: usize = 64;

pub(crate) fn run<H: DatagramHandler>(
    socket: UdpSocket,
    mut handler: H,
    ctx: WorkerCtx,
    ready: Sender<io::Result<()>>,
) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    let batch = ctx.config.batch;
    let sq = u32::try_from((batch * 8).next_power_of_two().clamp(64, 4096)).unwrap_or(4096);
    let mut ring = match UdpRing::new(fd, sq, &ctx.config, ctx.stats.clone()) {
        Ok(r) => {
            let _ = ready.send(Ok(()));
            r
        }
        Err(e) => {
            let _ = ready.send(Err(io::Error::new(e.kind(), e.to_string())));
            return Err(e);
        }
    };
    let stats = &*ctx.stats;
    let ts = Timespec::from(ctx.config.tick);
    let args = SubmitArgs::new().timespec(&ts);
    let zc = ctx.config.uring_send_zc.filter(|_| super::probe_opcode(opcode::SendMsgZc::CODE));
    let mut result = Ok(());
    while !ctx.stop.load(Ordering::Acquire) {
        if let Err(e) = ring.arm_recv() {
            result = Err(e);
            break;
        }
        let sends = ring.queue_sends(zc);
        match ring.submit_and_wait(&args) {
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
            let deliver = |from, data: &[u8], out: &mut Outbox| handler.on_datagram(now, from, data, out);
            let seen = ring.reap(Some(deliver), REAP_CHUNK);
            if seen < REAP_CHUNK {
                break;
            }
            if !ring.out().queued.is_empty() {
                ring.queue_sends(zc);
                if ring.submit().is_ok() {
                    stats.tx_syscalls.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        handler.on_tick(now, ring.out());
    }
    // Shutdown: cancels receives and waits for every completion before the memory is freed
    // (or leaks it), and unregisters the socket; then the socket closes.
    drop(ring);
    drop(socket);
    result
}

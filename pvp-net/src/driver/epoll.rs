//! epoll + recvmmsg / sendmmsg worker loop.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::time::Instant;

use crate::endpoint::{DatagramHandler, MAX_DATAGRAM, Outbox, SharedStats, WorkerCtx, count_tx};
use crate::gso::Gso;
use crate::sys::{Epoll, GsoMsg, MmsgRecv, MmsgSend, OutMsg};

pub(crate) fn run<H: DatagramHandler>(
    socket: UdpSocket,
    mut handler: H,
    ctx: WorkerCtx,
    ready: Sender<io::Result<()>>,
) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    let setup = (|| -> io::Result<Epoll> {
        let ep = Epoll::new()?;
        ep.add(fd, libc::EPOLLIN as u32, 0)?;
        Ok(ep)
    })();
    let ep = match setup {
        Ok(ep) => {
            let _ = ready.send(Ok(()));
            ep
        }
        Err(e) => {
            let _ = ready.send(Err(io::Error::new(e.kind(), e.to_string())));
            return Err(e);
        }
    };
    let batch = ctx.config.batch;
    let mut recv = MmsgRecv::new(batch, MAX_DATAGRAM + 1);
    let mut out = Outbox::new(batch * 8);
    let mut mm = MmsgSend::with_capacity(batch);
    let mut gso = Gso::new(ctx.config.gso, fd, 0);
    let mut runs: Vec<usize> = Vec::with_capacity(batch);
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
    let tick_ms = i32::try_from(ctx.config.tick.as_millis().max(1)).unwrap_or(i32::MAX);
    let stats = &ctx.stats;
    while !ctx.stop.load(Ordering::Acquire) {
        let timeout = if out.queued.is_empty() { tick_ms } else { 0 };
        ep.wait(&mut events, timeout)?;
        let now = Instant::now();
        // Bounded rounds so sends and ticks are not starved by a flood.
        for _ in 0..16 {
            let n = recv.recv(fd)?;
            stats.rx_syscalls.fetch_add(1, Ordering::Relaxed);
            if n == 0 {
                break;
            }
            stats.rx_packets.fetch_add(n as u64, Ordering::Relaxed);
            for i in 0..n {
                let (from, data, truncated) = recv.get(i);
                match from {
                    // The slots hold MAX_DATAGRAM + 1 bytes: a full one was longer than allowed.
                    Some(from) if !truncated && data.len() <= MAX_DATAGRAM => {
                        handler.on_datagram(now, from, data, &mut out)
                    }
                    _ => {
                        stats.rx_truncated.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            flush(fd, &mut out, &mut mm, &mut gso, &mut runs, batch, stats)?;
            if n < batch {
                break;
            }
        }
        handler.on_tick(now, &mut out);
        flush(fd, &mut out, &mut mm, &mut gso, &mut runs, batch, stats)?;
    }
    Ok(())
}

fn flush(
    fd: i32,
    out: &mut Outbox,
    mm: &mut MmsgSend,
    gso: &mut Gso,
    runs: &mut Vec<usize>,
    batch: usize,
    stats: &SharedStats,
) -> io::Result<()> {
    count_tx(stats, out);
    while !out.queued.is_empty() {
        // Up to `batch` messages; a run of same-peer, same-size datagrams is one GSO message.
        runs.clear();
        let mut pos = 0;
        let mut g = 0;
        while runs.len() < batch && pos < out.queued.len() {
            let n = gso.run_at(out, pos);
            if n > 1 {
                if g == gso.pool.len() {
                    gso.pool.push(GsoMsg::new());
                }
                gso.pool[g].set_members(out.queued.range(pos..pos + n).copied());
                g += 1;
            }
            runs.push(n);
            pos += n;
        }
        stats.tx_syscalls.fetch_add(1, Ordering::Relaxed);
        let (mut pos, mut g) = (0, 0);
        let msgs = runs.iter().map(|&n| {
            let m = if n > 1 {
                g += 1;
                OutMsg::Gso(g - 1)
            } else {
                OutMsg::Slot(out.queued[pos])
            };
            pos += n;
            m
        });
        match mm.send(fd, &out.slots, &mut gso.pool, msgs) {
            Ok(0) => break, // socket buffer full: retry on the next loop
            Ok(k) => {
                for &n in &runs[..k.min(runs.len())] {
                    for _ in 0..n {
                        if let Some(idx) = out.queued.pop_front() {
                            out.release(idx);
                        }
                    }
                    gso.popped(n);
                    stats.tx_packets.fetch_add(n as u64, Ordering::Relaxed);
                    if n > 1 {
                        stats.tx_gso_sends.fetch_add(1, Ordering::Relaxed);
                        stats.tx_gso_segments.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
            Err(e) if runs.first().is_some_and(|&n| n > 1) => {
                // The GSO message failed (no segmentation on the device, segment above the
                // route's MTU): send its datagrams one by one.
                gso.failed(e.raw_os_error().unwrap_or(0), runs[0]);
            }
            Err(_) => {
                // The first datagram failed (bad address, ICMP error): drop it, go on.
                stats.tx_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(idx) = out.queued.pop_front() {
                    out.release(idx);
                }
                gso.popped(1);
            }
        }
    }
    Ok(())
}

//! [`IoUringNetwork`] frees every buffer it was handed exactly once: on drop with operations in
//! flight (submitted, queued and unsubmitted) and when the caller drops a completed buffer.
//! Counted by a `#[global_allocator]` that tracks live heap blocks of marker sizes, so these
//! tests have a test binary of their own (the allocator is process-wide). Every test skips
//! itself (with a note) where io_uring is unavailable.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicIsize, Ordering};

use pvp_net::uring::{Completion, IoUringNetwork};

use common::uring::{drive, pair, skip};

/// Counts live heap blocks of a few marker sizes, so a test can see whether buffers it handed
/// to the ring were freed (and freed once).
struct Counting;

const MARKERS: [usize; 2] = [77_771, 77_773];

static LIVE: [AtomicIsize; 2] = [AtomicIsize::new(0), AtomicIsize::new(0)];

fn marker(size: usize) -> Option<usize> {
    MARKERS.iter().position(|&m| m == size)
}

// SAFETY: forwards to the system allocator; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(i) = marker(layout.size()) {
            LIVE[i].fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if let Some(i) = marker(layout.size()) {
            LIVE[i].fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(i) = marker(layout.size()) {
            LIVE[i].fetch_sub(1, Ordering::SeqCst);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn dropping_with_operations_in_flight_frees_every_buffer_once() {
    if skip() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (_client, server) = pair();
    let before = LIVE[0].load(Ordering::SeqCst);
    let mut net = IoUringNetwork::new(4).unwrap();
    // Submitted receives, queued-but-unsubmitted receives and a pending accept.
    for t in 0..12u64 {
        net.prepare_recv(&server, vec![0u8; MARKERS[0]], t).unwrap();
    }
    net.submit().unwrap();
    net.prepare_accept(&listener, 99).unwrap();
    for t in 12..14u64 {
        net.prepare_recv(&server, vec![0u8; MARKERS[0]], t).unwrap();
    }
    assert_eq!(LIVE[0].load(Ordering::SeqCst) - before, 14);
    assert_eq!(net.in_flight(), 15);
    drop(net);
    assert_eq!(LIVE[0].load(Ordering::SeqCst), before, "cancelled buffers are freed, not leaked");
    // The sockets still work after the drop.
    let mut c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut s, _) = listener.accept().unwrap();
    c.write_all(b"ok").unwrap();
    let mut got = [0u8; 2];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ok");
}

#[test]
fn a_completed_buffer_dropped_by_the_caller_is_freed_once() {
    if skip() {
        return;
    }
    let (mut client, server) = pair();
    let before = LIVE[1].load(Ordering::SeqCst);
    let mut net = IoUringNetwork::new(4).unwrap();
    net.prepare_recv(&server, vec![0u8; MARKERS[1]], 5).unwrap();
    client.write_all(b"z").unwrap();
    let mut done = false;
    assert!(drive(
        &mut net,
        |c| done |= matches!(c, Completion::Received { token: 5, result: Ok(1), .. }),
        1
    ));
    assert_eq!(LIVE[1].load(Ordering::SeqCst), before, "the callback dropped the buffer");
    drop(net);
    assert_eq!(LIVE[1].load(Ordering::SeqCst), before);
}

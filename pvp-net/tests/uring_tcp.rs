//! IoUringNetwork on loopback TCP: accept, recv, send, buffers handed back, a full
//! submission queue flushed rather than dropped. Skips itself where io_uring is unavailable.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use pvp_net::uring::{Completion, IoUringNetwork};

fn skip() -> bool {
    if let Some(e) = pvp_net::driver::io_uring_unavailable() {
        eprintln!("note: skipping io_uring test: {e}");
        return true;
    }
    false
}

fn wait_for(net: &mut IoUringNetwork, mut f: impl FnMut(Completion) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut done = false;
    while !done && Instant::now() < deadline {
        net.submit_and_wait(1, Some(Duration::from_millis(50))).unwrap();
        net.process_completions(|c| done |= f(c));
    }
    done
}

#[test]
fn accept_recv_send_round_trip() {
    if skip() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut net = IoUringNetwork::new(16).unwrap();
    net.prepare_accept(&listener, 7).unwrap();
    net.submit().unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let mut server = None;
    assert!(wait_for(&mut net, |c| match c {
        Completion::Accepted { token: 7, result } => {
            let (s, peer) = result.unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
            server = Some(s);
            true
        }
        _ => false,
    }));
    let server = server.unwrap();
    net.prepare_recv(&server, vec![0u8; 64], 8).unwrap();
    client.write_all(b"hello ring").unwrap();
    let mut got = Vec::new();
    assert!(wait_for(&mut net, |c| match c {
        Completion::Received { token: 8, buf, result } => {
            let n = result.unwrap();
            got = buf[..n].to_vec();
            assert_eq!(buf.len(), 64, "buffer handed back whole");
            true
        }
        _ => false,
    }));
    assert_eq!(got, b"hello ring");
    net.prepare_send(&server, b"reply".to_vec(), 9).unwrap();
    assert!(wait_for(&mut net, |c| matches!(c, Completion::Sent { token: 9, result: Ok(5), .. })));
    let mut r = [0u8; 5];
    client.read_exact(&mut r).unwrap();
    assert_eq!(&r, b"reply");
    // Peer close: a receive completes with 0.
    drop(client);
    net.prepare_recv(&server, vec![0u8; 8], 10).unwrap();
    assert!(wait_for(&mut net, |c| matches!(c, Completion::Received { token: 10, result: Ok(0), .. })));
    assert_eq!(net.in_flight(), 0);
}

#[test]
fn full_submission_queue_is_flushed_not_dropped() {
    if skip() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    // 4 submission slots, 40 sends queued without an explicit submit.
    let mut net = IoUringNetwork::new(4).unwrap();
    for i in 0..40u8 {
        net.prepare_send(&server, vec![i], u64::from(i)).unwrap();
    }
    assert!(net.stats().sq_full_flushes > 0);
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while sent < 40 && Instant::now() < deadline {
        net.submit_and_wait(1, Some(Duration::from_millis(50))).unwrap();
        net.process_completions(|c| {
            if let Completion::Sent { result: Ok(1), .. } = c {
                sent += 1;
            }
        });
    }
    assert_eq!(sent, 40);
    let mut all = [0u8; 40];
    client.read_exact(&mut all).unwrap();
    let mut sorted = all.to_vec();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..40u8).collect::<Vec<_>>());
}

#[test]
fn dropping_with_operations_in_flight_is_safe() {
    if skip() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let mut net = IoUringNetwork::new(8).unwrap();
    for i in 0..4 {
        net.prepare_recv(&server, vec![0u8; 1024], i).unwrap();
    }
    net.submit().unwrap();
    assert_eq!(net.in_flight(), 4);
    drop(net); // cancels and waits; buffers are not freed under the kernel
}

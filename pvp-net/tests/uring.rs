//! The low-level [`IoUringNetwork`] on loopback TCP: accept, recv, send, every buffer handed
//! back exactly as given, result types, more operations than the ring holds, a full submission
//! queue flushed rather than dropped, closed peers, failed operations, drop with operations in
//! flight, and bad arguments refused. Every test skips itself (with a note) where io_uring is
//! unavailable. (That buffers are freed exactly once is counted in `uring_alloc.rs`.)

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use pvp_net::uring::{Completion, IoUringNetwork};

use common::uring::{drive, pair, skip};

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

#[test]
fn every_completion_hands_back_exactly_the_buffer_it_was_given() {
    if skip() {
        return;
    }
    let (mut client, server) = pair();
    let mut net = IoUringNetwork::new(8).unwrap();
    let mut expect: HashMap<u64, (usize, usize, usize)> = HashMap::new();
    for t in 0..6u64 {
        let mut buf = Vec::with_capacity(100 + t as usize * 10);
        buf.resize(10 + t as usize, 0xEE);
        expect.insert(t, (buf.as_ptr() as usize, buf.len(), buf.capacity()));
        net.prepare_recv(&server, buf, t).unwrap();
    }
    for t in 100..104u64 {
        let buf = vec![t as u8; 3];
        expect.insert(t, (buf.as_ptr() as usize, buf.len(), buf.capacity()));
        net.prepare_send(&server, buf, t).unwrap();
    }
    assert_eq!(net.in_flight(), 10);
    assert_eq!(net.stats().prepared, 10);
    net.submit().unwrap();
    // Enough bytes for every receive to finish (each takes at most its length).
    client.write_all(&[7u8; 6 * 15]).unwrap();
    let mut seen = HashMap::new();
    let mut received = 0usize;
    let ok = drive(
        &mut net,
        |c| match c {
            Completion::Received { token, buf, result } => {
                let n = result.unwrap();
                assert!(n >= 1 && n <= buf.len());
                assert!(buf[..n].iter().all(|&b| b == 7), "first n bytes are the new data");
                assert!(buf[n..].iter().all(|&b| b == 0xEE), "bytes past n untouched");
                received += n;
                seen.insert(token, (buf.as_ptr() as usize, buf.len(), buf.capacity()));
            }
            Completion::Sent { token, buf, result } => {
                assert_eq!(result.unwrap(), 3);
                assert_eq!(buf, vec![token as u8; 3]);
                seen.insert(token, (buf.as_ptr() as usize, buf.len(), buf.capacity()));
            }
            other => panic!("unexpected {other:?}"),
        },
        10,
    );
    assert!(ok, "only {} of 10 completions", seen.len());
    assert_eq!(seen, expect, "same allocation, length and capacity back for every token");
    assert_eq!(net.in_flight(), 0);
    assert_eq!(net.stats().completed, 10);
    let mut sent = [0u8; 12];
    client.read_exact(&mut sent).unwrap();
    let mut s = sent.to_vec();
    s.sort_unstable();
    assert_eq!(s, [100, 100, 100, 101, 101, 101, 102, 102, 102, 103, 103, 103]);
    assert!(received <= 90);
}

#[test]
fn accept_then_echo_over_loopback_tcp() {
    if skip() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut net = IoUringNetwork::new(4).unwrap();
    net.prepare_accept(&listener, 1).unwrap();
    net.submit().unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let mut server = None;
    assert!(drive(
        &mut net,
        |c| match c {
            Completion::Accepted { token: 1, result } => {
                let (s, peer) = result.unwrap();
                assert_eq!(peer, client.local_addr().unwrap());
                assert_eq!(s.local_addr().unwrap(), listener.local_addr().unwrap());
                server = Some(s);
            }
            other => panic!("unexpected {other:?}"),
        },
        1
    ));
    let server = server.unwrap();
    // Echo 20 messages through the ring: each received chunk is sent back in the same buffer.
    let mut echoed = Vec::new();
    for round in 0..20u8 {
        let msg = vec![round; 1 + round as usize * 7];
        client.write_all(&msg).unwrap();
        let mut got = 0;
        while got < msg.len() {
            net.prepare_recv(&server, vec![0u8; 256], 2).unwrap();
            let mut chunk = None;
            assert!(drive(
                &mut net,
                |c| match c {
                    Completion::Received { token: 2, mut buf, result } => {
                        let n = result.unwrap();
                        buf.truncate(n);
                        chunk = Some(buf);
                    }
                    other => panic!("unexpected {other:?}"),
                },
                1
            ));
            let chunk = chunk.unwrap();
            assert!(!chunk.is_empty(), "peer still open");
            got += chunk.len();
            let len = chunk.len();
            net.prepare_send(&server, chunk, 3).unwrap();
            let mut sent = None;
            assert!(drive(
                &mut net,
                |c| match c {
                    Completion::Sent { token: 3, result, .. } => sent = Some(result.unwrap()),
                    other => panic!("unexpected {other:?}"),
                },
                1
            ));
            assert_eq!(sent, Some(len));
        }
        let mut back = vec![0u8; msg.len()];
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
        echoed.push(round);
    }
    assert_eq!(echoed.len(), 20);
    assert_eq!(net.in_flight(), 0);
}

#[test]
fn closed_peers_report_zero_on_recv_and_an_error_on_send_without_a_signal() {
    if skip() {
        return;
    }
    let (client, server) = pair();
    let mut net = IoUringNetwork::new(4).unwrap();
    drop(client);
    net.prepare_recv(&server, vec![1u8; 16], 1).unwrap();
    let mut r = None;
    assert!(drive(
        &mut net,
        |c| {
            if let Completion::Received { token: 1, buf, result } = c {
                assert_eq!(buf, vec![1u8; 16], "nothing written on end of stream");
                r = Some(result.map_err(|e| e.kind()));
            }
        },
        1
    ));
    assert_eq!(r, Some(Ok(0)), "documented: Ok(0) means the peer closed");
    // Sending to a closed peer eventually fails with an error (EPIPE / ECONNRESET), not a
    // SIGPIPE that would kill the process.
    let mut failed = None;
    for i in 0..50u64 {
        net.prepare_send(&server, vec![0u8; 4096], i).unwrap();
        assert!(drive(
            &mut net,
            |c| {
                if let Completion::Sent { result: Err(e), .. } = c {
                    failed = Some(e.kind());
                }
            },
            1
        ));
        if failed.is_some() {
            break;
        }
    }
    assert!(
        matches!(failed, Some(std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)),
        "{failed:?}"
    );
    let _ = server.shutdown(Shutdown::Both);
}

#[test]
fn more_operations_than_the_ring_holds_all_complete() {
    if skip() {
        return;
    }
    let (mut client, server) = pair();
    // 2 submission slots (so a completion queue of a few entries), 64 receives pending at
    // once: the queue is flushed repeatedly and more completions arrive than the completion
    // queue holds.
    let mut net = IoUringNetwork::new(2).unwrap();
    for t in 0..64u64 {
        net.prepare_recv(&server, vec![0u8; 1], t).unwrap();
    }
    assert_eq!(net.in_flight(), 64);
    assert_eq!(net.stats().prepared, 64);
    assert!(net.stats().sq_full_flushes >= 30, "{:?}", net.stats());
    net.submit().unwrap();
    let data: Vec<u8> = (0..64u8).collect();
    client.write_all(&data).unwrap();
    let mut tokens = Vec::new();
    let mut bytes = Vec::new();
    let ok = drive(
        &mut net,
        |c| match c {
            Completion::Received { token, buf, result } => {
                assert_eq!(result.unwrap(), 1);
                tokens.push(token);
                bytes.push(buf[0]);
            }
            other => panic!("unexpected {other:?}"),
        },
        64,
    );
    assert!(ok, "only {} of 64 receives completed", tokens.len());
    tokens.sort_unstable();
    assert_eq!(tokens, (0..64).collect::<Vec<_>>());
    bytes.sort_unstable();
    assert_eq!(bytes, data);
    assert_eq!(net.in_flight(), 0);
    assert_eq!(net.stats().completed, 64);
}

#[test]
fn stats_count_prepares_completions_and_enter_calls() {
    if skip() {
        return;
    }
    let (mut client, server) = pair();
    let mut net = IoUringNetwork::new(8).unwrap();
    let s0 = net.stats();
    assert_eq!((s0.prepared, s0.completed, s0.submits, s0.sq_full_flushes), (0, 0, 0, 0));
    net.prepare_send(&server, b"abc".to_vec(), 1).unwrap();
    assert_eq!(net.stats().prepared, 1);
    assert_eq!(net.stats().submits, 0, "prepare alone does not enter the kernel");
    net.submit().unwrap();
    assert_eq!(net.stats().submits, 1);
    let mut n = 0;
    assert!(drive(&mut net, |_| n += 1, 1));
    let s = net.stats();
    assert_eq!(s.completed, 1);
    assert_eq!(s.sq_full_flushes, 0);
    assert!(s.submits >= 2);
    let mut got = [0u8; 3];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"abc");
    // Nothing in flight: waiting for more returns at once with nothing processed.
    assert_eq!(net.submit_and_wait(5, Some(Duration::from_secs(30))).unwrap(), 0);
    assert_eq!(net.process_completions(|_| panic!("no completion expected")), 0);
}

#[test]
fn waiting_without_a_timeout_for_more_completions_than_the_queue_holds_returns() {
    if skip() {
        return;
    }
    let (mut client, server) = pair();
    let mut net = IoUringNetwork::new(2).unwrap();
    for t in 0..32u64 {
        net.prepare_recv(&server, vec![0u8; 1], t).unwrap();
    }
    net.submit().unwrap();
    client.write_all(&[9u8; 32]).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut n = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while n < 32 && Instant::now() < deadline {
            if net.submit_and_wait(32 - n, None).is_err() {
                break;
            }
            n +=
                net.process_completions(|c| assert!(matches!(c, Completion::Received { result: Ok(1), .. })));
        }
        let _ = tx.send(n);
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(32));
}

#[test]
fn failed_operations_complete_with_errors_and_hand_buffers_back() {
    if skip() {
        return;
    }
    let (_client, server) = pair();
    let mut net = IoUringNetwork::new(4).unwrap();
    // Accept on a connected stream (not a listener): the kernel refuses it at completion.
    net.prepare_accept(&server, 1).unwrap();
    // An empty send is allowed and sends nothing.
    net.prepare_send(&server, Vec::with_capacity(32), 2).unwrap();
    let mut accept_err = None;
    let mut sent = None;
    assert!(drive(
        &mut net,
        |c| match c {
            Completion::Accepted { token: 1, result } => accept_err = Some(result.is_err()),
            Completion::Sent { token: 2, buf, result } =>
                sent = Some((buf.capacity() >= 32, result.unwrap())),
            other => panic!("unexpected {other:?}"),
        },
        2
    ));
    assert_eq!(accept_err, Some(true));
    assert_eq!(sent, Some((true, 0)));
    assert_eq!(net.in_flight(), 0);
}

#[test]
fn io_uring_network_refuses_a_zero_sized_ring_and_an_empty_recv_buffer() {
    if pvp_net::driver::io_uring_unavailable().is_some() {
        return;
    }
    assert!(pvp_net::IoUringNetwork::new(0).is_err());
    let mut net = pvp_net::IoUringNetwork::new(4).unwrap();
    assert_eq!(net.in_flight(), 0);
    assert_eq!(net.stats().prepared, 0);
    // A buffer with capacity but no length: refused, handed back, nothing queued.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let e = net.prepare_recv(&stream, Vec::with_capacity(64), 1).unwrap_err();
    assert_eq!(e.error.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(e.buf.map(|b| b.capacity() >= 64), Some(true));
    assert_eq!(net.in_flight(), 0);
    assert_eq!(net.stats().prepared, 0);
    // Waiting with nothing in flight returns instead of blocking forever.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = net.submit_and_wait(1, None).map_err(|e| e.kind());
        let _ = tx.send(r);
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(Ok(0)));
}

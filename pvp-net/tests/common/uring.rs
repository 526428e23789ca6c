//! io_uring helpers of the `uring` and `uring_alloc` test binaries.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use pvp_net::uring::{Completion, IoUringNetwork};

/// True (with a note) where io_uring is unavailable: the test then returns at once.
pub(crate) fn skip() -> bool {
    if let Some(e) = pvp_net::driver::io_uring_unavailable() {
        eprintln!("note: skipping io_uring test: {e}");
        return true;
    }
    false
}

/// A connected loopback TCP pair: (client, server side).
pub(crate) fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// Drives the ring until `want` completions went through `f` or 5 s pass; false on the
/// deadline.
pub(crate) fn drive(net: &mut IoUringNetwork, mut f: impl FnMut(Completion), want: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = 0;
    while got < want {
        if Instant::now() > deadline {
            return false;
        }
        net.submit_and_wait(want - got, Some(Duration::from_millis(20))).unwrap();
        got += net.process_completions(&mut f);
    }
    true
}

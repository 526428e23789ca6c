use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::MetricsRegistry;

/// Why the `/metrics` server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Binding the listening socket failed.
    #[error("cannot bind the metrics server: {0}")]
    Bind(String),
    /// The server's thread could not be spawned.
    #[error("cannot spawn the metrics server thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// Serves a [`MetricsRegistry`] at `GET /metrics` in the Prometheus text format, on its own
/// thread (`tiny_http`). Stops when [`shutdown`](Self::shutdown) is called or it is dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    scrapes: Arc<AtomicU64>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer").field("addr", &self.addr).field("scrapes", &self.scrapes()).finish()
    }
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port) and starts serving `registry`.
    pub fn bind(addr: SocketAddr, registry: MetricsRegistry) -> Result<Self, ServerError> {
        let server = Arc::new(tiny_http::Server::http(addr).map_err(|e| ServerError::Bind(e.to_string()))?);
        let addr =
            server.server_addr().to_ip().ok_or_else(|| ServerError::Bind("not an IP listener".into()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let scrapes = Arc::new(AtomicU64::new(0));
        let thread = {
            let (server, stop, scrapes) = (server.clone(), stop.clone(), scrapes.clone());
            std::thread::Builder::new()
                .name("pvp-metrics-http".into())
                .spawn(move || serve(&server, &registry, &stop, &scrapes))?
        };
        Ok(Self { addr, stop, scrapes, server, thread: Some(thread) })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many `/metrics` requests were answered.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::Relaxed)
    }

    /// Stops the server and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn serve(server: &tiny_http::Server, registry: &MetricsRegistry, stop: &AtomicBool, scrapes: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        let req = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(_) => break,
        };
        let path = req.url().split('?').next().unwrap_or("");
        let resp = if *req.method() == tiny_http::Method::Get && path == "/metrics" {
            scrapes.fetch_add(1, Ordering::Relaxed);
            let body = registry.render();
            let mut r = tiny_http::Response::from_string(body);
            if let Ok(h) = tiny_http::Header::from_bytes(
                &b"Content-Type"[..],
                &b"text/plain; version=0.0.4; charset=utf-8"[..],
            ) {
                r.add_header(h);
            }
            r
        } else {
            tiny_http::Response::from_string("not found\n").with_status_code(404)
        };
        let _ = req.respond(resp);
    }
}

//! `/healthz`, `/readyz` and `/metrics` on `--listen`.
//!
//! Three GET routes and nothing else: a request line read with a timeout, one response, the
//! connection closed. A small tokio handler rather than hyper's server: no new dependency or
//! feature, and nothing here needs keep-alive, chunking or HTTP/2 (Prometheus and kubelet probes
//! send one GET per connection happily).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::metrics::{Metrics, CONTENT_TYPE};

/// How many queue calls in a row must fail before `/healthz` says the worker is unhealthy.
pub const UNHEALTHY_AFTER: u32 = 3;

/// What the probes report: shared by the worker's loops (which set it) and the server.
#[derive(Debug)]
pub struct Health {
    draining: AtomicBool,
    failures: AtomicU32,
    last_error: Mutex<Option<String>>,
    /// The metrics `/metrics` renders.
    pub metrics: Arc<Metrics>,
}

impl Health {
    /// A healthy, ready worker's state.
    pub fn new(metrics: Arc<Metrics>) -> Health {
        Health {
            draining: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            last_error: Mutex::new(None),
            metrics,
        }
    }

    /// The worker drains: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.metrics.set_draining();
    }

    /// Whether the worker drains.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// A queue call succeeded.
    pub fn queue_ok(&self) {
        self.failures.store(0, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A queue call failed with `error`.
    pub fn queue_failed(&self, error: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// The status and body of `/healthz`.
    pub fn healthz(&self) -> (u16, String) {
        let failures = self.failures.load(Ordering::Relaxed);
        if failures >= UNHEALTHY_AFTER {
            let error = self.last_error();
            return (
                503,
                format!("{failures} queue calls failed in a row: {error}"),
            );
        }
        (200, "ok".into())
    }

    /// The status and body of `/readyz`.
    pub fn readyz(&self) -> (u16, String) {
        if self.is_draining() {
            return (503, "draining".into());
        }
        if self.failures.load(Ordering::Relaxed) > 0 {
            return (503, format!("queue unreachable: {}", self.last_error()));
        }
        (200, "ready".into())
    }

    fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    }
}

/// Binds `addr` (port 0: any free port); the address bound is the listener's.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Answers the probes on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, health: Arc<Health>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let health = health.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &health)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, health: &Health) -> std::io::Result<()> {
    // The request line and headers; a probe's fit in far less than 8 KiB.
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    while len < buf.len() {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/healthz") => {
            let (status, body) = health.healthz();
            (status, "text/plain; charset=utf-8", body)
        }
        ("GET" | "HEAD", "/readyz") => {
            let (status, body) = health.readyz();
            (status, "text/plain; charset=utf-8", body)
        }
        ("GET" | "HEAD", "/metrics") => (200, CONTENT_TYPE, health.metrics.render()),
        ("GET" | "HEAD", _) => (404, "text/plain; charset=utf-8", "not found".into()),
        _ => (
            405,
            "text/plain; charset=utf-8",
            "method not allowed".into(),
        ),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let body = if body.ends_with('\n') {
        body
    } else {
        body + "\n"
    };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

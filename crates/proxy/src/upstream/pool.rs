//! Connection pools to one endpoint: HTTP/1.1 keeps idle keep-alive connections (one request
//! at a time each); HTTP/2 keeps one multiplexed connection, reopened when it closes.
//!
//! An HTTP/1.1 connection goes back to the idle list only when its response body has been
//! read to the end (the caller holds it in an [`H1Conn`] until then), so a connection is
//! never handed to two requests.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::http::body::Body;
use crate::upstream::connect::BoxIo;

/// Idle HTTP/1.1 connections kept per endpoint at most.
const MAX_IDLE_PER_HOST: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Http1,
    Http2,
}

/// An HTTP/1.1 connection checked out of the pool.
pub struct H1Conn {
    sender: http1::SendRequest<Body>,
    requests: u32,
    idle_since: Instant,
}

/// A connection ready to carry one request.
pub enum Checkout {
    H1(H1Conn),
    H2(http2::SendRequest<Body>),
}

impl Checkout {
    /// Sends the request. For HTTP/1.1 the connection comes back with the response, to be
    /// returned to the pool (`Pools::release`) when the body is done.
    pub async fn send(
        self,
        req: Request<Body>,
    ) -> Result<(Response<Incoming>, Option<H1Conn>), hyper::Error> {
        match self {
            Checkout::H1(mut c) => {
                c.requests += 1;
                let resp = c.sender.send_request(req).await?;
                Ok((resp, Some(c)))
            }
            Checkout::H2(mut s) => Ok((s.send_request(req).await?, None)),
        }
    }
}

#[derive(Default)]
pub struct Pools {
    idle: Mutex<Vec<H1Conn>>,
    h2: tokio::sync::Mutex<Option<http2::SendRequest<Body>>>,
}

impl Pools {
    /// A ready idle HTTP/1.1 connection, if any (expired and closed ones are dropped).
    pub async fn take_idle_h1(&self, idle_timeout: Option<Duration>) -> Option<H1Conn> {
        loop {
            let mut c = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            if c.sender.is_closed() || idle_timeout.is_some_and(|t| c.idle_since.elapsed() > t) {
                continue;
            }
            // Ready is immediate for a connection whose last response was fully read.
            match tokio::time::timeout(Duration::from_millis(50), c.sender.ready()).await {
                Ok(Ok(())) => return Some(c),
                _ => continue,
            }
        }
    }

    /// Opens an HTTP/1.1 connection on `io` (upgrades allowed, for WebSocket).
    pub async fn handshake_h1(io: BoxIo) -> Result<H1Conn, hyper::Error> {
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(256 * 1024)
            .handshake(TokioIo::new(io))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("upstream http/1.1 connection: {e}");
            }
        });
        Ok(H1Conn {
            sender,
            requests: 0,
            idle_since: Instant::now(),
        })
    }

    /// Returns a connection whose response is complete, unless it is closed or has carried
    /// `max_requests` (0 = unlimited).
    pub fn release(&self, mut c: H1Conn, max_requests: u32) {
        if c.sender.is_closed() || (max_requests > 0 && c.requests >= max_requests) {
            return;
        }
        c.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_PER_HOST {
            idle.push(c);
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The endpoint's HTTP/2 connection, opened with `dial` when there is none or it closed.
    /// Concurrent callers wait for one dial rather than each opening a connection.
    pub async fn h2<F, Fut, E>(&self, dial: F) -> Result<http2::SendRequest<Body>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<BoxIo, E>>,
        E: From<hyper::Error>,
    {
        let mut slot = self.h2.lock().await;
        if let Some(s) = slot.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        *slot = None;
        let io = dial().await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .handshake(TokioIo::new(io))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream http/2 connection: {e}");
            }
        });
        *slot = Some(sender.clone());
        Ok(sender)
    }
}

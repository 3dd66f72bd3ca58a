//! Bodies on the request path.
//!
//! - [`Body`]: the one boxed body type sent upstream and downstream.
//! - [`TeeBody`]: streams the downstream request body upstream while keeping a copy of up to
//!   [`REPLAY_LIMIT`] bytes, so a retry or a mirror can replay it. Larger bodies stream without
//!   a copy (and so without retries). It also records when reading the downstream body failed
//!   ([`Recording::downstream_error`]: malformed chunked framing, a client gone mid-body), so
//!   the failed upstream attempt that follows is answered as the client's error (400, `DPE`),
//!   not as an upstream reset (503).
//! - [`ResponseBody`]: the upstream response on its way down; when it ends it returns the
//!   HTTP/1.1 connection to the pool and writes the access log line.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::watch;

use crate::http::access_log::AccessLog;
use crate::upstream::InFlightSlot;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response the proxy builds.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Request bodies up to this size are kept for retries and mirrors.
pub const REPLAY_LIMIT: usize = 64 * 1024;

pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync()
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

pub fn boxed<B>(b: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed_unsync()
}

/// How far the recorded copy of a request body got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordState {
    /// Still streaming.
    Pending,
    /// Whole body seen and kept.
    Complete,
    /// Too large to keep, failed, or abandoned before the end.
    Unavailable,
}

/// The kept copy of a request body, shared by the attempts and mirrors of one request.
pub struct Recording {
    data: Mutex<BytesMut>,
    state: watch::Sender<RecordState>,
    /// Request bytes received from downstream (access log).
    pub bytes_in: AtomicU64,
    /// Why reading the downstream body failed, when it did.
    downstream_error: OnceLock<String>,
}

impl Recording {
    /// A recording for a request whose body is empty: complete from the start. One shared
    /// instance (nothing is ever written to it), so body-less requests allocate none.
    pub fn empty() -> Arc<Self> {
        static EMPTY: std::sync::LazyLock<Arc<Recording>> = std::sync::LazyLock::new(|| {
            Arc::new(Recording {
                data: Mutex::new(BytesMut::new()),
                state: watch::Sender::new(RecordState::Complete),
                bytes_in: AtomicU64::new(0),
                downstream_error: OnceLock::new(),
            })
        });
        EMPTY.clone()
    }

    fn pending() -> Arc<Self> {
        Arc::new(Recording {
            data: Mutex::new(BytesMut::new()),
            state: watch::Sender::new(RecordState::Pending),
            bytes_in: AtomicU64::new(0),
            downstream_error: OnceLock::new(),
        })
    }

    /// Why reading the downstream request body failed (hyper's body error: malformed
    /// framing such as an overflowing chunk size, or the client gone mid-body), if it did.
    /// Set before the error reaches the upstream connection, so an attempt that fails
    /// because of it can tell.
    pub fn downstream_error(&self) -> Option<&str> {
        self.downstream_error.get().map(String::as_str)
    }

    pub fn state(&self) -> RecordState {
        *self.state.borrow()
    }

    /// Whether `replay` would give a body.
    pub fn replay_possible(&self) -> bool {
        self.state() == RecordState::Complete
    }

    /// A fresh body with the recorded bytes, when the whole body was kept.
    pub fn replay(&self) -> Option<Body> {
        if self.state() != RecordState::Complete {
            return None;
        }
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Some(if data.is_empty() {
            empty()
        } else {
            full(data.freeze())
        })
    }

    /// Waits until the body is complete (or known unavailable), then replays it.
    pub async fn replay_when_complete(&self) -> Option<Body> {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| *s != RecordState::Pending).await;
        self.replay()
    }

    fn mark(&self, s: RecordState) {
        self.state.send_if_modified(|cur| {
            if *cur == RecordState::Pending {
                *cur = s;
                true
            } else {
                false
            }
        });
    }
}

pin_project_lite::pin_project! {
    /// Streams a body while recording it (see module docs).
    pub struct TeeBody<B> {
        #[pin]
        inner: B,
        rec: Arc<Recording>,
    }

    impl<B> PinnedDrop for TeeBody<B> {
        fn drop(this: Pin<&mut Self>) {
            this.rec.mark(RecordState::Unavailable);
        }
    }
}

impl<B> TeeBody<B> {
    pub fn new(inner: B) -> (Self, Arc<Recording>) {
        let rec = Recording::pending();
        (
            TeeBody {
                inner,
                rec: rec.clone(),
            },
            rec,
        )
    }
}

impl<B> HttpBody for TeeBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.rec
                        .bytes_in
                        .fetch_add(d.len() as u64, Ordering::Relaxed);
                    if this.rec.state() == RecordState::Pending {
                        let mut data = this.rec.data.lock().unwrap_or_else(|e| e.into_inner());
                        if data.len() + d.len() > REPLAY_LIMIT {
                            *data = BytesMut::new();
                            drop(data);
                            this.rec.mark(RecordState::Unavailable);
                        } else {
                            data.extend_from_slice(d);
                        }
                    }
                    // Clients may stop polling once Content-Length bytes arrived.
                    if this.inner.is_end_stream() {
                        this.rec.mark(RecordState::Complete);
                    }
                } else if frame.is_trailers() {
                    // Request trailers are forwarded but not replayed.
                    this.rec.mark(RecordState::Unavailable);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let e: BoxError = e.into();
                this.rec.downstream_error.get_or_init(|| e.to_string());
                this.rec.mark(RecordState::Unavailable);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.rec.mark(RecordState::Complete);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body on its way downstream (see module docs).
pub struct ResponseBody {
    inner: Body,
    slot: Option<InFlightSlot>,
    log: Option<Box<AccessLog>>,
    done: bool,
}

impl ResponseBody {
    pub fn new(inner: Body, slot: Option<InFlightSlot>, log: Box<AccessLog>) -> Self {
        ResponseBody {
            inner,
            slot,
            log: Some(log),
            done: false,
        }
    }

    fn finish(&mut self, downstream_gone: bool) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(slot) = self.slot.take() {
            if !downstream_gone {
                slot.complete();
            }
        }
        if let Some(mut log) = self.log.take() {
            if downstream_gone {
                log.flags.set(crate::http::error::Flag::DC);
            }
            log.emit();
        }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(d), Some(log)) = (frame.data_ref(), this.log.as_mut()) {
                    log.bytes_out += d.len() as u64;
                } else if let (Some(t), Some(log)) = (frame.trailers_ref(), this.log.as_mut()) {
                    log.metrics.trailers(t);
                }
                if this.inner.is_end_stream() {
                    this.finish(false);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(log) = this.log.as_mut() {
                    log.flags.set(crate::http::error::Flag::UPE);
                }
                // The upstream connection failed mid-body: it is not reusable.
                this.slot = None;
                this.finish(false);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish(false);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if !self.done {
            // Dropped before the end: the client went away (or the response was cut short).
            // An HTTP/1.1 connection with unread response bytes is not reused.
            if self.inner.is_end_stream() {
                self.finish(false);
            } else {
                self.slot = None;
                self.finish(true);
            }
        }
    }
}

/// Collects trailers-free small bodies in tests and local replies.
pub fn header_map_is_grpc(h: &HeaderMap) -> bool {
    h.get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_downstream_body_is_recorded() {
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"hello"))),
            Err("invalid chunk size line".into()),
        ];
        let inner = http_body_util::StreamBody::new(tokio_stream::iter(chunks));
        let (tee, rec) = TeeBody::new(inner);
        assert_eq!(rec.downstream_error(), None);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = rt.block_on(tee.collect()).unwrap_err();
        assert_eq!(err.to_string(), "invalid chunk size line");
        assert_eq!(rec.downstream_error(), Some("invalid chunk size line"));
        assert_eq!(rec.state(), RecordState::Unavailable);
        assert_eq!(rec.bytes_in.load(Ordering::Relaxed), 5);

        let (tee, rec) = TeeBody::new(Full::new(Bytes::from_static(b"ok")));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(&rt.block_on(tee.collect()).unwrap().to_bytes()[..], b"ok");
        assert_eq!(rec.downstream_error(), None);
        assert_eq!(rec.state(), RecordState::Complete);
    }
}

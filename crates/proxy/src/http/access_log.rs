//! The access log: one line per request on the `access` tracing target, in Envoy's default
//! text format plus the route origin (which VirtualService rule served the request) and, when an
//! AuthorizationPolicy applies, the authorization decision naming the policy and rule:
//!
//! ```text
//! [2026-11-02T10:00:00.123Z] "GET /api HTTP/1.1" 200 - 0 13 4 "10.0.0.1" "curl/8.5" "3f2a..." "api.example.com" "127.0.0.1:8080" outbound|80||api VirtualService ns/api rule 0
//! ```
//!
//! Written when the response body ends (or the client goes away), so the byte counts and
//! the duration are the real ones.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::Version;

use crate::http::body::Recording;
use crate::http::error::Flags;

pub struct AccessLog {
    pub start: Instant,
    pub wall: SystemTime,
    pub method: http::Method,
    pub path: String,
    pub version: Version,
    pub status: u16,
    pub flags: Flags,
    pub request_body: Option<Arc<Recording>>,
    pub bytes_out: u64,
    pub forwarded_for: Option<http::HeaderValue>,
    pub user_agent: Option<http::HeaderValue>,
    pub request_id: Option<http::HeaderValue>,
    pub authority: String,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<String>,
    pub route: Option<String>,
    pub listener: Arc<str>,
    /// The authorization decision, when a policy applies: the deciding policy and rule
    /// (`denied by DENY policy ns/name rule 0`), appended quoted.
    pub authz: Option<String>,
    /// Istio's metrics for this request, recorded with the log line.
    pub metrics: crate::metrics::RequestMetrics,
    /// This proxy's span, when the request is traced and sampled; ended with the log line.
    pub span: Option<Box<crate::telemetry::ActiveSpan>>,
}

impl AccessLog {
    /// Records the request's metrics and writes the line (once, when the request is done).
    pub fn emit(&self) {
        let bytes_in = self
            .request_body
            .as_ref()
            .map_or(0, |r| r.bytes_in.load(Ordering::Relaxed));
        self.metrics.record(&crate::metrics::HttpOutcome {
            status: self.status,
            flags: self.flags,
            cluster: self.upstream_cluster.as_deref(),
            upstream: self.upstream_host,
            duration: self.start.elapsed(),
            request_bytes: bytes_in,
            response_bytes: self.bytes_out,
        });
        if let Some(span) = &self.span {
            span.finish(self, bytes_in);
        }
        if !tracing::enabled!(target: "access", tracing::Level::INFO) {
            return;
        }
        let proto = match self.version {
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_3 => "HTTP/3",
            _ => "HTTP/1.1",
        };
        let hv = |v: &Option<http::HeaderValue>| {
            v.as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let upstream = self
            .upstream_host
            .map_or_else(|| "-".to_string(), |a| a.to_string());
        let authz = match &self.authz {
            Some(a) => format!(" \"{}\"", a.replace('"', "'")),
            None => String::new(),
        };
        tracing::info!(
            target: "access",
            listener = %self.listener,
            "[{}] \"{} {} {}\" {} {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} {}{}",
            rfc3339(self.wall),
            self.method,
            self.path,
            proto,
            self.status,
            self.flags,
            bytes_in,
            self.bytes_out,
            self.start.elapsed().as_millis(),
            hv(&self.forwarded_for),
            hv(&self.user_agent),
            hv(&self.request_id),
            self.authority,
            upstream,
            self.upstream_cluster.as_deref().unwrap_or("-"),
            self.route.as_deref().unwrap_or("-"),
            authz,
        );
    }
}

/// UTC timestamp with milliseconds, without a date library.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}

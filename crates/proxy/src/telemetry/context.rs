//! Trace context on the wire: reading the caller's context from B3 (`x-b3-*`, single `b3`) or
//! W3C (`traceparent`) headers, deciding whether the request is sampled, and writing this
//! proxy's span as the parent for the next hop.
//!
//! Pure header logic (no I/O, no clock): `telemetry::Tracing` owns the span's life.
//! Malformed incoming context is ignored (a new trace starts), never an error: tracing must
//! not change whether a request is served.

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub const X_B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const X_B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const X_B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
pub const B3: HeaderName = HeaderName::from_static("b3");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const X_ENVOY_FORCE_TRACE: HeaderName = HeaderName::from_static("x-envoy-force-trace");
pub const X_CLIENT_TRACE_ID: HeaderName = HeaderName::from_static("x-client-trace-id");

/// Which headers carry the context (decided by the provider: zipkin → B3, OpenTelemetry → W3C).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    B3,
    W3c,
}

/// The caller's context, as read from the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub trace_id: u128,
    /// The caller's span: the parent of this proxy's span.
    pub span_id: Option<u64>,
    /// The caller's decision, when it made one.
    pub sampled: Option<bool>,
}

/// This proxy's span, as propagated to the next hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent_id: Option<u64>,
    pub sampled: bool,
}

fn hex_u64(s: &[u8]) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    parse_hex(s).map(|v| v as u64)
}

/// 16 or 32 lowercase-or-uppercase hex digits (B3 accepts both lengths).
fn hex_trace_id(s: &[u8]) -> Option<u128> {
    if s.len() != 16 && s.len() != 32 {
        return None;
    }
    parse_hex(s)
}

fn parse_hex(s: &[u8]) -> Option<u128> {
    let mut v: u128 = 0;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u128::from(d);
    }
    Some(v)
}

fn b3_sampling(v: &[u8]) -> Option<bool> {
    match v {
        b"1" | b"true" | b"d" => Some(true),
        b"0" | b"false" => Some(false),
        _ => None,
    }
}

/// Reads the B3 multi-header context, or else the single `b3` header.
pub fn read_b3(h: &HeaderMap) -> Option<Incoming> {
    let sampled = if h.get(X_B3_FLAGS).is_some_and(|f| f.as_bytes() == b"1") {
        Some(true)
    } else {
        h.get(X_B3_SAMPLED).and_then(|v| b3_sampling(v.as_bytes()))
    };
    if let Some(t) = h.get(X_B3_TRACE_ID) {
        let trace_id = hex_trace_id(t.as_bytes()).filter(|t| *t != 0)?;
        let span_id = h
            .get(X_B3_SPAN_ID)
            .and_then(|s| hex_u64(s.as_bytes()))
            .filter(|s| *s != 0)?;
        return Some(Incoming {
            trace_id,
            span_id: Some(span_id),
            sampled,
        });
    }
    // b3: {traceid}-{spanid}[-{sampling}[-{parentspanid}]]; a lone "0"/"1"/"d" only decides.
    let single = h.get(B3)?.as_bytes();
    let mut parts = single.split(|b| *b == b'-');
    let first = parts.next()?;
    let Some(second) = parts.next() else {
        // Sampling only: no context to continue, but the decision stands.
        return b3_sampling(first).map(|s| Incoming {
            trace_id: 0,
            span_id: None,
            sampled: Some(s),
        });
    };
    let trace_id = hex_trace_id(first).filter(|t| *t != 0)?;
    let span_id = hex_u64(second).filter(|s| *s != 0)?;
    let sampled = match parts.next() {
        Some(s) => Some(b3_sampling(s)?),
        None => None,
    };
    Some(Incoming {
        trace_id,
        span_id: Some(span_id),
        sampled,
    })
}

/// Reads a W3C `traceparent` (version 00 layout; later versions read by the same prefix, as
/// the specification asks). Invalid values start a new trace.
pub fn read_w3c(h: &HeaderMap) -> Option<Incoming> {
    let v = h.get(TRACEPARENT)?.as_bytes();
    if v.len() < 55 || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let lower_hex = |s: &[u8]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let (version, trace, span, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    if !lower_hex(version) || version == b"ff" || (version == b"00" && v.len() != 55) {
        return None;
    }
    if !lower_hex(trace) || !lower_hex(span) || !lower_hex(flags) {
        return None;
    }
    let trace_id = parse_hex(trace).filter(|t| *t != 0)?;
    let span_id = parse_hex(span).map(|s| s as u64).filter(|s| *s != 0)?;
    let flags = parse_hex(flags)? as u8;
    Some(Incoming {
        trace_id,
        span_id: Some(span_id),
        sampled: Some(flags & 1 == 1),
    })
}

/// The caller's context in the provider's format first, the other format second.
pub fn read(h: &HeaderMap, p: Propagation) -> Option<Incoming> {
    match p {
        Propagation::B3 => read_b3(h).or_else(|| read_w3c(h)),
        Propagation::W3c => read_w3c(h).or_else(|| read_b3(h)),
    }
}

/// Whether the request asks to be traced whatever the sampling rate (Envoy's
/// `x-envoy-force-trace` and `x-client-trace-id`).
pub fn forced(h: &HeaderMap) -> bool {
    h.contains_key(X_ENVOY_FORCE_TRACE) || h.contains_key(X_CLIENT_TRACE_ID)
}

/// Lowercase hex of the low `out.len() * 4` bits of `v`, most significant digit first.
fn write_hex(out: &mut [u8], v: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = out.len();
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = HEX[((v >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
}

fn hex_value(v: u128, digits: usize) -> HeaderValue {
    let mut buf = [0u8; 32];
    write_hex(&mut buf[..digits], v);
    HeaderValue::from_bytes(&buf[..digits]).expect("hex digits are a valid header value")
}

/// Writes `span` for the next hop, replacing whatever context the caller sent in the same
/// format. 64-bit trace ids are written with 16 digits (B3).
pub fn write(h: &mut HeaderMap, p: Propagation, span: &SpanContext) {
    match p {
        Propagation::B3 => {
            let digits = if span.trace_id >> 64 == 0 { 16 } else { 32 };
            h.insert(X_B3_TRACE_ID, hex_value(span.trace_id, digits));
            h.insert(X_B3_SPAN_ID, hex_value(u128::from(span.span_id), 16));
            match span.parent_id {
                Some(p) => {
                    h.insert(X_B3_PARENT_SPAN_ID, hex_value(u128::from(p), 16));
                }
                None => {
                    h.remove(X_B3_PARENT_SPAN_ID);
                }
            }
            h.insert(
                X_B3_SAMPLED,
                HeaderValue::from_static(if span.sampled { "1" } else { "0" }),
            );
            h.remove(X_B3_FLAGS);
            h.remove(B3);
        }
        Propagation::W3c => {
            let mut buf = [0u8; 55];
            buf[..3].copy_from_slice(b"00-");
            write_hex(&mut buf[3..35], span.trace_id);
            buf[35] = b'-';
            write_hex(&mut buf[36..52], u128::from(span.span_id));
            buf[52..].copy_from_slice(if span.sampled { b"-01" } else { b"-00" });
            h.insert(
                TRACEPARENT,
                HeaderValue::from_bytes(&buf).expect("traceparent is ASCII"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn b3_multi_headers() {
        let h = headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ]);
        let c = read_b3(&h).unwrap();
        assert_eq!(c.trace_id, 0x463ac35c9f6413ad48485a3953bb6124);
        assert_eq!(c.span_id, Some(0xa2fb4a1d1a96d312));
        assert_eq!(c.sampled, Some(true));
        // 64-bit trace id, debug flag.
        let h = headers(&[
            ("x-b3-traceid", "48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "0"),
            ("x-b3-flags", "1"),
        ]);
        let c = read_b3(&h).unwrap();
        assert_eq!(c.trace_id, 0x48485a3953bb6124);
        assert_eq!(c.sampled, Some(true));
    }

    #[test]
    fn b3_single_header() {
        let h = headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )]);
        let c = read_b3(&h).unwrap();
        assert_eq!(c.trace_id, 0x80f198ee56343ba864fe8b2a57d3eff7);
        assert_eq!(c.span_id, Some(0xe457b5a2e4d86bd1));
        assert_eq!(c.sampled, Some(true));
        let c = read_b3(&headers(&[("b3", "0")])).unwrap();
        assert_eq!((c.trace_id, c.sampled), (0, Some(false)));
        assert!(read_b3(&headers(&[("b3", "zz-e457b5a2e4d86bd1")])).is_none());
        assert!(read_b3(&headers(&[("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-x")])).is_none());
    }

    #[test]
    fn b3_malformed_is_ignored() {
        for (t, s) in [
            ("463ac35c9f6413ad48485a3953bb612", "a2fb4a1d1a96d312"), // 31 digits
            ("463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d31"), // short span
            ("00000000000000000000000000000000", "a2fb4a1d1a96d312"), // zero trace
            ("463ac35c9f6413ad48485a3953bb6124", "0000000000000000"), // zero span
            ("463ac35c9f6413ad48485a3953bb612g", "a2fb4a1d1a96d312"), // not hex
        ] {
            let h = headers(&[("x-b3-traceid", t), ("x-b3-spanid", s)]);
            assert_eq!(read_b3(&h), None, "{t} {s}");
        }
    }

    #[test]
    fn w3c_traceparent() {
        let h = headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        let c = read_w3c(&h).unwrap();
        assert_eq!(c.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(c.span_id, Some(0x00f067aa0ba902b7));
        assert_eq!(c.sampled, Some(true));
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(read_w3c(&headers(&[("traceparent", bad)])), None, "{bad}");
        }
        // A later version may append fields.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        let c = read_w3c(&headers(&[("traceparent", later)])).unwrap();
        assert_eq!(c.sampled, Some(false));
    }

    #[test]
    fn written_context_reads_back() {
        let span = SpanContext {
            trace_id: 0x0af7651916cd43dd8448eb211c80319c,
            span_id: 0xb7ad6b7169203331,
            parent_id: Some(0x1234),
            sampled: true,
        };
        for p in [Propagation::B3, Propagation::W3c] {
            let mut h = headers(&[("b3", "1"), ("x-b3-parentspanid", "ffffffffffffffff")]);
            write(&mut h, p, &span);
            let back = read(&h, p).unwrap();
            assert_eq!(back.trace_id, span.trace_id);
            assert_eq!(back.span_id, Some(span.span_id));
            assert_eq!(back.sampled, Some(true));
        }
        let mut h = HeaderMap::new();
        write(&mut h, Propagation::B3, &span);
        assert_eq!(h[X_B3_PARENT_SPAN_ID], "0000000000001234");
        assert_eq!(h[X_B3_TRACE_ID], "0af7651916cd43dd8448eb211c80319c");
        assert!(!h.contains_key(B3));
        let mut h = HeaderMap::new();
        write(
            &mut h,
            Propagation::W3c,
            &SpanContext {
                sampled: false,
                ..span
            },
        );
        assert_eq!(
            h[TRACEPARENT],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
        );
        // 64-bit trace ids stay 16 digits in B3.
        let mut h = HeaderMap::new();
        write(
            &mut h,
            Propagation::B3,
            &SpanContext {
                trace_id: 0xabc,
                parent_id: None,
                ..span
            },
        );
        assert_eq!(h[X_B3_TRACE_ID], "0000000000000abc");
        assert!(!h.contains_key(X_B3_PARENT_SPAN_ID));
    }
}

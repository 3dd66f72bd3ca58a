//! Header handling: VirtualService header operations, hop-by-hop stripping, the forwarding
//! headers Envoy adds (`x-forwarded-for`, `x-forwarded-proto`, `x-request-id`), and request
//! headers with `_` in their names at gateways.
//!
//! # Underscores in header names (gateways drop them)
//!
//! CGI, WSGI, PHP, Rack and nginx's `$http_*` map both `x-user` and `x_user` to the same
//! variable (`HTTP_X_USER`), so a client's `x_user: admin` reaches such a backend as the
//! `x-user` an AuthorizationPolicy `request.headers[x-user]` condition never saw, and
//! `x_jwt_sub` / `x_forwarded_client_cert` sit next to the headers the gateway vouches for
//! (claim headers, XFCC) that it removes and sets by their `-` names only. Istio leaves
//! Envoy's `headers_with_underscores_action` at its default `ALLOW` (Envoy's own edge-proxy
//! best practices set `REJECT_REQUEST`); Trellis does better at the edge: a **gateway drops
//! every request header whose name contains `_`** ([`drop_underscore_headers`], Envoy's
//! `DROP_HEADER`) before JWT authentication, authorization, ext-authz and forwarding, and
//! logs the dropped names at debug. **Sidecars keep them** (Istio's default): their traffic
//! comes through a gateway or from mesh workloads, and apps inside the mesh may legitimately
//! use such names.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng;
use trellis_model::config::HeaderOps;

/// Applies remove, then set, then add (Envoy's order). Invalid names/values are skipped
/// (the compiler validates them; nothing here may panic on config).
pub fn apply_ops(headers: &mut HeaderMap, ops: &HeaderOps) {
    if ops.is_empty() {
        return;
    }
    for name in &ops.remove {
        headers.remove(name.as_str());
    }
    for (k, v) in &ops.set {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(k, v);
        }
    }
    for (k, v) in &ops.add {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.append(k, v);
        }
    }
}

/// Header names of the per-request path, parsed once (a `&str` key is parsed and hashed on
/// every lookup).
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_ENVOY_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
pub const X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

static HOP_BY_HOP: [HeaderName; 6] = [
    http::header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::PROXY_AUTHENTICATE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names. `TE` is kept
/// only as `te: trailers` (gRPC needs it). With `keep_upgrade` the `Upgrade` and
/// `Connection: upgrade` pair stays (WebSocket handshakes).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Usually there is nothing to strip: one pass over the names (cheap comparisons) instead
    // of a hashed removal per hop-by-hop name.
    if !keep_upgrade
        && !headers
            .keys()
            .any(|k| k == http::header::TE || HOP_BY_HOP.contains(k))
    {
        return;
    }
    if let Some(conn) = headers.get(http::header::CONNECTION) {
        if let Ok(list) = conn.to_str() {
            let named: Vec<HeaderName> = list
                .split(',')
                .map(str::trim)
                .filter(|n| !(n.is_empty() || keep_upgrade && n.eq_ignore_ascii_case("upgrade")))
                .filter_map(|n| HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).ok())
                .collect();
            for n in named {
                // Never let a client strip what the proxy relies on.
                if n != http::header::HOST && !n.as_str().starts_with("x-forwarded") {
                    headers.remove(n);
                }
            }
        }
    }
    for h in HOP_BY_HOP.iter() {
        if keep_upgrade && (h == http::header::CONNECTION || h == http::header::UPGRADE) {
            continue;
        }
        headers.remove(h);
    }
    if keep_upgrade {
        headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
    }
    let te_trailers = headers.get_all(http::header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    headers.remove(http::header::TE);
    if te_trailers {
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Removes every header whose name contains `_` (see the module documentation); returns the
/// names removed, in order, each once. Allocation-free when there are none.
pub fn drop_underscore_headers(headers: &mut HeaderMap) -> Vec<HeaderName> {
    if !headers.keys().any(|k| k.as_str().contains('_')) {
        return Vec::new();
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    for n in &names {
        headers.remove(n);
    }
    names
}

/// Whether the request asks for a protocol upgrade (WebSocket and the like).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::UPGRADE)
        && headers.get_all(http::header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Appends the peer to `x-forwarded-for` and sets `x-forwarded-proto` (Envoy with
/// `use_remote_address`, as Istio configures gateways).
pub fn add_forwarding(headers: &mut HeaderMap, peer: std::net::IpAddr, scheme: &'static str) {
    let xff = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => format!("{prev}, {peer}"),
        _ => peer.to_string(),
    };
    headers.remove(X_FORWARDED_FOR);
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
}

/// Ensures an `x-request-id` (a random UUID v4 when the client sent none) and returns it.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(X_REQUEST_ID) {
        if !v.is_empty() {
            return v.clone();
        }
    }
    let v = HeaderValue::from_bytes(&uuid_v4_bytes()).expect("uuid is a valid header value");
    headers.insert(X_REQUEST_ID, v.clone());
    v
}

/// A random (version 4) UUID, lowercase hex with dashes, as Envoy generates `x-request-id`.
/// Written into a stack buffer: no allocation.
pub fn uuid_v4_bytes() -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    let mut o = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            o += 1; // the dash already there
        }
        out[o] = HEX[usize::from(byte >> 4)];
        out[o + 1] = HEX[usize::from(byte & 0x0f)];
        o += 2;
    }
    out
}

pub fn uuid_v4() -> String {
    String::from_utf8_lossy(&uuid_v4_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_version_4_uuids() {
        let a = uuid_v4();
        let b = uuid_v4();
        assert_ne!(a, b);
        for u in [a, b] {
            let parts: Vec<&str> = u.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12],
                "{u}"
            );
            assert!(
                u.bytes()
                    .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
                "{u}"
            );
            assert_eq!(&parts[2][..1], "4", "{u}");
            assert!("89ab".contains(&parts[3][..1]), "{u}");
        }
    }

    #[test]
    fn ops_order_remove_set_add() {
        let mut h = HeaderMap::new();
        h.insert("a", HeaderValue::from_static("1"));
        h.insert("b", HeaderValue::from_static("1"));
        let ops = HeaderOps {
            set: vec![("a".into(), "2".into())],
            add: vec![("a".into(), "3".into())],
            remove: vec!["b".into(), "a".into()],
        };
        apply_ops(&mut h, &ops);
        let a: Vec<_> = h.get_all("a").iter().collect();
        assert_eq!(a, vec!["2", "3"]);
        assert!(!h.contains_key("b"));
    }

    #[test]
    fn hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("5"));
        h.insert("te", HeaderValue::from_static("trailers, deflate"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(!h.contains_key("x-secret"));
        assert!(!h.contains_key("connection"));
        assert_eq!(h.get("te").unwrap(), "trailers");
        assert!(h.contains_key("x-keep"));

        // Each hop-by-hop header alone is still found (no `connection` to point at it).
        for name in [
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
            "proxy-authenticate",
            "te",
        ] {
            let mut h = HeaderMap::new();
            h.insert("x-keep", HeaderValue::from_static("1"));
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            strip_hop_by_hop(&mut h, false);
            assert!(!h.contains_key(name), "{name} kept");
            assert_eq!(h.len(), 1);
        }
        // Nothing to strip: untouched.
        let mut h = HeaderMap::new();
        h.insert("x-keep", HeaderValue::from_static("1"));
        h.insert("host", HeaderValue::from_static("a"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn underscore_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.append("x_user", HeaderValue::from_static("admin"));
        h.append("x_user", HeaderValue::from_static("root"));
        h.insert("x-user", HeaderValue::from_static("guest"));
        h.insert("x_jwt_sub", HeaderValue::from_static("admin"));
        h.insert("_", HeaderValue::from_static("1"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let dropped = drop_underscore_headers(&mut h);
        let names: Vec<&str> = dropped.iter().map(HeaderName::as_str).collect();
        assert_eq!(names.len(), 3);
        for n in ["x_user", "x_jwt_sub", "_"] {
            assert!(names.contains(&n), "{n} in {names:?}");
            assert!(!h.contains_key(n), "{n} dropped");
        }
        assert_eq!(h.get("x-user").unwrap(), "guest");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1");
        assert!(drop_underscore_headers(&mut h).is_empty());
    }

    #[test]
    fn request_ids() {
        let mut h = HeaderMap::new();
        let id = ensure_request_id(&mut h);
        assert_eq!(id.len(), 36);
        assert_eq!(ensure_request_id(&mut h), id);
    }
}

//! The security steps of the request path, in the order `request::handle` runs them:
//!
//! 1. [`normalize_path`]: the one view of the path (MeshConfig `pathNormalization`, Trellis's
//!    defaults; see `trellis_model::normalize`) that routing, authorization and the upstream
//!    all get. A refused path is 400.
//! 2. [`forwarded_client_cert`]: `x-forwarded-client-cert` is never taken from the client
//!    (Envoy's `SANITIZE_SET`): removed, then set from the verified peer certificate on mTLS
//!    connections, as Istio sidecars do: `By=<own SPIFFE id>;Hash=<sha256 of the peer
//!    certificate>;URI=<peer SPIFFE id>`.
//! 3. JWT authentication (`security::jwt`, in `request::handle`).
//! 4. [`authz_request`] + `AuthzPolicies::evaluate`, and for CUSTOM rules [`ext_authz`]: the
//!    external HTTP authorization service of MeshConfig `extensionProviders[].envoyExtAuthzHttp`.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, HOST};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use trellis_model::authz::AuthzRequest;
use trellis_model::config::{ProxyConfig, ProxyKind};
use trellis_model::normalize::{normalize_path_with, PathError, PathOptions};
use trellis_model::security::{ExtAuthzProvider, VIRTUAL_INBOUND};

use crate::http::body::{self, Body};
use crate::http::headers;
use crate::security::JwtIdentity;
use crate::state::{ConnectionInfo, ProxyState};
use crate::upstream::pool::Proto;

/// `x-forwarded-client-cert`.
pub const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Largest ext-authz response body relayed to the client.
const MAX_EXT_AUTHZ_BODY: usize = 64 * 1024;

/// Normalizes the request target in place (the upstream receives the normalized path).
pub fn normalize_path(parts: &mut Parts, opts: &PathOptions) -> Result<(), PathError> {
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let normalized = match normalize_path_with(pq, opts)? {
        Cow::Borrowed(b) if b.len() == pq.len() => return Ok(()),
        n => n.into_owned(),
    };
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    // The normalizer returns RFC 3986 characters only, so this cannot fail.
    uri.path_and_query = Some(PathAndQuery::try_from(normalized).map_err(|_| PathError::Empty)?);
    parts.uri = Uri::from_parts(uri).map_err(|_| PathError::NotOriginForm)?;
    Ok(())
}

/// Removes any client-sent `x-forwarded-client-cert`; on connections where the peer presented
/// a verified certificate, sets Istio's `By=...;Hash=...;URI=...`.
pub fn forwarded_client_cert(headers: &mut HeaderMap, conn: &ConnectionInfo, own_id: &str) {
    headers.remove(XFCC);
    let Some(hash) = &conn.peer_cert_sha256 else {
        return;
    };
    let mut v = format!("By={own_id};Hash={hash}");
    if let Some(uri) = &conn.peer_identity {
        v.push_str(";URI=");
        v.push_str(uri);
    }
    if let Ok(v) = HeaderValue::from_str(&v) {
        headers.insert(XFCC, v);
    }
}

/// Whether requests on `conn` go through JWT authentication and authorization: everything on
/// a gateway, inbound traffic (`virtualInbound`) on a sidecar.
pub fn enforces_policies(config: &ProxyConfig, conn: &ConnectionInfo) -> bool {
    config.node.kind == ProxyKind::Gateway || *conn.listener == *VIRTUAL_INBOUND
}

/// Whether `conn` is a sidecar's inbound connection (the server side of a call).
pub fn is_sidecar_inbound(config: &ProxyConfig, conn: &ConnectionInfo) -> bool {
    config.node.kind == ProxyKind::Sidecar && *conn.listener == *VIRTUAL_INBOUND
}

/// What authorization looks at for one HTTP request.
pub fn authz_request<'a>(
    conn: &'a ConnectionInfo,
    parts: &'a Parts,
    authority: &'a str,
    identity: Option<&'a JwtIdentity>,
) -> AuthzRequest<'a> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    AuthzRequest {
        source_principal: conn.peer_identity.as_deref(),
        source_ip: Some(conn.peer_addr.ip()),
        remote_ip: None,
        destination_ip: Some(conn.local_addr.ip()),
        destination_port: Some(conn.listener_port),
        sni: conn.sni.as_deref(),
        request_principal: identity.and_then(|i| i.principal.as_deref()),
        claims: identity.map(|i| &i.claims),
        ..AuthzRequest::http(&parts.headers, parts.method.as_str(), authority, path)
    }
}

/// The ext-authz service's answer.
pub enum ExtAuthz {
    /// Go on; set these headers on the upstream request and on the response.
    Allow {
        upstream: Vec<(HeaderName, HeaderValue)>,
        downstream: Vec<(HeaderName, HeaderValue)>,
    },
    /// Answer the client with this (the service's status, body and allowed headers, or
    /// `statusOnError` when it could not be asked).
    Deny(Response<Body>, String),
}

/// Asks `provider` whether the request may proceed: the request's method and path (after
/// `pathPrefix`), its `Host`, the headers the provider includes (`authorization` by default),
/// no body. 2xx allows; any other status is relayed; an unreachable or slow provider denies
/// with `statusOnError` unless `failOpen`.
pub async fn ext_authz(
    provider: &ExtAuthzProvider,
    config: &Arc<ProxyConfig>,
    state: &Arc<ProxyState>,
    conn: &ConnectionInfo,
    parts: &Parts,
    authority: &str,
) -> ExtAuthz {
    let call = check(provider, config, state, conn, parts, authority);
    let result = match tokio::time::timeout(provider.timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", provider.timeout)),
    };
    match result {
        Ok((status, rheaders, _)) if status.is_success() => ExtAuthz::Allow {
            upstream: pick(&rheaders, &provider.headers_to_upstream_on_allow, false),
            downstream: pick(&rheaders, &provider.headers_to_downstream_on_allow, false),
        },
        Ok((status, rheaders, body_bytes)) => {
            let mut resp = Response::new(body::full(body_bytes));
            *resp.status_mut() = status;
            for (k, v) in pick(&rheaders, &provider.headers_to_downstream_on_deny, true) {
                resp.headers_mut().append(k, v);
            }
            ExtAuthz::Deny(
                resp,
                format!("ext-authz {} answered {status}", provider.name),
            )
        }
        Err(e) if provider.fail_open => {
            tracing::warn!(provider = %provider.name, "ext-authz check failed, allowed (failOpen): {e}");
            ExtAuthz::Allow {
                upstream: Vec::new(),
                downstream: Vec::new(),
            }
        }
        Err(e) => {
            let status =
                StatusCode::from_u16(provider.status_on_error).unwrap_or(StatusCode::FORBIDDEN);
            let mut resp = Response::new(body::empty());
            *resp.status_mut() = status;
            ExtAuthz::Deny(
                resp,
                format!("ext-authz {} unavailable ({e}): {status}", provider.name),
            )
        }
    }
}

/// Headers of the provider's response named in `allowed`; when `allowed` is empty, none, or
/// (`all_when_empty`) every end-to-end header.
fn pick(h: &HeaderMap, allowed: &[String], all_when_empty: bool) -> Vec<(HeaderName, HeaderValue)> {
    if allowed.is_empty() {
        if !all_when_empty {
            return Vec::new();
        }
        let mut h = h.clone();
        headers::strip_hop_by_hop(&mut h, false);
        h.remove(CONTENT_LENGTH);
        let mut out = Vec::new();
        let mut last = None;
        for (k, v) in h {
            if let Some(k) = k {
                last = Some(k);
            }
            if let Some(k) = &last {
                out.push((k.clone(), v));
            }
        }
        return out;
    }
    allowed
        .iter()
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .flat_map(|name| {
            h.get_all(&name)
                .iter()
                .map(move |v| (name.clone(), v.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

type CheckResult = Result<(StatusCode, HeaderMap, bytes::Bytes), String>;

async fn check(
    provider: &ExtAuthzProvider,
    config: &Arc<ProxyConfig>,
    state: &Arc<ProxyState>,
    conn: &ConnectionInfo,
    parts: &Parts,
    authority: &str,
) -> CheckResult {
    let cluster = state
        .upstreams
        .get(config, &provider.cluster)
        .ok_or_else(|| format!("cluster {} not in the config", provider.cluster))?;
    let set = cluster.endpoints(config, conn.original_dst()).await;
    let host = cluster
        .pick(&set, None, &[])
        .ok_or_else(|| format!("no endpoint for {}", provider.service))?;
    let (checkout, slot) = cluster
        .checkout(&host, Proto::Http1, false, state.mesh_tls.get())
        .await
        .map_err(|e| format!("{}: {e}", host.addr))?;
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let target = format!("{}{pq}", provider.path_prefix);
    let mut req = Request::new(body::empty());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = Uri::try_from(target.as_str()).map_err(|e| e.to_string())?;
    let h = req.headers_mut();
    if let Ok(v) = HeaderValue::from_str(authority) {
        h.insert(HOST, v);
    }
    let default = [String::from("authorization")];
    let include: &[String] = if provider.include_request_headers.is_empty() {
        &default
    } else {
        &provider.include_request_headers
    };
    for name in include {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        if name == HOST {
            continue;
        }
        for v in parts.headers.get_all(&name) {
            h.append(name.clone(), v.clone());
        }
    }
    for (k, v) in &provider.include_additional_headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    }
    h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    let (resp, h1) = checkout.send(req).await.map_err(|e| e.to_string())?;
    let (rparts, rbody) = resp.into_parts();
    let bytes = Limited::new(rbody, MAX_EXT_AUTHZ_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    slot.with_conn(h1).complete();
    Ok((rparts.status, rparts.headers, bytes))
}

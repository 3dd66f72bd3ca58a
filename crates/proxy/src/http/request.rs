//! The life cycle of one request, in order:
//!
//! 1. **validate**: what hyper lets through but Envoy rejects (lowercase methods, raw `\` or
//!    control bytes in the path, a non-origin-form target, HTTP/1.1 without Host, repeated
//!    Host) → 400. (hyper itself refuses malformed heads, signed or conflicting
//!    Content-Length and unknown Transfer-Encoding; with both Content-Length and chunked
//!    it drops Content-Length and closes the connection after the response.) The authority
//!    (the absolute-form target's, HTTP/2 `:authority`, else `Host`) must be an RFC 3986
//!    `host[:port]` (`trellis_model::normalize::validate_authority`): userinfo (`a@b`), a
//!    path, whitespace, a non-numeric port → 400 `invalid authority`, never judged as a raw
//!    string that the upstream's URL parser would read differently. Gateways then drop
//!    request headers whose names contain `_` (see `http::headers`).
//! 2. **normalize** the path (MeshConfig `pathNormalization`): refused paths → 400; routing,
//!    authorization and the upstream see the normalized path.
//! 3. **`x-forwarded-client-cert`**: the client's copy removed; set from the verified peer
//!    certificate on mTLS connections.
//! 4. **JWT authentication** (RequestAuthentication): an invalid token → 401 with
//!    `www-authenticate`; the identity is kept for authorization.
//! 5. **authorization** (AuthorizationPolicy CUSTOM → DENY → ALLOW): where a CUSTOM rule
//!    matches, the ext-authz provider is asked first and its denial (status, headers, body)
//!    is the answer; only when it allows do DENY and ALLOW apply. Denied by them → 403
//!    `RBAC: access denied`, logged with the deciding policy and rule.
//! 6. **route**: the listener's route table, virtual host by authority, first matching rule
//!    (`trellis_model::route`). None → 404 `NR`. `httpsRedirect` hosts on plaintext → 301.
//! 7. **CORS**: preflights answered here.
//! 8. **fault**: delay, then abort.
//! 9. **action**: direct response, redirect, or [`forward`](crate::http::forward).
//! 10. **response**: route response header ops, CORS headers; the access log line is written
//!     when the body ends.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::HeaderValue;
use http::{Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::Request;
use rand::Rng;
use trellis_model::authz::{Outcome, RBAC_DENIED_BODY, RBAC_DENIED_STATUS};
use trellis_model::config::{FaultAbort, ProxyKind, RouteAction, Scheme};
use trellis_model::normalize::validate_authority;
use trellis_model::route::{route_request, RequestInfo};

use crate::http::access_log::AccessLog;
use crate::http::body::{self, Body, ResponseBody};
use crate::http::cors::{self, CorsDecision};
use crate::http::error::{self, Flag};
use crate::http::security::{self as sec, ExtAuthz};
use crate::http::{forward, headers, rewrite};
use crate::security::AuthnOutcome;
use crate::state::{ConnectionInfo, ProxyState};
use crate::upstream::InFlightSlot;

/// Handles one request; never fails (errors become local replies).
pub async fn handle(
    req: Request<Incoming>,
    conn: Arc<ConnectionInfo>,
    state: Arc<ProxyState>,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let grpc = body::header_map_is_grpc(&parts.headers);
    let authority = authority_of(&parts);
    let mut log = LogGuard(Some(Box::new(AccessLog {
        start: Instant::now(),
        wall: SystemTime::now(),
        method: parts.method.clone(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        version: parts.version,
        status: 0,
        flags: Default::default(),
        request_body: None,
        bytes_out: 0,
        forwarded_for: None,
        user_agent: parts.headers.get(http::header::USER_AGENT).cloned(),
        request_id: None,
        authority: authority.clone().unwrap_or_default(),
        upstream_host: None,
        upstream_cluster: None,
        route: None,
        listener: conn.listener.clone(),
        authz: None,
        metrics: state.metrics.request(&conn, grpc),
        span: None,
    })));

    // 1. validate
    if let Err(why) = validate(&parts, authority.is_some()) {
        tracing::debug!(listener = %conn.listener, peer = %conn.peer_addr, "bad request: {why}");
        return finish(bad_request(why), None, flag_dpe(log));
    }
    let authority = authority.unwrap_or_default();
    if let Err(e) = validate_authority(&authority) {
        tracing::debug!(
            listener = %conn.listener,
            peer = %conn.peer_addr,
            authority = ?authority,
            "bad request: invalid authority: {e}"
        );
        return finish(bad_request("invalid authority"), None, flag_dpe(log));
    }
    let scheme_str = match conn.scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    // One snapshot for the whole request: policies and routes from the same config.
    let security = state.security.load_full();
    let config = security.config.clone();

    // Gateways drop request headers with `_` in their names (`x_user` is `x-user` to CGI-style
    // backends) before anything judges or forwards the request; sidecars keep them.
    if config.node.kind == ProxyKind::Gateway {
        let dropped = headers::drop_underscore_headers(&mut parts.headers);
        if !dropped.is_empty() {
            tracing::debug!(
                listener = %conn.listener,
                peer = %conn.peer_addr,
                "dropped request headers with underscores: {dropped:?}"
            );
        }
    }

    // 2. normalize the path
    if let Err(why) = sec::normalize_path(&mut parts, &config.security.path_normalization) {
        tracing::info!(
            listener = %conn.listener,
            peer = %conn.peer_addr,
            path = %log.path,
            "request refused: path not accepted by normalization ({}): {why}",
            config.security.path_normalization.level
        );
        log.flags.set(Flag::DPE);
        return finish(error::local_reply(400, "Bad Request", grpc), None, log);
    }

    log.request_id = Some(headers::ensure_request_id(&mut parts.headers));
    headers::add_forwarding(&mut parts.headers, conn.peer_addr.ip(), scheme_str);
    log.forwarded_for = parts.headers.get(headers::X_FORWARDED_FOR).cloned();

    // Tracing: continue the caller's trace (or start one) and pass this span on.
    if let Some(tracer) = state
        .tracers
        .load()
        .get(sec::is_sidecar_inbound(&config, &conn))
    {
        log.span = tracer.start(
            &mut parts.headers,
            &crate::telemetry::RequestFacts {
                scheme: scheme_str,
                authority: &authority,
                path: &log.path,
                peer: conn.peer_addr.ip(),
                listener_port: conn.listener_port,
            },
        );
    }

    // 3. x-forwarded-client-cert
    if conn.peer_cert_sha256.is_some() {
        let own = state
            .mesh_tls
            .get()
            .map(|m| m.identity())
            .unwrap_or_else(|| config.security.identity.clone());
        sec::forwarded_client_cert(&mut parts.headers, &conn, &own);
    } else {
        parts.headers.remove(sec::XFCC);
    }

    // 4. JWT authentication
    // Sidecars enforce RequestAuthentication and AuthorizationPolicy on inbound traffic only
    // (their own outbound calls are the destination's business); gateways on everything.
    let enforce = sec::enforces_policies(&config, &conn);
    let jwt_identity = if !enforce || security.jwt.is_empty() {
        None
    } else {
        let audiences: Vec<&str> = config
            .security
            .audiences
            .iter()
            .map(String::as_str)
            .collect();
        match security
            .jwt
            .authenticate(&mut parts.headers, &mut parts.uri, &audiences)
            .await
        {
            AuthnOutcome::NoToken => None,
            AuthnOutcome::Authenticated(id) => Some(id),
            AuthnOutcome::Invalid(f) => {
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                tracing::info!(
                    listener = %conn.listener,
                    peer = %conn.peer_addr,
                    path = %log.path,
                    issuer = ?f.issuer,
                    rule = ?f.rule,
                    "request refused: JWT authentication failed: {}: {}",
                    f.body(),
                    f.detail
                );
                let realm = crate::security::jwt::realm(scheme_str, &authority, path);
                let mut resp = error::local_reply(f.status().as_u16(), f.body(), grpc);
                resp.headers_mut()
                    .insert(http::header::WWW_AUTHENTICATE, f.www_authenticate(&realm));
                return finish(resp, None, log);
            }
        }
    };

    // 5. authorization: CUSTOM first (the ext-authz provider's denial is the answer), then
    // DENY and ALLOW.
    let mut ext_response_headers = Vec::new();
    if enforce && !config.security.authz.is_empty() {
        let req = sec::authz_request(&conn, &parts, &authority, jwt_identity.as_deref());
        let decision = config.security.authz.evaluate(&req);
        let outcome = decision.outcome();
        // Formatted for the access log only when it is written (allowed requests).
        let text = if outcome == Outcome::Allow
            && !tracing::enabled!(target: "access", tracing::Level::INFO)
        {
            String::new()
        } else {
            decision.to_string()
        };
        let mut ext_upstream_headers = Vec::new();
        let allowed = match outcome {
            Outcome::Allow => true,
            Outcome::Deny => false,
            Outcome::Custom {
                provider, allowed, ..
            } => {
                let Some(p) = config.security.ext_authz.get(provider) else {
                    tracing::info!(
                        target: "trellis::authz",
                        listener = %conn.listener,
                        "{} {}: {text}; provider {provider:?} is not an envoyExtAuthzHttp provider of the mesh config: denied",
                        parts.method,
                        req.path
                    );
                    log.flags.set(Flag::UAEX);
                    log.authz = Some(text);
                    return finish(
                        error::local_reply(RBAC_DENIED_STATUS, RBAC_DENIED_BODY, grpc),
                        None,
                        log,
                    );
                };
                match sec::ext_authz(p, &config, &state, &conn, &parts, &authority).await {
                    ExtAuthz::Allow {
                        upstream,
                        downstream,
                    } => {
                        ext_upstream_headers = upstream;
                        ext_response_headers = downstream;
                    }
                    ExtAuthz::Deny(resp, why) => {
                        tracing::info!(
                            target: "trellis::authz",
                            listener = %conn.listener,
                            peer = %conn.peer_addr,
                            "{} {} {authority}: {text}; {why}",
                            parts.method,
                            parts.uri.path()
                        );
                        log.flags.set(Flag::UAEX);
                        log.authz = Some(format!("{text}; {why}"));
                        return finish(resp, None, log);
                    }
                }
                // The provider allowed: DENY and ALLOW decide.
                allowed
            }
        };
        if !allowed {
            tracing::info!(
                target: "trellis::authz",
                listener = %conn.listener,
                peer = %conn.peer_addr,
                principal = ?conn.peer_identity,
                request_principal = ?req.request_principal,
                "{} {} {}: {text}",
                parts.method,
                req.path,
                authority
            );
            log.flags.set(Flag::RBAC);
            log.authz = Some(text);
            return finish(
                error::local_reply(RBAC_DENIED_STATUS, RBAC_DENIED_BODY, grpc),
                None,
                log,
            );
        }
        tracing::debug!(target: "trellis::authz", listener = %conn.listener, "{} {}: {decision}", parts.method, req.path);
        if !text.is_empty() {
            log.authz = Some(text);
        }
        for (k, v) in ext_upstream_headers {
            parts.headers.insert(k, v);
        }
    }

    // 6. route
    let Some(table) = config.routes.get(&*conn.route_table) else {
        log.flags.set(Flag::NR);
        return finish(error::local_reply(404, "", grpc), None, log);
    };
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let info = RequestInfo {
        authority: &authority,
        path: path_and_query,
        method: parts.method.as_str(),
        scheme: scheme_str,
        headers: &parts.headers,
        port: conn.listener_port,
        source_labels: None,
        source_namespace: None,
    };
    let Some((vhost, route, match_index)) = route_request(table, &info) else {
        log.flags.set(Flag::NR);
        return finish(error::local_reply(404, "", grpc), None, log);
    };
    log.route = Some(route.origin.to_string());
    let matched = match_index.and_then(|i| route.matches.get(i));

    if vhost.require_tls && conn.scheme == Scheme::Http {
        let host = trellis_model::route::strip_port(&authority);
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
        if let Ok(v) = HeaderValue::from_str(&format!("https://{host}{path_and_query}")) {
            resp.headers_mut().insert(http::header::LOCATION, v);
        }
        return finish(resp, None, log);
    }

    // 7. CORS
    let cors_origin = match cors::evaluate(route.cors.as_ref(), &parts.method, &parts.headers) {
        CorsDecision::Preflight(resp) => return finish(resp, None, log),
        CorsDecision::Actual(origin) => Some(origin),
        CorsDecision::None => None,
    };

    // 8. fault injection
    if let Some(fault) = &route.fault {
        if let Some((delay, pct)) = fault.delay {
            if roll(pct) {
                log.flags.set(Flag::DI);
                tokio::time::sleep(delay).await;
            }
        }
        if let Some((abort, pct)) = fault.abort {
            if roll(pct) {
                log.flags.set(Flag::FI);
                let resp = match abort {
                    FaultAbort::Http(status) => {
                        error::local_reply(status, error::FAULT_ABORT, false)
                    }
                    FaultAbort::Grpc(code) => error::grpc_reply(code, error::FAULT_ABORT),
                };
                return finish(resp, None, log);
            }
        }
    }

    // 9. action
    let (mut resp, slot) = match &route.action {
        RouteAction::DirectResponse { status, body } => {
            let mut resp = Response::new(match body {
                Some(b) => body::full(b.clone()),
                None => body::empty(),
            });
            *resp.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            if body.is_some() {
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain"),
                );
            }
            (resp, None)
        }
        RouteAction::Redirect(r) => {
            let location = rewrite::redirect_location(
                r,
                scheme_str,
                &authority,
                conn.listener_port,
                path_and_query,
                matched,
            );
            let mut resp = Response::new(body::empty());
            *resp.status_mut() =
                StatusCode::from_u16(r.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(http::header::LOCATION, v);
            }
            (resp, None)
        }
        RouteAction::Forward(action) => {
            let ctx = forward::Ctx {
                config: &config,
                state: &state,
                conn: &conn,
                route,
                matched,
                grpc,
                authority: &authority,
            };
            let (resp, slot) = forward::forward(&ctx, action, parts, body, &mut log).await;
            (resp, slot)
        }
    };

    // 10. response
    for (k, v) in ext_response_headers {
        resp.headers_mut().insert(k, v);
    }
    headers::apply_ops(resp.headers_mut(), &route.response_headers);
    if let (Some(origin), Some(policy)) = (cors_origin, route.cors.as_ref()) {
        cors::decorate(policy, origin, resp.headers_mut());
    }
    finish(resp, slot, log)
}

fn roll(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && rand::rng().random::<f64>() * 100.0 < percent)
}

/// Holds the access log entry until the response is built; if the request is abandoned
/// before that (the client went away while waiting), the line is written with `DC`.
struct LogGuard(Option<Box<AccessLog>>);

impl std::ops::Deref for LogGuard {
    type Target = AccessLog;
    fn deref(&self) -> &AccessLog {
        self.0.as_deref().expect("log entry present until finish")
    }
}

impl std::ops::DerefMut for LogGuard {
    fn deref_mut(&mut self) -> &mut AccessLog {
        self.0
            .as_deref_mut()
            .expect("log entry present until finish")
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(mut log) = self.0.take() {
            log.flags.set(Flag::DC);
            log.emit();
        }
    }
}

/// Wraps the body so the access log line is written when it ends.
fn finish(resp: Response<Body>, slot: Option<InFlightSlot>, mut guard: LogGuard) -> Response<Body> {
    let mut log = guard.0.take().expect("log entry present until finish");
    log.status = resp.status().as_u16();
    let (mut parts, inner) = resp.into_parts();
    log.metrics.response_headers(&parts.headers);
    if !parts.headers.contains_key(http::header::SERVER) {
        parts
            .headers
            .insert(http::header::SERVER, HeaderValue::from_static("trellis"));
    }
    Response::from_parts(parts, body::boxed(ResponseBody::new(inner, slot, log)))
}

/// 400 for a request refused before anything else looked at it; the connection is closed.
fn bad_request(why: &'static str) -> Response<Body> {
    let mut resp = error::local_reply(400, why, false);
    resp.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn flag_dpe(mut log: LogGuard) -> LogGuard {
    log.flags.set(Flag::DPE);
    log
}

/// `:authority` (HTTP/2, absolute-form) or `Host`, as received. The one authority routing,
/// authorization and the upstream use; `handle` refuses it (400) unless it is a valid
/// `host[:port]` ([`validate_authority`]: no userinfo, no path, a numeric port).
fn authority_of(parts: &http::request::Parts) -> Option<String> {
    if let Some(a) = parts.uri.authority() {
        return Some(a.as_str().to_string());
    }
    parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}

/// Checks that hyper accepts but a proxy must not pass on.
fn validate(parts: &http::request::Parts, has_authority: bool) -> Result<(), &'static str> {
    let method = parts.method.as_str();
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
    {
        return Err("invalid method");
    }
    match parts.uri.scheme_str() {
        None => {}
        Some("http") | Some("https") if parts.uri.authority().is_some() => {}
        Some(_) => return Err("invalid request target"),
    }
    let Some(pq) = parts.uri.path_and_query() else {
        return Err("invalid request target");
    };
    let pq = pq.as_str();
    if !pq.starts_with('/') {
        // asterisk-form (`OPTIONS *`) and authority-form (`CONNECT host:port`) are not routed.
        return Err("request target is not origin-form");
    }
    // `\` is not refused here: path normalization turns it into `/` (as Envoy does).
    if pq.bytes().any(|b| b < 0x21 || b == 0x7f || b == b'#') {
        return Err("invalid character in path");
    }
    if !has_authority && parts.version == Version::HTTP_11 {
        return Err("missing host header");
    }
    if parts.headers.get_all(http::header::HOST).iter().count() > 1 {
        return Err("multiple host headers");
    }
    Ok(())
}

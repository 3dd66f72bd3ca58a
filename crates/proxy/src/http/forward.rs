//! Forwarding a routed request upstream:
//!
//! 1. pick a destination of the rule by weight;
//! 2. prepare the upstream request once: hop-by-hop headers out, header ops (route, then
//!    destination), uri/authority rewrite, `x-envoy-original-path`;
//! 3. start mirrors (fire and forget, host suffixed `-shadow`);
//! 4. the attempt loop, under the route timeout: endpoint (LB, outlier-ejected hosts
//!    skipped, previous hosts avoided when asked), circuit breakers, connection (pool),
//!    per-try timeout, retry decision by `retryOn`, backoff;
//! 5. the response: hop-by-hop headers out, destination response header ops,
//!    `x-envoy-upstream-service-time`.
//!
//! The head goes upstream before the body is read, so a request body the client botches
//! (an overflowing chunk size, bad chunk framing, the client gone mid-body) first shows up as
//! a failed upstream attempt. [`TeeBody`] records the downstream error; an attempt that
//! fails once it is recorded is the client's fault: 400 `Bad Request` with `DPE` (Envoy's
//! codec error), `connection: close`, no retry and no outlier penalty for the host, never
//! the 503 "upstream connect error ... connection termination" of an upstream reset.
//!
//! WebSocket (HTTP/1.1 Upgrade) is tunnelled: after the upstream's 101 both upgraded
//! connections are spliced.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderMap, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rand::Rng;
use trellis_model::config::{
    Cluster, ForwardAction, HashKey, LbPolicy, ProxyConfig, RequestMatch, RetryPolicy, Route,
    UpstreamProtocol, WeightedCluster, WeightedClusters,
};

use crate::http::access_log::AccessLog;
use crate::http::body::{self, Body, Recording, TeeBody};
use crate::http::error::{self, Flag};
use crate::http::{headers, rewrite};
use crate::state::{ConnectionInfo, ProxyState};
use crate::upstream::lb::hash64;
use crate::upstream::outlier::Outcome;
use crate::upstream::pool::Proto;
use crate::upstream::{CheckoutError, ClusterRuntime, InFlightSlot};

/// What a forward needs from the request's context.
pub struct Ctx<'a> {
    pub config: &'a Arc<ProxyConfig>,
    pub state: &'a Arc<ProxyState>,
    pub conn: &'a ConnectionInfo,
    pub route: &'a Route,
    pub matched: Option<&'a RequestMatch>,
    pub grpc: bool,
    pub authority: &'a str,
}

/// The upstream request, prepared once and instantiated per attempt.
struct Prepared {
    method: Method,
    /// The incoming request's own (shared, not copied) unless rewritten.
    path_and_query: PathAndQuery,
    authority: String,
    headers: HeaderMap,
    proto: Proto,
    tls: bool,
}

impl Prepared {
    fn build(&self, attempt: u32, body: Body) -> Request<Body> {
        let mut h = self.headers.clone();
        h.insert(headers::X_ENVOY_ATTEMPT_COUNT, HeaderValue::from(attempt));
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        match self.proto {
            Proto::Http1 => {
                let mut uri = http::uri::Parts::default();
                uri.path_and_query = Some(self.path_and_query.clone());
                *req.uri_mut() = Uri::from_parts(uri).unwrap_or_default();
                *req.version_mut() = Version::HTTP_11;
                if let Ok(v) = HeaderValue::from_str(&self.authority) {
                    h.insert(http::header::HOST, v);
                }
            }
            Proto::Http2 => {
                let scheme = if self.tls { "https" } else { "http" };
                *req.uri_mut() = Uri::builder()
                    .scheme(scheme)
                    .authority(self.authority.as_str())
                    .path_and_query(self.path_and_query.clone())
                    .build()
                    .unwrap_or_default();
                *req.version_mut() = Version::HTTP_2;
                h.remove(http::header::HOST);
            }
        }
        *req.headers_mut() = h;
        req
    }
}

/// How the attempt loop ended without a response to pass on.
struct LocalFailure {
    status: u16,
    message: &'static str,
    flag: Flag,
}

impl LocalFailure {
    fn reply(&self, grpc: bool) -> Response<Body> {
        let mut r = error::local_reply(self.status, self.message, grpc);
        if self.flag == Flag::UO {
            r.headers_mut()
                .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
        }
        if self.flag == Flag::DPE {
            // The request's framing is broken: nothing after it on the connection is trusted.
            r.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }

    /// The downstream request body failed (see the module documentation).
    fn downstream_body() -> LocalFailure {
        LocalFailure {
            status: 400,
            message: "Bad Request",
            flag: Flag::DPE,
        }
    }
}

fn pick_weighted(w: &WeightedClusters) -> Option<&WeightedCluster> {
    match w.clusters.len() {
        0 => None,
        1 => w.clusters.first(),
        _ => {
            let total: u32 = w.clusters.iter().map(|c| c.weight).sum();
            if total == 0 {
                return w.clusters.first();
            }
            let mut r = rand::rng().random_range(0..total);
            for c in &w.clusters {
                if r < c.weight {
                    return Some(c);
                }
                r -= c.weight;
            }
            w.clusters.last()
        }
    }
}

fn upstream_proto(cluster: &Cluster, version: Version, grpc: bool, upgrade: bool) -> Proto {
    if upgrade {
        return Proto::Http1;
    }
    match cluster.protocol {
        UpstreamProtocol::Http2 => Proto::Http2,
        UpstreamProtocol::Http1 | UpstreamProtocol::Tcp if !cluster.pool.h2_upgrade => Proto::Http1,
        UpstreamProtocol::Auto
            if version != Version::HTTP_2 && !grpc && !cluster.pool.h2_upgrade =>
        {
            Proto::Http1
        }
        _ => Proto::Http2,
    }
}

/// The consistent-hash key of a request, and a cookie to set when the policy generates one.
fn hash_key(
    cluster: &Cluster,
    headers: &HeaderMap,
    path_and_query: &str,
    peer: SocketAddr,
) -> (Option<u64>, Option<HeaderValue>) {
    let LbPolicy::ConsistentHash(ch) = &cluster.lb else {
        return (None, None);
    };
    match &ch.key {
        HashKey::Header(name) => (
            headers.get(name.as_str()).map(|v| hash64(v.as_bytes())),
            None,
        ),
        HashKey::SourceIp => (Some(hash64(peer.ip().to_string().as_bytes())), None),
        HashKey::QueryParameter(name) => {
            let q = path_and_query.split_once('?').map_or("", |(_, q)| q);
            let v = q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == name).then_some(v)
            });
            (v.map(|v| hash64(v.as_bytes())), None)
        }
        HashKey::Cookie { name, path, ttl } => {
            let found = headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|kv| {
                    let (k, v) = kv.trim().split_once('=')?;
                    (k == name).then_some(v.trim_matches('"'))
                });
            match (found, ttl) {
                (Some(v), _) => (Some(hash64(v.as_bytes())), None),
                // Envoy generates the cookie only when a TTL is configured.
                (None, Some(ttl)) => {
                    let value = format!("{:016x}", rand::rng().random::<u64>());
                    let mut c = format!("{name}=\"{value}\"");
                    if !ttl.is_zero() {
                        c.push_str(&format!("; Max-Age={}", ttl.as_secs()));
                    }
                    if let Some(p) = path {
                        c.push_str(&format!("; Path={p}"));
                    }
                    c.push_str("; HttpOnly");
                    (
                        Some(hash64(value.as_bytes())),
                        HeaderValue::from_str(&c).ok(),
                    )
                }
                (None, None) => (None, None),
            }
        }
    }
}

/// Envoy's retry-on decision for a response.
fn retriable_status(p: &RetryPolicy, status: u16, headers: &HeaderMap) -> bool {
    let has = |t: &str| p.retry_on.iter().any(|x| x == t);
    if status >= 500 && has("5xx") {
        return true;
    }
    if matches!(status, 502..=504) && has("gateway-error") {
        return true;
    }
    if status == 409 && has("retriable-4xx") {
        return true;
    }
    if p.retriable_status_codes.contains(&status)
        && (has("retriable-status-codes") || !p.retriable_status_codes.is_empty())
    {
        return true;
    }
    if let Some(code) = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
    {
        let token = match code {
            1 => "cancelled",
            4 => "deadline-exceeded",
            8 => "resource-exhausted",
            13 => "internal",
            14 => "unavailable",
            _ => return false,
        };
        return has(token);
    }
    false
}

/// Envoy's retry-on decision for a failure before a response.
fn retriable_failure(p: &RetryPolicy, connect: bool, refused: bool) -> bool {
    let has = |t: &str| p.retry_on.iter().any(|x| x == t);
    has("5xx")
        || has("gateway-error")
        || has("reset")
        || (connect && has("connect-failure"))
        || (refused && has("refused-stream"))
}

/// Full-jitter exponential backoff: uniform in [0, base × (2^n − 1)], capped at 10 × base.
fn backoff(p: &RetryPolicy, retry: u32) -> Duration {
    let base = if p.backoff_base.is_zero() {
        Duration::from_millis(25)
    } else {
        p.backoff_base
    };
    let cap = base * 10;
    let upper = base
        .saturating_mul((1u32 << retry.min(16)).saturating_sub(1))
        .min(cap);
    let ms = upper.as_millis() as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

/// Forwards the request; returns the response and, for upstream responses, the in-flight
/// claim to release when the body ends.
pub async fn forward(
    ctx: &Ctx<'_>,
    action: &ForwardAction,
    mut parts: Parts,
    body: Incoming,
    log: &mut AccessLog,
) -> (Response<Body>, Option<InFlightSlot>) {
    let started = Instant::now();
    let Some(dest) = pick_weighted(&action.clusters) else {
        log.flags.set(Flag::NC);
        return (error::local_reply(503, "", ctx.grpc), None);
    };
    log.upstream_cluster = Some(dest.cluster.clone());
    let Some(cluster) = ctx.state.upstreams.get(ctx.config, &dest.cluster) else {
        log.flags.set(Flag::NC);
        return (error::local_reply(503, "", ctx.grpc), None);
    };
    cluster
        .stats
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);

    // 2. prepare the upstream request
    let upgrade = parts.version < Version::HTTP_2 && headers::is_upgrade(&parts.headers);
    let proto = upstream_proto(&cluster.config, parts.version, ctx.grpc, upgrade);
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    headers::apply_ops(&mut parts.headers, &ctx.route.request_headers);
    headers::apply_ops(&mut parts.headers, &dest.request_headers);
    let original_pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut path_and_query = None;
    let mut authority = ctx.authority.to_string();
    if let Some(rw) = &action.rewrite {
        if let Some(uri) = &rw.uri {
            path_and_query = Some(rewrite::rewrite_prefix(original_pq, ctx.matched, uri));
        } else if let Some((re, sub)) = &rw.uri_regex {
            path_and_query = Some(rewrite::rewrite_regex(original_pq, re, sub));
        }
        if let Some(a) = &rw.authority {
            authority = a.clone();
        }
    }
    if path_and_query.is_some() {
        let original_path = original_pq.split('?').next().unwrap_or("/");
        if let Ok(v) = HeaderValue::from_str(original_path) {
            parts.headers.insert(headers::X_ENVOY_ORIGINAL_PATH, v);
        }
    }
    let path_and_query = match path_and_query {
        Some(rewritten) => {
            PathAndQuery::try_from(rewritten).unwrap_or_else(|_| PathAndQuery::from_static("/"))
        }
        None => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    let (hash, set_cookie) = hash_key(
        &cluster.config,
        &parts.headers,
        path_and_query.as_str(),
        ctx.conn.peer_addr,
    );
    let prepared = Prepared {
        method: parts.method.clone(),
        path_and_query,
        authority,
        headers: std::mem::take(&mut parts.headers),
        proto,
        tls: !matches!(cluster.config.tls, trellis_model::config::UpstreamTls::None),
    };

    if upgrade {
        let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        return forward_upgrade(ctx, &cluster, &prepared, hash, body, on_upgrade, log).await;
    }

    // The body: streamed, with a copy kept for retries and mirrors when small.
    let (mut first_body, rec) = if hyper::body::Body::is_end_stream(&body) {
        (None, Recording::empty())
    } else {
        let (tee, rec) = TeeBody::new(body);
        (Some(body::boxed(tee)), rec)
    };
    log.request_body = Some(rec.clone());

    // 3. mirrors
    for m in &ctx.route.mirrors {
        if m.percentage >= 100.0
            || (m.percentage > 0.0 && rand::rng().random::<f64>() * 100.0 < m.percentage)
        {
            spawn_mirror(ctx, &m.cluster, &prepared, rec.clone());
        }
    }

    // 4. attempts under the route timeout
    let attempts = run_attempts(ctx, &cluster, &prepared, hash, &mut first_body, &rec, log);
    let result = match ctx.route.timeout {
        Some(t) if !t.is_zero() => match tokio::time::timeout(t, attempts).await {
            Ok(r) => r,
            Err(_) => Err(LocalFailure {
                status: 504,
                message: error::UPSTREAM_TIMEOUT,
                flag: Flag::UT,
            }),
        },
        _ => attempts.await,
    };

    // 5. the response
    match result {
        Ok((resp, slot)) => {
            let (mut rparts, incoming) = resp.into_parts();
            headers::strip_hop_by_hop(&mut rparts.headers, false);
            headers::apply_ops(&mut rparts.headers, &dest.response_headers);
            rparts.headers.insert(
                "x-envoy-upstream-service-time",
                HeaderValue::from(started.elapsed().as_millis() as u64),
            );
            if let Some(c) = set_cookie {
                rparts.headers.append(http::header::SET_COOKIE, c);
            }
            rparts.version = Version::HTTP_11;
            (
                Response::from_parts(rparts, body::boxed(incoming)),
                Some(slot),
            )
        }
        Err(f) => {
            log.flags.set(f.flag);
            (f.reply(ctx.grpc), None)
        }
    }
}

type AttemptOk = (Response<Incoming>, InFlightSlot);

async fn run_attempts(
    ctx: &Ctx<'_>,
    cluster: &Arc<ClusterRuntime>,
    prepared: &Prepared,
    hash: Option<u64>,
    first_body: &mut Option<Body>,
    rec: &Arc<Recording>,
    log: &mut AccessLog,
) -> Result<AttemptOk, LocalFailure> {
    let policy = ctx.route.retry.as_ref();
    let max_attempts = 1 + policy.map_or(0, |p| p.attempts);
    let other_host = policy.is_some_and(|p| p.retry_other_host);
    let per_try = policy
        .and_then(|p| p.per_try_timeout)
        .filter(|t| !t.is_zero());
    let mesh = ctx.state.mesh_tls.get();
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut _retry_guard = None;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let last_try = attempt >= max_attempts;
        let set = cluster.endpoints(ctx.config, ctx.conn.original_dst()).await;
        let avoid: &[SocketAddr] = if other_host { &tried } else { &[] };
        let Some(host) = cluster.pick(&set, hash, avoid) else {
            return Err(LocalFailure {
                status: 503,
                message: error::NO_HEALTHY_UPSTREAM,
                flag: Flag::UH,
            });
        };
        log.upstream_host = Some(host.addr);
        let Ok(admission) = cluster.admit(prepared.proto).await else {
            return Err(LocalFailure {
                status: 503,
                message: error::OVERFLOW,
                flag: Flag::UO,
            });
        };
        let attempt_fut = async {
            let (checkout, slot) = cluster
                .checkout(&host, prepared.proto, false, mesh)
                .await
                .map_err(AttemptError::Connect)?;
            let body = match first_body.take() {
                Some(b) => b,
                None => rec.replay().ok_or(AttemptError::NoBody)?,
            };
            let req = prepared.build(attempt, body);
            let (resp, conn) = checkout.send(req).await.map_err(AttemptError::Reset)?;
            Ok::<_, AttemptError>((resp, slot.with_conn(conn)))
        };
        let outcome = match per_try {
            Some(t) => tokio::time::timeout(t, attempt_fut)
                .await
                .unwrap_or(Err(AttemptError::PerTryTimeout)),
            None => attempt_fut.await,
        };
        drop(admission);
        let replayable = first_body.is_some() || rec.replay_possible();
        let can_retry = |log: &mut AccessLog| -> bool {
            if last_try {
                if attempt > 1 {
                    log.flags.set(Flag::URX);
                }
                return false;
            }
            replayable
        };
        match outcome {
            Ok((resp, slot)) => {
                let status = resp.status().as_u16();
                cluster.record(&set, &host, Outcome::Status(status));
                let retry = policy.is_some_and(|p| retriable_status(p, status, resp.headers()));
                if !retry {
                    return Ok((resp, slot));
                }
                if !can_retry(log) {
                    return Ok((resp, slot));
                }
                let Some(g) = cluster.try_retry() else {
                    return Ok((resp, slot));
                };
                _retry_guard = Some(g);
                drop((resp, slot));
            }
            Err(e) => {
                // The client's body broke the attempt: its error, not the host's.
                if let Some(why) = rec.downstream_error() {
                    tracing::debug!(
                        cluster = %cluster.config.name,
                        endpoint = %host.addr,
                        "request body from downstream failed: {why}; 400 DPE"
                    );
                    return Err(LocalFailure::downstream_body());
                }
                let failure = match &e {
                    AttemptError::Connect(err) => {
                        tracing::debug!(cluster = %cluster.config.name, endpoint = %host.addr, "{err}");
                        cluster.record(&set, &host, Outcome::LocalFailure);
                        LocalFailure {
                            status: 503,
                            message: error::CONNECT_FAILURE,
                            flag: Flag::UF,
                        }
                    }
                    AttemptError::Reset(err) => {
                        tracing::debug!(cluster = %cluster.config.name, endpoint = %host.addr, "upstream reset: {err}");
                        cluster.record(&set, &host, Outcome::LocalFailure);
                        LocalFailure {
                            status: 503,
                            message: error::RESET_BEFORE_HEADERS,
                            flag: Flag::UC,
                        }
                    }
                    AttemptError::PerTryTimeout => {
                        cluster.record(&set, &host, Outcome::Status(504));
                        LocalFailure {
                            status: 504,
                            message: error::UPSTREAM_TIMEOUT,
                            flag: Flag::UT,
                        }
                    }
                    AttemptError::NoBody => {
                        return Err(LocalFailure {
                            status: 503,
                            message: error::RESET_BEFORE_HEADERS,
                            flag: Flag::URX,
                        })
                    }
                };
                let refused = matches!(&e, AttemptError::Reset(err) if is_refused_stream(err));
                let connect = matches!(e, AttemptError::Connect(_));
                let retry = policy.is_some_and(|p| retriable_failure(p, connect, refused));
                if !retry {
                    return Err(failure);
                }
                if !can_retry(log) {
                    return Err(failure);
                }
                let Some(g) = cluster.try_retry() else {
                    return Err(failure);
                };
                _retry_guard = Some(g);
            }
        }
        tried.push(host.addr);
        if let Some(p) = policy {
            tokio::time::sleep(backoff(p, attempt)).await;
        }
    }
}

enum AttemptError {
    Connect(CheckoutError),
    Reset(hyper::Error),
    PerTryTimeout,
    NoBody,
}

fn is_refused_stream(e: &hyper::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if s.to_string().contains("refused") {
            return true;
        }
        src = s.source();
    }
    false
}

/// Sends a copy of the request to a mirror cluster, response discarded. Never delays the
/// main request: it waits for the request body in its own task.
fn spawn_mirror(ctx: &Ctx<'_>, cluster_name: &str, prepared: &Prepared, rec: Arc<Recording>) {
    let state = ctx.state.clone();
    let config = ctx.config.clone();
    let name = cluster_name.to_string();
    let original_dst = ctx.conn.original_dst();
    let mut headers = prepared.headers.clone();
    let host = trellis_model::route::strip_port(&prepared.authority);
    let shadow = format!("{host}-shadow{}", &prepared.authority[host.len()..]);
    if let Ok(v) = HeaderValue::from_str(&shadow) {
        headers.insert(http::header::HOST, v);
    }
    let method = prepared.method.clone();
    let pq = prepared.path_and_query.clone();
    let grpc = ctx.grpc;
    let version = if prepared.proto == Proto::Http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    tokio::spawn(async move {
        let Some(cluster) = state.upstreams.get(&config, &name) else {
            tracing::debug!("mirror cluster {name} not found");
            return;
        };
        let Some(body) = rec.replay_when_complete().await else {
            tracing::debug!("mirror to {name} skipped: request body not kept");
            return;
        };
        let proto = upstream_proto(&cluster.config, version, grpc, false);
        let mirror = Prepared {
            method,
            path_and_query: pq,
            authority: shadow,
            headers,
            proto,
            tls: !matches!(cluster.config.tls, trellis_model::config::UpstreamTls::None),
        };
        let set = cluster.endpoints(&config, original_dst).await;
        let Some(host) = cluster.pick(&set, None, &[]) else {
            return;
        };
        let Ok(_admission) = cluster.admit(proto).await else {
            return;
        };
        let work = async {
            let (checkout, slot) = cluster
                .checkout(&host, proto, false, state.mesh_tls.get())
                .await
                .ok()?;
            let (resp, conn) = checkout.send(mirror.build(1, body)).await.ok()?;
            let status = resp.status().as_u16();
            // Drain so the connection can be reused.
            let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
            slot.with_conn(conn).complete();
            Some(status)
        };
        match tokio::time::timeout(Duration::from_secs(60), work).await {
            Ok(Some(status)) => tracing::debug!("mirror to {name}: {status}"),
            _ => tracing::debug!("mirror to {name} failed"),
        }
    });
}

/// HTTP/1.1 Upgrade (WebSocket): a dedicated upstream connection; after 101 the two
/// upgraded connections are spliced until either side closes.
async fn forward_upgrade(
    ctx: &Ctx<'_>,
    cluster: &Arc<ClusterRuntime>,
    prepared: &Prepared,
    hash: Option<u64>,
    body: Incoming,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    log: &mut AccessLog,
) -> (Response<Body>, Option<InFlightSlot>) {
    let fail = |log: &mut AccessLog, f: LocalFailure| {
        log.flags.set(f.flag);
        (f.reply(false), None)
    };
    let set = cluster.endpoints(ctx.config, ctx.conn.original_dst()).await;
    let Some(host) = cluster.pick(&set, hash, &[]) else {
        return fail(
            log,
            LocalFailure {
                status: 503,
                message: error::NO_HEALTHY_UPSTREAM,
                flag: Flag::UH,
            },
        );
    };
    log.upstream_host = Some(host.addr);
    let Ok(admission) = cluster.admit(Proto::Http1).await else {
        return fail(
            log,
            LocalFailure {
                status: 503,
                message: error::OVERFLOW,
                flag: Flag::UO,
            },
        );
    };
    let handshake = async {
        let (checkout, slot) = cluster
            .checkout(&host, Proto::Http1, true, ctx.state.mesh_tls.get())
            .await
            .map_err(|_| Flag::UF)?;
        let req = prepared.build(1, body::boxed(body));
        let (resp, _conn) = checkout.send(req).await.map_err(|_| Flag::UC)?;
        Ok::<_, Flag>((resp, slot))
    };
    let result = match ctx.route.timeout {
        Some(t) if !t.is_zero() => tokio::time::timeout(t, handshake)
            .await
            .unwrap_or(Err(Flag::UT)),
        _ => handshake.await,
    };
    let (mut resp, slot) = match result {
        Ok(r) => r,
        Err(flag) => {
            cluster.record(&set, &host, Outcome::LocalFailure);
            let (status, message) = match flag {
                Flag::UT => (504, error::UPSTREAM_TIMEOUT),
                Flag::UF => (503, error::CONNECT_FAILURE),
                _ => (503, error::RESET_BEFORE_HEADERS),
            };
            return fail(
                log,
                LocalFailure {
                    status,
                    message,
                    flag,
                },
            );
        }
    };
    cluster.record(&set, &host, Outcome::Status(resp.status().as_u16()));
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        drop(admission);
        let (mut rparts, incoming) = resp.into_parts();
        headers::strip_hop_by_hop(&mut rparts.headers, false);
        return (
            Response::from_parts(rparts, body::boxed(incoming)),
            Some(slot),
        );
    }
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let (rparts, _) = resp.into_parts();
    tokio::spawn(async move {
        let _admission = admission;
        let _slot = slot;
        let (Some(down), Ok(up)) = (on_upgrade, upstream_upgrade.await) else {
            return;
        };
        let Ok(down) = down.await else {
            return;
        };
        let mut down = TokioIo::new(down);
        let mut up = TokioIo::new(up);
        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
    });
    (Response::from_parts(rparts, body::empty()), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(tokens: &[&str]) -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            retry_on: tokens.iter().map(|s| s.to_string()).collect(),
            retriable_status_codes: vec![],
            retry_other_host: false,
            backoff_base: Duration::from_millis(25),
        }
    }

    #[test]
    fn retry_on_tokens() {
        let h = HeaderMap::new();
        assert!(retriable_status(&policy(&["5xx"]), 500, &h));
        assert!(!retriable_status(&policy(&["gateway-error"]), 500, &h));
        assert!(retriable_status(&policy(&["gateway-error"]), 503, &h));
        assert!(retriable_status(&policy(&["retriable-4xx"]), 409, &h));
        let mut p = policy(&["retriable-status-codes"]);
        p.retriable_status_codes = vec![418];
        assert!(retriable_status(&p, 418, &h));
        let mut g = HeaderMap::new();
        g.insert("grpc-status", HeaderValue::from_static("14"));
        assert!(retriable_status(&policy(&["unavailable"]), 200, &g));
        assert!(!retriable_status(&policy(&["cancelled"]), 200, &g));
        assert!(retriable_failure(
            &policy(&["connect-failure"]),
            true,
            false
        ));
        assert!(!retriable_failure(
            &policy(&["connect-failure"]),
            false,
            false
        ));
    }

    #[test]
    fn backoff_is_capped() {
        let p = policy(&[]);
        for n in 1..20 {
            assert!(backoff(&p, n) <= Duration::from_millis(250));
        }
    }
}

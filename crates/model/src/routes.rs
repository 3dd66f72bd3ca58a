//! VirtualService rules -> routes: HTTP rules (matches, forward/redirect/direct response,
//! rewrite, headers, timeout, retries, fault, mirrors, CORS, delegates), TCP rules and TLS
//! (SNI) rules, for one gateway (or `mesh`) and one listener port.
//!
//! Conditions Istio evaluates when it generates config are evaluated here too: a match block
//! whose `gateways` do not name the gateway being compiled, whose `port` is not the listener
//! port, or whose `sourceLabels` / `sourceNamespace` do not describe this proxy's workload is
//! dropped, and a rule left without match blocks is dropped. The `RequestMatch`es produced
//! therefore never carry `port`, `source_labels` or `source_namespace`.
//!
//! Delegates: a rule with `delegate` is replaced by the delegate VirtualService's rules, each
//! with its match blocks merged with the root rule's (Istio's `mergeHTTPRoutes`: the
//! delegate's conditions win where both set one; a delegate URI must lie within the root's
//! prefix, and conflicting conditions drop that combination). Simplifications: one level of
//! delegation only; the root rule's other fields are not inherited (as Istio).

use std::borrow::Cow;
use std::time::Duration;

use base64::Engine as _;
use trellis_api::mesh::DEFAULT_RETRY_ON;
use trellis_api::networking::{
    HTTPFaultInjection, HTTPMatchRequest, HTTPRetry, HTTPRoute, HeaderOperations, Headers,
    StringMatch, UnmatchedPreflights,
};
use trellis_api::MeshConfig;

use crate::compile::{resolve_gateway_name, CompileError, Compiler};
use crate::config::{
    CorsPolicy, FaultAbort, FaultInjection, ForwardAction, HeaderOps, Mirror, Redirect,
    RegexHolder, RequestMatch, RetryPolicy, Rewrite, Route, RouteAction, RouteOrigin, SniRoute,
    StringMatcher, TcpRoute,
};
use crate::registry::exported_to;
use crate::route::compile_full_match;

/// Envoy's default retry back-off base interval.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);

/// One HTTP rule ready to translate (a delegate's rules replace the rule delegating to them).
pub(crate) struct ExpandedRule<'a> {
    /// `ns/name` of the VirtualService the rule is written in.
    pub vs_key: String,
    /// Namespace short destination hosts resolve in.
    pub namespace: &'a str,
    /// Namespace the match blocks' `gateways` resolve in (the root VirtualService's).
    pub gateway_namespace: &'a str,
    /// Rule name, else its index (`delegate-name/3` style for delegated rules).
    pub label: String,
    pub rule: Cow<'a, HTTPRoute>,
}

/// What a match block is evaluated against at compile time.
pub(crate) struct MatchScope<'s> {
    /// `ns/name` of the gateway being compiled, or `mesh`.
    pub gateway: &'s str,
    pub port: u16,
}

impl<'a> Compiler<'a> {
    /// The HTTP rules of VirtualService `idx`, delegates expanded.
    pub(crate) fn expand_http(&mut self, idx: usize) -> Vec<ExpandedRule<'a>> {
        let mut out = Vec::new();
        let mut warnings = Vec::new();
        let vs = &self.vss[idx];
        let (spec, key, ns) = (vs.spec, vs.key.clone(), vs.namespace);
        for (i, rule) in spec.http.iter().enumerate() {
            let label = rule.name.clone().unwrap_or_else(|| i.to_string());
            let Some(d) = &rule.delegate else {
                out.push(ExpandedRule {
                    vs_key: key.clone(),
                    namespace: ns,
                    gateway_namespace: ns,
                    label,
                    rule: Cow::Borrowed(rule),
                });
                continue;
            };
            let dname = d.name.as_deref().unwrap_or("");
            let dns = d
                .namespace
                .as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or(ns);
            let Some(dvs) = self
                .vss
                .iter()
                .find(|v| v.name == dname && v.namespace == dns)
            else {
                warnings.push(format!(
                    "VirtualService {key} http {label}: delegate VirtualService {dns}/{dname} not found: rule skipped"
                ));
                continue;
            };
            if !dvs.spec.hosts.is_empty() {
                warnings.push(format!(
                    "VirtualService {key} http {label}: {} has hosts, so it is not a delegate: rule skipped",
                    dvs.key
                ));
                continue;
            }
            if !exported_to(&dvs.export_to, dvs.namespace, ns) {
                warnings.push(format!(
                    "VirtualService {key} http {label}: delegate {} is not exported to namespace {ns}: rule skipped",
                    dvs.key
                ));
                continue;
            }
            let (dspec, dkey, dns) = (dvs.spec, dvs.key.clone(), dvs.namespace);
            for (j, drule) in dspec.http.iter().enumerate() {
                let dlabel = drule.name.clone().unwrap_or_else(|| j.to_string());
                if drule.delegate.is_some() {
                    warnings.push(format!(
                        "VirtualService {dkey} http {dlabel}: a delegate cannot delegate again: rule skipped"
                    ));
                    continue;
                }
                let Some(matches) = merge_matches(&rule.matches, &drule.matches) else {
                    warnings.push(format!(
                        "VirtualService {dkey} http {dlabel}: its matches conflict with every match of {key} http {label}: rule skipped"
                    ));
                    continue;
                };
                let mut merged = drule.clone();
                merged.matches = matches;
                out.push(ExpandedRule {
                    vs_key: dkey.clone(),
                    namespace: dns,
                    gateway_namespace: ns,
                    label: dlabel,
                    rule: Cow::Owned(merged),
                });
            }
        }
        for w in warnings {
            self.warn(w);
        }
        out
    }

    /// Whether a match block applies to this proxy, gateway and port.
    fn match_applies(&self, m: &HTTPMatchRequest, gw_ns: &str, scope: &MatchScope<'_>) -> bool {
        (m.gateways.is_empty()
            || m.gateways
                .iter()
                .any(|g| resolve_gateway_name(g, gw_ns) == scope.gateway))
            && m.port.is_none_or(|p| p == 0 || p == u32::from(scope.port))
            && self.source_applies(&m.source_labels, m.source_namespace.as_deref())
    }

    fn source_applies(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
        namespace: Option<&str>,
    ) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.target.labels.get(k) == Some(v))
            && namespace.is_none_or(|n| n.is_empty() || n == self.target.namespace)
    }

    /// Translates one HTTP rule; `None` when it does not apply here.
    pub(crate) fn translate_http(
        &mut self,
        r: &ExpandedRule<'a>,
        scope: &MatchScope<'_>,
    ) -> Result<Option<Route>, CompileError> {
        let rule = r.rule.as_ref();
        let origin = format!("VirtualService {} http {}", r.vs_key, r.label);
        let kept: Vec<&HTTPMatchRequest> = rule
            .matches
            .iter()
            .filter(|m| self.match_applies(m, r.gateway_namespace, scope))
            .collect();
        if !rule.matches.is_empty() && kept.is_empty() {
            return Ok(None);
        }
        let mut matches = Vec::new();
        for (i, m) in kept.into_iter().enumerate() {
            matches.push(request_match(m, &format!("{origin} match[{i}]"))?);
        }

        let action = if let Some(red) = &rule.redirect {
            RouteAction::Redirect(Redirect {
                uri: red.uri.clone().filter(|u| !u.is_empty()),
                prefix_rewrite: None,
                authority: red.authority.clone().filter(|a| !a.is_empty()),
                scheme: red.scheme.clone().filter(|s| !s.is_empty()),
                port: red
                    .port
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0),
                derive_port_from_request: red.derive_port
                    == Some(trellis_api::networking::RedirectPortSelection::FromRequestPort),
                code: u16::try_from(red.code()).unwrap_or(301),
            })
        } else if let Some(dr) = &rule.direct_response {
            let body = match &dr.body {
                Some(b) if b.string.is_some() => b.string.clone(),
                Some(b) => match b.bytes.as_deref() {
                    Some(bytes) => match base64::engine::general_purpose::STANDARD.decode(bytes) {
                        Ok(v) => Some(String::from_utf8_lossy(&v).into_owned()),
                        Err(e) => {
                            return Err(CompileError::Invalid(format!(
                                "{origin}: directResponse.body.bytes is not base64: {e}"
                            )))
                        }
                    },
                    None => None,
                },
                None => None,
            };
            RouteAction::DirectResponse {
                status: u16::try_from(dr.status)
                    .ok()
                    .filter(|s| (100..=999).contains(s))
                    .unwrap_or(500),
                body,
            }
        } else if !rule.route.is_empty() {
            let dests: Vec<_> = rule
                .route
                .iter()
                .filter_map(|d| {
                    let h = d.headers.as_ref();
                    Some((
                        d.destination.as_ref()?,
                        d.weight,
                        header_ops(h.and_then(|h| h.request.as_ref())),
                        header_ops(h.and_then(|h| h.response.as_ref())),
                    ))
                })
                .collect();
            if dests.is_empty() {
                self.warn(format!("{origin}: no route destination: rule skipped"));
                return Ok(None);
            }
            let clusters = self.weighted(dests, r.namespace, scope.port, &origin);
            let rewrite = match &rule.rewrite {
                None => None,
                Some(rw) => {
                    let uri_regex = match &rw.uri_regex_rewrite {
                        Some(rr) => {
                            let pattern = rr.pattern.as_deref().unwrap_or("");
                            let re = regex::RegexBuilder::new(pattern)
                                .size_limit(1 << 20)
                                .build()
                                .map_err(|e| {
                                    CompileError::Invalid(format!(
                                        "{origin}: invalid rewrite.uriRegexRewrite.match {pattern:?}: {e}"
                                    ))
                                })?;
                            Some((
                                RegexHolder(re),
                                envoy_substitution(rr.rewrite.as_deref().unwrap_or("")),
                            ))
                        }
                        None => None,
                    };
                    Some(Rewrite {
                        uri: rw.uri.clone().filter(|u| !u.is_empty()),
                        uri_regex,
                        authority: rw.authority.clone().filter(|a| !a.is_empty()),
                    })
                }
            };
            RouteAction::Forward(ForwardAction { clusters, rewrite })
        } else {
            self.warn(format!(
                "{origin}: no route, redirect or directResponse: rule skipped"
            ));
            return Ok(None);
        };

        let mut mirrors = Vec::new();
        if let Some(m) = &rule.mirror {
            let pct = rule
                .mirror_percentage
                .as_ref()
                .map(|p| p.value)
                .or(rule.mirror_percent.map(f64::from))
                .unwrap_or(100.0);
            let cluster = self.destination_cluster(m, r.namespace, scope.port, &origin);
            mirrors.push(Mirror {
                cluster,
                percentage: pct.clamp(0.0, 100.0),
            });
        }
        for m in &rule.mirrors {
            let Some(dest) = &m.destination else { continue };
            let cluster = self.destination_cluster(dest, r.namespace, scope.port, &origin);
            mirrors.push(Mirror {
                cluster,
                percentage: m
                    .percentage
                    .as_ref()
                    .map_or(100.0, |p| p.value)
                    .clamp(0.0, 100.0),
            });
        }

        let fault = match &rule.fault {
            Some(f) => self.fault(f, &origin),
            None => None,
        };
        let cors = match &rule.cors_policy {
            Some(c) => Some(cors(c, &origin)?),
            None => None,
        };
        let (request_headers, response_headers) = route_headers(rule.headers.as_ref());
        let forward = matches!(action, RouteAction::Forward(_));
        Ok(Some(Route {
            origin: RouteOrigin {
                virtual_service: r.vs_key.clone(),
                rule: r.label.clone(),
            },
            matches,
            action,
            request_headers,
            response_headers,
            timeout: rule
                .timeout
                .as_ref()
                .map(|d| d.as_std())
                .filter(|d| !d.is_zero()),
            retry: if forward {
                retry_policy(rule.retries.as_ref(), self.mesh)
            } else {
                None
            },
            fault,
            mirrors,
            cors,
        }))
    }

    /// The HTTP routes of VirtualService `idx` for a gateway (or `mesh`) and listener port.
    pub(crate) fn http_routes(
        &mut self,
        idx: usize,
        scope: &MatchScope<'_>,
    ) -> Result<Vec<crate::config::Route>, CompileError> {
        let rules = self.expand_http(idx);
        let mut out = Vec::new();
        for r in &rules {
            if let Some(route) = self.translate_http(r, scope)? {
                out.push(route);
            }
        }
        Ok(out)
    }

    fn fault(&mut self, f: &HTTPFaultInjection, origin: &str) -> Option<FaultInjection> {
        let delay = match &f.delay {
            Some(d) => match &d.fixed_delay {
                Some(fd) => Some((
                    fd.as_std(),
                    d.percentage
                        .as_ref()
                        .map(|p| p.value)
                        .or(d.percent.map(f64::from))
                        .unwrap_or(100.0)
                        .clamp(0.0, 100.0),
                )),
                None => {
                    self.warn(format!(
                        "{origin}: fault.delay without fixedDelay (exponentialDelay is not supported): ignored"
                    ));
                    None
                }
            },
            None => None,
        };
        let abort = match &f.abort {
            Some(a) => {
                let pct = a
                    .percentage
                    .as_ref()
                    .map_or(100.0, |p| p.value)
                    .clamp(0.0, 100.0);
                if let Some(s) = a.http_status.and_then(|s| u16::try_from(s).ok()) {
                    Some((FaultAbort::Http(s), pct))
                } else if let Some(code) = a.grpc_status.as_deref().and_then(grpc_code) {
                    Some((FaultAbort::Grpc(code), pct))
                } else {
                    self.warn(format!(
                        "{origin}: fault.abort needs httpStatus or a known grpcStatus (http2Error is not supported): ignored"
                    ));
                    None
                }
            }
            None => None,
        };
        (delay.is_some() || abort.is_some()).then_some(FaultInjection { delay, abort })
    }

    /// TCP routes of VirtualService `idx` for a gateway (or `mesh`) and listener port.
    pub(crate) fn tcp_routes(&mut self, idx: usize, scope: &MatchScope<'_>) -> Vec<TcpRoute> {
        let vs = &self.vss[idx];
        let (spec, key, ns) = (vs.spec, vs.key.clone(), vs.namespace);
        let mut out = Vec::new();
        for (i, rule) in spec.tcp.iter().enumerate() {
            let origin = format!("VirtualService {key} tcp[{i}]");
            let kept: Vec<_> = rule
                .matches
                .iter()
                .filter(|m| {
                    (m.gateways.is_empty()
                        || m.gateways
                            .iter()
                            .any(|g| resolve_gateway_name(g, ns) == scope.gateway))
                        && m.port.is_none_or(|p| p == 0 || p == u32::from(scope.port))
                        && self.source_applies(&m.source_labels, m.source_namespace.as_deref())
                })
                .collect();
            if !rule.matches.is_empty() && kept.is_empty() {
                continue;
            }
            let dests: Vec<_> = rule
                .route
                .iter()
                .filter_map(|d| {
                    Some((
                        d.destination.as_ref()?,
                        d.weight,
                        HeaderOps::default(),
                        HeaderOps::default(),
                    ))
                })
                .collect();
            if dests.is_empty() {
                continue;
            }
            let clusters = self.weighted(dests, ns, scope.port, &origin);
            let subnet_sets: Vec<Vec<ipnet::IpNet>> = if kept.is_empty() {
                vec![Vec::new()]
            } else {
                kept.iter()
                    .map(|m| self.subnets(&m.destination_subnets, &origin))
                    .collect()
            };
            for destination_subnets in subnet_sets {
                out.push(TcpRoute {
                    origin: origin.clone(),
                    destination_subnets,
                    port: None,
                    clusters: clusters.clone(),
                });
            }
        }
        out
    }

    /// TLS (SNI) routes of VirtualService `idx`; SNI names outside `allowed` (when given) are
    /// dropped, as are matches left without SNI names.
    pub(crate) fn tls_routes(
        &mut self,
        idx: usize,
        scope: &MatchScope<'_>,
        allowed: Option<&[String]>,
    ) -> Vec<SniRoute> {
        let vs = &self.vss[idx];
        let (spec, key, ns) = (vs.spec, vs.key.clone(), vs.namespace);
        let mut out = Vec::new();
        for (i, rule) in spec.tls.iter().enumerate() {
            let origin = format!("VirtualService {key} tls[{i}]");
            let kept: Vec<_> = rule
                .matches
                .iter()
                .filter(|m| {
                    (m.gateways.is_empty()
                        || m.gateways
                            .iter()
                            .any(|g| resolve_gateway_name(g, ns) == scope.gateway))
                        && m.port.is_none_or(|p| p == 0 || p == u32::from(scope.port))
                        && self.source_applies(&m.source_labels, m.source_namespace.as_deref())
                })
                .collect();
            if kept.is_empty() {
                continue;
            }
            let dests: Vec<_> = rule
                .route
                .iter()
                .filter_map(|d| {
                    Some((
                        d.destination.as_ref()?,
                        d.weight,
                        HeaderOps::default(),
                        HeaderOps::default(),
                    ))
                })
                .collect();
            if dests.is_empty() {
                continue;
            }
            let clusters = self.weighted(dests, ns, scope.port, &origin);
            for m in kept {
                let server_names: Vec<String> = m
                    .sni_hosts
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .filter(|h| {
                        allowed.is_none_or(|a| {
                            a.iter().any(|s| {
                                trellis_api::host::host_matches(s, h)
                                    || trellis_api::host::host_matches(h, s)
                            })
                        })
                    })
                    .collect();
                if server_names.is_empty() {
                    continue;
                }
                let destination_subnets = self.subnets(&m.destination_subnets, &origin);
                out.push(SniRoute {
                    origin: origin.clone(),
                    server_names,
                    destination_subnets,
                    port: None,
                    clusters: clusters.clone(),
                });
            }
        }
        out
    }

    fn subnets(&mut self, subnets: &[String], origin: &str) -> Vec<ipnet::IpNet> {
        let mut out = Vec::new();
        for s in subnets {
            match s
                .parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            {
                Ok(n) => out.push(n),
                Err(_) => self.warn(format!(
                    "{origin}: destinationSubnets entry {s:?} is not an IP or CIDR: ignored"
                )),
            }
        }
        out
    }
}

/// Converts one `match` block (its gateways/port/source conditions already evaluated).
fn request_match(m: &HTTPMatchRequest, origin: &str) -> Result<RequestMatch, CompileError> {
    let mut out = RequestMatch {
        name: m.name.clone(),
        ignore_uri_case: m.ignore_uri_case.unwrap_or(false),
        ..Default::default()
    };
    out.uri = string_matcher(m.uri.as_ref(), origin, "uri")?;
    out.scheme = string_matcher(m.scheme.as_ref(), origin, "scheme")?;
    out.method = string_matcher(m.method.as_ref(), origin, "method")?;
    out.authority = string_matcher(m.authority.as_ref(), origin, "authority")?;
    for (name, sm) in &m.headers {
        let what = format!("headers.{name}");
        out.headers.push((
            name.to_ascii_lowercase(),
            string_matcher(Some(sm), origin, &what)?.unwrap_or(StringMatcher::Present),
        ));
    }
    for (name, sm) in &m.without_headers {
        let what = format!("withoutHeaders.{name}");
        out.without_headers.push((
            name.to_ascii_lowercase(),
            string_matcher(Some(sm), origin, &what)?.unwrap_or(StringMatcher::Present),
        ));
    }
    for (name, sm) in &m.query_params {
        let what = format!("queryParams.{name}");
        out.query_params.push((
            name.clone(),
            string_matcher(Some(sm), origin, &what)?.unwrap_or(StringMatcher::Present),
        ));
    }
    Ok(out)
}

/// `exact` / `prefix` / `regex` (compiled as a full match); `None` when none is set.
pub(crate) fn string_matcher(
    m: Option<&StringMatch>,
    origin: &str,
    what: &str,
) -> Result<Option<StringMatcher>, CompileError> {
    let Some(m) = m else { return Ok(None) };
    if let Some(e) = &m.exact {
        return Ok(Some(StringMatcher::Exact(e.clone())));
    }
    if let Some(p) = &m.prefix {
        return Ok(Some(StringMatcher::Prefix(p.clone())));
    }
    if let Some(re) = &m.regex {
        return compile_full_match(re)
            .map(|r| Some(StringMatcher::Regex(r)))
            .map_err(|e| {
                CompileError::Invalid(format!("{origin} {what}: invalid regex {re:?}: {e}"))
            });
    }
    Ok(None)
}

fn header_ops(h: Option<&HeaderOperations>) -> HeaderOps {
    let Some(h) = h else {
        return HeaderOps::default();
    };
    HeaderOps {
        set: h
            .set
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        add: h
            .add
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        remove: h.remove.iter().map(|k| k.to_ascii_lowercase()).collect(),
    }
}

fn route_headers(h: Option<&Headers>) -> (HeaderOps, HeaderOps) {
    (
        header_ops(h.and_then(|h| h.request.as_ref())),
        header_ops(h.and_then(|h| h.response.as_ref())),
    )
}

/// RE2/Envoy substitutions use `\1`; the regex crate uses `${1}`.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut n = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    n.push(*d);
                    chars.next();
                }
                out.push_str(&format!("${{{n}}}"));
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

const GRPC_CODES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

fn grpc_code(s: &str) -> Option<u32> {
    if let Ok(n) = s.parse::<u32>() {
        return Some(n);
    }
    GRPC_CODES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(s))
        .and_then(|p| u32::try_from(p).ok())
}

fn cors(c: &trellis_api::networking::CorsPolicy, origin: &str) -> Result<CorsPolicy, CompileError> {
    let mut allow_origins = Vec::new();
    for (i, o) in c.allow_origins.iter().enumerate() {
        if let Some(m) = string_matcher(Some(o), origin, &format!("corsPolicy.allowOrigins[{i}]"))?
        {
            allow_origins.push(m);
        }
    }
    for o in &c.allow_origin {
        allow_origins.push(if o == "*" {
            StringMatcher::Prefix(String::new())
        } else {
            StringMatcher::Exact(o.clone())
        });
    }
    Ok(CorsPolicy {
        allow_origins,
        allow_methods: c.allow_methods.clone(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        max_age: c.max_age.as_ref().map(|d| d.as_std()),
        allow_credentials: c.allow_credentials,
        unmatched_preflights_forward: c.unmatched_preflights != Some(UnmatchedPreflights::Ignore),
    })
}

/// Splits `retryOn` into Envoy tokens and status codes; codes imply `retriable-status-codes`.
pub fn parse_retry_on(s: &str) -> (Vec<String>, Vec<u16>) {
    let mut tokens = Vec::new();
    let mut codes = Vec::new();
    for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match t.parse::<u16>() {
            Ok(c) => {
                if !codes.contains(&c) {
                    codes.push(c);
                }
            }
            Err(_) => {
                if !tokens.iter().any(|x| x == t) {
                    tokens.push(t.to_string());
                }
            }
        }
    }
    if !codes.is_empty() && !tokens.iter().any(|t| t == "retriable-status-codes") {
        tokens.push("retriable-status-codes".into());
    }
    (tokens, codes)
}

/// Istio's retry policy (`retry.ConvertPolicy`): a rule without `retries` gets the mesh's
/// `defaultHttpRetryPolicy` (2 attempts on connect-failure, refused-stream, unavailable,
/// cancelled and 503 unless configured otherwise); `attempts: 0` (or less) disables retries;
/// a policy starts from Istio's default (retry another host, 25ms back-off, 503 retriable) and
/// takes the fields it sets.
pub fn retry_policy(retries: Option<&HTTPRetry>, mesh: &MeshConfig) -> Option<RetryPolicy> {
    struct Input {
        attempts: i32,
        retry_on: Option<String>,
        per_try: Option<Duration>,
        backoff: Option<Duration>,
        ignore_previous: Option<bool>,
    }
    let input = match retries {
        Some(r) => Some(Input {
            attempts: r.attempts.unwrap_or(0),
            retry_on: r.retry_on.clone(),
            per_try: r.per_try_timeout.as_ref().map(|d| d.as_std()),
            backoff: r.backoff.as_ref().map(|d| d.as_std()),
            ignore_previous: r.retry_ignore_previous_hosts,
        }),
        None => mesh.default_http_retry_policy.as_ref().map(|m| Input {
            attempts: m.attempts,
            retry_on: m.retry_on.clone(),
            per_try: m.per_try_timeout.as_ref().map(|d| d.as_std()),
            backoff: m
                .other
                .get("backoff")
                .and_then(|v| v.as_str())
                .and_then(|s| trellis_api::Duration::parse(s).ok())
                .map(|d| d.as_std()),
            ignore_previous: m
                .other
                .get("retryIgnorePreviousHosts")
                .and_then(serde_json::Value::as_bool),
        }),
    };
    let (tokens, _) = parse_retry_on(DEFAULT_RETRY_ON);
    let mut out = RetryPolicy {
        attempts: 2,
        per_try_timeout: None,
        retry_on: tokens,
        retriable_status_codes: vec![503],
        retry_other_host: true,
        backoff_base: DEFAULT_BACKOFF,
    };
    let Some(input) = input else {
        return Some(out);
    };
    if input.attempts <= 0 {
        return None;
    }
    out.attempts = input.attempts.unsigned_abs();
    if let Some(on) = input
        .retry_on
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != DEFAULT_RETRY_ON)
    {
        let (tokens, codes) = parse_retry_on(on);
        out.retry_on = tokens;
        out.retriable_status_codes = codes;
    }
    out.per_try_timeout = input.per_try.filter(|d| !d.is_zero());
    if let Some(b) = input.backoff.filter(|d| !d.is_zero()) {
        out.backoff_base = b;
    }
    if let Some(i) = input.ignore_previous {
        out.retry_other_host = i;
    }
    Some(out)
}

/// Merges a root rule's match blocks with a delegate rule's; `None` when every combination
/// conflicts.
pub(crate) fn merge_matches(
    root: &[HTTPMatchRequest],
    delegate: &[HTTPMatchRequest],
) -> Option<Vec<HTTPMatchRequest>> {
    if root.is_empty() {
        return Some(delegate.to_vec());
    }
    if delegate.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for r in root {
        for d in delegate {
            if let Some(m) = merge_match(r, d) {
                out.push(m);
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

fn merge_match(root: &HTTPMatchRequest, leaf: &HTTPMatchRequest) -> Option<HTTPMatchRequest> {
    // URI: the leaf must stay within the root's.
    if let (Some(r), Some(l)) = (&root.uri, &leaf.uri) {
        let ok = match (r, l) {
            (
                StringMatch {
                    prefix: Some(rp), ..
                },
                StringMatch {
                    prefix: Some(lp), ..
                },
            ) => lp.starts_with(rp.as_str()),
            (
                StringMatch {
                    prefix: Some(rp), ..
                },
                StringMatch {
                    exact: Some(le), ..
                },
            ) => le.starts_with(rp.as_str()),
            (a, b) => a == b,
        };
        if !ok {
            return None;
        }
    }
    fn same<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
        a.is_none() || b.is_none() || a == b
    }
    if !same(&root.scheme, &leaf.scheme)
        || !same(&root.method, &leaf.method)
        || !same(&root.authority, &leaf.authority)
        || !same(&root.port, &leaf.port)
        || !same(&root.source_namespace, &leaf.source_namespace)
        || root.ignore_uri_case.unwrap_or(false) != leaf.ignore_uri_case.unwrap_or(false)
            && root.uri.is_some()
            && leaf.uri.is_some()
    {
        return None;
    }
    fn merge_map<V: Clone + PartialEq>(
        a: &std::collections::BTreeMap<String, V>,
        b: &std::collections::BTreeMap<String, V>,
    ) -> Option<std::collections::BTreeMap<String, V>> {
        let mut out = a.clone();
        for (k, v) in b {
            if let Some(prev) = out.get(k) {
                if prev != v {
                    return None;
                }
            }
            out.insert(k.clone(), v.clone());
        }
        Some(out)
    }
    let mut out = leaf.clone();
    out.name = match (&root.name, &leaf.name) {
        (Some(r), Some(l)) => Some(format!("{r}-{l}")),
        (r, l) => l.clone().or(r.clone()),
    };
    out.uri = leaf.uri.clone().or(root.uri.clone());
    out.scheme = leaf.scheme.clone().or(root.scheme.clone());
    out.method = leaf.method.clone().or(root.method.clone());
    out.authority = leaf.authority.clone().or(root.authority.clone());
    out.headers = merge_map(&root.headers, &leaf.headers)?;
    out.without_headers = merge_map(&root.without_headers, &leaf.without_headers)?;
    out.query_params = merge_map(&root.query_params, &leaf.query_params)?;
    out.source_labels = merge_map(&root.source_labels, &leaf.source_labels)?;
    out.port = leaf.port.or(root.port);
    out.source_namespace = leaf
        .source_namespace
        .clone()
        .or(root.source_namespace.clone());
    out.ignore_uri_case = leaf.ignore_uri_case.or(root.ignore_uri_case);
    // The root's gateways govern (a delegate is bound through its root).
    out.gateways = root.gateways.clone();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_on_tokens_and_codes() {
        let (t, c) = parse_retry_on("gateway-error, 503,connect-failure,409");
        assert_eq!(
            t,
            vec!["gateway-error", "connect-failure", "retriable-status-codes"]
        );
        assert_eq!(c, vec![503, 409]);
    }

    #[test]
    fn retries_default_explicit_and_disabled() {
        let mesh = MeshConfig::default();
        let d = retry_policy(None, &mesh).unwrap();
        assert_eq!(d.attempts, 2);
        assert_eq!(
            d.retry_on,
            vec![
                "connect-failure",
                "refused-stream",
                "unavailable",
                "cancelled",
                "retriable-status-codes"
            ]
        );
        assert_eq!(d.retriable_status_codes, vec![503]);
        assert!(d.retry_other_host);
        assert_eq!(d.backoff_base, Duration::from_millis(25));

        let explicit = HTTPRetry {
            attempts: Some(3),
            per_try_timeout: Some(trellis_api::Duration::parse("2s").unwrap()),
            retry_on: Some("gateway-error,connect-failure".into()),
            ..Default::default()
        };
        let e = retry_policy(Some(&explicit), &mesh).unwrap();
        assert_eq!(e.attempts, 3);
        assert_eq!(e.per_try_timeout, Some(Duration::from_secs(2)));
        assert_eq!(e.retry_on, vec!["gateway-error", "connect-failure"]);
        assert!(e.retriable_status_codes.is_empty());

        let only_attempts = HTTPRetry {
            attempts: Some(5),
            ..Default::default()
        };
        let o = retry_policy(Some(&only_attempts), &mesh).unwrap();
        assert_eq!(
            (o.attempts, o.retriable_status_codes.clone()),
            (5, vec![503])
        );

        let off = HTTPRetry {
            attempts: Some(0),
            ..Default::default()
        };
        assert_eq!(retry_policy(Some(&off), &mesh), None);

        let no_retries = MeshConfig {
            default_http_retry_policy: Some(trellis_api::mesh::HttpRetry::default()),
            ..Default::default()
        };
        assert_eq!(retry_policy(None, &no_retries), None);
        assert!(retry_policy(Some(&explicit), &no_retries).is_some());
    }

    #[test]
    fn regex_substitutions() {
        assert_eq!(envoy_substitution("/v2/\\1/x$"), "/v2/${1}/x$$");
    }

    #[test]
    fn delegate_match_merge() {
        let prefix = |p: &str| StringMatch {
            prefix: Some(p.into()),
            ..Default::default()
        };
        let root = vec![HTTPMatchRequest {
            uri: Some(prefix("/api")),
            ..Default::default()
        }];
        let inside = vec![HTTPMatchRequest {
            uri: Some(prefix("/api/v1")),
            headers: [("x".to_string(), StringMatch::default())].into(),
            ..Default::default()
        }];
        let merged = merge_matches(&root, &inside).unwrap();
        assert_eq!(merged[0].uri, Some(prefix("/api/v1")));
        assert_eq!(merged[0].headers.len(), 1);
        let outside = vec![HTTPMatchRequest {
            uri: Some(prefix("/other")),
            ..Default::default()
        }];
        assert_eq!(merge_matches(&root, &outside), None);
        assert_eq!(merge_matches(&root, &[]).unwrap(), root);
        assert_eq!(merge_matches(&[], &outside).unwrap(), outside);
    }
}

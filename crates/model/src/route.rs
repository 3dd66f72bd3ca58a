//! HTTP route selection: which virtual host serves an `:authority`, which route of it serves a
//! request. Pure and allocation-free on the hot path; shared by the proxy and `trellis explain`.
//!
//! Semantics follow Envoy as Istio configures it: virtual host domains match exactly, then by
//! the longest `*.suffix` wildcard, then `*`; routes are tried in order and the first whose
//! any `match` block holds wins; a route without match blocks matches everything.

use std::collections::BTreeMap;

use http::HeaderMap;

use crate::config::{RequestMatch, Route, RouteTable, StringMatcher, VirtualHost};
use crate::normalize::normalize_authority;

/// What routing looks at in a request. Paths are already normalized by the proxy.
#[derive(Clone, Copy, Debug)]
pub struct RequestInfo<'a> {
    /// `:authority` / `Host`, as received (any case, may carry a port).
    pub authority: &'a str,
    /// Path and query, as received after normalization.
    pub path: &'a str,
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    pub headers: &'a HeaderMap,
    /// Port the request arrived on (listener port).
    pub port: u16,
    /// Caller workload's labels and namespace, when known (sidecar inbound / mesh callers).
    pub source_labels: Option<&'a BTreeMap<String, String>>,
    pub source_namespace: Option<&'a str>,
}

impl<'a> RequestInfo<'a> {
    /// The path without the query string.
    pub fn path_only(&self) -> &'a str {
        self.path.split_once('?').map_or(self.path, |(p, _)| p)
    }

    /// The raw query string (after `?`), if any.
    pub fn query(&self) -> Option<&'a str> {
        self.path.split_once('?').map(|(_, q)| q)
    }
}

/// The virtual host serving `authority`: exact domain, then longest `*.suffix`, then `*`.
/// Ports: a domain with `:port` must match the authority exactly; a domain without a port
/// matches the authority's host part.
///
/// The authority is first put in the form authorization compares
/// ([`crate::normalize::normalize_authority`]: port split off, then the host's trailing dots
/// removed, lowercase), so `WWW.example.com.:80` is routed as `www.example.com:80`, the host
/// authorization judged. Borrowed (no allocation) for an authority already in that form.
pub fn select_virtual_host<'t>(table: &'t RouteTable, authority: &str) -> Option<&'t VirtualHost> {
    let normalized = normalize_authority(authority);
    let authority = normalized.as_ref();
    let host = strip_port(authority);
    let mut best: Option<(&VirtualHost, usize)> = None; // (vh, rank): higher is better
    for vh in &table.virtual_hosts {
        for d in &vh.domains {
            let rank = domain_rank(d, authority, host);
            if let Some(rank) = rank {
                if best.is_none_or(|(_, r)| rank > r) {
                    best = Some((vh, rank));
                }
            }
        }
    }
    best.map(|(vh, _)| vh)
}

/// Rank of a domain match: exact (with port) > exact host > longest suffix wildcard > `*`.
fn domain_rank(domain: &str, authority: &str, host: &str) -> Option<usize> {
    if domain == "*" {
        return Some(1);
    }
    if domain.eq_ignore_ascii_case(authority) {
        return Some(usize::MAX);
    }
    if domain.eq_ignore_ascii_case(host) {
        return Some(usize::MAX - 1);
    }
    let target = if domain.contains(':') {
        authority
    } else {
        host
    };
    if let Some(suffix) = domain.strip_prefix('*') {
        if target.len() > suffix.len()
            && target[target.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        {
            return Some(2 + suffix.len());
        }
    }
    None
}

/// `host:port` -> `host` (IPv6 literals in brackets kept whole).
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(i) => &authority[..=i],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// The first route of `vh` that matches, with the index of the match block that did
/// (`None` for a route without match blocks).
pub fn select_route<'v>(
    vh: &'v VirtualHost,
    req: &RequestInfo<'_>,
) -> Option<(&'v Route, Option<usize>)> {
    for route in &vh.routes {
        if route.matches.is_empty() {
            return Some((route, None));
        }
        if let Some(i) = route.matches.iter().position(|m| request_matches(m, req)) {
            return Some((route, Some(i)));
        }
    }
    None
}

/// Both steps: virtual host by authority, then route.
pub fn route_request<'t>(
    table: &'t RouteTable,
    req: &RequestInfo<'_>,
) -> Option<(&'t VirtualHost, &'t Route, Option<usize>)> {
    let vh = select_virtual_host(table, req.authority)?;
    let (r, m) = select_route(vh, req)?;
    Some((vh, r, m))
}

/// Whether one `match` block holds for the request.
pub fn request_matches(m: &RequestMatch, req: &RequestInfo<'_>) -> bool {
    if let Some(port) = m.port {
        if port != req.port {
            return false;
        }
    }
    if let Some(u) = &m.uri {
        if !string_matches(u, req.path_only(), m.ignore_uri_case) {
            return false;
        }
    }
    if let Some(s) = &m.scheme {
        if !string_matches(s, req.scheme, false) {
            return false;
        }
    }
    if let Some(s) = &m.method {
        if !string_matches(s, req.method, false) {
            return false;
        }
    }
    if let Some(s) = &m.authority {
        if !string_matches(s, req.authority, false) {
            return false;
        }
    }
    for (name, matcher) in &m.headers {
        match header_value(req.headers, name) {
            Some(v) => {
                if !string_matches(matcher, &v, false) {
                    return false;
                }
            }
            None => return false,
        }
    }
    for (name, matcher) in &m.without_headers {
        if let Some(v) = header_value(req.headers, name) {
            if string_matches(matcher, &v, false) {
                return false;
            }
        }
    }
    if !m.query_params.is_empty() {
        let q = req.query().unwrap_or("");
        for (name, matcher) in &m.query_params {
            let found = q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == name).then_some(v)
            });
            match found {
                Some(v) => {
                    if !string_matches(matcher, v, false) {
                        return false;
                    }
                }
                None => return false,
            }
        }
    }
    if !m.source_labels.is_empty() {
        let Some(labels) = req.source_labels else {
            return false;
        };
        if !m
            .source_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            return false;
        }
    }
    if let Some(ns) = &m.source_namespace {
        if req.source_namespace != Some(ns.as_str()) {
            return false;
        }
    }
    true
}

/// All values of a header joined with `,` (Envoy's behaviour for repeated headers);
/// values that are not visible ASCII never match.
fn header_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<std::borrow::Cow<'h, str>> {
    let mut iter = headers.get_all(name).iter();
    let first = iter.next()?.to_str().ok()?;
    match iter.next() {
        None => Some(std::borrow::Cow::Borrowed(first)),
        Some(second) => {
            let mut s = String::from(first);
            s.push(',');
            s.push_str(second.to_str().ok()?);
            for v in iter {
                s.push(',');
                s.push_str(v.to_str().ok()?);
            }
            Some(std::borrow::Cow::Owned(s))
        }
    }
}

/// Applies a string matcher. `ignore_case` applies to exact and prefix (Envoy's ignore_case).
pub fn string_matches(m: &StringMatcher, value: &str, ignore_case: bool) -> bool {
    match m {
        StringMatcher::Exact(e) => {
            if ignore_case {
                e.eq_ignore_ascii_case(value)
            } else {
                e == value
            }
        }
        StringMatcher::Prefix(p) => {
            value.len() >= p.len()
                && if ignore_case {
                    value.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
                } else {
                    value.starts_with(p.as_str())
                }
        }
        StringMatcher::Regex(r) => r.is_match(value),
        StringMatcher::Present => true,
    }
}

/// Compiles an Istio regex the way Envoy's safe_regex applies it: the whole value must match.
pub fn compile_full_match(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::*;

    fn route(name: &str, matches: Vec<RequestMatch>) -> Route {
        Route {
            origin: RouteOrigin {
                virtual_service: "ns/vs".into(),
                rule: name.into(),
            },
            matches,
            action: RouteAction::DirectResponse {
                status: 200,
                body: Some(name.into()),
            },
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
            timeout: None,
            retry: None,
            fault: None,
            mirrors: vec![],
            cors: None,
        }
    }

    fn table() -> RouteTable {
        RouteTable {
            name: "80".into(),
            virtual_hosts: vec![
                VirtualHost {
                    name: "exact".into(),
                    domains: vec!["api.example.com".into(), "api.example.com:80".into()],
                    require_tls: false,
                    routes: vec![
                        route(
                            "jason",
                            vec![RequestMatch {
                                headers: vec![(
                                    "end-user".into(),
                                    StringMatcher::Exact("jason".into()),
                                )],
                                ..Default::default()
                            }],
                        ),
                        route(
                            "api",
                            vec![RequestMatch {
                                uri: Some(StringMatcher::Prefix("/API/".into())),
                                ignore_uri_case: true,
                                ..Default::default()
                            }],
                        ),
                        route(
                            "regex",
                            vec![RequestMatch {
                                uri: Some(StringMatcher::Regex(
                                    compile_full_match("/v[0-9]+").unwrap(),
                                )),
                                ..Default::default()
                            }],
                        ),
                        route(
                            "query",
                            vec![RequestMatch {
                                query_params: vec![(
                                    "debug".into(),
                                    StringMatcher::Exact("1".into()),
                                )],
                                ..Default::default()
                            }],
                        ),
                        route("default", vec![]),
                    ],
                },
                VirtualHost {
                    name: "wild".into(),
                    domains: vec!["*.example.com".into()],
                    require_tls: false,
                    routes: vec![route("wild", vec![])],
                },
                VirtualHost {
                    name: "any".into(),
                    domains: vec!["*".into()],
                    require_tls: false,
                    routes: vec![route("any", vec![])],
                },
            ],
        }
    }

    fn pick(authority: &str, path: &str, headers: &[(&str, &str)]) -> String {
        let t = table();
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let req = RequestInfo {
            authority,
            path,
            method: "GET",
            scheme: "http",
            headers: &h,
            port: 80,
            source_labels: None,
            source_namespace: None,
        };
        route_request(&t, &req)
            .map(|(vh, r, _)| format!("{}/{}", vh.name, r.origin.rule))
            .unwrap_or_default()
    }

    #[test]
    fn virtual_host_precedence() {
        assert_eq!(pick("api.example.com", "/", &[]), "exact/default");
        assert_eq!(pick("API.Example.com:80", "/", &[]), "exact/default");
        assert_eq!(pick("www.example.com", "/", &[]), "wild/wild");
        assert_eq!(pick("other.org", "/", &[]), "any/any");
    }

    /// Routing sees the host authorization judged: the port is split off before the
    /// trailing dots go (`www.example.com.:80` is `www.example.com`, not the `*` vhost).
    #[test]
    fn trailing_dot_before_a_port_is_the_same_host() {
        assert_eq!(pick("api.example.com.", "/", &[]), "exact/default");
        assert_eq!(pick("API.example.com.:80", "/", &[]), "exact/default");
        assert_eq!(pick("api.example.com..:8080", "/", &[]), "exact/default");
        assert_eq!(pick("api.example.com:", "/", &[]), "exact/default");
        assert_eq!(pick("WWW.example.com.:80", "/", &[]), "wild/wild");
        assert_eq!(pick("other.org.:80", "/", &[]), "any/any");
    }

    #[test]
    fn first_match_wins_in_order() {
        assert_eq!(
            pick("api.example.com", "/api/x", &[("end-user", "jason")]),
            "exact/jason"
        );
        assert_eq!(pick("api.example.com", "/api/x", &[]), "exact/api");
        assert_eq!(pick("api.example.com", "/v12", &[]), "exact/regex");
        assert_eq!(
            pick("api.example.com", "/v12/x", &[]),
            "exact/default",
            "regex is a full match"
        );
        assert_eq!(pick("api.example.com", "/x?debug=1", &[]), "exact/query");
        assert_eq!(pick("api.example.com", "/x?debug=2", &[]), "exact/default");
    }

    #[test]
    fn repeated_headers_join_with_commas() {
        assert_eq!(
            pick(
                "api.example.com",
                "/",
                &[("end-user", "jason"), ("end-user", "x")]
            ),
            "exact/default"
        );
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.com:8080"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("a.com"), "a.com");
    }
}

//! Path rewrites and redirect locations, with Istio's semantics: a prefix rewrite replaces
//! the prefix the request matched on (a rule without a uri match behaves as prefix `/`, as
//! Envoy's route does); exact and regex matches have the whole path replaced. Queries are
//! kept unless the new uri brings its own.

use std::borrow::Cow;

use trellis_model::config::{Redirect, RegexHolder, RequestMatch, StringMatcher};
use trellis_model::route::strip_port;

fn split_query(pq: &str) -> (&str, Option<&str>) {
    match pq.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (pq, None),
    }
}

fn join(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    }
}

/// Replaces the matched prefix (or the whole path for exact/regex matches) with `new`.
pub fn rewrite_prefix(path_and_query: &str, matched: Option<&RequestMatch>, new: &str) -> String {
    let (path, query) = split_query(path_and_query);
    let prefix_len = match matched.and_then(|m| m.uri.as_ref()) {
        Some(StringMatcher::Prefix(p)) => Some(p.len()),
        Some(_) => None,
        None => Some(1).filter(|_| path.starts_with('/')),
    };
    let rewritten = match prefix_len {
        Some(n) if n <= path.len() && path.is_char_boundary(n) => {
            let rest = &path[n..];
            // Avoid `//` when a "/x/" prefix is rewritten to "/" (Istio users expect "/y").
            if new.ends_with('/') && rest.starts_with('/') {
                format!("{new}{}", &rest[1..])
            } else {
                format!("{new}{rest}")
            }
        }
        _ => new.to_string(),
    };
    let rewritten = if rewritten.is_empty() {
        "/".to_string()
    } else {
        rewritten
    };
    join(&rewritten, query)
}

/// `uriRegexRewrite`: every match of the regex in the path is replaced; `\1` style group
/// references (RE2/Envoy) are accepted.
pub fn rewrite_regex(path_and_query: &str, re: &RegexHolder, substitution: &str) -> String {
    let (path, query) = split_query(path_and_query);
    let sub: Cow<'_, str> = if substitution.contains('\\') {
        Cow::Owned(envoy_substitution(substitution))
    } else {
        Cow::Borrowed(substitution)
    };
    let out = re.0.replace_all(path, sub.as_ref());
    join(&out, query)
}

/// `\1` -> `${1}`, `$` -> `$$`.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str("${");
                    out.push(*d);
                    chars.next();
                    out.push('}');
                }
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn default_port(scheme: &str) -> u16 {
    if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    }
}

/// The `Location` of a VirtualService redirect.
pub fn redirect_location(
    r: &Redirect,
    request_scheme: &str,
    authority: &str,
    listener_port: u16,
    path_and_query: &str,
    matched: Option<&RequestMatch>,
) -> String {
    let scheme = r.scheme.as_deref().unwrap_or(request_scheme);
    let base_authority = r.authority.as_deref().unwrap_or(authority);
    let host = strip_port(base_authority);
    let explicit_port = base_authority[host.len()..]
        .strip_prefix(':')
        .and_then(|p| p.parse::<u16>().ok());
    let request_port = strip_port(authority).len();
    let request_port = authority[request_port..]
        .strip_prefix(':')
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(listener_port);
    let port = if let Some(p) = r.port {
        Some(p)
    } else if r.derive_port_from_request {
        Some(request_port)
    } else if !scheme.eq_ignore_ascii_case(request_scheme) {
        None
    } else {
        explicit_port
    };
    let port = port.filter(|p| *p != default_port(scheme));
    let path = if let Some(uri) = &r.uri {
        if uri.contains('?') {
            uri.clone()
        } else {
            join(uri, split_query(path_and_query).1)
        }
    } else if let Some(p) = &r.prefix_rewrite {
        rewrite_prefix(path_and_query, matched, p)
    } else {
        path_and_query.to_string()
    };
    match port {
        Some(p) => format!("{scheme}://{host}:{p}{path}"),
        None => format!("{scheme}://{host}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> RequestMatch {
        RequestMatch {
            uri: Some(StringMatcher::Prefix(p.into())),
            ..Default::default()
        }
    }

    #[test]
    fn prefix_rewrites() {
        assert_eq!(
            rewrite_prefix("/api/v1/users?x=1", Some(&prefix("/api/")), "/"),
            "/v1/users?x=1"
        );
        assert_eq!(
            rewrite_prefix("/old/a", Some(&prefix("/old")), "/new"),
            "/new/a"
        );
        let exact = RequestMatch {
            uri: Some(StringMatcher::Exact("/a".into())),
            ..Default::default()
        };
        assert_eq!(rewrite_prefix("/a?q", Some(&exact), "/b"), "/b?q");
        assert_eq!(rewrite_prefix("/foo", None, "/v1/"), "/v1/foo");
    }

    #[test]
    fn regex_rewrite() {
        let re = RegexHolder(regex::Regex::new("^/service/([^/]+)(/.*)$").unwrap());
        assert_eq!(
            rewrite_regex("/service/foo/v1/api?x", &re, "\\2/instance/\\1"),
            "/v1/api/instance/foo?x"
        );
    }

    fn redirect() -> Redirect {
        Redirect {
            uri: None,
            prefix_rewrite: None,
            authority: None,
            scheme: None,
            port: None,
            derive_port_from_request: false,
            code: 301,
        }
    }

    #[test]
    fn redirects() {
        let r = Redirect {
            uri: Some("/new".into()),
            ..redirect()
        };
        assert_eq!(
            redirect_location(&r, "http", "a.com:8080", 80, "/old?x=1", None),
            "http://a.com:8080/new?x=1"
        );
        let r = Redirect {
            scheme: Some("https".into()),
            ..redirect()
        };
        assert_eq!(
            redirect_location(&r, "http", "a.com:8080", 80, "/p", None),
            "https://a.com/p"
        );
        let r = Redirect {
            authority: Some("b.com".into()),
            port: Some(9443),
            scheme: Some("https".into()),
            ..redirect()
        };
        assert_eq!(
            redirect_location(&r, "http", "a.com", 80, "/p", None),
            "https://b.com:9443/p"
        );
        let r = Redirect {
            derive_port_from_request: true,
            authority: Some("b.com".into()),
            ..redirect()
        };
        assert_eq!(
            redirect_location(&r, "http", "a.com", 8080, "/p", None),
            "http://b.com:8080/p"
        );
        let r = Redirect {
            prefix_rewrite: Some("/v2".into()),
            ..redirect()
        };
        assert_eq!(
            redirect_location(&r, "http", "a.com", 80, "/v1/x?y", Some(&prefix("/v1"))),
            "http://a.com/v2/x?y"
        );
    }
}

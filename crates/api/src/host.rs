//! Istio host names: wildcard matching and overlap (`*.example.com`, `*`), short-name
//! expansion, and `namespace/host` gateway host syntax. Pure functions shared by analysis,
//! compile and the proxy. Comparisons are ASCII case-insensitive, as DNS.

/// True when `host` (concrete or wildcard) is covered by `pattern`.
/// `*` covers everything; `*.example.com` covers `a.example.com`, `a.b.example.com` and
/// `*.a.example.com`, but not `example.com`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        // suffix starts with '.' for `*.x`; Istio also allows `*x` (prefix wildcard).
        if host == "*" {
            return false;
        }
        let h = host.strip_prefix('*').unwrap_or(host);
        return h.len() > suffix.len() && ends_with_ignore_case(h, suffix)
            || (host.starts_with('*') && eq_ignore_case(h, suffix));
    }
    if host.starts_with('*') {
        return false;
    }
    eq_ignore_case(pattern, host)
}

/// True when some concrete host could match both `a` and `b`.
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    host_matches(a, b) || host_matches(b, a)
}

/// Expands a short name (`reviews`) in `namespace` to `reviews.<namespace>.svc.<domain>`;
/// names with a dot, and wildcards, are kept as written (Istio's resolution).
pub fn fqdn(host: &str, namespace: &str, cluster_domain: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{cluster_domain}")
    }
}

/// Splits a Gateway / Sidecar host `ns/host` into (namespace selector, host). Without a slash
/// the namespace is `*` (any), as Istio.
pub fn split_namespaced_host(s: &str) -> (&str, &str) {
    match s.split_once('/') {
        Some((ns, h)) => (ns, h),
        None => ("*", s),
    }
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn ends_with_ignore_case(h: &str, suffix: &str) -> bool {
    h.len() >= suffix.len() && h[h.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(host_matches("*", "anything.com"));
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(host_matches("*.example.com", "a.b.example.com"));
        assert!(host_matches("*.example.com", "*.a.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "aexample.com"));
        assert!(host_matches("*.example.com", "*.example.com"));
        assert!(host_matches("API.Example.com", "api.example.COM"));
        assert!(!host_matches("a.example.com", "*.example.com"));
        assert!(hosts_overlap("a.example.com", "*.example.com"));
        assert!(!hosts_overlap("a.example.com", "b.example.com"));
    }

    #[test]
    fn names() {
        assert_eq!(
            fqdn("reviews", "default", "cluster.local"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            fqdn("reviews.other", "default", "cluster.local"),
            "reviews.other"
        );
        assert_eq!(
            split_namespaced_host("istio-system/gw"),
            ("istio-system", "gw")
        );
        assert_eq!(split_namespaced_host("gw"), ("*", "gw"));
    }
}

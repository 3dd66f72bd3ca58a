//! Schema validation beyond what the types enforce: ranges, formats, mutually exclusive
//! fields, regex syntax, host syntax, Istio's cross-field rules.
//!
//! Owns the `Validator` walker (tracks the field path so every issue can be located) and the
//! shared checks (ports, durations, hosts, regexes, selectors, exportTo). Per-kind rules sit
//! beside each kind's types (`networking`, `security`) as `Validate` impls.

use std::collections::BTreeMap;

use crate::diag::Severity;
use crate::duration::Duration;

/// Something that can check itself.
pub trait Validate {
    fn validate(&self, v: &mut Validator);
}

impl<T: Validate> Validate for Option<T> {
    fn validate(&self, v: &mut Validator) {
        if let Some(t) = self {
            t.validate(v)
        }
    }
}

/// One problem at a field path relative to the resource root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldIssue {
    pub severity: Severity,
    pub path: String,
    pub message: String,
}

/// Walks a resource collecting issues, tracking the current field path.
#[derive(Debug, Default)]
pub struct Validator {
    path: String,
    /// Namespace of the resource being validated (some rules depend on it).
    pub namespace: String,
    /// Root namespace of the mesh (istio-system by default).
    pub root_namespace: String,
    pub issues: Vec<FieldIssue>,
}

impl Validator {
    pub fn new(namespace: &str, root_namespace: &str) -> Self {
        Validator {
            path: String::new(),
            namespace: namespace.to_string(),
            root_namespace: root_namespace.to_string(),
            issues: Vec::new(),
        }
    }

    /// The current field path, e.g. `spec.http[0].route`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Runs `f` with `.field` appended to the path.
    pub fn at<R>(&mut self, field: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        let len = self.path.len();
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(field);
        let r = f(self);
        self.path.truncate(len);
        r
    }

    /// Runs `f` with `[index]` appended to the path.
    pub fn at_index<R>(&mut self, index: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        let len = self.path.len();
        self.path.push('[');
        self.path.push_str(&index.to_string());
        self.path.push(']');
        let r = f(self);
        self.path.truncate(len);
        r
    }

    /// Runs `f` with `["key"]` appended to the path (map entries).
    pub fn at_key<R>(&mut self, key: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        let len = self.path.len();
        self.path.push_str("[\"");
        self.path.push_str(key);
        self.path.push_str("\"]");
        let r = f(self);
        self.path.truncate(len);
        r
    }

    /// Validates every item of a list field at `field[i]`.
    pub fn each<T>(&mut self, field: &str, items: &[T], mut f: impl FnMut(&mut Self, &T)) {
        self.at(field, |v| {
            for (i, item) in items.iter().enumerate() {
                v.at_index(i, |v| f(v, item));
            }
        })
    }

    /// Validates a nested value at `field`.
    pub fn nested<T: Validate>(&mut self, field: &str, value: &T) {
        self.at(field, |v| value.validate(v))
    }

    pub fn error(&mut self, message: impl Into<String>) {
        self.push(Severity::Error, message.into());
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        self.push(Severity::Warning, message.into());
    }

    /// An error at `field` under the current path.
    pub fn error_at(&mut self, field: &str, message: impl Into<String>) {
        let m = message.into();
        self.at(field, |v| v.error(m));
    }

    fn push(&mut self, severity: Severity, message: String) {
        self.issues.push(FieldIssue {
            severity,
            path: self.path.clone(),
            message,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.issues.iter().any(|i| i.severity == Severity::Error)
    }

    // ----- shared checks; each reports at the current path -----

    /// A port number 1..=65535.
    pub fn port(&mut self, field: &str, port: u32) {
        if !(1..=65535).contains(&port) {
            self.error_at(
                field,
                format!("port number {port} is out of range: expected 1-65535"),
            );
        }
    }

    /// Istio's rule for most durations: at least 1ms.
    pub fn duration_min_1ms(&mut self, field: &str, d: &Option<Duration>) {
        if let Some(d) = d {
            if d.as_std() < std::time::Duration::from_millis(1) {
                self.error_at(
                    field,
                    format!("duration {d} is too short: expected at least 1ms"),
                );
            }
        }
    }

    /// A regular expression in RE2 syntax (what Envoy compiles).
    pub fn regex(&mut self, field: &str, pattern: &str) {
        if let Err(e) = check_re2(pattern) {
            self.error_at(field, e);
        }
    }

    /// A label selector map: valid keys and values.
    pub fn labels(&mut self, field: &str, labels: &BTreeMap<String, String>) {
        self.at(field, |v| {
            for (k, val) in labels {
                if let Err(e) = check_label_key(k) {
                    v.at_key(k, |v| v.error(e));
                }
                if let Err(e) = check_label_value(val) {
                    v.at_key(k, |v| v.error(e));
                }
            }
        })
    }

    /// `exportTo` entries: `.`, `*`, `~` alone, or namespace names.
    pub fn export_to(&mut self, field: &str, export_to: &[String]) {
        self.at(field, |v| {
            let mut seen = std::collections::HashSet::new();
            for (i, e) in export_to.iter().enumerate() {
                v.at_index(i, |v| {
                    if !seen.insert(e.as_str()) {
                        v.error(format!("duplicate exportTo entry {e:?}"));
                    } else if e == "~" && export_to.len() > 1 {
                        v.error("exportTo \"~\" (export nowhere) cannot be combined with other entries");
                    } else if e == "*" && export_to.len() > 1 {
                        v.error("exportTo \"*\" (everywhere) cannot be combined with other entries");
                    } else if !matches!(e.as_str(), "." | "*" | "~") && check_dns1123_label(e).is_err() {
                        v.error(format!(
                            "invalid exportTo entry {e:?}: expected \".\", \"*\", \"~\" or a namespace name"
                        ));
                    }
                })
            }
        })
    }
}

/// RE2 syntax check: Rust's `regex` grammar is RE2's (no backreferences or look-around).
pub fn check_re2(pattern: &str) -> Result<(), String> {
    // Istio caps regexes at 1024 characters (a stand-in for Envoy's RE2 program size limit).
    if pattern.len() > 1024 {
        return Err(format!(
            "regex is too large: {} characters, at most 1024 allowed",
            pattern.len()
        ));
    }
    regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .map(|_| ())
        .map_err(|e| {
            let first = e.to_string();
            let last = first.lines().last().unwrap_or("").trim().to_string();
            format!("invalid regex {pattern:?} (RE2 syntax expected): {last}")
        })
}

/// RFC 1123 label (namespace names, port names are looser).
pub fn check_dns1123_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid DNS-1123 label: lowercase letters, digits and '-', at most 63 characters, starting and ending alphanumerically"
        ))
    }
}

/// Kubernetes label key: optional DNS prefix then `/` then a name of <= 63 characters.
pub fn check_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty() && p.len() <= 253 && p.split('.').all(|l| check_dns1123_label(l).is_ok())
    });
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(format!("invalid label key {k:?}: expected [prefix/]name with name of at most 63 alphanumerics, '-', '_' or '.'"))
    }
}

/// Kubernetes label value: empty or <= 63 alphanumerics with `-_.` inside.
pub fn check_label_value(v: &str) -> Result<(), String> {
    let ok = v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("invalid label value {v:?}: expected at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumerically"))
    }
}

/// An Istio host: a DNS name, optionally with a leading `*` wildcard label, or `*` alone.
/// Short names (`reviews`) are allowed. IPs are not hosts here.
pub fn check_host(host: &str) -> Result<(), String> {
    if host == "*" {
        return Ok(());
    }
    let bad = |why: &str| Err(format!("invalid host {host:?}: {why}"));
    if host.is_empty() {
        return bad("empty");
    }
    if host.len() > 255 {
        return bad("longer than 255 characters");
    }
    let (body, partial) = match host.strip_prefix("*.") {
        Some(rest) => (rest, false),
        None if host.starts_with('*') => {
            // `*foo.com` (and `*-foo.com`) is accepted by Istio as a wildcard prefix of the
            // first label: that label's remainder may start with '-'.
            (&host[1..], true)
        }
        None => (host, false),
    };
    let body = body.strip_suffix('.').unwrap_or(body);
    if body.is_empty() {
        return bad("wildcard without a domain");
    }
    let labels: Vec<&str> = body.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated label must be 1-63 characters");
        }
        // DNS-1123 labels as Istio checks them (letters of either case, digits, '-').
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("labels may contain only letters, digits and '-' (wildcard '*' only as the first label)");
        }
        if (label.starts_with('-') && !(partial && i == 0)) || label.ends_with('-') {
            return bad("labels cannot start or end with '-'");
        }
    }
    // Istio's ValidateDNS1123Labels: an all-numeric top-level label is an IP, not a name.
    let tld = labels[labels.len() - 1];
    if labels.len() > 1 && tld.bytes().all(|b| b.is_ascii_digit()) {
        return bad(
            "the top-level label cannot be all-numeric (an IP address is not a host name here)",
        );
    }
    Ok(())
}

/// Istio's auto-generated SNI names, `outbound_.PORT_.SUBSET_.HOST` (subset may be empty:
/// `outbound_.80_._.reviews.default.svc.cluster.local`), accepted as hosts of
/// VirtualServices bound to gateways that route TLS by SNI.
pub fn check_outbound_sni(host: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "invalid SNI name {host:?}: {why}: expected outbound_.PORT_.SUBSET_.HOST, e.g. outbound_.80_._.reviews.default.svc.cluster.local"
        ))
    };
    let parts: Vec<&str> = host.splitn(4, '.').collect();
    if parts.len() != 4 || parts[0] != "outbound_" {
        return bad("not in the outbound_ form");
    }
    let port = parts[1].strip_suffix('_').unwrap_or("");
    if port.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return bad("the port part must be a port number followed by '_'");
    }
    if !parts[2].ends_with('_') {
        return bad("the subset part must end with '_'");
    }
    check_host(parts[3]).or_else(|e| bad(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_track_nesting() {
        let mut v = Validator::new("ns", "istio-system");
        v.at("spec", |v| {
            v.at("http", |v| v.at_index(2, |v| v.error_at("timeout", "bad")))
        });
        assert_eq!(v.issues[0].path, "spec.http[2].timeout");
        assert_eq!(v.path(), "");
    }

    #[test]
    fn regexes_are_re2() {
        assert!(check_re2("^/api/v[0-9]+/.*$").is_ok());
        assert!(check_re2("(a").is_err());
        assert!(check_re2("(?=x)").is_err(), "look-ahead is not RE2");
        assert!(check_re2("(a)\\1").is_err(), "backreferences are not RE2");
        assert!(check_re2(&"a".repeat(1024)).is_ok());
        assert!(
            check_re2(&"a".repeat(1025)).is_err(),
            "Istio's 1024-character cap"
        );
    }

    #[test]
    fn hosts() {
        for ok in [
            "*",
            "reviews",
            "reviews.default.svc.cluster.local",
            "*.example.com",
            "api.example.com.",
            "*-foo.bar.com",
            "*foo",
        ] {
            assert!(check_host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a..b",
            "foo_bar.com",
            "1.1.1.1",
            "exa mple.com",
            "*.",
            "foo.*.com",
            "-a.com",
            "a/b",
        ] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_and_export_to() {
        let mut v = Validator::new("ns", "istio-system");
        let mut l = BTreeMap::new();
        l.insert("app.kubernetes.io/name".to_string(), "x".to_string());
        l.insert("bad key!".to_string(), "-x".to_string());
        v.labels("selector", &l);
        assert_eq!(v.issues.len(), 2);
        let mut v = Validator::new("ns", "istio-system");
        v.export_to("exportTo", &[".".into(), "*".into()]);
        v.export_to("exportTo", &["Bad_NS".into()]);
        v.export_to("exportTo", &[".".into(), "other".into()]);
        assert_eq!(v.issues.len(), 2, "{:?}", v.issues);
    }
}

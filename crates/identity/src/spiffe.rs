//! SPIFFE identities of mesh workloads: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! Owns strict parsing and formatting of the URI form (what X.509-SVIDs carry as their single URI
//! SAN) and of Istio's principal form `<trust-domain>/ns/<namespace>/sa/<service-account>` (what
//! `AuthorizationPolicy` `principals` match against). Parsing is deliberately strict so that two
//! different strings can never name the same identity: exactly four path segments, nothing empty,
//! no query, fragment, userinfo or port, no percent-encoding, lowercase only; namespaces are
//! Kubernetes DNS labels and service accounts Kubernetes DNS subdomains.

use std::fmt;
use std::str::FromStr;

use crate::error::{truncate_for_error, Error, Result};

/// The URI scheme of SPIFFE ids.
pub const SCHEME_PREFIX: &str = "spiffe://";
/// Longest accepted SPIFFE id, per the SPIFFE specification.
pub const MAX_ID_LEN: usize = 2048;
/// Longest accepted trust domain.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// A workload identity in the Istio SPIFFE layout.
///
/// Values are always valid: they can only be built by [`SpiffeId::new`], [`SpiffeId::parse`] or
/// [`SpiffeId::parse_principal`], which validate every part. [`fmt::Display`] prints the URI form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    /// Build an id from its parts, validating each.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self> {
        let trust_domain = trust_domain.into();
        let namespace = namespace.into();
        let service_account = service_account.into();
        validate_trust_domain(&trust_domain)?;
        let as_uri =
            || format!("{SCHEME_PREFIX}{trust_domain}/ns/{namespace}/sa/{service_account}");
        if let Err(reason) = check_namespace(&namespace) {
            return Err(invalid_id(&as_uri(), reason));
        }
        if let Err(reason) = check_service_account(&service_account) {
            return Err(invalid_id(&as_uri(), reason));
        }
        Ok(SpiffeId {
            trust_domain,
            namespace,
            service_account,
        })
    }

    /// Parse the URI form `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub fn parse(uri: &str) -> Result<Self> {
        if uri.len() > MAX_ID_LEN {
            return Err(invalid_id(uri, "longer than 2048 bytes"));
        }
        let Some(rest) = uri.strip_prefix(SCHEME_PREFIX) else {
            let reason = if uri
                .get(..SCHEME_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(SCHEME_PREFIX))
            {
                "scheme must be lowercase \"spiffe://\""
            } else {
                "must start with \"spiffe://\""
            };
            return Err(invalid_id(uri, reason));
        };
        Self::parse_rest(uri, rest)
    }

    /// Parse Istio's principal form `<td>/ns/<ns>/sa/<sa>` (the URI form without its scheme).
    pub fn parse_principal(principal: &str) -> Result<Self> {
        if principal.len() > MAX_ID_LEN {
            return Err(invalid_id(principal, "longer than 2048 bytes"));
        }
        if principal.contains("://") {
            return Err(invalid_id(
                principal,
                "a principal has no scheme: use <trust-domain>/ns/<namespace>/sa/<service-account>",
            ));
        }
        Self::parse_rest(principal, principal)
    }

    /// `rest` is `<td>/ns/<ns>/sa/<sa>`; `input` is the whole original string for messages.
    fn parse_rest(input: &str, rest: &str) -> Result<Self> {
        // Characters that would make the string mean something else to a URI parser are rejected
        // with a precise reason before the structural checks.
        if rest.contains('%') {
            return Err(invalid_id(input, "percent-encoding is not allowed"));
        }
        if rest.contains('?') {
            return Err(invalid_id(input, "a query is not allowed"));
        }
        if rest.contains('#') {
            return Err(invalid_id(input, "a fragment is not allowed"));
        }
        if rest.contains('\\') {
            return Err(invalid_id(input, "backslashes are not allowed"));
        }
        let Some((td, path)) = rest.split_once('/') else {
            return Err(invalid_id(
                input,
                "missing path: expected /ns/<namespace>/sa/<service-account>",
            ));
        };
        if td.is_empty() {
            return Err(invalid_id(input, "empty trust domain"));
        }
        if td.contains('@') {
            return Err(invalid_id(
                input,
                "userinfo is not allowed in the trust domain",
            ));
        }
        if td.contains(':') {
            return Err(invalid_id(
                input,
                "a port is not allowed in the trust domain",
            ));
        }
        if let Err(reason) = check_trust_domain(td) {
            return Err(invalid_id(input, reason));
        }
        let segments: Vec<&str> = path.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(invalid_id(input, "empty path segment"));
        }
        let [ns_key, ns, sa_key, sa] = segments.as_slice() else {
            return Err(invalid_id(
                input,
                "path must be exactly /ns/<namespace>/sa/<service-account>",
            ));
        };
        if *ns_key != "ns" || *sa_key != "sa" {
            return Err(invalid_id(
                input,
                "path must be exactly /ns/<namespace>/sa/<service-account>",
            ));
        }
        if let Err(reason) = check_namespace(ns) {
            return Err(invalid_id(input, reason));
        }
        if let Err(reason) = check_service_account(sa) {
            return Err(invalid_id(input, reason));
        }
        Ok(SpiffeId {
            trust_domain: td.to_string(),
            namespace: ns.to_string(),
            service_account: sa.to_string(),
        })
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Kubernetes service account.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The URI form, `spiffe://<td>/ns/<ns>/sa/<sa>` (same as `to_string()`).
    pub fn to_uri(&self) -> String {
        self.to_string()
    }

    /// Istio's principal form, `<td>/ns/<ns>/sa/<sa>`.
    pub fn to_principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME_PREFIX}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        SpiffeId::parse(s)
    }
}

/// Check that `td` is a valid trust domain: a lowercase DNS-like name of labels made of
/// `a-z`, `0-9` and `-` (not at either end of a label), separated by single dots, at most 255
/// bytes, with no port, userinfo or trailing dot.
pub fn validate_trust_domain(td: &str) -> Result<()> {
    check_trust_domain(td).map_err(|reason| Error::InvalidTrustDomain {
        input: truncate_for_error(td),
        reason,
    })
}

fn check_trust_domain(td: &str) -> std::result::Result<(), &'static str> {
    if td.is_empty() {
        return Err("empty trust domain");
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err("trust domain longer than 255 bytes");
    }
    if td.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("trust domain must be lowercase");
    }
    for label in td.split('.') {
        if label.is_empty() {
            return Err("trust domain has an empty label (leading, trailing or double dot)");
        }
        check_dns_label(label, "trust domain")?;
    }
    Ok(())
}

fn check_namespace(ns: &str) -> std::result::Result<(), &'static str> {
    check_dns_label(ns, "namespace")
}

fn check_service_account(sa: &str) -> std::result::Result<(), &'static str> {
    if sa.len() > 253 {
        return Err("service account longer than 253 bytes");
    }
    for part in sa.split('.') {
        if part.is_empty() {
            return Err("service account has an empty dot-separated part");
        }
        check_dns_label(part, "service account")?;
    }
    Ok(())
}

/// A DNS-1123 label: 1..=63 of `[a-z0-9-]`, starting and ending with an alphanumeric.
fn check_dns_label(label: &str, what: &'static str) -> std::result::Result<(), &'static str> {
    let bytes = label.as_bytes();
    if bytes.is_empty() {
        return Err(match what {
            "namespace" => "empty namespace",
            "service account" => "empty service account",
            _ => "empty label",
        });
    }
    if bytes.len() > 63 {
        return Err(match what {
            "namespace" => "namespace longer than 63 bytes",
            "service account" => "service account label longer than 63 bytes",
            _ => "trust domain label longer than 63 bytes",
        });
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    {
        return Err(match what {
            "namespace" => "namespace may only contain a-z, 0-9 and '-'",
            "service account" => "service account may only contain a-z, 0-9, '-' and '.'",
            _ => "trust domain may only contain a-z, 0-9, '-' and '.'",
        });
    }
    if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
        return Err(match what {
            "namespace" => "namespace must start and end with a letter or digit",
            "service account" => "service account parts must start and end with a letter or digit",
            _ => "trust domain labels must start and end with a letter or digit",
        });
    }
    Ok(())
}

fn invalid_id(input: &str, reason: &'static str) -> Error {
    Error::InvalidSpiffeId {
        input: truncate_for_error(input),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_round_trip() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/service-gateway").unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "service-gateway");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/service-gateway"
        );
        assert_eq!(
            id.to_principal(),
            "cluster.local/ns/default/sa/service-gateway"
        );
        assert_eq!(SpiffeId::parse_principal(&id.to_principal()).unwrap(), id);
        assert_eq!(id.to_uri().parse::<SpiffeId>().unwrap(), id);
        assert_eq!(
            SpiffeId::new("cluster.local", "default", "service-gateway").unwrap(),
            id
        );
    }

    #[test]
    fn accepts_dotted_service_accounts_and_single_label_domains() {
        let id = SpiffeId::parse("spiffe://mesh/ns/a1/sa/my.sa-1").unwrap();
        assert_eq!(id.trust_domain(), "mesh");
        assert_eq!(id.service_account(), "my.sa-1");
    }

    #[test]
    fn rejects_adversarial_ids() {
        let bad = [
            "",
            "spiffe://",
            "spiffe:///ns/a/sa/b",
            "SPIFFE://cluster.local/ns/a/sa/b",
            "Spiffe://cluster.local/ns/a/sa/b",
            "https://cluster.local/ns/a/sa/b",
            "spiffe:/cluster.local/ns/a/sa/b",
            "spiffe://cluster.local",
            "spiffe://cluster.local/",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa",
            "spiffe://cluster.local/ns/a/sa/",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local//ns/a/sa/b",
            "spiffe://cluster.local/ns/a/sa/b/",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/ns/a/sa/b/c/d",
            "spiffe://cluster.local/sa/b/ns/a",
            "spiffe://cluster.local/NS/a/sa/b",
            "spiffe://cluster.local/ns/a/sa/b?x=1",
            "spiffe://cluster.local/ns/a/sa/b#frag",
            "spiffe://cluster.local/ns/a/sa/b%2Fc",
            "spiffe://cluster.local/ns/%61/sa/b",
            "spiffe://cluster%2elocal/ns/a/sa/b",
            "spiffe://user@cluster.local/ns/a/sa/b",
            "spiffe://cluster.local:443/ns/a/sa/b",
            "spiffe://Cluster.Local/ns/a/sa/b",
            "spiffe://cluster.local./ns/a/sa/b",
            "spiffe://.cluster.local/ns/a/sa/b",
            "spiffe://cluster..local/ns/a/sa/b",
            "spiffe://-cluster.local/ns/a/sa/b",
            "spiffe://clus_ter.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/A/sa/b",
            "spiffe://cluster.local/ns/a/sa/B",
            "spiffe://cluster.local/ns/-a/sa/b",
            "spiffe://cluster.local/ns/a-/sa/b",
            "spiffe://cluster.local/ns/a.b/sa/c",
            "spiffe://cluster.local/ns/a/sa/.",
            "spiffe://cluster.local/ns/a/sa/..",
            "spiffe://cluster.local/ns/../sa/b",
            "spiffe://cluster.local/ns/a/sa/b.",
            "spiffe://cluster.local/ns/a/sa/b..c",
            "spiffe://cluster.local/ns/a/sa/b c",
            "spiffe://cluster.local/ns/a/sa/b\n",
            "spiffe://cluster.local/ns/a/sa/b\\c",
            "spiffe://cluster.local/ns/a/sa/\u{0430}",
            " spiffe://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a/sa/b\0",
        ];
        for input in bad {
            assert!(SpiffeId::parse(input).is_err(), "accepted {input:?}");
        }
        let long_ns = format!("spiffe://td/ns/{}/sa/b", "a".repeat(64));
        assert!(SpiffeId::parse(&long_ns).is_err());
        let long = format!("spiffe://td/ns/a/sa/{}", "a".repeat(3000));
        let err = SpiffeId::parse(&long).unwrap_err().to_string();
        assert!(
            err.len() < 400,
            "error echoes the whole input: {}",
            err.len()
        );
    }

    #[test]
    fn rejects_bad_principals() {
        for input in [
            "spiffe://cluster.local/ns/a/sa/b",
            "cluster.local/ns/a/sa/b/",
            "cluster.local/ns/a",
            "/ns/a/sa/b",
            "cluster.local/ns/a/sa/*",
            "*",
        ] {
            assert!(
                SpiffeId::parse_principal(input).is_err(),
                "accepted {input:?}"
            );
        }
    }

    #[test]
    fn errors_say_why() {
        let msg = |s: &str| SpiffeId::parse(s).unwrap_err().to_string();
        assert!(msg("spiffe://td/ns/a/sa/b%20").contains("percent-encoding"));
        assert!(msg("spiffe://td/ns/a/sa/b?q").contains("query"));
        assert!(msg("spiffe://td/ns/a/sa/b#f").contains("fragment"));
        assert!(msg("SPIFFE://td/ns/a/sa/b").contains("lowercase"));
        assert!(msg("spiffe://td:8080/ns/a/sa/b").contains("port"));
        assert!(msg("spiffe://td/ns/a/sa/b/c").contains("exactly"));
    }

    #[test]
    fn validates_new_parts() {
        assert!(SpiffeId::new("cluster.local", "a/b", "c").is_err());
        assert!(SpiffeId::new("cluster.local", "a", "").is_err());
        assert!(SpiffeId::new("", "a", "b").is_err());
        assert!(validate_trust_domain("example.com").is_ok());
        assert!(validate_trust_domain(&"a".repeat(256)).is_err());
    }
}

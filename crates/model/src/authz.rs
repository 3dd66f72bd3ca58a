//! AuthorizationPolicy: which policies apply to a workload, compiled once, and the decision for
//! one request or connection. Pure: no I/O, no regex, no allocation per request.
//!
//! # Semantics (Istio's, unless noted)
//!
//! * **Scope**: policies in the root namespace apply mesh-wide, those in the workload's
//!   namespace to it; without `selector` they apply to every workload in scope, with one when
//!   every `matchLabels` entry is on the workload. Policies with `targetRef(s)` never apply to
//!   sidecars; on a Kubernetes Gateway API gateway (label
//!   `gateway.networking.k8s.io/gateway-name`, or [`AuthzTarget::gateway_name`]) they apply
//!   when they target that `Gateway` from its own namespace. Selector policies apply to gateways
//!   too (Istio's `ENABLE_SELECTOR_BASED_K8S_GATEWAY_POLICY` default).
//! * **Order**: CUSTOM → DENY → ALLOW. A matching CUSTOM rule has the proxy consult the
//!   extension provider *first* ([`Decision::custom`], [`Outcome::Custom`]), whatever DENY and
//!   ALLOW would decide: its denial (status, headers, body, e.g. an oauth2 provider's redirect
//!   to a login page) is the answer; only when it allows do DENY and ALLOW apply (Envoy's
//!   ext_authz filter runs before its RBAC filter). Any matching DENY rule denies; when at
//!   least one ALLOW policy applies a request must match one of their rules, otherwise it is
//!   allowed. AUDIT policies never decide ([`Decision::audited_by`]). An ALLOW
//!   policy without rules (`spec: {}`) allows nothing; a rule `{}` matches everything.
//!   Policies annotated `istio.io/dry-run: "true"` never decide: [`Decision::dry_run_would`] is
//!   what the decision would be with them enforced (Trellis reports the combined outcome, where
//!   Envoy's shadow engine reports per action).
//! * **Rules**: a rule matches when one `from` source, one `to` operation and every `when`
//!   condition match; inside a source or operation every field must match, a field matches when
//!   any of its values does and none of its `not*` values does.
//! * **Strings**: exact, `prefix*`, `*suffix` or `*` (non-empty; for headers, methods and
//!   hosts: present). No other character is special: there is no regex anywhere, so
//!   `cert-manager.io` never matches `cert-manager-io` (Istio builds unescaped regexes for
//!   `namespaces` and `serviceAccounts`).
//! * **Identities** are parsed from the peer principal `<trust domain>/ns/<ns>/sa/<sa>` (a
//!   leading `spiffe://` is ignored): `namespaces` and `serviceAccounts` compare whole
//!   segments, never a regex over the whole string. The namespace always comes from the
//!   verified principal, never from a header. `serviceAccounts: [name]` means the policy's
//!   namespace; any trust domain matches (as Istio). With [`AuthzTarget::trust_domains`],
//!   `principals` written with `cluster.local` or an alias match every local trust domain
//!   (Istio's trust domain migration).
//! * **IP blocks** (`ipBlocks`/`source.ip`: the connection's peer; `remoteIpBlocks`/`remote.ip`:
//!   the original client as the gateway trusts it) take addresses and CIDRs, IPv4 and IPv6;
//!   IPv4-mapped IPv6 peers (`::ffff:10.0.0.1`) match IPv4 blocks.
//! * **Request principals** `<iss>/<sub>` are split at the last `/` (as Istio) and matched
//!   against the token's `iss` and `sub` claims; `*` requires both.
//! * **Hosts** are case-insensitive and trailing-dot-insensitive; a pattern without a port
//!   matches any port (Trellis: Istio compares the raw `:authority`, so `example.com` misses
//!   `example.com:8080` and `*.example.com` misses every authority with a port).
//! * **Methods** are exact and case-sensitive; **paths** are matched without the query string,
//!   after normalization ([`crate::normalize`]), with `{*}` (one non-empty segment) and `{**}`
//!   (anything, `/` included, last operator) templates as Envoy's URI templates.
//! * **Headers**: a header sent several times is ambiguous (Envoy joins the values with `,`,
//!   applications often read the first or the last). Trellis never lets the ambiguity help an
//!   attacker: in ALLOW rules every value must match (and a `notValues` clause holds only when
//!   no value matches), in DENY/AUDIT/CUSTOM rules one matching value is enough (and a
//!   `notValues` clause holds when some value does not match). Values are compared without
//!   surrounding whitespace.
//! * **JWT claims** (`request.auth.claims[a][b]`, nested objects) match string claims and lists
//!   of strings (any element); `scope` and `permission` given as space-delimited strings are
//!   split, as Envoy does. Other JSON types never match.
//! * **TCP** (`is_http: false`): a rule of an ALLOW policy that uses an HTTP-only attribute
//!   (`requestPrincipals`, `hosts`, `methods`, `paths`, `request.*` keys and their `not*`
//!   forms) is dropped, so an ALLOW policy whose rules all need HTTP allows no TCP traffic; in
//!   DENY, AUDIT and CUSTOM rules those attributes are ignored, widening the rule.
//! * **Invalid values** (a bad CIDR, port or path template) are treated the same way: the ALLOW
//!   rule is dropped, a DENY value is skipped (the field is ignored when no value is left).
//!   Unknown `when` keys and `experimental.envoy.filters.*` (Trellis has no Envoy metadata)
//!   drop ALLOW rules and are ignored in DENY rules (Istio drops the whole rule even for DENY;
//!   Trellis fails closed). Each case is reported in [`AuthzPolicies::diagnostics`].
//! * **CUSTOM**: one extension provider per workload (Istio's default); if CUSTOM policies name
//!   several, or a CUSTOM policy names none, requests matching them are denied.
//!
//! Denials are answered `403` with body [`RBAC_DENIED_BODY`]; [`Decision`] names the policy
//! and rule that decided, for the access log and `trellis explain`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use serde::{Serialize, Serializer};
use serde_json::Value;
use trellis_api::common::PolicyTargetReference;
use trellis_api::resource::{Object, Resource};
use trellis_api::security::{
    check_path_template, contains_path_template, Action, AuthorizationPolicy, Condition, Operation,
    Rule, Source,
};

use crate::normalize::split_authority;

/// Status of a request denied by authorization.
pub const RBAC_DENIED_STATUS: u16 = 403;
/// Body of a request denied by authorization (Envoy's, so clients and dashboards match it).
pub const RBAC_DENIED_BODY: &str = "RBAC: access denied";
/// Annotation that makes a policy evaluate without enforcing.
pub use trellis_api::resource::DRY_RUN_ANNOTATION;
/// Label that marks a Kubernetes Gateway API gateway's workloads with the gateway's name.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

// ---------------------------------------------------------------------------------------------
// Identities and results
// ---------------------------------------------------------------------------------------------

/// A policy's namespace and name; displays as `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PolicyId {
    pub namespace: String,
    pub name: String,
}

impl PolicyId {
    pub fn of(r: &Resource) -> PolicyId {
        PolicyId {
            namespace: r.ns().to_string(),
            name: r.name.clone(),
        }
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One rule of one policy: what decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RuleRef<'p> {
    pub policy: &'p PolicyId,
    pub action: Action,
    /// Index in the policy's `rules`.
    pub rule: usize,
}

impl fmt::Display for RuleRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} policy {} rule {}",
            self.action, self.policy, self.rule
        )
    }
}

/// Why a request was allowed or denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum DecisionReason<'p> {
    /// No ALLOW policy applies to the workload and no DENY rule matched.
    NoAllowPolicies,
    /// This ALLOW rule matched.
    Allowed(RuleRef<'p>),
    /// This DENY rule matched.
    Denied(RuleRef<'p>),
    /// ALLOW policies apply and none of their rules matched.
    NoAllowMatched { allow_policies: &'p [PolicyId] },
    /// A CUSTOM rule matched but the workload's CUSTOM policies cannot be enforced (several
    /// providers, or none named): the request is denied, as Istio does.
    CustomMisconfigured {
        rule: RuleRef<'p>,
        why: &'static str,
    },
}

impl fmt::Display for DecisionReason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecisionReason::NoAllowPolicies => f.write_str("allowed: no ALLOW policy applies"),
            DecisionReason::Allowed(r) => write!(f, "allowed by {r}"),
            DecisionReason::Denied(r) => write!(f, "denied by {r}"),
            DecisionReason::NoAllowMatched { allow_policies } => {
                f.write_str("denied: no ALLOW policy matched (")?;
                for (i, p) in allow_policies.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{p}")?;
                }
                f.write_str(")")
            }
            DecisionReason::CustomMisconfigured { rule, why } => {
                write!(f, "denied by {rule}: {why}")
            }
        }
    }
}

/// A matching CUSTOM rule: the proxy must ask `provider` (and deny if the provider is unknown
/// to the mesh config, unreachable, or says no).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CustomCheck<'p> {
    pub provider: &'p str,
    pub rule: RuleRef<'p>,
}

/// The result of CUSTOM, DENY and ALLOW evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict<'p> {
    /// The local decision (DENY and ALLOW policies).
    pub allowed: bool,
    pub reason: DecisionReason<'p>,
    /// Set when a CUSTOM rule matched: the provider is asked first and its denial is the
    /// answer; only when it allows does `allowed` decide.
    pub custom: Option<CustomCheck<'p>>,
}

/// What the proxy does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome<'p> {
    Allow,
    /// 403 [`RBAC_DENIED_BODY`].
    Deny,
    /// Ask the extension provider first: when it denies, its answer is the response. When it
    /// allows, `allowed` is what DENY and ALLOW decided (`false`: 403 [`RBAC_DENIED_BODY`]).
    Custom {
        provider: &'p str,
        policy: RuleRef<'p>,
        allowed: bool,
    },
}

/// Everything authorization decided about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Decision<'p> {
    pub allowed: bool,
    pub reason: DecisionReason<'p>,
    pub custom: Option<CustomCheck<'p>>,
    /// The first matching AUDIT rule (audit logging only; never decides).
    pub audited_by: Option<RuleRef<'p>>,
    /// With dry-run policies applied to the workload: the verdict if they were enforced.
    pub dry_run_would: Option<Verdict<'p>>,
}

impl<'p> Decision<'p> {
    /// CUSTOM first: a matching CUSTOM rule is [`Outcome::Custom`] even when DENY or ALLOW
    /// deny (the provider's answer comes first); otherwise the local decision.
    pub fn outcome(&self) -> Outcome<'p> {
        match (self.allowed, self.custom) {
            (allowed, Some(c)) => Outcome::Custom {
                provider: c.provider,
                policy: c.rule,
                allowed,
            },
            (false, None) => Outcome::Deny,
            (true, None) => Outcome::Allow,
        }
    }

    /// The rule that decided, if a rule did.
    pub fn rule(&self) -> Option<RuleRef<'p>> {
        match self.reason {
            DecisionReason::Allowed(r) | DecisionReason::Denied(r) => Some(r),
            DecisionReason::CustomMisconfigured { rule, .. } => Some(rule),
            _ => None,
        }
    }
}

impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason)?;
        if let Some(c) = self.custom {
            write!(f, "; ext-authz {} required by {}", c.provider, c.rule)?;
        }
        if let Some(a) = self.audited_by {
            write!(f, "; audited by {a}")?;
        }
        if let Some(d) = self.dry_run_would {
            write!(f, "; dry-run: would be {}", d.reason)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The request
// ---------------------------------------------------------------------------------------------

/// What authorization looks at. Borrowed from the proxy's request state; nothing is copied.
#[derive(Clone, Copy, Debug)]
pub struct AuthzRequest<'a> {
    /// Verified peer identity (mTLS), `cluster.local/ns/<ns>/sa/<sa>`; `None` for plain text.
    /// The source namespace and service account are derived from it.
    pub source_principal: Option<&'a str>,
    /// Address of the directly connected peer.
    pub source_ip: Option<IpAddr>,
    /// Original client address (X-Forwarded-For / PROXY protocol, as the gateway trusts it);
    /// `None` means the same as `source_ip`.
    pub remote_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    /// The port the connection arrived on (the workload's target port on sidecars).
    pub destination_port: Option<u16>,
    /// TLS server name, when the connection is TLS.
    pub sni: Option<&'a str>,
    /// `<iss>/<sub>` of the validated JWT, `None` when there is none.
    pub request_principal: Option<&'a str>,
    /// The validated JWT payload (audiences are `aud`, the presenter `azp`).
    pub claims: Option<&'a Value>,
    pub headers: &'a HeaderMap,
    /// `:authority` / `Host` as received.
    pub host: &'a str,
    pub method: &'a str,
    /// Normalized path; a query string, if present, is ignored for path matching.
    pub path: &'a str,
    /// False for TCP connections (see the TCP rules in the module documentation).
    pub is_http: bool,
}

impl<'a> AuthzRequest<'a> {
    /// An HTTP request with no identity or addresses; fill in the rest with struct update.
    pub fn http(headers: &'a HeaderMap, method: &'a str, host: &'a str, path: &'a str) -> Self {
        AuthzRequest {
            source_principal: None,
            source_ip: None,
            remote_ip: None,
            destination_ip: None,
            destination_port: None,
            sni: None,
            request_principal: None,
            claims: None,
            headers,
            host,
            method,
            path,
            is_http: true,
        }
    }

    /// A TCP connection (no HTTP attributes).
    pub fn tcp(headers: &'a HeaderMap) -> Self {
        AuthzRequest {
            is_http: false,
            ..AuthzRequest::http(headers, "", "", "")
        }
    }

    fn principal(&self) -> Option<&'a str> {
        let p = self.source_principal?;
        let p = p.strip_prefix("spiffe://").unwrap_or(p);
        (!p.is_empty()).then_some(p)
    }

    /// `(namespace, service account)` of the peer principal, when it has Istio's shape.
    fn identity(&self) -> Option<(&'a str, &'a str)> {
        let mut parts = self.principal()?.split('/');
        let (td, ns_key, ns, sa_key, sa) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        let ok = parts.next().is_none()
            && !td.is_empty()
            && ns_key == "ns"
            && sa_key == "sa"
            && !ns.is_empty()
            && !sa.is_empty();
        ok.then_some((ns, sa))
    }

    fn claim_str(&self, name: &str) -> Option<&'a str> {
        self.claims?.get(name)?.as_str()
    }

    /// `(iss, sub)` of the request principal: from the claims when present, else the
    /// principal split at its last `/`.
    fn issuer_subject(&self) -> Option<(&'a str, Option<&'a str>)> {
        if let Some(iss) = self.claim_str("iss") {
            self.request_principal?;
            return Some((iss, self.claim_str("sub")));
        }
        let p = self.request_principal?;
        Some(match p.rsplit_once('/') {
            Some((iss, sub)) => (iss, Some(sub)),
            None => (p, None),
        })
    }

    fn remote(&self) -> Option<IpAddr> {
        self.remote_ip.or(self.source_ip)
    }

    fn path_only(&self) -> &'a str {
        self.path.split_once('?').map_or(self.path, |(p, _)| p)
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled matchers
// ---------------------------------------------------------------------------------------------

/// An Istio string match, pre-parsed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
enum StrPat {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    /// `*` on most attributes: any non-empty value.
    NonEmpty,
    /// `*` on headers and methods: present, possibly empty.
    Present,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Star {
    NonEmpty,
    Present,
}

impl StrPat {
    fn parse(v: &str, star: Star) -> StrPat {
        if v == "*" {
            match star {
                Star::NonEmpty => StrPat::NonEmpty,
                Star::Present => StrPat::Present,
            }
        } else if let Some(s) = v.strip_prefix('*') {
            StrPat::Suffix(s.into())
        } else if let Some(p) = v.strip_suffix('*') {
            StrPat::Prefix(p.into())
        } else {
            StrPat::Exact(v.into())
        }
    }

    fn matches(&self, s: &[u8]) -> bool {
        match self {
            StrPat::Exact(e) => s == e.as_bytes(),
            StrPat::Prefix(p) => s.starts_with(p.as_bytes()),
            StrPat::Suffix(x) => s.ends_with(x.as_bytes()),
            StrPat::NonEmpty => !s.is_empty(),
            StrPat::Present => true,
        }
    }

    fn matches_str(&self, s: &str) -> bool {
        self.matches(s.as_bytes())
    }
}

/// A `hosts` value: lowercase pattern over the host (or `host:port` when it names a port).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
struct HostPat {
    pat: StrPat,
    with_port: bool,
}

impl HostPat {
    fn parse(v: &str) -> HostPat {
        let v = v.to_ascii_lowercase();
        let pat = StrPat::parse(&v, Star::Present);
        let text = match &pat {
            StrPat::Exact(t) | StrPat::Prefix(t) | StrPat::Suffix(t) => &**t,
            _ => "",
        };
        let after_brackets = text.rsplit_once(']').map_or(text, |(_, r)| r);
        let with_port = if text.contains(']') {
            after_brackets.contains(':')
        } else {
            text.matches(':').count() == 1
        };
        // Trailing dots are not part of the name (`example.com.` is `example.com`), with or
        // without a port: requests are matched with theirs removed.
        let undot = |t: &str| -> String {
            match t.rsplit_once(':') {
                Some((host, port)) if with_port => {
                    format!("{}:{port}", host.trim_end_matches('.'))
                }
                _ => t.trim_end_matches('.').to_string(),
            }
        };
        let pat = match pat {
            StrPat::Exact(t) => StrPat::Exact(undot(&t).into()),
            StrPat::Suffix(t) => StrPat::Suffix(undot(&t).into()),
            p => p,
        };
        HostPat { pat, with_port }
    }

    fn matches(&self, authority: &str) -> bool {
        let (host, port) = split_authority(authority);
        let parts: [&[u8]; 3] = match (self.with_port, port) {
            (true, Some(p)) => [host.as_bytes(), b":", p.as_bytes()],
            _ => [host.as_bytes(), b"", b""],
        };
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let fwd = || {
            parts
                .iter()
                .flat_map(|p| p.iter())
                .map(u8::to_ascii_lowercase)
        };
        let rev = || {
            parts
                .iter()
                .rev()
                .flat_map(|p| p.iter().rev())
                .map(u8::to_ascii_lowercase)
        };
        match &self.pat {
            StrPat::Exact(e) => len == e.len() && fwd().eq(e.bytes()),
            StrPat::Prefix(p) => len >= p.len() && fwd().take(p.len()).eq(p.bytes()),
            StrPat::Suffix(s) => len >= s.len() && rev().take(s.len()).eq(s.bytes().rev()),
            StrPat::NonEmpty => len > 0,
            StrPat::Present => true,
        }
    }
}

/// A `paths` value: a string match or an Envoy URI template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
enum PathPat {
    Str(StrPat),
    Template(Vec<TplPart>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
enum TplPart {
    Lit(Box<str>),
    /// `{*}`: one non-empty segment of RFC 3986 pchar (no `*`).
    Segment,
    /// `{**}`: any run of pchar and `/`, possibly empty; only literals may follow.
    Rest,
}

fn is_template_char(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'+'
                | b','
                | b';'
                | b':'
                | b'@'
                | b'='
        )
}

impl PathPat {
    fn parse(v: &str) -> Result<PathPat, String> {
        if !contains_path_template(v) {
            return Ok(PathPat::Str(StrPat::parse(v, Star::NonEmpty)));
        }
        if !v.starts_with('/') {
            return Err(format!("invalid path template {v:?}: must start with '/'"));
        }
        check_path_template(v)?;
        let mut parts = Vec::new();
        let mut rest = v;
        while !rest.is_empty() {
            let (op, len) = if rest.starts_with("{**}") {
                (Some(TplPart::Rest), 4)
            } else if rest.starts_with("{*}") {
                (Some(TplPart::Segment), 3)
            } else {
                (None, 0)
            };
            match op {
                Some(op) => {
                    parts.push(op);
                    rest = &rest[len..];
                }
                None => {
                    let end = rest.find('{').unwrap_or(rest.len());
                    if end == 0 {
                        return Err(format!("invalid path template {v:?}"));
                    }
                    parts.push(TplPart::Lit(rest[..end].into()));
                    rest = &rest[end..];
                }
            }
        }
        Ok(PathPat::Template(parts))
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathPat::Str(s) => s.matches_str(path),
            PathPat::Template(parts) => template_matches(parts, path.as_bytes()),
        }
    }
}

fn template_matches(parts: &[TplPart], path: &[u8]) -> bool {
    let mut rest = path;
    for (i, part) in parts.iter().enumerate() {
        match part {
            TplPart::Lit(l) => match rest.strip_prefix(l.as_bytes()) {
                Some(r) => rest = r,
                None => return false,
            },
            TplPart::Segment => {
                let n = rest.iter().take_while(|&&c| is_template_char(c)).count();
                if n == 0 {
                    return false;
                }
                rest = &rest[n..];
            }
            TplPart::Rest => {
                let mut tail: &[u8] = b"";
                for p in &parts[i + 1..] {
                    match p {
                        TplPart::Lit(l) if tail.is_empty() => tail = l.as_bytes(),
                        _ => return false, // excluded at parse: one literal after {**}
                    }
                }
                let Some(mid) = rest.strip_suffix(tail) else {
                    return false;
                };
                return mid.iter().all(|&c| c == b'/' || is_template_char(c));
            }
        }
    }
    rest.is_empty()
}

/// A request principal value, split as Istio does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
struct ReqPrincipalPat {
    iss: StrPat,
    sub: StrPat,
}

impl ReqPrincipalPat {
    fn parse(v: &str) -> ReqPrincipalPat {
        let split = v.rfind('/').map(|i| (&v[..i], &v[i + 1..]));
        let exact = |s: &str| StrPat::Exact(s.into());
        let (iss, sub) = if v == "*" {
            (StrPat::NonEmpty, StrPat::NonEmpty)
        } else if let Some(body) = v.strip_prefix('*') {
            match split {
                Some(("*", sub)) => (StrPat::NonEmpty, exact(sub)),
                Some((iss, sub)) => (StrPat::Suffix(iss[1..].into()), exact(sub)),
                None => (StrPat::NonEmpty, StrPat::Suffix(body.into())),
            }
        } else if let Some(body) = v.strip_suffix('*') {
            match split {
                Some((iss, "*")) => (exact(iss), StrPat::NonEmpty),
                Some((iss, sub)) => (exact(iss), StrPat::Prefix(sub[..sub.len() - 1].into())),
                None => (StrPat::Prefix(body.into()), StrPat::NonEmpty),
            }
        } else {
            match split {
                Some((iss, sub)) => (exact(iss), exact(sub)),
                None => (exact(v), exact("")),
            }
        };
        ReqPrincipalPat { iss, sub }
    }

    fn matches(&self, iss: &str, sub: Option<&str>) -> bool {
        self.iss.matches_str(iss) && sub.is_some_and(|s| self.sub.matches_str(s))
    }
}

/// `namespace/name` of a service account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
struct SaPat {
    namespace: Box<str>,
    name: Box<str>,
}

impl SaPat {
    fn parse(v: &str, policy_namespace: &str) -> Result<SaPat, String> {
        let (ns, name) = v.split_once('/').unwrap_or((policy_namespace, v));
        if ns.is_empty() || name.is_empty() || name.contains('/') || v.contains('*') {
            return Err(format!(
                "invalid service account {v:?}: expected \"name\" or \"namespace/name\""
            ));
        }
        Ok(SaPat {
            namespace: ns.into(),
            name: name.into(),
        })
    }
}

fn parse_ip(v: &str) -> Result<IpNet, String> {
    if v.contains('/') {
        v.parse::<IpNet>()
            .map(|n| n.trunc())
            .map_err(|_| format!("invalid CIDR block {v:?}"))
    } else {
        v.parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("invalid IP address {v:?}"))
    }
}

fn parse_port(v: &str) -> Result<u16, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid port {v:?}"));
    }
    v.parse::<u16>().map_err(|_| format!("invalid port {v:?}"))
}

/// Values and not-values of one attribute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
struct Set<T> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    values: Vec<T>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    not_values: Vec<T>,
}

/// How an attribute with several values (repeated header, list claim) is matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Multi {
    /// DENY/AUDIT/CUSTOM: any value matching triggers; `notValues` holds if some value is
    /// outside them (or there is none).
    Wide,
    /// ALLOW: every value must match; `notValues` holds only if no value is in them.
    Narrow,
    /// Sets (list claims, audiences): any element; `notValues` holds if no element is in them.
    Set,
}

impl<T> Set<T> {
    /// Single-valued attribute (`None`: absent).
    fn eval<V: Copy>(&self, v: Option<V>, m: impl Fn(&T, V) -> bool) -> bool {
        let pos = |pats: &[T], v: Option<V>| v.is_some_and(|v| pats.iter().any(|p| m(p, v)));
        (self.values.is_empty() || pos(&self.values, v))
            && (self.not_values.is_empty() || !pos(&self.not_values, v))
    }

    /// Multi-valued attribute: `cands` yields the values (possibly none).
    fn eval_multi<V, I>(
        &self,
        cands: impl Fn() -> I,
        multi: Multi,
        m: impl Fn(&T, V) -> bool,
    ) -> bool
    where
        V: Copy,
        I: Iterator<Item = V>,
    {
        let hit = |pats: &[T], v: V| pats.iter().any(|p| m(p, v));
        let values_ok = self.values.is_empty()
            || match multi {
                Multi::Wide | Multi::Set => cands().any(|v| hit(&self.values, v)),
                Multi::Narrow => {
                    let mut n = 0usize;
                    cands().all(|v| {
                        n += 1;
                        hit(&self.values, v)
                    }) && n > 0
                }
            };
        let not_ok = self.not_values.is_empty()
            || match multi {
                Multi::Wide => {
                    let mut n = 0usize;
                    cands().any(|v| {
                        n += 1;
                        !hit(&self.not_values, v)
                    }) || n == 0
                }
                Multi::Narrow | Multi::Set => !cands().any(|v| hit(&self.not_values, v)),
            };
        values_ok && not_ok
    }
}

/// Where a header condition reads its values.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HeaderKey {
    Named(HeaderName),
    Authority,
    Method,
    Path,
}

impl Serialize for HeaderKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            HeaderKey::Named(n) => n.as_str(),
            HeaderKey::Authority => ":authority",
            HeaderKey::Method => ":method",
            HeaderKey::Path => ":path",
        })
    }
}

impl HeaderKey {
    fn parse(name: &str) -> Result<HeaderKey, String> {
        let lower = name.to_ascii_lowercase();
        Ok(match lower.as_str() {
            ":authority" | "host" => HeaderKey::Authority,
            ":method" => HeaderKey::Method,
            ":path" => HeaderKey::Path,
            _ => HeaderKey::Named(
                HeaderName::from_bytes(lower.as_bytes())
                    .map_err(|_| format!("invalid header name {name:?}"))?,
            ),
        })
    }
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&c| c != b' ' && c != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(start, |i| i + 1);
    &v[start..end]
}

/// One compiled field or condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
enum Cond {
    Principal(Set<StrPat>),
    RequestPrincipal(Set<ReqPrincipalPat>),
    Namespace(Set<StrPat>),
    ServiceAccount(Set<SaPat>),
    SourceIp(Set<IpNet>),
    RemoteIp(Set<IpNet>),
    DestinationIp(Set<IpNet>),
    DestinationPort(Set<u16>),
    Sni(Set<StrPat>),
    Host(Set<HostPat>),
    Method(Set<StrPat>),
    Path(Set<PathPat>),
    Header {
        key: HeaderKey,
        /// `request.experimental.inline.headers`: values are comma-separated lists.
        inline: bool,
        set: Set<StrPat>,
    },
    Audiences(Set<StrPat>),
    Presenter(Set<StrPat>),
    Claim {
        path: Vec<String>,
        set: Set<StrPat>,
    },
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn ip_in(net: &IpNet, ip: IpAddr) -> bool {
    net.contains(&canonical_ip(ip))
}

/// Elements of a claim value that are strings (`scope`/`permission` strings split on spaces).
fn claim_strings(v: Option<&Value>, split_spaces: bool) -> impl Iterator<Item = &str> {
    let (one, list) = match v {
        Some(Value::String(s)) => (Some(s.as_str()), None),
        Some(Value::Array(a)) => (None, Some(a.iter().filter_map(Value::as_str))),
        _ => (None, None),
    };
    let one = one.into_iter().flat_map(move |s| {
        let split = split_spaces.then(|| s.split(' ').filter(|p| !p.is_empty()));
        let whole = (!split_spaces).then_some(s);
        split.into_iter().flatten().chain(whole)
    });
    one.chain(list.into_iter().flatten())
}

fn claim_at<'v>(claims: Option<&'v Value>, path: &[String]) -> Option<&'v Value> {
    let mut v = claims?;
    for key in path {
        v = v.get(key)?;
    }
    Some(v)
}

impl Cond {
    fn matches(&self, req: &AuthzRequest<'_>, multi: Multi) -> bool {
        match self {
            Cond::Principal(s) => s.eval(req.principal(), StrPat::matches_str),
            Cond::Namespace(s) => s.eval(req.identity().map(|(ns, _)| ns), StrPat::matches_str),
            Cond::ServiceAccount(s) => s.eval(req.identity(), |p, (ns, sa)| {
                *p.namespace == *ns && *p.name == *sa
            }),
            Cond::RequestPrincipal(s) => {
                s.eval(req.issuer_subject(), |p, (iss, sub)| p.matches(iss, sub))
            }
            Cond::SourceIp(s) => s.eval(req.source_ip, ip_in),
            Cond::RemoteIp(s) => s.eval(req.remote(), ip_in),
            Cond::DestinationIp(s) => s.eval(req.destination_ip, ip_in),
            Cond::DestinationPort(s) => s.eval(req.destination_port, |p, v| *p == v),
            Cond::Sni(s) => s.eval(req.sni, StrPat::matches_str),
            Cond::Host(s) => s.eval(Some(req.host), HostPat::matches),
            Cond::Method(s) => s.eval(Some(req.method), StrPat::matches_str),
            Cond::Path(s) => s.eval(Some(req.path_only()), PathPat::matches),
            Cond::Header { key, inline, set } => {
                let m = |p: &StrPat, v: &[u8]| p.matches(v);
                match key {
                    HeaderKey::Authority => set.eval(Some(req.host.as_bytes()), m),
                    HeaderKey::Method => set.eval(Some(req.method.as_bytes()), m),
                    HeaderKey::Path => set.eval(Some(req.path.as_bytes()), m),
                    HeaderKey::Named(name) => {
                        let lines = || req.headers.get_all(name).iter().map(|v| v.as_bytes());
                        if *inline {
                            let elems =
                                || lines().flat_map(|l| l.split(|&c| c == b',')).map(trim_ows);
                            set.eval_multi(elems, multi, m)
                        } else {
                            set.eval_multi(|| lines().map(trim_ows), multi, m)
                        }
                    }
                }
            }
            Cond::Audiences(s) => s.eval_multi(
                || claim_strings(req.claims.and_then(|c| c.get("aud")), false),
                Multi::Set,
                StrPat::matches_str,
            ),
            Cond::Presenter(s) => s.eval_multi(
                || claim_strings(req.claims.and_then(|c| c.get("azp")), false),
                Multi::Set,
                StrPat::matches_str,
            ),
            Cond::Claim { path, set } => {
                let split = path.len() == 1 && matches!(path[0].as_str(), "scope" | "permission");
                set.eval_multi(
                    || claim_strings(claim_at(req.claims, path), split),
                    Multi::Set,
                    StrPat::matches_str,
                )
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rules and policies
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
struct CompiledRule {
    /// Index in the policy's `rules`.
    index: usize,
    /// Any entry matches (each entry: all conditions). Empty: any source.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    from: Vec<Vec<Cond>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    to: Vec<Vec<Cond>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    when: Vec<Cond>,
}

impl CompiledRule {
    fn matches(&self, req: &AuthzRequest<'_>, multi: Multi) -> bool {
        let all = |conds: &[Cond]| conds.iter().all(|c| c.matches(req, multi));
        (self.from.is_empty() || self.from.iter().any(|s| all(s)))
            && (self.to.is_empty() || self.to.iter().any(|o| all(o)))
            && all(&self.when)
    }
}

/// One policy applied to the workload, compiled for HTTP and for TCP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CompiledPolicy {
    pub id: PolicyId,
    pub action: Action,
    /// CUSTOM: the extension provider's name (`None` when the policy names none).
    pub provider: Option<String>,
    pub dry_run: bool,
    /// Number of rules in the policy.
    pub rule_count: usize,
    http: Vec<CompiledRule>,
    tcp: Vec<CompiledRule>,
}

impl CompiledPolicy {
    fn multi(&self) -> Multi {
        if self.action == Action::Allow {
            Multi::Narrow
        } else {
            Multi::Wide
        }
    }

    /// The first rule matching `req`.
    pub fn first_match(&self, req: &AuthzRequest<'_>) -> Option<RuleRef<'_>> {
        let rules = if req.is_http { &self.http } else { &self.tcp };
        let multi = self.multi();
        rules
            .iter()
            .find(|r| r.matches(req, multi))
            .map(|r| RuleRef {
                policy: &self.id,
                action: self.action,
                rule: r.index,
            })
    }

    /// Indices of the rules that can match HTTP requests (rules dropped for invalid values are
    /// missing).
    pub fn http_rules(&self) -> impl Iterator<Item = usize> + '_ {
        self.http.iter().map(|r| r.index)
    }

    /// Indices of the rules that can match TCP connections.
    pub fn tcp_rules(&self) -> impl Iterator<Item = usize> + '_ {
        self.tcp.iter().map(|r| r.index)
    }
}

/// A problem found while compiling a policy (the policy still applies, as described).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuthzDiagnostic {
    pub policy: PolicyId,
    pub rule: Option<usize>,
    pub message: String,
}

impl fmt::Display for AuthzDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rule {
            Some(r) => write!(f, "{} rule {}: {}", self.policy, r, self.message),
            None => write!(f, "{}: {}", self.policy, self.message),
        }
    }
}

/// Which workload policies are compiled for.
#[derive(Clone, Copy, Debug)]
pub struct AuthzTarget<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// Name of the Kubernetes Gateway API `Gateway` this workload implements; defaults to the
    /// `gateway.networking.k8s.io/gateway-name` label.
    pub gateway_name: Option<&'a str>,
    /// The mesh trust domain followed by its aliases (MeshConfig `trustDomain`,
    /// `trustDomainAliases`). When set, `principals` naming `cluster.local` or one of these
    /// trust domains match every one of them, as Istio rewrites them. Empty: principals are
    /// compared as written (the same as Istio with trust domain `cluster.local` and no
    /// aliases).
    pub trust_domains: &'a [String],
}

impl<'a> AuthzTarget<'a> {
    /// A sidecar (or a gateway recognised by its labels) with no trust domain aliases.
    pub fn new(namespace: &'a str, labels: &'a BTreeMap<String, String>) -> Self {
        AuthzTarget {
            namespace,
            labels,
            gateway_name: None,
            trust_domains: &[],
        }
    }
}

/// The authorization policies of one workload, compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuthzPolicies {
    custom: Vec<CompiledPolicy>,
    deny: Vec<CompiledPolicy>,
    allow: Vec<CompiledPolicy>,
    audit: Vec<CompiledPolicy>,
    /// Enforced ALLOW policies, for [`DecisionReason::NoAllowMatched`].
    allow_enforced: Vec<PolicyId>,
    /// Enforced and dry-run ALLOW policies.
    allow_with_dry_run: Vec<PolicyId>,
    /// Why CUSTOM cannot be enforced as written: (enforced only, with dry-run).
    custom_problem: (Option<&'static str>, Option<&'static str>),
    has_dry_run: bool,
    diagnostics: Vec<AuthzDiagnostic>,
}

impl AuthzPolicies {
    /// Policies for a workload (sidecar or gateway) in `workload_namespace` with
    /// `workload_labels`. A Gateway API gateway is recognised by its gateway-name label.
    pub fn compile(
        resources: &[Resource],
        workload_namespace: &str,
        workload_labels: &BTreeMap<String, String>,
        root_namespace: &str,
    ) -> AuthzPolicies {
        AuthzPolicies::compile_for(
            resources,
            &AuthzTarget::new(workload_namespace, workload_labels),
            root_namespace,
        )
    }

    /// Policies for a workload that may be a Gateway API gateway (`targetRef(s)` attachment).
    pub fn compile_for(
        resources: &[Resource],
        target: &AuthzTarget<'_>,
        root_namespace: &str,
    ) -> AuthzPolicies {
        let gateway_name = target
            .gateway_name
            .or_else(|| target.labels.get(GATEWAY_NAME_LABEL).map(String::as_str));
        let mut selected: Vec<(&Resource, &AuthorizationPolicy)> = resources
            .iter()
            .filter_map(|r| match &r.object {
                Object::AuthorizationPolicy(p) => Some((r, &**p)),
                _ => None,
            })
            .filter(|(r, p)| applies(r, p, target, gateway_name, root_namespace))
            .collect();
        selected.sort_by(|(a, _), (b, _)| creation_order(a).cmp(&creation_order(b)));

        let mut out = AuthzPolicies::default();
        for (r, p) in selected {
            let policy = compile_policy(r, p, target.trust_domains, &mut out.diagnostics);
            out.has_dry_run |= policy.dry_run;
            match policy.action {
                Action::Allow => {
                    if !policy.dry_run {
                        out.allow_enforced.push(policy.id.clone());
                    }
                    out.allow_with_dry_run.push(policy.id.clone());
                    out.allow.push(policy);
                }
                Action::Deny => out.deny.push(policy),
                Action::Audit => out.audit.push(policy),
                Action::Custom => out.custom.push(policy),
            }
        }
        out.custom_problem = (
            custom_problem(out.custom.iter().filter(|p| !p.dry_run)),
            custom_problem(out.custom.iter()),
        );
        if let Some(why) = out.custom_problem.1 {
            if let Some(p) = out.custom.first() {
                out.diagnostics.push(AuthzDiagnostic {
                    policy: p.id.clone(),
                    rule: None,
                    message: format!("{why}: requests matching CUSTOM rules are denied"),
                });
            }
        }
        out
    }

    /// True when no policy applies (every request is allowed).
    pub fn is_empty(&self) -> bool {
        self.custom.is_empty()
            && self.deny.is_empty()
            && self.allow.is_empty()
            && self.audit.is_empty()
    }

    /// Every applied policy: CUSTOM, DENY, ALLOW, then AUDIT, each oldest first.
    pub fn policies(&self) -> impl Iterator<Item = &CompiledPolicy> {
        self.custom
            .iter()
            .chain(&self.deny)
            .chain(&self.allow)
            .chain(&self.audit)
    }

    /// Problems found while compiling (invalid values, HTTP-only rules dropped for TCP, ...).
    pub fn diagnostics(&self) -> &[AuthzDiagnostic] {
        &self.diagnostics
    }

    /// The decision for one request (or TCP connection).
    pub fn evaluate<'p>(&'p self, req: &AuthzRequest<'_>) -> Decision<'p> {
        let v = self.verdict(req, false);
        let audited_by = self
            .audit
            .iter()
            .filter(|p| !p.dry_run)
            .find_map(|p| p.first_match(req));
        let dry_run_would = self.has_dry_run.then(|| self.verdict(req, true));
        Decision {
            allowed: v.allowed,
            reason: v.reason,
            custom: v.custom,
            audited_by,
            dry_run_would,
        }
    }

    fn verdict<'p>(&'p self, req: &AuthzRequest<'_>, with_dry_run: bool) -> Verdict<'p> {
        let active = |p: &&CompiledPolicy| with_dry_run || !p.dry_run;
        let mut custom = None;
        for p in self.custom.iter().filter(active) {
            if let Some(rule) = p.first_match(req) {
                let problem = if with_dry_run {
                    self.custom_problem.1
                } else {
                    self.custom_problem.0
                };
                match (problem, p.provider.as_deref()) {
                    (None, Some(provider)) => custom = Some(CustomCheck { provider, rule }),
                    (why, _) => {
                        return Verdict {
                            allowed: false,
                            reason: DecisionReason::CustomMisconfigured {
                                rule,
                                why: why.unwrap_or("CUSTOM policy names no provider"),
                            },
                            custom: None,
                        }
                    }
                }
                break;
            }
        }
        for p in self.deny.iter().filter(active) {
            if let Some(rule) = p.first_match(req) {
                return Verdict {
                    allowed: false,
                    reason: DecisionReason::Denied(rule),
                    custom,
                };
            }
        }
        let mut any_allow = false;
        for p in self.allow.iter().filter(active) {
            any_allow = true;
            if let Some(rule) = p.first_match(req) {
                return Verdict {
                    allowed: true,
                    reason: DecisionReason::Allowed(rule),
                    custom,
                };
            }
        }
        if !any_allow {
            return Verdict {
                allowed: true,
                reason: DecisionReason::NoAllowPolicies,
                custom,
            };
        }
        Verdict {
            allowed: false,
            reason: DecisionReason::NoAllowMatched {
                allow_policies: if with_dry_run {
                    &self.allow_with_dry_run
                } else {
                    &self.allow_enforced
                },
            },
            custom,
        }
    }
}

fn custom_problem<'a>(
    mut policies: impl Iterator<Item = &'a CompiledPolicy>,
) -> Option<&'static str> {
    let mut provider: Option<&str> = None;
    policies.find_map(|p| match (p.provider.as_deref(), provider) {
        (None, _) => Some("CUSTOM policy names no provider"),
        (Some(a), Some(b)) if a != b => {
            Some("CUSTOM policies name more than one provider for this workload")
        }
        (Some(a), _) => {
            provider = Some(a);
            None
        }
    })
}

/// Istio's ordering of policies: oldest first, then namespace and name.
pub(crate) fn creation_order(r: &Resource) -> (Option<(i64, u32)>, &str, &str) {
    (
        r.creation_timestamp.as_deref().and_then(parse_rfc3339),
        r.ns(),
        r.name.as_str(),
    )
}

/// Seconds since the epoch and nanoseconds of an RFC 3339 time (`2024-01-02T03:04:05.5Z`,
/// offsets allowed). `None` when malformed.
pub(crate) fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &s[start..i];
        if frac.is_empty() {
            return None;
        }
        let digits: String = frac.chars().chain("000000000".chars()).take(9).collect();
        nanos = digits.parse().ok()?;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        b'+' | b'-' if i + 6 == b.len() => {
            let sign = if b[i] == b'-' { -1 } else { 1 };
            sign * (num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let (y, mo) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset, nanos))
}

fn target_refs(p: &AuthorizationPolicy) -> Vec<&PolicyTargetReference> {
    if p.target_refs.is_empty() {
        p.target_ref.iter().collect()
    } else {
        p.target_refs.iter().collect()
    }
}

fn applies(
    r: &Resource,
    p: &AuthorizationPolicy,
    target: &AuthzTarget<'_>,
    gateway_name: Option<&str>,
    root_namespace: &str,
) -> bool {
    let ns = r.ns();
    if ns != root_namespace && ns != target.namespace {
        return false;
    }
    let refs = target_refs(p);
    if refs.is_empty() {
        return p.selector.as_ref().is_none_or(|s| s.matches(target.labels));
    }
    let Some(gateway) = gateway_name else {
        return false; // targetRef policies never apply to sidecars
    };
    ns == target.namespace
        && refs.iter().any(|t| {
            t.group == GATEWAY_API_GROUP
                && t.kind == "Gateway"
                && t.name == gateway
                && (t.namespace.is_empty() || t.namespace == target.namespace)
        })
}

fn compile_policy(
    r: &Resource,
    p: &AuthorizationPolicy,
    trust_domains: &[String],
    diags: &mut Vec<AuthzDiagnostic>,
) -> CompiledPolicy {
    let id = PolicyId::of(r);
    let action = p.action();
    let dry_run = match r.annotations.get(DRY_RUN_ANNOTATION) {
        None => false,
        Some(v) => trellis_api::resource::parse_go_bool(v).unwrap_or_else(|| {
            diags.push(AuthzDiagnostic {
                policy: id.clone(),
                rule: None,
                message: format!(
                    "invalid {DRY_RUN_ANNOTATION} value {v:?}: the policy is enforced"
                ),
            });
            false
        }),
    };
    let mut http = Vec::new();
    let mut tcp = Vec::new();
    for (index, rule) in p.rules.iter().enumerate() {
        let mut b = RuleBuilder::new(action, false, r.ns(), trust_domains);
        let compiled = b.rule(rule, index);
        for m in b.problems {
            diags.push(AuthzDiagnostic {
                policy: id.clone(),
                rule: Some(index),
                message: m,
            });
        }
        http.extend(compiled);

        let mut b = RuleBuilder::new(action, true, r.ns(), trust_domains);
        let compiled = b.rule(rule, index);
        tcp.extend(compiled);
    }
    CompiledPolicy {
        id,
        action,
        provider: p
            .provider
            .as_ref()
            .map(|x| x.name.clone())
            .filter(|n| !n.is_empty()),
        dry_run,
        rule_count: p.rules.len(),
        http,
        tcp,
    }
}

/// Compiles one rule for HTTP or TCP with Istio's error handling (see the module docs).
struct RuleBuilder<'a> {
    action: Action,
    for_tcp: bool,
    policy_namespace: &'a str,
    trust_domains: &'a [String],
    /// ALLOW rule cannot be built (invalid value).
    dropped: bool,
    /// ALLOW rule dropped on TCP because of this HTTP-only attribute.
    tcp_dropped: Option<String>,
    problems: Vec<String>,
}

impl<'a> RuleBuilder<'a> {
    fn new(
        action: Action,
        for_tcp: bool,
        policy_namespace: &'a str,
        trust_domains: &'a [String],
    ) -> Self {
        RuleBuilder {
            action,
            for_tcp,
            policy_namespace,
            trust_domains,
            dropped: false,
            tcp_dropped: None,
            problems: Vec::new(),
        }
    }

    fn rule(&mut self, rule: &Rule, index: usize) -> Option<CompiledRule> {
        let when: Vec<Cond> = rule.when.iter().filter_map(|c| self.condition(c)).collect();
        let from = rule
            .from
            .iter()
            .map(|f| f.source.as_ref().map_or_else(Vec::new, |s| self.source(s)))
            .collect::<Vec<_>>();
        let to = rule
            .to
            .iter()
            .map(|t| {
                t.operation
                    .as_ref()
                    .map_or_else(Vec::new, |o| self.operation(o))
            })
            .collect::<Vec<_>>();
        if self.dropped || self.tcp_dropped.is_some() {
            return None;
        }
        // An entry that lost every condition matches anything: the list is then "any".
        let any_if_empty = |list: Vec<Vec<Cond>>| {
            if list.iter().any(Vec::is_empty) {
                Vec::new()
            } else {
                list
            }
        };
        Some(CompiledRule {
            index,
            from: any_if_empty(from),
            to: any_if_empty(to),
            when,
        })
    }

    /// Builds a `Set` from raw values; `None` when the attribute ends up unconstrained.
    fn set<T>(
        &mut self,
        field: &str,
        values: &[String],
        not_values: &[String],
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Set<T>> {
        if values.is_empty() && not_values.is_empty() {
            return None;
        }
        let mut conv = |list: &[String]| -> Vec<T> {
            list.iter()
                .filter_map(|v| match parse(v) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        self.invalid(field, e);
                        None
                    }
                })
                .collect()
        };
        let set = Set {
            values: conv(values),
            not_values: conv(not_values),
        };
        (!set.values.is_empty() || !set.not_values.is_empty()).then_some(set)
    }

    fn invalid(&mut self, field: &str, why: String) {
        // An invalid value drops an ALLOW rule on both passes (never widens it on TCP).
        if self.action == Action::Allow {
            self.dropped = true;
        }
        if self.for_tcp {
            return; // reported once, from the HTTP pass
        }
        let consequence = if self.action == Action::Allow {
            "the rule is dropped"
        } else {
            "the value is ignored"
        };
        self.problems.push(format!("{field}: {why}: {consequence}"));
    }

    /// A field of an HTTP-only attribute, on TCP: ALLOW rule dropped, else ignored.
    fn http_only(&mut self, field: &str, set: bool) -> bool {
        if self.for_tcp && set {
            if self.action == Action::Allow && self.tcp_dropped.is_none() {
                self.tcp_dropped = Some(field.to_string());
            }
            return true;
        }
        false
    }

    fn source(&mut self, s: &Source) -> Vec<Cond> {
        let mut out = Vec::new();
        let ns = self.policy_namespace;
        let str_ne = |v: &str| Ok(StrPat::parse(v, Star::NonEmpty));
        let (principals, not_principals) = (
            migrate_trust_domains(&s.principals, self.trust_domains),
            migrate_trust_domains(&s.not_principals, self.trust_domains),
        );
        out.extend(
            self.set("principals", &principals, &not_principals, str_ne)
                .map(Cond::Principal),
        );
        let rp = !s.request_principals.is_empty() || !s.not_request_principals.is_empty();
        if !self.http_only("requestPrincipals", rp) {
            out.extend(
                self.set(
                    "requestPrincipals",
                    &s.request_principals,
                    &s.not_request_principals,
                    |v| Ok(ReqPrincipalPat::parse(v)),
                )
                .map(Cond::RequestPrincipal),
            );
        }
        out.extend(
            self.set("namespaces", &s.namespaces, &s.not_namespaces, str_ne)
                .map(Cond::Namespace),
        );
        out.extend(
            self.set(
                "serviceAccounts",
                &s.service_accounts,
                &s.not_service_accounts,
                |v| SaPat::parse(v, ns),
            )
            .map(Cond::ServiceAccount),
        );
        out.extend(
            self.set("ipBlocks", &s.ip_blocks, &s.not_ip_blocks, parse_ip)
                .map(Cond::SourceIp),
        );
        out.extend(
            self.set(
                "remoteIpBlocks",
                &s.remote_ip_blocks,
                &s.not_remote_ip_blocks,
                parse_ip,
            )
            .map(Cond::RemoteIp),
        );
        out
    }

    fn operation(&mut self, o: &Operation) -> Vec<Cond> {
        let mut out = Vec::new();
        let hosts = !o.hosts.is_empty() || !o.not_hosts.is_empty();
        if !self.http_only("hosts", hosts) {
            out.extend(
                self.set("hosts", &o.hosts, &o.not_hosts, |v| Ok(HostPat::parse(v)))
                    .map(Cond::Host),
            );
        }
        out.extend(
            self.set("ports", &o.ports, &o.not_ports, parse_port)
                .map(Cond::DestinationPort),
        );
        let methods = !o.methods.is_empty() || !o.not_methods.is_empty();
        if !self.http_only("methods", methods) {
            out.extend(
                self.set("methods", &o.methods, &o.not_methods, |v| {
                    Ok(StrPat::parse(v, Star::Present))
                })
                .map(Cond::Method),
            );
        }
        let paths = !o.paths.is_empty() || !o.not_paths.is_empty();
        if !self.http_only("paths", paths) {
            out.extend(
                self.set("paths", &o.paths, &o.not_paths, PathPat::parse)
                    .map(Cond::Path),
            );
        }
        out
    }

    fn condition(&mut self, c: &Condition) -> Option<Cond> {
        let key = c.key.as_str();
        let (vals, nots) = (&c.values, &c.not_values);
        if vals.is_empty() && nots.is_empty() {
            return None;
        }
        let field = format!("when {key}");
        let str_ne = |v: &str| Ok(StrPat::parse(v, Star::NonEmpty));
        let ns = self.policy_namespace;
        let http_only = key.starts_with("request.");
        if self.http_only(key, http_only) {
            return None;
        }
        let cond = match key {
            "source.ip" => Cond::SourceIp(self.set(&field, vals, nots, parse_ip)?),
            "remote.ip" => Cond::RemoteIp(self.set(&field, vals, nots, parse_ip)?),
            "destination.ip" => Cond::DestinationIp(self.set(&field, vals, nots, parse_ip)?),
            "destination.port" => Cond::DestinationPort(self.set(&field, vals, nots, parse_port)?),
            "source.namespace" => Cond::Namespace(self.set(&field, vals, nots, str_ne)?),
            "source.principal" => {
                let vals = migrate_trust_domains(vals, self.trust_domains);
                let nots = migrate_trust_domains(nots, self.trust_domains);
                Cond::Principal(self.set(&field, &vals, &nots, str_ne)?)
            }
            "source.serviceAccount" => {
                Cond::ServiceAccount(self.set(&field, vals, nots, |v| SaPat::parse(v, ns))?)
            }
            "connection.sni" => Cond::Sni(self.set(&field, vals, nots, str_ne)?),
            "request.auth.principal" => {
                Cond::RequestPrincipal(
                    self.set(&field, vals, nots, |v| Ok(ReqPrincipalPat::parse(v)))?,
                )
            }
            "request.auth.audiences" => Cond::Audiences(self.set(&field, vals, nots, str_ne)?),
            "request.auth.presenter" => Cond::Presenter(self.set(&field, vals, nots, str_ne)?),
            _ => {
                if let Some(rest) = key.strip_prefix("request.auth.claims") {
                    match claim_path(rest) {
                        Some(path) => Cond::Claim {
                            path,
                            set: self.set(&field, vals, nots, str_ne)?,
                        },
                        None => return self.unsupported(&field, "invalid claim key"),
                    }
                } else if let Some((rest, inline)) = key
                    .strip_prefix("request.headers")
                    .map(|r| (r, false))
                    .or_else(|| {
                        key.strip_prefix("request.experimental.inline.headers")
                            .map(|r| (r, true))
                    })
                {
                    let name = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
                    match name.filter(|n| !n.is_empty()).map(HeaderKey::parse) {
                        Some(Ok(hk)) => Cond::Header {
                            key: hk,
                            inline,
                            set: self
                                .set(&field, vals, nots, |v| Ok(StrPat::parse(v, Star::Present)))?,
                        },
                        Some(Err(e)) => return self.unsupported(&field, &e),
                        None => return self.unsupported(&field, "invalid header key"),
                    }
                } else if key.starts_with("experimental.envoy.filters.") {
                    return self
                        .unsupported(&field, "Envoy filter metadata is not available in Trellis");
                } else {
                    return self.unsupported(&field, "unknown attribute");
                }
            }
        };
        Some(cond)
    }

    /// An attribute Trellis cannot evaluate: ALLOW rule dropped, ignored elsewhere.
    fn unsupported(&mut self, field: &str, why: &str) -> Option<Cond> {
        self.invalid(field, why.to_string());
        None
    }
}

/// Istio's `ReplaceTrustDomainAliases`: a principal `<td>/ns/<ns>/sa/<sa>` whose trust domain
/// is `cluster.local` or one of `trust_domains` is rewritten for each of `trust_domains` (kept
/// as written where its `*td` pattern already covers one). Others are kept.
fn migrate_trust_domains(values: &[String], trust_domains: &[String]) -> Vec<String> {
    if trust_domains.is_empty() {
        return values.to_vec();
    }
    let mut out: Vec<String> = Vec::new();
    let mut push = |v: String| {
        if !out.contains(&v) {
            out.push(v);
        }
    };
    for v in values {
        let parts: Vec<&str> = v.split('/').collect();
        let td = parts[0];
        let pattern_matches = |t: &str| {
            t == td || StrPat::parse(t, Star::NonEmpty).matches_str(td) && t.contains('*')
        };
        if parts.len() != 5
            || td == "*"
            || !(td == "cluster.local" || trust_domains.iter().any(|t| pattern_matches(t)))
        {
            push(v.clone());
            continue;
        }
        for t in trust_domains {
            let covered = td.strip_prefix('*').is_some_and(|sfx| t.ends_with(sfx));
            if covered {
                push(v.clone());
            } else {
                push(format!("{t}/{}", parts[1..].join("/")));
            }
        }
    }
    out
}

/// `[a][b]` → `["a", "b"]`.
fn claim_path(rest: &str) -> Option<Vec<String>> {
    let inner = rest.strip_prefix('[')?.strip_suffix(']')?;
    let parts: Vec<String> = inner.split("][").map(str::to_string).collect();
    parts
        .iter()
        .all(|p| !p.is_empty() && !p.contains(['[', ']']))
        .then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_patterns() {
        let p = |v| StrPat::parse(v, Star::NonEmpty);
        assert!(p("abc").matches_str("abc"));
        assert!(!p("abc").matches_str("abcd"));
        assert!(p("ab*").matches_str("abcd"));
        assert!(p("*cd").matches_str("abcd"));
        assert!(p("*").matches_str("x"));
        assert!(!p("*").matches_str(""));
        assert!(StrPat::parse("*", Star::Present).matches_str(""));
        // metacharacters are literal
        assert!(!p("cert-manager.io").matches_str("cert-manager-io"));
        assert!(!p("a.c").matches_str("abc"));
    }

    /// CUSTOM → DENY → ALLOW: a matching CUSTOM rule makes the provider the first to answer,
    /// even when DENY or ALLOW deny; the local decision applies only after it allows.
    #[test]
    fn custom_comes_first_in_the_outcome() {
        let id = |name: &str| PolicyId {
            namespace: "ns".into(),
            name: name.into(),
        };
        let (ext, deny) = (id("ext"), id("deny"));
        let custom_rule = RuleRef {
            policy: &ext,
            action: Action::Custom,
            rule: 0,
        };
        let deny_rule = RuleRef {
            policy: &deny,
            action: Action::Deny,
            rule: 1,
        };
        let custom = Some(CustomCheck {
            provider: "p",
            rule: custom_rule,
        });
        let d = |allowed, reason, custom| Decision {
            allowed,
            reason,
            custom,
            audited_by: None,
            dry_run_would: None,
        };
        let denied = d(false, DecisionReason::Denied(deny_rule), custom);
        assert_eq!(
            denied.outcome(),
            Outcome::Custom {
                provider: "p",
                policy: custom_rule,
                allowed: false
            }
        );
        assert_eq!(
            denied.to_string(),
            "denied by DENY policy ns/deny rule 1; ext-authz p required by CUSTOM policy ns/ext rule 0"
        );
        let allowed = d(true, DecisionReason::NoAllowPolicies, custom);
        assert_eq!(
            allowed.outcome(),
            Outcome::Custom {
                provider: "p",
                policy: custom_rule,
                allowed: true
            }
        );
        let misconfigured = DecisionReason::CustomMisconfigured {
            rule: custom_rule,
            why: "CUSTOM policy names no provider",
        };
        assert_eq!(d(false, misconfigured, None).outcome(), Outcome::Deny);
        assert_eq!(
            d(false, DecisionReason::Denied(deny_rule), None).outcome(),
            Outcome::Deny
        );
        assert_eq!(
            d(true, DecisionReason::NoAllowPolicies, None).outcome(),
            Outcome::Allow
        );
    }

    #[test]
    fn host_patterns() {
        let h = HostPat::parse;
        assert!(h("example.com").matches("EXAMPLE.com"));
        assert!(h("example.com").matches("example.com:8080"));
        assert!(h("example.com").matches("example.com."));
        assert!(h("example.com.").matches("example.com"));
        assert!(!h("example.com").matches("example.com.evil.org"));
        assert!(h("example.com:8080").matches("Example.com:8080"));
        assert!(!h("example.com:8080").matches("example.com:9090"));
        assert!(!h("example.com:8080").matches("example.com"));
        assert!(h("*.example.com").matches("a.EXAMPLE.com:443"));
        assert!(!h("*.example.com").matches("example.com"));
        assert!(h("*.example.com:443").matches("a.example.com:443"));
        assert!(!h("*.example.com:443").matches("a.example.com:80"));
        assert!(h("api.*").matches("API.example.com"));
        assert!(h("*").matches(""));
        assert!(h("[::1]:80").matches("[::1]:80"));
        assert!(h("[::1]").matches("[::1]:80"));
        // A trailing dot before a port is not part of the name either (found by fuzzing: the
        // pattern used to match nothing, so a DENY with it denied nothing).
        assert!(h("admin.example.com.:8443").matches("admin.example.com.:8443"));
        assert!(h("admin.example.com.:8443").matches("ADMIN.example.com:8443"));
        assert!(!h("admin.example.com.:8443").matches("admin.example.com:443"));
        assert!(h("*.example.com.:443").matches("a.example.com:443"));
    }

    #[test]
    fn templates() {
        let t = |tpl: &str, path: &str| PathPat::parse(tpl).unwrap().matches(path);
        assert!(t("/store/{*}/items", "/store/a/items"));
        assert!(!t("/store/{*}/items", "/store/a/b/items"));
        assert!(!t("/store/{*}/items", "/store//items"));
        assert!(t("/foo/{**}", "/foo/a/b/c"));
        assert!(t("/foo/{**}", "/foo/"));
        assert!(!t("/foo/{**}", "/foo"));
        assert!(t("/foo/{**}/", "/foo/bar/"));
        assert!(!t("/foo/{**}/", "/foo/bar"));
        assert!(t("/foo/{*}/bar/{**}", "/foo/buzz/bar/"));
        assert!(t("/foo/{*}/bar/{**}", "/foo/buzz/bar/baz"));
        assert!(t("/{*}", "/x"));
        assert!(!t("/{*}", "/x/"));
        assert!(!t("/a/{*}", "/a/b*c"));
        assert!(PathPat::parse("/{**}/foo/{*}").is_err());
        assert!(PathPat::parse("/foo/{*}.txt").is_err());
        assert!(PathPat::parse("/*/baz/{*}").is_err());
    }

    #[test]
    fn request_principal_patterns() {
        let m =
            |pat: &str, iss: &str, sub: Option<&str>| ReqPrincipalPat::parse(pat).matches(iss, sub);
        assert!(m("*", "iss", Some("sub")));
        assert!(!m("*", "iss", None));
        assert!(!m("*", "iss", Some("")));
        assert!(m("https://a.com/*", "https://a.com", Some("x")));
        assert!(!m("https://a.com/*", "https://a.com/x", Some("y")));
        assert!(!m("https://a.com/*", "https://b.com", Some("x")));
        assert!(m("https://a.com/u*", "https://a.com", Some("user1")));
        assert!(m("*/user1", "anything", Some("user1")));
        assert!(m("*a.com/user1", "https://a.com", Some("user1")));
        assert!(m("iss/sub", "iss", Some("sub")));
        assert!(!m("iss/sub", "iss", Some("sub2")));
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some((0, 0)));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00.5Z").map(|t| t.1),
            Some(500_000_000)
        );
        assert!(parse_rfc3339("2024-02-29T12:00:00Z") < parse_rfc3339("2024-03-01T00:00:00Z"));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}

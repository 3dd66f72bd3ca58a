//! The `security.istio.io` kinds: `PeerAuthentication`, `RequestAuthentication` and
//! `AuthorizationPolicy` (served as `v1` and `v1beta1` with one schema), and their validation.
//!
//! Owns every field of the three specs, Istio's enums with their exact spellings, the
//! accessors that apply Istio's defaults (`UNSET` mTLS inherits, `action` defaults to
//! `ALLOW`), and the per-resource rules of Istio's validation webhook and CRD schema.
//! Cross-resource questions (which policy wins, does the CUSTOM provider exist in the mesh
//! config) belong to the `analyze` crate.
//!
//! Proto oneofs are modelled as structs of `Option`s (`jwks` / `jwksUri`, `selector` /
//! `targetRef` / `targetRefs`, `provider`), so a manifest that sets two of them still loads and
//! validation reports it with its path.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use serde::{de, Deserialize, Deserializer, Serialize};

use crate::common::{PolicyTargetReference, WorkloadSelector};
use crate::duration::Duration;
use crate::validate::{Validate, Validator};

/// Most `targetRefs` a policy may list (Istio's CRD `maxItems`).
const MAX_TARGET_REFS: usize = 16;
/// Most `serviceAccounts` a source may list, and their longest value (Istio's limits).
const MAX_SERVICE_ACCOUNTS: usize = 16;
const MAX_SERVICE_ACCOUNT_LEN: usize = 320;
/// Most `spaceDelimitedClaims` a JWT rule may list (Istio's CRD `maxItems`).
const MAX_SPACE_DELIMITED_CLAIMS: usize = 64;

// ---------------------------------------------------------------------------------------------
// Workload targeting shared by the three kinds
// ---------------------------------------------------------------------------------------------

/// `selector` vs `targetRef` vs `targetRefs` (at most one), each checked on its own.
fn validate_targeting(
    v: &mut Validator,
    selector: &Option<WorkloadSelector>,
    target_ref: &Option<PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    let set: Vec<&str> = [
        selector.as_ref().map(|_| "selector"),
        target_ref.as_ref().map(|_| "targetRef"),
        (!target_refs.is_empty()).then_some("targetRefs"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if set.len() > 1 {
        v.error_at(
            set[1],
            format!(
                "only one of selector, targetRef and targetRefs can be set, found {}",
                set.join(" and ")
            ),
        );
    }
    if let Some(s) = selector {
        validate_selector(v, s);
    }
    v.nested("targetRef", target_ref);
    if target_refs.len() > MAX_TARGET_REFS {
        v.error_at(
            "targetRefs",
            format!(
                "at most {MAX_TARGET_REFS} targetRefs are allowed, found {}",
                target_refs.len()
            ),
        );
    }
    v.each("targetRefs", target_refs, |v, r| r.validate(v));
}

fn validate_selector(v: &mut Validator, selector: &WorkloadSelector) {
    v.nested("selector", selector);
    if selector.match_labels.is_empty() {
        v.at("selector", |v| {
            v.warn("workload selector specified without labels: it selects every workload in scope, as if it were not set")
        });
    }
}

/// True when `selector` is set with at least one label (Istio's "workload policy").
fn has_labels(selector: &Option<WorkloadSelector>) -> bool {
    selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty())
}

/// Every value of a string list is non-empty; reports `field[i]`.
fn non_empty_values(v: &mut Validator, field: &str, values: &[String]) {
    v.each(field, values, |v, s| {
        if s.is_empty() {
            v.error("empty value not allowed");
        }
    });
}

/// Istio string matches: exact `abc`, prefix `abc*`, suffix `*abc` or presence `*`. Any other
/// `*` is matched literally, which is almost never what was meant: warn.
fn wildcard_placement(v: &mut Validator, field: &str, values: &[String]) {
    v.each(field, values, |v, s| {
        if !wildcard_ok(s) {
            v.warn(format!(
                "{s:?}: '*' is only a wildcard alone, as a prefix (\"*abc\") or as a suffix (\"abc*\"); elsewhere it matches a literal '*'"
            ));
        }
    });
}

fn wildcard_ok(s: &str) -> bool {
    s == "*" || s.matches('*').count() == 0 || {
        s.matches('*').count() == 1 && (s.starts_with('*') || s.ends_with('*'))
    }
}

// ---------------------------------------------------------------------------------------------
// PeerAuthentication
// ---------------------------------------------------------------------------------------------

/// `PeerAuthentication` spec: what mutual TLS the selected workloads accept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    /// Workloads the policy applies to; unset means every workload in the namespace (or the
    /// mesh, in the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Mutual TLS settings for the workload(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// Per-port mutual TLS (workload policies only). Keys are container ports; YAML writes
    /// them as strings (`"8080":`).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "port_level_mtls"
    )]
    pub port_level_mtls: BTreeMap<u32, MutualTls>,
}

/// `mtls: {mode: ...}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
}

/// Mutual TLS mode of a PeerAuthentication.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent scope; `PERMISSIVE` when nothing is set anywhere.
    #[default]
    Unset,
    /// Plain text only.
    Disable,
    /// Plain text or mutual TLS.
    Permissive,
    /// Mutual TLS only.
    Strict,
}

impl MtlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Unset => "UNSET",
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        }
    }

    /// `None` for `UNSET` (inherit), the mode otherwise.
    pub fn explicit(self) -> Option<MtlsMode> {
        (self != MtlsMode::Unset).then_some(self)
    }
}

impl fmt::Display for MtlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl MutualTls {
    /// The mode when set to something other than `UNSET`.
    pub fn explicit_mode(&self) -> Option<MtlsMode> {
        self.mode.and_then(MtlsMode::explicit)
    }
}

impl PeerAuthentication {
    /// The policy-level mode, `None` when absent or `UNSET` (inherit from the parent scope).
    pub fn mode(&self) -> Option<MtlsMode> {
        self.mtls.as_ref().and_then(MutualTls::explicit_mode)
    }

    /// The mode this policy sets for `port`: the port-level mode when set and not `UNSET`,
    /// else the policy-level mode; `None` means inherit from the parent scope.
    pub fn mode_for_port(&self, port: u32) -> Option<MtlsMode> {
        self.port_level_mtls
            .get(&port)
            .and_then(MutualTls::explicit_mode)
            .or_else(|| self.mode())
    }

    /// The mode in force for `port` (or the workload as a whole) once `parent` (the
    /// namespace or mesh policy's effective mode) is applied; `PERMISSIVE` when nothing sets one.
    pub fn effective_mode(&self, port: Option<u32>, parent: Option<MtlsMode>) -> MtlsMode {
        let own = match port {
            Some(p) => self.mode_for_port(p),
            None => self.mode(),
        };
        own.or_else(|| parent.and_then(MtlsMode::explicit))
            .unwrap_or(MtlsMode::Permissive)
    }

    /// A policy without selector labels in the root namespace applies to the whole mesh.
    pub fn is_mesh_wide(&self, namespace: &str, root_namespace: &str) -> bool {
        namespace == root_namespace && !has_labels(&self.selector)
    }
}

/// `portLevelMtls` keys are strings in YAML; each must be a port number.
fn port_level_mtls<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, MutualTls>, D::Error> {
    let raw = BTreeMap::<String, MutualTls>::deserialize(d)?;
    if raw.is_empty() {
        return Err(de::Error::custom(
            "portLevelMtls, when set, must have at least one port",
        ));
    }
    let mut out = BTreeMap::new();
    for (k, mtls) in raw {
        let digits = k.trim();
        let parsed = if digits.bytes().all(|b| b.is_ascii_digit()) {
            digits.parse::<u32>().ok()
        } else {
            None
        };
        let port: u32 = parsed.ok_or_else(|| {
            de::Error::custom(format!(
                "invalid portLevelMtls key {k:?}: expected a port number 1-65535"
            ))
        })?;
        if out.insert(port, mtls).is_some() {
            return Err(de::Error::custom(format!(
                "portLevelMtls port {port} is listed twice"
            )));
        }
    }
    Ok(out)
}

impl Validate for PeerAuthentication {
    fn validate(&self, v: &mut Validator) {
        if let Some(s) = &self.selector {
            validate_selector(v, s);
        }
        if !self.port_level_mtls.is_empty() && !has_labels(&self.selector) {
            let msg = if v.namespace == v.root_namespace {
                "portLevelMtls requires a selector with matchLabels: a mesh-wide PeerAuthentication (root namespace, no selector) cannot have port-level mTLS"
            } else {
                "portLevelMtls requires a selector with matchLabels: a namespace-wide PeerAuthentication cannot have port-level mTLS"
            };
            v.error_at("portLevelMtls", msg);
        }
        v.at("portLevelMtls", |v| {
            for port in self.port_level_mtls.keys() {
                if !(1..=65535).contains(port) {
                    v.at_key(&port.to_string(), |v| {
                        v.error(format!(
                            "port number {port} is out of range: expected 1-65535"
                        ))
                    });
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// RequestAuthentication
// ---------------------------------------------------------------------------------------------

/// `RequestAuthentication` spec: which JWTs the selected workloads validate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthentication {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

/// One accepted JWT issuer and how to find and use its tokens.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// The `iss` claim tokens must carry (required).
    #[serde(default)]
    pub issuer: String,
    /// Accepted `aud` values; empty accepts the service name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// URL of the issuer's key set (oneof with `jwks`). Istio's CRD also accepts `jwks_uri`.
    #[serde(default, alias = "jwks_uri", skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Inline JSON Web Key Set (oneof with `jwksUri`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Headers the token may arrive in; default `Authorization: Bearer`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters the token may arrive in; default `access_token`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Cookies the token may arrive in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// Header to write the verified payload (base64) to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Keep the token on the request forwarded upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_original_token: Option<bool>,
    /// Claims to copy into request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Claims whose string value is a space-delimited list (besides `scope` and `permission`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
    /// How long to wait fetching `jwksUri` (istiod or proxy side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Whether the token must be present (`REQUIRED`) or may be missing (`OPTIONAL`, default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<JwtPresence>,
}

/// `presence` of a JWT rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JwtPresence {
    /// A missing token passes authentication (authorization policies may still require one).
    #[default]
    Optional,
    /// A missing token fails the request with 401.
    Required,
}

/// `fromHeaders` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    #[serde(default)]
    pub name: String,
    /// Stripped before decoding, e.g. `"Bearer "`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// `outputClaimToHeaders` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    #[serde(default)]
    pub header: String,
    #[serde(default)]
    pub claim: String,
}

impl JwtRule {
    /// The presence requirement, `OPTIONAL` when unset.
    pub fn presence(&self) -> JwtPresence {
        self.presence.unwrap_or_default()
    }
}

impl Validate for RequestAuthentication {
    fn validate(&self, v: &mut Validator) {
        validate_targeting(v, &self.selector, &self.target_ref, &self.target_refs);
        v.each("jwtRules", &self.jwt_rules, |v, r| r.validate(v));
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, r) in self.jwt_rules.iter().enumerate() {
            if r.issuer.is_empty() {
                continue;
            }
            if let Some(first) = seen.get(r.issuer.as_str()) {
                v.at("jwtRules", |v| {
                    v.at_index(i, |v| {
                        v.at("issuer", |v| {
                            v.warn(format!(
                                "issuer {:?} is already configured in jwtRules[{first}]; duplicate issuers make token validation ambiguous",
                                r.issuer
                            ))
                        })
                    })
                });
            } else {
                seen.insert(&r.issuer, i);
            }
        }
    }
}

impl Validate for JwtRule {
    fn validate(&self, v: &mut Validator) {
        if self.issuer.is_empty() {
            v.error_at("issuer", "issuer is required");
        }
        non_empty_values(v, "audiences", &self.audiences);
        if self.jwks.is_some() && self.jwks_uri.is_some() {
            v.error_at(
                "jwksUri",
                "only one of jwks and jwksUri can be set (Istio ignores jwksUri when jwks is set)",
            );
        }
        if let Some(uri) = &self.jwks_uri {
            if let Err(e) = check_jwks_uri(uri) {
                v.error_at("jwksUri", e);
            }
        }
        if let Some(jwks) = &self.jwks {
            if let Err(e) = check_jwks(jwks) {
                v.error_at("jwks", e);
            }
        }
        v.each("fromHeaders", &self.from_headers, |v, h| {
            if h.name.is_empty() {
                v.error_at("name", "header name is required");
            } else if !is_http_token(&h.name) {
                v.error_at(
                    "name",
                    format!(
                        "invalid header name {:?}: expected HTTP token characters",
                        h.name
                    ),
                );
            }
        });
        v.each("fromParams", &self.from_params, |v, p| {
            if p.is_empty() {
                v.error("query parameter name must not be empty");
            }
        });
        v.each("fromCookies", &self.from_cookies, |v, c| {
            if c.is_empty() {
                v.error("cookie name must not be empty");
            }
        });
        if let Some(h) = &self.output_payload_to_header {
            if !h.is_empty() && !is_http_token(h) {
                v.error_at(
                    "outputPayloadToHeader",
                    format!("invalid header name {h:?}: expected HTTP token characters"),
                );
            }
        }
        v.each(
            "outputClaimToHeaders",
            &self.output_claim_to_headers,
            |v, c| {
                if c.header.is_empty() {
                    v.error_at("header", "header is required");
                } else if let Err(e) = check_claim_header(&c.header) {
                    v.error_at("header", e);
                }
                if c.claim.is_empty() {
                    v.error_at("claim", "claim is required");
                }
            },
        );
        if self.space_delimited_claims.len() > MAX_SPACE_DELIMITED_CLAIMS {
            v.error_at(
                "spaceDelimitedClaims",
                format!(
                    "at most {MAX_SPACE_DELIMITED_CLAIMS} claims are allowed, found {}",
                    self.space_delimited_claims.len()
                ),
            );
        }
        non_empty_values(v, "spaceDelimitedClaims", &self.space_delimited_claims);
        v.duration_min_1ms("timeout", &self.timeout);
    }
}

/// RFC 7230 `token` characters.
fn is_http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// `outputClaimToHeaders[].header`: Istio's CRD pattern `^[-_A-Za-z0-9]+$` (so no pseudo
/// headers such as `:authority`).
fn check_claim_header(h: &str) -> Result<(), String> {
    if h.starts_with(':') {
        return Err(format!(
            "invalid header {h:?}: pseudo-headers cannot be set from claims"
        ));
    }
    if !h
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "invalid header {h:?}: expected letters, digits, '-' and '_' only"
        ));
    }
    Ok(())
}

/// `jwksUri`: an absolute `http`/`https` URL with a host (and a valid port when given).
pub fn check_jwks_uri(uri: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid jwksUri {uri:?}: {why}"));
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains whitespace or control characters");
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return bad("expected an absolute URL starting with http:// or https://");
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return bad(&format!(
            "URI scheme {scheme:?} is not supported: expected http or https"
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let Some((ip, after)) = v6.split_once(']') else {
            return bad("unterminated IPv6 address");
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return bad("invalid IPv6 address");
        }
        match after {
            "" => (ip, None),
            p => match p.strip_prefix(':') {
                Some(port) => (ip, Some(port)),
                None => return bad("unexpected characters after the IPv6 address"),
            },
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return bad("missing host");
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'%'))
    {
        return bad("invalid host");
    }
    if let Some(p) = port {
        if !p.is_empty() && !matches!(p.parse::<u32>(), Ok(1..=65535)) {
            return bad("invalid port: expected 1-65535");
        }
    }
    Ok(())
}

/// Inline `jwks`: a JSON object with a `keys` list.
fn check_jwks(jwks: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(jwks).map_err(|e| format!("jwks is not valid JSON: {e}"))?;
    match value.get("keys") {
        Some(serde_json::Value::Array(keys)) if !keys.is_empty() => {
            if keys
                .iter()
                .all(|k| k.get("kty").is_some_and(|t| t.is_string()))
            {
                Ok(())
            } else {
                Err("jwks: every key needs a \"kty\"".to_string())
            }
        }
        Some(serde_json::Value::Array(_)) => Err("jwks has no keys".to_string()),
        _ => Err("jwks must be a JSON Web Key Set: an object with a \"keys\" list".to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// AuthorizationPolicy
// ---------------------------------------------------------------------------------------------

/// `AuthorizationPolicy` spec: access control on the selected workloads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// A request matches when any rule matches. No rules: an ALLOW policy allows nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// `ALLOW` when unset; see [`AuthorizationPolicy::action`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// The extension that decides, for `CUSTOM` only (oneof `action_detail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

/// What a matching policy does.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
            Action::Custom => "CUSTOM",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `provider: {name: ...}`: an extension provider declared in MeshConfig.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: String,
}

/// Matches when one `from`, one `to` and every `when` match; an empty rule matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// `from` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// `to` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// Who sent the request. Fields are ANDed; values within a field are ORed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities `<trust domain>/ns/<namespace>/sa/<service account>` (mTLS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// JWT identities `<iss>/<sub>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    /// Peer namespaces (mTLS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// Kubernetes service accounts `namespace/name` (or `name` in the policy's namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    /// Source IPs or CIDRs of the connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// Original client IPs or CIDRs (X-Forwarded-For / proxy protocol).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
}

/// What the request does. Fields are ANDed; values within a field are ORed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// HTTP hosts (case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Destination ports, as strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    /// HTTP methods (always `POST` for gRPC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// HTTP paths after normalization; `/package.service/method` for gRPC. Supports `*`
    /// prefix/suffix and the `{*}` / `{**}` path templates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// `when` entry: an attribute and the values it must (not) have.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

impl AuthorizationPolicy {
    /// The action, `ALLOW` when unset.
    pub fn action(&self) -> Action {
        self.action.unwrap_or_default()
    }

    /// The CUSTOM provider's name, when this is a CUSTOM policy with a provider.
    pub fn provider_name(&self) -> Option<&str> {
        (self.action() == Action::Custom)
            .then(|| self.provider.as_ref().map(|p| p.name.as_str()))
            .flatten()
            .filter(|n| !n.is_empty())
    }
}

impl Source {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self.fields().iter().all(|(_, f)| f.is_empty())
    }

    /// Every list with its YAML field name.
    pub fn fields(&self) -> [(&'static str, &[String]); 12] {
        [
            ("principals", &self.principals),
            ("notPrincipals", &self.not_principals),
            ("requestPrincipals", &self.request_principals),
            ("notRequestPrincipals", &self.not_request_principals),
            ("namespaces", &self.namespaces),
            ("notNamespaces", &self.not_namespaces),
            ("serviceAccounts", &self.service_accounts),
            ("notServiceAccounts", &self.not_service_accounts),
            ("ipBlocks", &self.ip_blocks),
            ("notIpBlocks", &self.not_ip_blocks),
            ("remoteIpBlocks", &self.remote_ip_blocks),
            ("notRemoteIpBlocks", &self.not_remote_ip_blocks),
        ]
    }

    /// True when some field also applies to plain TCP traffic (everything but request
    /// principals, which need HTTP).
    fn has_tcp_fields(&self) -> bool {
        self.fields()
            .iter()
            .any(|(n, f)| !f.is_empty() && !n.contains("equestPrincipals"))
    }
}

impl Operation {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self.fields().iter().all(|(_, f)| f.is_empty())
    }

    /// Every list with its YAML field name.
    pub fn fields(&self) -> [(&'static str, &[String]); 8] {
        [
            ("hosts", &self.hosts),
            ("notHosts", &self.not_hosts),
            ("ports", &self.ports),
            ("notPorts", &self.not_ports),
            ("methods", &self.methods),
            ("notMethods", &self.not_methods),
            ("paths", &self.paths),
            ("notPaths", &self.not_paths),
        ]
    }
}

impl Validate for AuthorizationPolicy {
    fn validate(&self, v: &mut Validator) {
        validate_targeting(v, &self.selector, &self.target_ref, &self.target_refs);
        let action = self.action();
        match action {
            Action::Custom => {
                if self.rules.is_empty() {
                    v.error_at(
                        "rules",
                        "CUSTOM action without rules is never triggered: add an empty rule `{}` to trigger it for every request",
                    );
                }
                match &self.provider {
                    None => v.error_at("provider", "provider.name is required with action CUSTOM"),
                    Some(p) if p.name.is_empty() => {
                        v.error_at("provider.name", "provider.name must not be empty")
                    }
                    Some(_) => {}
                }
            }
            _ => {
                if self.provider.is_some() {
                    v.error_at(
                        "provider",
                        format!("provider is only allowed with action CUSTOM, found {action}"),
                    );
                }
            }
        }
        if action == Action::Deny && self.rules.is_empty() {
            v.error_at(
                "rules",
                "DENY action without rules is never triggered: add an empty rule `{}` to deny every request",
            );
        }
        v.each("rules", &self.rules, |v, rule| {
            validate_rule(v, rule, action)
        });
    }
}

fn validate_rule(v: &mut Validator, rule: &Rule, action: Action) {
    v.each("from", &rule.from, |v, from| match &from.source {
        None => v.error("from entry needs a source"),
        Some(src) => v.at("source", |v| validate_source(v, src, action)),
    });
    v.each("to", &rule.to, |v, to| match &to.operation {
        None => v.error("to entry needs an operation"),
        Some(op) => v.at("operation", |v| validate_operation(v, op)),
    });
    v.each("when", &rule.when, |v, c| validate_condition(v, c, action));

    if action == Action::Deny {
        let sources: Vec<&Source> = rule.from.iter().filter_map(|f| f.source.as_ref()).collect();
        let ops: Vec<&Operation> = rule
            .to
            .iter()
            .filter_map(|t| t.operation.as_ref())
            .collect();
        let tcp_from = sources.iter().any(|s| s.has_tcp_fields());
        let tcp_to = ops
            .iter()
            .any(|o| !o.ports.is_empty() || !o.not_ports.is_empty());
        let http_only =
            (!sources.is_empty() && ops.is_empty() && !tcp_from) || (!ops.is_empty() && !tcp_to);
        if http_only {
            v.warn("this DENY rule uses only HTTP attributes, so it denies all traffic to TCP ports in its scope: set ports to scope it explicitly");
        }
    }
}

fn validate_source(v: &mut Validator, src: &Source, action: Action) {
    if src.is_empty() {
        v.error("source must set at least one field");
        return;
    }
    let identity = !src.principals.is_empty()
        || !src.not_principals.is_empty()
        || !src.namespaces.is_empty()
        || !src.not_namespaces.is_empty();
    if identity && (!src.service_accounts.is_empty() || !src.not_service_accounts.is_empty()) {
        let field = if src.service_accounts.is_empty() {
            "notServiceAccounts"
        } else {
            "serviceAccounts"
        };
        v.error_at(
            field,
            "cannot set serviceAccounts or notServiceAccounts with principals or namespaces (or their not* forms) in the same source: use separate from entries",
        );
    }
    for (name, values) in src.fields() {
        non_empty_values(v, name, values);
    }
    for (name, values) in &src.fields()[..6] {
        wildcard_placement(v, name, values);
    }
    check_service_accounts(v, "serviceAccounts", &src.service_accounts);
    check_service_accounts(v, "notServiceAccounts", &src.not_service_accounts);
    for (name, values) in [
        ("ipBlocks", &src.ip_blocks),
        ("notIpBlocks", &src.not_ip_blocks),
        ("remoteIpBlocks", &src.remote_ip_blocks),
        ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
    ] {
        v.each(name, values, |v, ip| {
            if !ip.is_empty() {
                if let Err(e) = check_ip_or_cidr(ip) {
                    v.error(e);
                }
            }
        });
    }
    if action == Action::Custom {
        for name in [
            "namespaces",
            "notNamespaces",
            "serviceAccounts",
            "notServiceAccounts",
            "principals",
            "notPrincipals",
            "requestPrincipals",
            "notRequestPrincipals",
        ] {
            let set = src
                .fields()
                .iter()
                .any(|(n, f)| *n == name && !f.is_empty());
            if set {
                v.error_at(name, format!("{name} is not supported with action CUSTOM"));
            }
        }
    }
}

/// Istio's `serviceAccounts` rules: at most 16, no wildcards, `name` or `namespace/name`,
/// at most 320 characters.
fn check_service_accounts(v: &mut Validator, field: &str, values: &[String]) {
    if values.len() > MAX_SERVICE_ACCOUNTS {
        v.error_at(
            field,
            format!(
                "at most {MAX_SERVICE_ACCOUNTS} service accounts are allowed, found {}",
                values.len()
            ),
        );
    }
    v.each(field, values, |v, sa| {
        if let Err(e) = check_service_account(sa) {
            v.error(e);
        }
    });
}

fn check_service_account(sa: &str) -> Result<(), String> {
    if sa.is_empty() {
        return Ok(()); // reported as an empty value
    }
    if sa.contains('*') {
        return Err(format!(
            "{sa:?}: wildcards are not allowed in service accounts"
        ));
    }
    if sa.len() > MAX_SERVICE_ACCOUNT_LEN {
        return Err(format!(
            "service account is longer than {MAX_SERVICE_ACCOUNT_LEN} characters"
        ));
    }
    let format_err =
        || format!("invalid service account {sa:?}: expected \"name\" or \"namespace/name\"");
    if let Some((ns, name)) = sa.split_once('/') {
        if ns.is_empty() || name.is_empty() || name.contains('/') {
            return Err(format_err());
        }
    }
    Ok(())
}

/// A single IP address or a CIDR block.
pub fn check_ip_or_cidr(s: &str) -> Result<(), String> {
    if s.contains('/') {
        s.parse::<ipnet::IpNet>()
            .map(|_| ())
            .map_err(|_| format!("invalid CIDR block {s:?}"))
    } else {
        s.parse::<IpAddr>()
            .map(|_| ())
            .map_err(|_| format!("invalid IP address {s:?}"))
    }
}

/// A port as used by `ports`, `notPorts` and `destination.port`.
fn check_port_string(v: &mut Validator, p: &str) {
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        v.error(format!("invalid port {p:?}: expected a number 1-65535"));
        return;
    }
    match p.parse::<u32>() {
        Ok(0) => v.warn("port 0 never matches: expected 1-65535"),
        Ok(1..=65535) => {}
        _ => v.error(format!("invalid port {p:?}: expected a number 1-65535")),
    }
}

const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn validate_operation(v: &mut Validator, op: &Operation) {
    if op.is_empty() {
        v.error("operation must set at least one field");
        return;
    }
    for (name, values) in op.fields() {
        non_empty_values(v, name, values);
    }
    for (name, values) in [("ports", &op.ports), ("notPorts", &op.not_ports)] {
        v.each(name, values, |v, p| {
            if !p.is_empty() {
                check_port_string(v, p);
            }
        });
    }
    wildcard_placement(v, "hosts", &op.hosts);
    wildcard_placement(v, "notHosts", &op.not_hosts);
    for (name, values) in [("methods", &op.methods), ("notMethods", &op.not_methods)] {
        wildcard_placement(v, name, values);
        v.each(name, values, |v, m| {
            if m.is_empty() || m.contains('*') || HTTP_METHODS.contains(&m.as_str()) {
                return;
            }
            if m.starts_with('/') {
                v.warn(format!(
                    "{m:?} looks like a gRPC method name: gRPC requests always use POST; match gRPC methods with paths"
                ));
            } else if HTTP_METHODS.contains(&m.to_ascii_uppercase().as_str()) {
                v.warn(format!(
                    "method {m:?} never matches: HTTP methods are case-sensitive, use {:?}",
                    m.to_ascii_uppercase()
                ));
            } else {
                v.warn(format!(
                    "unknown HTTP method {m:?}: expected one of {}",
                    HTTP_METHODS.join(", ")
                ));
            }
        });
    }
    for (name, values) in [("paths", &op.paths), ("notPaths", &op.not_paths)] {
        v.each(name, values, |v, p| {
            if p.is_empty() {
                return;
            }
            if contains_path_template(p) {
                if let Err(e) = check_path_template(p) {
                    v.error(e);
                }
            } else if !wildcard_ok(p) {
                v.warn(format!(
                    "{p:?}: '*' is only a wildcard alone, as a prefix or as a suffix; use {{*}} or {{**}} path templates to match segments"
                ));
            }
        });
    }
}

/// True when the path uses `{*}` or `{**}`.
pub fn contains_path_template(path: &str) -> bool {
    path.contains("{*}") || path.contains("{**}")
}

/// Istio's path template rules: `{*}` matches one segment, `{**}` the rest of the path and must
/// be the last operator; operators are whole segments; other segments are RFC 3986 `pchar`
/// literals (so no `*` wildcards mixed with templates).
pub fn check_path_template(path: &str) -> Result<(), String> {
    let templated = contains_path_template(path);
    let mut found_any = false;
    for segment in path.trim_matches('/').split('/') {
        match segment {
            "{*}" | "{**}" if found_any => {
                return Err(format!(
                    "invalid path template {path:?}: {{**}} must be the last operator"
                ))
            }
            "{*}" => continue,
            "{**}" => {
                found_any = true;
                continue;
            }
            _ => {}
        }
        if segment.contains(['{', '}']) {
            return Err(format!(
                "invalid path template {path:?}: '{{' and '}}' are only allowed as whole segments {{*}} or {{**}}"
            ));
        }
        if templated && !is_pchar_literal(segment) {
            return Err(format!(
                "invalid path template {path:?}: segment {segment:?} is not a literal (RFC 3986 pchar); '*' wildcards cannot be mixed with {{*}} or {{**}}"
            ));
        }
    }
    Ok(())
}

fn is_pchar_literal(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
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
        })
}

/// How a condition key's values are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionKind {
    /// IPs or CIDRs.
    Ip,
    /// Port numbers.
    Port,
    /// `namespace/name` service accounts.
    ServiceAccount,
    /// Strings with `*` prefix/suffix/presence matching.
    Text,
}

const SUPPORTED_KEYS: &str = "request.headers[<name>], source.ip, remote.ip, source.namespace, source.serviceAccount, source.principal, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[<name>]..., destination.ip, destination.port, connection.sni, experimental.envoy.filters.<filter>[<key>]";

/// Istio's supported `when.key` attributes.
pub fn check_condition_key(key: &str) -> Result<ConditionKind, String> {
    let bracketed = |rest: &str, nested: bool| -> bool {
        // `[a]` or, when nested, `[a][b]...`; names non-empty.
        let Some(inner) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
            return false;
        };
        if nested {
            inner
                .split("][")
                .all(|s| !s.is_empty() && !s.contains(['[', ']']))
        } else {
            !inner.is_empty() && !inner.contains(['[', ']'])
        }
    };
    let bad_map = |what: &str| {
        Err(format!(
            "invalid key {key:?}: expected {what} (e.g. {what_eg})",
            what_eg = match what {
                "request.headers[<name>]" => "request.headers[User-Agent]",
                "request.experimental.inline.headers[<name>]" =>
                    "request.experimental.inline.headers[User-Agent]",
                "request.auth.claims[<name>]" =>
                    "request.auth.claims[iss] or request.auth.claims[a][b]",
                _ => "experimental.envoy.filters.network.mysql_proxy[db.table]",
            }
        ))
    };
    let kind = match key {
        "" => return Err("key is required".to_string()),
        "source.ip" | "remote.ip" | "destination.ip" => ConditionKind::Ip,
        "destination.port" => ConditionKind::Port,
        "source.serviceAccount" => ConditionKind::ServiceAccount,
        "source.namespace"
        | "source.principal"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => ConditionKind::Text,
        "destination.namespace" => {
            return Err(format!(
            "attribute {key} is not supported: it is replaced by the policy's metadata.namespace"
        ))
        }
        "destination.name" | "destination.user" => {
            return Err(format!(
                "deprecated attribute {key}: only supported in the removed v1alpha1 RBAC API"
            ))
        }
        _ => {
            if let Some(rest) = key.strip_prefix("request.headers") {
                if !bracketed(rest, false) {
                    return bad_map("request.headers[<name>]");
                }
            } else if let Some(rest) = key.strip_prefix("request.experimental.inline.headers") {
                if !bracketed(rest, false) {
                    return bad_map("request.experimental.inline.headers[<name>]");
                }
            } else if let Some(rest) = key.strip_prefix("request.auth.claims") {
                if !bracketed(rest, true) {
                    return bad_map("request.auth.claims[<name>]");
                }
            } else if let Some(rest) = key.strip_prefix("experimental.envoy.filters.") {
                let ok = rest
                    .find('[')
                    .is_some_and(|i| i > 0 && bracketed(&rest[i..], false));
                if !ok {
                    return bad_map("experimental.envoy.filters.<filter>[<key>]");
                }
            } else if key.starts_with("destination.labels") {
                return Err(format!(
                    "attribute {key} is not supported: it is replaced by the workload selector"
                ));
            } else {
                return Err(format!(
                    "unknown attribute {key:?}: expected one of {SUPPORTED_KEYS}"
                ));
            }
            ConditionKind::Text
        }
    };
    Ok(kind)
}

fn validate_condition(v: &mut Validator, c: &Condition, action: Action) {
    let kind = match check_condition_key(&c.key) {
        Ok(k) => Some(k),
        Err(e) => {
            v.error_at("key", e);
            None
        }
    };
    if !c.key.is_empty() && c.values.is_empty() && c.not_values.is_empty() {
        v.error(format!(
            "at least one of values or notValues must be set for key {}",
            c.key
        ));
    }
    if action == Action::Custom
        && (matches!(
            c.key.as_str(),
            "source.namespace" | "source.serviceAccount" | "source.principal"
        ) || c.key.starts_with("request.auth."))
    {
        v.error_at(
            "key",
            format!("{} is not supported with action CUSTOM", c.key),
        );
    }
    for (name, values) in [("values", &c.values), ("notValues", &c.not_values)] {
        non_empty_values(v, name, values);
        let Some(kind) = kind else { continue };
        match kind {
            ConditionKind::Ip => v.each(name, values, |v, ip| {
                if !ip.is_empty() {
                    if let Err(e) = check_ip_or_cidr(ip) {
                        v.error(e);
                    }
                }
            }),
            ConditionKind::Port => v.each(name, values, |v, p| {
                if !p.is_empty() {
                    check_port_string(v, p);
                }
            }),
            ConditionKind::ServiceAccount => check_service_accounts(v, name, values),
            ConditionKind::Text => wildcard_placement(v, name, values),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::{Diagnostic, Severity};
    use crate::resource::{Object, Parsed, Resource};
    use crate::yaml::parse_documents;

    fn load(text: &str) -> Result<Resource, Vec<Diagnostic>> {
        let docs = parse_documents("t.yaml", text).unwrap();
        match Resource::from_document(&docs[0], "foo")? {
            Parsed::Resource(r) => Ok(*r),
            Parsed::Unrecognized(u) => panic!("unrecognized {}", u.kind),
        }
    }

    fn diags(text: &str) -> Vec<Diagnostic> {
        load(text).unwrap().validate("istio-system")
    }

    fn errors(text: &str) -> Vec<(String, String)> {
        diags(text)
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| (d.field, d.message))
            .collect()
    }

    fn warnings(text: &str) -> Vec<(String, String)> {
        diags(text)
            .into_iter()
            .filter(|d| d.severity == Severity::Warning)
            .map(|d| (d.field, d.message))
            .collect()
    }

    /// Asserts one error at `path` whose message contains `needle`.
    #[track_caller]
    fn assert_error(text: &str, path: &str, needle: &str) {
        let errs = errors(text);
        assert!(
            errs.iter().any(|(p, m)| p == path && m.contains(needle)),
            "expected error at {path} containing {needle:?}, got {errs:#?}"
        );
    }

    #[track_caller]
    fn assert_warning(text: &str, path: &str, needle: &str) {
        let w = warnings(text);
        assert!(
            w.iter().any(|(p, m)| p == path && m.contains(needle)),
            "expected warning at {path} containing {needle:?}, got {w:#?}"
        );
    }

    #[track_caller]
    fn assert_clean(text: &str) {
        let d = diags(text);
        assert!(d.is_empty(), "expected no diagnostics, got {d:#?}");
    }

    fn pa(spec: &str) -> String {
        format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: p, namespace: foo}}\nspec:\n{spec}")
    }
    fn ra(spec: &str) -> String {
        format!("apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: r, namespace: foo}}\nspec:\n{spec}")
    }
    fn ap(spec: &str) -> String {
        format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: a, namespace: foo}}\nspec:\n{spec}")
    }

    // ----- PeerAuthentication -----

    const PA_DOCS: &[&str] = &[
        // Namespace-wide STRICT.
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: foo\nspec:\n  mtls:\n    mode: STRICT\n",
        // Workload PERMISSIVE.
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: foo\nspec:\n  selector:\n    matchLabels:\n      app: reviews\n  mtls:\n    mode: PERMISSIVE\n",
        // Workload STRICT with port 8080 disabled (unquoted YAML key).
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: foo\nspec:\n  selector:\n    matchLabels:\n      app: reviews\n  mtls:\n    mode: STRICT\n  portLevelMtls:\n    8080:\n      mode: DISABLE\n",
        // Port-level only: the workload inherits.
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: foo\nspec:\n  selector:\n    matchLabels:\n      app: reviews\n  portLevelMtls:\n    \"8080\":\n      mode: DISABLE\n",
        // Mesh-wide STRICT.
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: STRICT\n",
    ];

    #[test]
    fn peer_authentication_doc_examples_are_clean() {
        for doc in PA_DOCS {
            assert_clean(doc);
        }
    }

    #[test]
    fn peer_authentication_modes_and_ports() {
        let r = load(PA_DOCS[2]).unwrap();
        let Object::PeerAuthentication(p) = &r.object else {
            panic!()
        };
        assert_eq!(p.mode(), Some(MtlsMode::Strict));
        assert_eq!(p.mode_for_port(8080), Some(MtlsMode::Disable));
        assert_eq!(p.mode_for_port(9090), Some(MtlsMode::Strict));
        assert_eq!(
            p.port_level_mtls.keys().copied().collect::<Vec<_>>(),
            [8080]
        );

        let r = load(PA_DOCS[3]).unwrap();
        let Object::PeerAuthentication(p) = &r.object else {
            panic!()
        };
        assert_eq!(p.mode(), None, "no mtls: inherit");
        assert_eq!(
            p.effective_mode(None, Some(MtlsMode::Strict)),
            MtlsMode::Strict
        );
        assert_eq!(
            p.effective_mode(Some(8080), Some(MtlsMode::Strict)),
            MtlsMode::Disable
        );
        assert_eq!(p.effective_mode(None, None), MtlsMode::Permissive);

        let unset = PeerAuthentication {
            mtls: Some(MutualTls {
                mode: Some(MtlsMode::Unset),
            }),
            ..Default::default()
        };
        assert_eq!(unset.mode(), None);
        assert!(unset.is_mesh_wide("istio-system", "istio-system"));
        // Port keys serialize back as strings.
        let json = serde_json::to_value(&**p).unwrap();
        assert_eq!(json["portLevelMtls"]["8080"]["mode"], "DISABLE");
    }

    #[test]
    fn peer_authentication_rules() {
        assert_error(
            &pa("  mtls: {mode: STRICT}\n  portLevelMtls:\n    \"80\": {mode: DISABLE}\n"),
            "spec.portLevelMtls",
            "requires a selector",
        );
        let mesh = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec:\n  portLevelMtls:\n    \"80\": {mode: DISABLE}\n";
        assert_error(mesh, "spec.portLevelMtls", "mesh-wide");
        assert_error(
            &pa("  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    \"0\": {mode: STRICT}\n    \"70000\": {mode: STRICT}\n"),
            "spec.portLevelMtls[\"70000\"]",
            "out of range",
        );
        let d = diags(&pa(
            "  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    \"0\": {mode: STRICT}\n",
        ));
        let loc = d[0].location.as_ref().unwrap();
        assert_eq!(
            (d[0].field.as_str(), loc.line),
            ("spec.portLevelMtls[\"0\"]", 7)
        );
        assert_warning(&pa("  selector: {}\n"), "spec.selector", "without labels");
        assert_error(
            &pa("  selector: {matchLabels: {app: \"a*\"}}\n"),
            "spec.selector.matchLabels[\"app\"]",
            "wildcard",
        );
    }

    #[test]
    fn peer_authentication_schema_errors() {
        let e = load(&pa("  mtls: {mode: BLAH}\n")).unwrap_err();
        assert_eq!(e[0].field, "spec.mtls.mode", "{e:?}");
        assert!(e[0].message.contains("STRICT"), "{}", e[0].message);
        let e = load(&pa(
            "  selector: {matchLabels: {a: b}}\n  portLevelMtls:\n    acd: {mode: STRICT}\n",
        ))
        .unwrap_err();
        assert!(e[0].field.starts_with("spec.portLevelMtls"), "{e:?}");
        assert!(
            e[0].message.contains("invalid portLevelMtls key \"acd\""),
            "{}",
            e[0].message
        );
        let e = load(&pa(
            "  selector: {matchLabels: {a: b}}\n  portLevelMtls: {}\n",
        ))
        .unwrap_err();
        assert!(
            e[0].message.contains("at least one port"),
            "{}",
            e[0].message
        );
        let e = load(&pa("  mtls: {mode: STRICT, extra: 1}\n")).unwrap_err();
        assert_eq!(e[0].field, "spec.mtls.extra", "{e:?}");
        assert_eq!(e[0].location.as_ref().unwrap().line, 5);
    }

    // ----- RequestAuthentication -----

    const RA_DOCS: &[&str] = &[
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: httpbin\n  namespace: foo\nspec:\n  selector:\n    matchLabels:\n      app: httpbin\n  jwtRules:\n  - issuer: \"issuer-foo\"\n    jwksUri: https://example.com/.well-known/jwks.json\n",
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: req-authn-for-all\n  namespace: istio-system\nspec:\n  jwtRules:\n  - issuer: \"issuer-foo\"\n  - issuer: \"issuer-bar\"\n",
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: httpbin\n  namespace: foo\nspec:\n  selector:\n    matchLabels:\n      app: httpbin\n  jwtRules:\n  - issuer: \"example.com\"\n    fromHeaders:\n    - name: x-jwt-assertion\n      prefix: \"Bearer \"\n    fromParams:\n    - \"my_token\"\n    fromCookies:\n    - \"auth-token\"\n    outputClaimToHeaders:\n    - header: \"x-jwt-claim-foo\"\n      claim: \"foo\"\n",
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: ingress\n  namespace: foo\nspec:\n  targetRef:\n    kind: Gateway\n    group: gateway.networking.k8s.io\n    name: istio-ingressgateway\n  jwtRules:\n  - issuer: \"example.com\"\n    jwksUri: \"https://example.com/.well-known/jwks.json\"\n",
        // Istio's own full example (pkg/config/validation testdata).
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: full\n  namespace: foo\nspec:\n  targetRefs:\n  - group: \"\"\n    kind: Service\n    name: foo\n  jwtRules:\n  - issuer: \"example.com\"\n    jwksUri: https://example.com/.well-known/jwks.json\n    forwardOriginalToken: true\n    fromCookies: [foo]\n    fromHeaders:\n      - name: foo\n        prefix: baz\n    outputClaimToHeaders:\n    - claim: abc\n      header: def\n    timeout: 5s\n    outputPayloadToHeader: header\n    spaceDelimitedClaims:\n    - \"custom_scope\"\n    - \"provider.login.scope\"\n    presence: REQUIRED\n",
    ];

    #[test]
    fn request_authentication_doc_examples_are_clean() {
        for doc in RA_DOCS {
            assert_clean(doc);
        }
        let r = load(RA_DOCS[4]).unwrap();
        let Object::RequestAuthentication(spec) = &r.object else {
            panic!()
        };
        let rule = &spec.jwt_rules[0];
        assert_eq!(rule.timeout.as_ref().unwrap().as_std().as_secs(), 5);
        assert_eq!(rule.presence(), JwtPresence::Required);
        assert_eq!(rule.forward_original_token, Some(true));
        // The legacy `jwks_uri` spelling is accepted.
        let r = load(&ra(
            "  jwtRules:\n  - issuer: a\n    jwks_uri: https://a.example/jwks\n",
        ))
        .unwrap();
        let Object::RequestAuthentication(spec) = &r.object else {
            panic!()
        };
        assert_eq!(
            spec.jwt_rules[0].jwks_uri.as_deref(),
            Some("https://a.example/jwks")
        );
    }

    #[test]
    fn request_authentication_rules() {
        assert_error(
            &ra("  jwtRules:\n  - jwksUri: https://example.com/jwks\n"),
            "spec.jwtRules[0].issuer",
            "required",
        );
        assert_error(
            &ra("  jwtRules:\n  - issuer: a\n    jwksUri: https://example.com/jwks\n    jwks: '{\"keys\":[{\"kty\":\"RSA\"}]}'\n"),
            "spec.jwtRules[0].jwksUri",
            "only one of jwks and jwksUri",
        );
        for bad in [
            "hTPp\\\\blah",
            "ftp://example.com/jwks",
            "https:///jwks",
            "https://example.com:99999/x",
        ] {
            assert_error(
                &ra(&format!(
                    "  jwtRules:\n  - issuer: a\n    jwksUri: \"{bad}\"\n"
                )),
                "spec.jwtRules[0].jwksUri",
                "invalid jwksUri",
            );
        }
        assert_error(
            &ra("  jwtRules:\n  - issuer: a\n    jwks: 'not json'\n"),
            "spec.jwtRules[0].jwks",
            "not valid JSON",
        );
        assert_error(
            &ra("  jwtRules:\n  - issuer: a\n    fromHeaders:\n    - prefix: baz\n"),
            "spec.jwtRules[0].fromHeaders[0].name",
            "required",
        );
        assert_error(
            &ra("  jwtRules:\n  - issuer: a\n    fromParams: [\"\"]\n    fromCookies: [x, \"\"]\n"),
            "spec.jwtRules[0].fromCookies[1]",
            "must not be empty",
        );
        assert_error(
            &ra("  jwtRules:\n  - issuer: a\n    outputClaimToHeaders:\n    - {claim: x, header: \":authority\"}\n"),
            "spec.jwtRules[0].outputClaimToHeaders[0].header",
            "pseudo-header",
        );
        assert_error(
            &ra("  jwtRules:\n  - issuer: a\n    outputClaimToHeaders:\n    - {claim: x, header: \"a b\"}\n"),
            "spec.jwtRules[0].outputClaimToHeaders[0].header",
            "letters, digits",
        );
        assert_error(
            &ra("  jwtRules:\n  - issuer: a\n    outputClaimToHeaders:\n    - {claim: \"\", header: h}\n"),
            "spec.jwtRules[0].outputClaimToHeaders[0].claim",
            "required",
        );
        assert_error(
            &ra("  jwtRules:\n  - issuer: a\n    audiences: [\"\"]\n"),
            "spec.jwtRules[0].audiences[0]",
            "empty",
        );
        assert_error(
            &ra("  jwtRules:\n  - issuer: a\n    timeout: 0s\n"),
            "spec.jwtRules[0].timeout",
            "too short",
        );
        assert_warning(
            &ra("  jwtRules:\n  - issuer: a\n  - issuer: b\n  - issuer: a\n"),
            "spec.jwtRules[2].issuer",
            "jwtRules[0]",
        );
        assert_error(
            &ra("  selector: {matchLabels: {a: b}}\n  targetRef: {group: \"\", kind: Service, name: foo}\n"),
            "spec.targetRef",
            "only one of selector, targetRef and targetRefs",
        );
        assert_error(
            &ra("  targetRefs:\n  - {group: \"\", kind: Service, name: foo}\n  targetRef: {group: \"\", kind: Service, name: foo}\n"),
            "spec.targetRefs",
            "only one of",
        );
        assert_error(
            &ra("  targetRef: {group: \"\", kind: Service, name: \"\"}\n"),
            "spec.targetRef.name",
            "required",
        );
        let e = load(&ra("  jwtRules:\n  - issuer: a\n    presence: MANDATORY\n")).unwrap_err();
        assert_eq!(e[0].field, "spec.jwtRules[0].presence");
    }

    // ----- AuthorizationPolicy -----

    const AP_DOCS: &[&str] = &[
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: httpbin\n  namespace: foo\nspec:\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/default/sa/sleep\"]\n    - source:\n        namespaces: [\"test\"]\n    to:\n    - operation:\n        methods: [\"GET\"]\n        paths: [\"/info*\"]\n    - operation:\n        methods: [\"POST\"]\n        paths: [\"/data\"]\n    when:\n    - key: request.auth.claims[iss]\n      values: [\"https://accounts.google.com\"]\n",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: httpbin\n  namespace: foo\nspec:\n  action: DENY\n  rules:\n  - from:\n    - source:\n        namespaces: [\"dev\"]\n    to:\n    - operation:\n        methods: [\"POST\"]\n        ports: [\"8080\"]\n",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  namespace: ns1\n  name: anyname\nspec:\n  selector:\n    matchLabels:\n      app: myapi\n  action: AUDIT\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n        paths: [\"/user/profile/*\"]\n",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-nothing\n  namespace: foo\nspec:\n  {}\n",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-all\n  namespace: foo\nspec:\n  rules:\n  - {}\n",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-nothing\n  namespace: istio-system\nspec:\n  selector:\n    matchLabels:\n      version: v1\n",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ext-authz\n  namespace: istio-system\nspec:\n  selector:\n    matchLabels:\n      app: istio-ingressgateway\n  action: CUSTOM\n  provider:\n    name: \"my-custom-authz\"\n  rules:\n  - to:\n    - operation:\n        paths: [\"/admin/*\"]\n",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: waypoint\n  namespace: foo\nspec:\n  targetRefs:\n  - kind: Gateway\n    group: gateway.networking.k8s.io\n    name: waypoint\n  rules:\n  - from:\n    - source:\n        serviceAccounts: [\"foo/sleep\", \"curl\"]\n    - source:\n        principals: [\"cluster.local/ns/bar/sa/curl\"]\n",
    ];

    #[test]
    fn authorization_policy_doc_examples_are_clean() {
        for doc in AP_DOCS {
            assert_clean(doc);
        }
        let r = load(AP_DOCS[3]).unwrap();
        let Object::AuthorizationPolicy(p) = &r.object else {
            panic!()
        };
        assert_eq!(p.action(), Action::Allow);
        assert!(p.rules.is_empty());
        let r = load(AP_DOCS[6]).unwrap();
        let Object::AuthorizationPolicy(p) = &r.object else {
            panic!()
        };
        assert_eq!(p.provider_name(), Some("my-custom-authz"));
    }

    /// Istio's validation testdata `authz-valid.yaml` (every field and condition key).
    const ISTIO_FULL: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: full
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  rules:
    - from:
        - source:
            principals: ["principal", "principal-prefix-*", "*-suffix-principal", "*"]
            requestPrincipals: ["requestPrincipals", "requestPrincipals-prefix-*", "*-suffix-requestPrincipals", "*"]
            namespaces: ["ns", "ns-prefix-*", "*-ns-suffix", "*"]
            ipBlocks: ["1.2.3.4", "5.6.0.0/16"]
            remoteIpBlocks: ["1.2.3.4", "5.6.0.0/16"]
            notPrincipals: ["not-principal", "not-principal-prefix-*", "*-not-suffix-principal", "*"]
            notRequestPrincipals: ["not-requestPrincipals", "not-requestPrincipals-prefix-*", "*-not-suffix-requestPrincipals", "*"]
            notNamespaces: ["not-ns", "not-ns-prefix-*", "*-not-ns-suffix", "*"]
            notIpBlocks: ["9.0.0.1", "9.2.0.0/16"]
            notRemoteIpBlocks: ["9.0.0.1", "9.2.0.0/16"]
      to:
        - operation:
            methods: ["GET", "PO*", "*T", "*"]
            hosts: ["exact.com", "*.suffix.com", "prefix.*", "*"]
            ports: ["80", "90"]
            paths: ["/exact", "/prefix/*", "*/suffix", "*", "/path/template/{*}", "/{**}/path/template"]
            notMethods: ["DELETE", "*"]
            notHosts: ["not-exact.com", "*.not-suffix.com", "not-prefix.*", "*"]
            notPorts: ["8000", "9000"]
            notPaths: ["/not-exact", "/not-prefix/*", "*/not-suffix", "*", "/not-path/template/{*}", "/{**}/not-path/template"]
      when:
        - key: "request.headers[X-header]"
          values: ["header", "header-prefix-*", "*-suffix-header", "*"]
          notValues: ["not-header", "not-header-prefix-*", "*-not-suffix-header", "*"]
        - key: "source.ip"
          values: ["10.10.10.10", "192.168.10.0/24"]
          notValues: ["90.10.10.10", "90.168.10.0/24"]
        - key: "remote.ip"
          values: ["10.10.10.10", "192.168.10.0/24"]
        - key: "source.namespace"
          values: ["ns", "ns-prefix-*", "*-ns-suffix", "*"]
        - key: "source.serviceAccount"
          values: ["ns/sa", "sa"]
        - key: "source.principal"
          values: ["principal", "principal-prefix-*", "*-suffix-principal", "*"]
        - key: "request.auth.principal"
          values: ["requestPrincipals", "*", "https://example.com/*"]
        - key: "request.auth.audiences"
          values: ["audiences", "audiences-prefix-*"]
        - key: "request.auth.presenter"
          values: ["presenter", "*-suffix-presenter"]
        - key: "request.auth.claims[iss]"
          values: ["iss", "iss-prefix-*", "*-suffix-iss", "*"]
        - key: "request.auth.claims[nested1][nested2]"
          values: ["nested"]
        - key: "destination.ip"
          values: ["10.10.10.10", "192.168.10.0/24"]
        - key: "destination.port"
          values: ["91", "92"]
          notValues: ["9001", "9002"]
        - key: "connection.sni"
          values: ["exact.com", "*.suffix.com", "prefix.*", "*"]
        - key: "experimental.envoy.filters.a.b[c]"
          values: ["exact", "prefix-*", "*-suffix", "*"]
"#;

    #[test]
    fn istio_full_example_is_clean() {
        assert_clean(ISTIO_FULL);
    }

    #[test]
    fn action_and_provider_rules() {
        assert_error(
            &ap("  action: CUSTOM\n  rules: [{}]\n"),
            "spec.provider",
            "required with action CUSTOM",
        );
        assert_error(
            &ap("  action: CUSTOM\n  provider: {name: \"\"}\n  rules: [{}]\n"),
            "spec.provider.name",
            "must not be empty",
        );
        assert_error(
            &ap("  action: CUSTOM\n  provider: {name: x}\n"),
            "spec.rules",
            "never triggered",
        );
        assert_error(
            &ap("  action: DENY\n  provider: {name: x}\n  rules: [{}]\n"),
            "spec.provider",
            "only allowed with action CUSTOM, found DENY",
        );
        assert_error(
            &ap("  provider: {name: x}\n"),
            "spec.provider",
            "found ALLOW",
        );
        assert_error(&ap("  action: DENY\n"), "spec.rules", "never triggered");
        assert_error(
            &ap("  action: CUSTOM\n  provider: {name: x}\n  rules:\n  - from:\n    - source: {principals: [a], ipBlocks: [1.2.3.4]}\n    when:\n    - key: request.auth.claims[iss]\n      values: [x]\n"),
            "spec.rules[0].from[0].source.principals",
            "not supported with action CUSTOM",
        );
        assert_error(
            &ap("  action: CUSTOM\n  provider: {name: x}\n  rules:\n  - when:\n    - key: source.ip\n      values: [1.2.3.4]\n    - key: request.auth.claims[iss]\n      values: [x]\n"),
            "spec.rules[0].when[1].key",
            "not supported with action CUSTOM",
        );
        let e = load(&ap("  action: allow\n")).unwrap_err();
        assert_eq!(e[0].field, "spec.action");
        assert!(e[0].message.contains("ALLOW"), "{}", e[0].message);
    }

    #[test]
    fn rule_structure() {
        assert_error(
            &ap("  rules:\n  - from:\n    - {}\n"),
            "spec.rules[0].from[0]",
            "needs a source",
        );
        assert_error(
            &ap("  rules:\n  - from:\n    - source: {}\n"),
            "spec.rules[0].from[0].source",
            "at least one field",
        );
        assert_error(
            &ap("  rules:\n  - to:\n    - {}\n"),
            "spec.rules[0].to[0]",
            "needs an operation",
        );
        assert_error(
            &ap("  rules:\n  - to:\n    - operation: {}\n"),
            "spec.rules[0].to[0].operation",
            "at least one field",
        );
        assert_error(
            &ap("  rules:\n  - from:\n    - source: {principals: [\"\"]}\n"),
            "spec.rules[0].from[0].source.principals[0]",
            "empty value",
        );
        let e = load(&ap("  rules:\n  - from:\n    - source: {principal: [a]}\n")).unwrap_err();
        assert_eq!(e[0].field, "spec.rules[0].from[0].source.principal");
        assert_eq!(e[0].location.as_ref().unwrap().line, 7);
    }

    #[test]
    fn source_rules() {
        let src = |body: &str| ap(&format!("  rules:\n  - from:\n    - source: {body}\n"));
        assert_error(
            &src("{serviceAccounts: [bar/sa], namespaces: [bar]}"),
            "spec.rules[0].from[0].source.serviceAccounts",
            "cannot set serviceAccounts",
        );
        assert_error(
            &src("{notServiceAccounts: [bar/sa], notPrincipals: [bar]}"),
            "spec.rules[0].from[0].source.notServiceAccounts",
            "cannot set serviceAccounts",
        );
        assert_error(
            &src("{serviceAccounts: [\"ns/*\"]}"),
            "spec.rules[0].from[0].source.serviceAccounts[0]",
            "wildcards",
        );
        assert_error(
            &src("{serviceAccounts: [\"a/b/c\"]}"),
            "spec.rules[0].from[0].source.serviceAccounts[0]",
            "namespace/name",
        );
        assert_error(
            &src("{serviceAccounts: [\"/b\"]}"),
            "spec.rules[0].from[0].source.serviceAccounts[0]",
            "namespace/name",
        );
        let many: Vec<String> = (0..17).map(|i| format!("ns/sa{i}")).collect();
        assert_error(
            &src(&format!("{{serviceAccounts: [{}]}}", many.join(", "))),
            "spec.rules[0].from[0].source.serviceAccounts",
            "at most 16",
        );
        assert_error(
            &src("{ipBlocks: [\"1.2.3.4/33\"]}"),
            "spec.rules[0].from[0].source.ipBlocks[0]",
            "invalid CIDR",
        );
        assert_error(
            &src("{notRemoteIpBlocks: [\"1.2.3\"]}"),
            "spec.rules[0].from[0].source.notRemoteIpBlocks[0]",
            "invalid IP",
        );
        assert_warning(
            &src("{principals: [\"cluster.local/ns/*/sa/x\"]}"),
            "spec.rules[0].from[0].source.principals[0]",
            "literal '*'",
        );
        assert_warning(
            &src("{namespaces: [\"*a*\"]}"),
            "spec.rules[0].from[0].source.namespaces[0]",
            "literal '*'",
        );
    }

    #[test]
    fn operation_rules() {
        let op = |body: &str| ap(&format!("  rules:\n  - to:\n    - operation: {body}\n"));
        let p = "spec.rules[0].to[0].operation";
        assert_error(
            &op("{ports: [http]}"),
            &format!("{p}.ports[0]"),
            "invalid port",
        );
        assert_error(
            &op("{notPorts: [\"65536\"]}"),
            &format!("{p}.notPorts[0]"),
            "invalid port",
        );
        assert_warning(
            &op("{ports: [\"0\"]}"),
            &format!("{p}.ports[0]"),
            "never matches",
        );
        assert_warning(
            &op("{methods: [get]}"),
            &format!("{p}.methods[0]"),
            "case-sensitive",
        );
        assert_warning(
            &op("{methods: [FETCH]}"),
            &format!("{p}.methods[0]"),
            "unknown HTTP method",
        );
        assert_warning(
            &op("{methods: [\"/pkg.Svc/Call\"]}"),
            &format!("{p}.methods[0]"),
            "gRPC",
        );
        assert_warning(
            &op("{paths: [\"/a/*/b\"]}"),
            &format!("{p}.paths[0]"),
            "path templates",
        );
        assert_warning(
            &op("{hosts: [\"a.*.com\"]}"),
            &format!("{p}.hosts[0]"),
            "literal '*'",
        );
        for (bad, needle) in [
            ("/{**}/a/{*}", "last operator"),
            ("/{**}/{**}", "last operator"),
            ("/a{*}/b", "whole segments"),
            ("/{name}/b/{*}", "whole segments"),
            ("/{*}/b*", "not a literal"),
            ("/*/{**}", "not a literal"),
        ] {
            assert_error(
                &op(&format!("{{paths: [\"{bad}\"]}}")),
                &format!("{p}.paths[0]"),
                needle,
            );
        }
        assert_error(
            &op("{notPaths: [\"/{*}/x{\"]}"),
            &format!("{p}.notPaths[0]"),
            "whole segments",
        );
        for good in [
            "/{*}",
            "/a/{*}/b/{**}",
            "/{**}",
            "/{**}/suffix",
            "/a/{*}.txt/x",
        ] {
            // `{*}.txt` has braces beyond a whole segment: Istio rejects it too.
            let errs = errors(&op(&format!("{{paths: [\"{good}\"]}}")));
            assert_eq!(errs.is_empty(), good != "/a/{*}.txt/x", "{good}: {errs:?}");
        }
    }

    #[test]
    fn condition_rules() {
        let when = |body: &str| ap(&format!("  rules:\n  - when:\n    - {body}\n"));
        let p = "spec.rules[0].when[0]";
        for (key, needle) in [
            ("request.headers", "request.headers[<name>]"),
            ("request.headers[]", "request.headers[<name>]"),
            ("request.auth.claims[a][]", "request.auth.claims"),
            (
                "experimental.envoy.filters.[x]",
                "experimental.envoy.filters",
            ),
            ("destination.namespace", "metadata.namespace"),
            ("destination.labels[app]", "workload selector"),
            ("destination.user", "deprecated"),
            ("source.user", "unknown attribute"),
            ("request.method", "unknown attribute"),
        ] {
            assert_error(
                &when(&format!("{{key: \"{key}\", values: [x]}}")),
                &format!("{p}.key"),
                needle,
            );
        }
        assert_error(
            &when("{values: [x]}"),
            &format!("{p}.key"),
            "key is required",
        );
        assert_error(
            &when("{key: source.ip}"),
            p,
            "at least one of values or notValues",
        );
        assert_error(
            &when("{key: source.ip, values: [\"300.1.1.1\"]}"),
            &format!("{p}.values[0]"),
            "invalid IP",
        );
        assert_error(
            &when("{key: destination.port, notValues: [\"x\"]}"),
            &format!("{p}.notValues[0]"),
            "invalid port",
        );
        assert_error(
            &when("{key: source.serviceAccount, values: [\"a/*\"]}"),
            &format!("{p}.values[0]"),
            "wildcards",
        );
        assert_error(
            &when("{key: connection.sni, values: [\"\"]}"),
            &format!("{p}.values[0]"),
            "empty value",
        );
        assert_warning(
            &when("{key: request.auth.principal, values: [\"a*b\"]}"),
            &format!("{p}.values[0]"),
            "literal '*'",
        );
        assert!(check_condition_key("request.experimental.inline.headers[x-a]").is_ok());
        assert_eq!(
            check_condition_key("request.auth.claims[a][b][c]"),
            Ok(ConditionKind::Text)
        );
    }

    #[test]
    fn deny_with_only_http_attributes_warns() {
        assert_warning(
            &ap("  action: DENY\n  rules:\n  - to:\n    - operation: {methods: [POST]}\n"),
            "spec.rules[0]",
            "TCP ports",
        );
        assert_warning(
            &ap(
                "  action: DENY\n  rules:\n  - from:\n    - source: {requestPrincipals: [\"*\"]}\n",
            ),
            "spec.rules[0]",
            "TCP ports",
        );
        // Ports or a TCP-capable source scope it: no warning.
        assert_clean(&ap("  action: DENY\n  rules:\n  - to:\n    - operation: {methods: [POST], ports: [\"80\"]}\n"));
        assert_clean(&ap(
            "  action: DENY\n  rules:\n  - from:\n    - source: {namespaces: [dev]}\n",
        ));
    }

    #[test]
    fn targeting_rules() {
        assert_error(
            &ap("  selector: {matchLabels: {a: b}}\n  targetRefs:\n  - {group: gateway.networking.k8s.io, kind: Gateway, name: gw}\n"),
            "spec.targetRefs",
            "only one of selector, targetRef and targetRefs",
        );
        assert_error(
            &ap("  targetRefs:\n  - {group: apps, kind: Deployment, name: d}\n"),
            "spec.targetRefs[0]",
            "not supported",
        );
        let refs: Vec<String> = (0..17)
            .map(|i| format!("  - {{group: \"\", kind: Service, name: s{i}}}\n"))
            .collect();
        assert_error(
            &ap(&format!("  targetRefs:\n{}", refs.concat())),
            "spec.targetRefs",
            "at most 16",
        );
    }

    #[test]
    fn round_trip_keeps_fields() {
        let r = load(ISTIO_FULL).unwrap();
        let Object::AuthorizationPolicy(p) = &r.object else {
            panic!()
        };
        let json = serde_json::to_value(&**p).unwrap();
        assert_eq!(json, r.raw["spec"]);
        let back: AuthorizationPolicy = serde_json::from_value(json).unwrap();
        assert_eq!(&back, &**p);
    }

    #[test]
    fn helpers() {
        assert!(check_jwks_uri("https://[::1]:8443/jwks").is_ok());
        assert!(check_jwks_uri("HTTP://example.com").is_ok());
        assert!(check_jwks_uri("https://example.com:/x").is_ok());
        assert!(check_jwks_uri("https://exa mple.com").is_err());
        assert!(check_ip_or_cidr("2001:db8::/32").is_ok());
        assert!(check_ip_or_cidr("10.0.0.1/8").is_ok());
        assert!(check_jwks("{\"keys\":[]}").is_err());
        assert!(wildcard_ok("abc") && wildcard_ok("*") && wildcard_ok("*a") && wildcard_ok("a*"));
        assert!(!wildcard_ok("a*b") && !wildcard_ok("**") && !wildcard_ok("*a*"));
    }
}

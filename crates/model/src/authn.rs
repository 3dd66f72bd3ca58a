//! End-user authentication (`RequestAuthentication`): which JWT rules apply to a workload, and
//! where its tokens are read from. Pure: the proxy's `security::jwt` verifies tokens with it,
//! `trellis explain` prints it.
//!
//! Semantics follow Istio:
//! - A policy applies to a workload when it is in the root namespace without a selector
//!   (mesh-wide), in the workload's namespace without a selector (namespace-wide), in either
//!   of those namespaces with a selector whose labels the workload carries, or (gateways of the
//!   Kubernetes Gateway API) when its `targetRef`/`targetRefs` name the workload's `Gateway`.
//!   A policy with target references never applies through its (absent) selector.
//! - The rules of every applicable policy are merged and ORed: a token passes when it is valid
//!   for any rule of its issuer. Policies are ordered oldest first (then namespace/name), rules
//!   keep their order; the first rule that verifies a token decides how it is forwarded.
//! - Token locations in Istio's order: `fromHeaders`, `fromParams`, `fromCookies`; when none is
//!   configured, `Authorization: Bearer <token>` then the `access_token` query parameter.
//! - `spaceDelimitedClaims` always includes Istio's defaults `scope` and `permission`.
//! - `jwks` wins over `jwksUri` when both are set (Istio ignores `jwksUri` then); a rule with
//!   neither discovers its key set from `<issuer>/.well-known/openid-configuration`, as istiod
//!   does.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use trellis_api::security::{JwtPresence, JwtRule as ApiJwtRule, RequestAuthentication};
use trellis_api::{Object, Resource};

/// Default JWKS fetch timeout (Istio's `jwtRules[].timeout` default).
pub const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// Claims Istio always treats as space-delimited lists.
pub const DEFAULT_SPACE_DELIMITED_CLAIMS: [&str; 2] = ["scope", "permission"];
/// The default header location: `Authorization: Bearer <token>`.
pub const DEFAULT_HEADER: &str = "authorization";
pub const DEFAULT_HEADER_PREFIX: &str = "Bearer ";
/// The default query parameter location.
pub const DEFAULT_PARAM: &str = "access_token";

/// Every JWT rule that applies to one workload.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct JwtPolicy {
    /// Applicable rules, policies oldest first, rules in order.
    pub rules: Vec<CompiledJwtRule>,
    /// Problems found while compiling (a rule or field skipped, and why).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One `jwtRules` entry, checked and with Istio's defaults applied.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompiledJwtRule {
    /// `namespace/name` of the RequestAuthentication.
    pub policy: String,
    /// Index in its `jwtRules`.
    pub index: usize,
    /// The `iss` a token must carry.
    pub issuer: String,
    /// Accepted `aud` values; empty means "the destination service" (see the proxy).
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    /// Where tokens for this rule are looked for, in order.
    pub locations: Vec<TokenLocation>,
    /// Keep the token on the request sent upstream (Istio's default: strip it).
    pub forward_original_token: bool,
    /// Header (lowercase) that receives the verified payload, base64url-encoded.
    pub output_payload_to_header: Option<String>,
    /// Claims copied into request headers (lowercase names).
    pub output_claim_to_headers: Vec<ClaimHeader>,
    /// Claims whose string value is split on spaces into a list (always with `scope` and
    /// `permission`).
    pub space_delimited_claims: Vec<String>,
    /// JWKS fetch timeout.
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    /// A missing token fails the request when `true` (`presence: REQUIRED`).
    pub required: bool,
}

/// Where a rule's keys come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum JwksSource {
    /// Inline JSON Web Key Set (`jwks`).
    Inline(String),
    /// URL of the key set (`jwksUri`).
    Uri(String),
    /// Neither set: OpenID discovery at `<issuer>/.well-known/openid-configuration`.
    Discovery(String),
}

/// Where a token may be found.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum TokenLocation {
    /// A request header (name lowercase); the value must start with `prefix` when one is set
    /// (compared ASCII case-insensitively, so `bearer ` matches `Bearer `).
    Header {
        name: String,
        prefix: Option<String>,
    },
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

/// `outputClaimToHeaders` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClaimHeader {
    /// Header name, lowercase.
    pub header: String,
    /// Claim name; `a.b` reads nested claim `b` of object claim `a` when there is no
    /// top-level claim named `a.b`.
    pub claim: String,
}

impl CompiledJwtRule {
    /// Every header this rule writes after verification (payload and claim headers): the proxy
    /// removes client-sent copies of them first.
    pub fn output_headers(&self) -> impl Iterator<Item = &str> {
        self.output_payload_to_header.as_deref().into_iter().chain(
            self.output_claim_to_headers
                .iter()
                .map(|c| c.header.as_str()),
        )
    }
}

impl JwtPolicy {
    /// The RequestAuthentication rules that apply to the workload in `workload_namespace`
    /// with `workload_labels`; `gateway_name` is the name of the Kubernetes Gateway API
    /// `Gateway` the workload implements, if any (for `targetRef(s)`).
    pub fn compile(
        resources: &[Resource],
        workload_namespace: &str,
        workload_labels: &BTreeMap<String, String>,
        root_namespace: &str,
        gateway_name: Option<&str>,
    ) -> JwtPolicy {
        let mut applicable: Vec<(&Resource, &RequestAuthentication)> = resources
            .iter()
            .filter_map(|r| match &r.object {
                Object::RequestAuthentication(ra) => Some((r, &**ra)),
                _ => None,
            })
            .filter(|(r, ra)| {
                applies(
                    r.ns(),
                    ra,
                    workload_namespace,
                    workload_labels,
                    root_namespace,
                    gateway_name,
                )
            })
            .collect();
        // Istio orders policies by creation time, then name; RFC 3339 strings sort by time.
        applicable.sort_by(|(a, _), (b, _)| {
            (
                a.creation_timestamp.is_none(),
                &a.creation_timestamp,
                a.ns(),
                &a.name,
            )
                .cmp(&(
                    b.creation_timestamp.is_none(),
                    &b.creation_timestamp,
                    b.ns(),
                    &b.name,
                ))
        });
        let mut policy = JwtPolicy::default();
        for (r, ra) in applicable {
            let key = r.key();
            for (index, rule) in ra.jwt_rules.iter().enumerate() {
                if let Some(c) = compile_rule(&key, index, rule, &mut policy.warnings) {
                    policy.rules.push(c);
                }
            }
        }
        policy
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every distinct token location of every rule, in rule order.
    pub fn locations(&self) -> Vec<&TokenLocation> {
        let mut out: Vec<&TokenLocation> = Vec::new();
        for l in self.rules.iter().flat_map(|r| &r.locations) {
            if !out.contains(&l) {
                out.push(l);
            }
        }
        out
    }
}

/// Does policy `ra` in namespace `policy_ns` apply to the workload?
fn applies(
    policy_ns: &str,
    ra: &RequestAuthentication,
    workload_namespace: &str,
    workload_labels: &BTreeMap<String, String>,
    root_namespace: &str,
    gateway_name: Option<&str>,
) -> bool {
    let refs: Vec<_> = ra.target_ref.iter().chain(&ra.target_refs).collect();
    if !refs.is_empty() {
        // Target references are local: they name a Gateway in the policy's own namespace.
        let Some(gw) = gateway_name else {
            return false;
        };
        return policy_ns == workload_namespace
            && refs.iter().any(|t| {
                t.kind == "Gateway"
                    && t.group == "gateway.networking.k8s.io"
                    && t.name == gw
                    && (t.namespace.is_empty() || t.namespace == policy_ns)
            });
    }
    if policy_ns != workload_namespace && policy_ns != root_namespace {
        return false;
    }
    ra.selector
        .as_ref()
        .is_none_or(|s| s.matches(workload_labels))
}

fn compile_rule(
    policy: &str,
    index: usize,
    rule: &ApiJwtRule,
    warnings: &mut Vec<String>,
) -> Option<CompiledJwtRule> {
    let at = format!("{policy} jwtRules[{index}]");
    if rule.issuer.is_empty() {
        warnings.push(format!("{at}: skipped: issuer is required"));
        return None;
    }
    let jwks = match (&rule.jwks, &rule.jwks_uri) {
        (Some(j), _) => JwksSource::Inline(j.clone()),
        (None, Some(u)) => JwksSource::Uri(u.clone()),
        (None, None) => JwksSource::Discovery(rule.issuer.clone()),
    };

    let mut locations = Vec::new();
    for h in &rule.from_headers {
        if is_header_name(&h.name) {
            push_unique(
                &mut locations,
                TokenLocation::Header {
                    name: h.name.to_ascii_lowercase(),
                    prefix: h.prefix.clone().filter(|p| !p.is_empty()),
                },
            );
        } else {
            warnings.push(format!(
                "{at}: fromHeaders {:?} skipped: not a valid header name",
                h.name
            ));
        }
    }
    for p in rule.from_params.iter().filter(|p| !p.is_empty()) {
        push_unique(&mut locations, TokenLocation::Param(p.clone()));
    }
    for c in rule.from_cookies.iter().filter(|c| !c.is_empty()) {
        push_unique(&mut locations, TokenLocation::Cookie(c.clone()));
    }
    if rule.from_headers.is_empty() && rule.from_params.is_empty() && rule.from_cookies.is_empty() {
        locations = default_locations();
    }
    if locations.is_empty() {
        warnings.push(format!("{at}: skipped: no valid token location"));
        return None;
    }

    let output_payload_to_header = match rule.output_payload_to_header.as_deref() {
        None | Some("") => None,
        Some(h) if is_header_name(h) && !h.starts_with(':') => Some(h.to_ascii_lowercase()),
        Some(h) => {
            warnings.push(format!(
                "{at}: outputPayloadToHeader {h:?} ignored: not a valid header name"
            ));
            None
        }
    };
    let mut output_claim_to_headers = Vec::new();
    for c in &rule.output_claim_to_headers {
        if !is_header_name(&c.header) || c.claim.is_empty() {
            warnings.push(format!(
                "{at}: outputClaimToHeaders {:?} <- {:?} ignored: invalid header name or empty claim",
                c.header, c.claim
            ));
            continue;
        }
        output_claim_to_headers.push(ClaimHeader {
            header: c.header.to_ascii_lowercase(),
            claim: c.claim.clone(),
        });
    }

    let mut space_delimited_claims: Vec<String> = DEFAULT_SPACE_DELIMITED_CLAIMS
        .iter()
        .map(|s| s.to_string())
        .collect();
    for c in &rule.space_delimited_claims {
        if !c.is_empty() && !space_delimited_claims.contains(c) {
            space_delimited_claims.push(c.clone());
        }
    }

    Some(CompiledJwtRule {
        policy: policy.to_string(),
        index,
        issuer: rule.issuer.clone(),
        audiences: rule
            .audiences
            .iter()
            .filter(|a| !a.is_empty())
            .cloned()
            .collect(),
        jwks,
        locations,
        forward_original_token: rule.forward_original_token.unwrap_or(false),
        output_payload_to_header,
        output_claim_to_headers,
        space_delimited_claims,
        timeout: rule
            .timeout
            .as_ref()
            .map(|d| d.as_std())
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_JWKS_TIMEOUT),
        required: rule.presence() == JwtPresence::Required,
    })
}

/// `Authorization: Bearer <token>`, then `?access_token=<token>`.
pub fn default_locations() -> Vec<TokenLocation> {
    vec![
        TokenLocation::Header {
            name: DEFAULT_HEADER.to_string(),
            prefix: Some(DEFAULT_HEADER_PREFIX.to_string()),
        },
        TokenLocation::Param(DEFAULT_PARAM.to_string()),
    ]
}

fn push_unique(v: &mut Vec<TokenLocation>, l: TokenLocation) {
    if !v.contains(&l) {
        v.push(l);
    }
}

/// RFC 9110 field-name (`token`) characters.
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

mod duration_ms {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_api::load::{LoadOptions, ResourceSet};

    fn load(yaml: &str) -> Vec<Resource> {
        let set = load_set(yaml);
        let errors: Vec<_> = set.diagnostics.iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        set.resources
    }

    /// Resources that load but fail validation still compile (the analyzer reports them).
    fn load_set(yaml: &str) -> ResourceSet {
        let mut set = ResourceSet::default();
        set.add_text("test.yaml", yaml, &LoadOptions::default());
        set
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ra(ns: &str, name: &str, body: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{body}---\n"
        )
    }

    fn issuers(p: &JwtPolicy) -> Vec<&str> {
        p.rules.iter().map(|r| r.issuer.as_str()).collect()
    }

    const JWKS: &str = r#"'{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"OgGE5VQLPSGGo8yL4jlvlCNhv1aXarGRoYj0XSKszBA","y":"n3hVp-W-FwdNcLWmNcZP_PVJnjhDcnaShd2cyTp2o-c"}]}'"#;

    fn scoping_fixture() -> Vec<Resource> {
        let yaml = [
            ra(
                "istio-system",
                "mesh",
                "  jwtRules:\n  - issuer: mesh\n    jwksUri: https://mesh/jwks\n",
            ),
            ra(
                "istio-system",
                "root-selected",
                "  selector: {matchLabels: {app: web}}\n  jwtRules:\n  - issuer: root-web\n    jwksUri: https://r/jwks\n",
            ),
            ra(
                "foo",
                "ns",
                "  jwtRules:\n  - issuer: foo-ns\n    jwksUri: https://foo/jwks\n",
            ),
            ra(
                "foo",
                "web",
                "  selector: {matchLabels: {app: web}}\n  jwtRules:\n  - issuer: foo-web\n    jwksUri: https://foo/jwks\n",
            ),
            ra(
                "bar",
                "other-ns",
                "  jwtRules:\n  - issuer: bar\n    jwksUri: https://bar/jwks\n",
            ),
            ra(
                "foo",
                "gw",
                "  targetRefs:\n  - {group: gateway.networking.k8s.io, kind: Gateway, name: edge}\n  jwtRules:\n  - issuer: gw\n    jwksUri: https://gw/jwks\n",
            ),
        ]
        .concat();
        load(&yaml)
    }

    #[test]
    fn scoping_mesh_namespace_selector_and_target_ref() {
        let rs = scoping_fixture();
        let web = labels(&[("app", "web")]);
        let api = labels(&[("app", "api")]);

        let p = JwtPolicy::compile(&rs, "foo", &web, "istio-system", None);
        let mut got = issuers(&p);
        got.sort();
        assert_eq!(got, ["foo-ns", "foo-web", "mesh", "root-web"]);

        let p = JwtPolicy::compile(&rs, "foo", &api, "istio-system", None);
        let mut got = issuers(&p);
        got.sort();
        assert_eq!(got, ["foo-ns", "mesh"]);

        let p = JwtPolicy::compile(&rs, "foo", &api, "istio-system", Some("edge"));
        let mut got = issuers(&p);
        got.sort();
        assert_eq!(got, ["foo-ns", "gw", "mesh"]);

        // A Gateway of the same name in another namespace is not targeted.
        let p = JwtPolicy::compile(&rs, "bar", &api, "istio-system", Some("edge"));
        let mut got = issuers(&p);
        got.sort();
        assert_eq!(got, ["bar", "mesh"]);

        // In the root namespace itself, root policies count once.
        let p = JwtPolicy::compile(&rs, "istio-system", &web, "istio-system", None);
        let mut got = issuers(&p);
        got.sort();
        assert_eq!(got, ["mesh", "root-web"]);
    }

    #[test]
    fn ordering_oldest_first_then_name() {
        let yaml = format!(
            "{}{}",
            ra("foo", "b-new", "  jwtRules:\n  - issuer: new\n    jwksUri: https://x/j\n")
                .replace("namespace: foo", "namespace: foo\n  creationTimestamp: \"2024-02-01T00:00:00Z\""),
            ra("foo", "a-old", "  jwtRules:\n  - issuer: old\n    jwksUri: https://x/j\n  - issuer: old2\n    jwksUri: https://x/j\n")
                .replace("namespace: foo", "namespace: foo\n  creationTimestamp: \"2023-02-01T00:00:00Z\""),
        );
        let rs = load(&yaml);
        let p = JwtPolicy::compile(&rs, "foo", &BTreeMap::new(), "istio-system", None);
        assert_eq!(issuers(&p), ["old", "old2", "new"]);
        assert_eq!(p.rules[1].policy, "foo/a-old");
        assert_eq!(p.rules[1].index, 1);
    }

    #[test]
    fn defaults() {
        let rs = load(&ra("foo", "d", "  jwtRules:\n  - issuer: https://issuer\n"));
        let p = JwtPolicy::compile(&rs, "foo", &BTreeMap::new(), "istio-system", None);
        let r = &p.rules[0];
        assert_eq!(r.locations, default_locations());
        assert_eq!(
            r.locations[0],
            TokenLocation::Header {
                name: "authorization".into(),
                prefix: Some("Bearer ".into())
            }
        );
        assert_eq!(r.locations[1], TokenLocation::Param("access_token".into()));
        assert!(!r.forward_original_token);
        assert_eq!(r.jwks, JwksSource::Discovery("https://issuer".into()));
        assert_eq!(r.timeout, DEFAULT_JWKS_TIMEOUT);
        assert_eq!(r.space_delimited_claims, ["scope", "permission"]);
        assert!(r.audiences.is_empty());
        assert!(!r.required);
        assert_eq!(r.output_headers().count(), 0);
    }

    #[test]
    fn explicit_locations_replace_defaults_in_istio_order() {
        let rs = load(&ra(
            "foo",
            "l",
            "  jwtRules:\n  - issuer: i\n    jwksUri: https://i/jwks\n    fromCookies: [session]\n    fromParams: [tok]\n    fromHeaders:\n    - name: X-Jwt-Assertion\n    - name: Authorization\n      prefix: \"Bearer \"\n",
        ));
        let p = JwtPolicy::compile(&rs, "foo", &BTreeMap::new(), "istio-system", None);
        assert_eq!(
            p.rules[0].locations,
            [
                TokenLocation::Header {
                    name: "x-jwt-assertion".into(),
                    prefix: None
                },
                TokenLocation::Header {
                    name: "authorization".into(),
                    prefix: Some("Bearer ".into())
                },
                TokenLocation::Param("tok".into()),
                TokenLocation::Cookie("session".into()),
            ]
        );
        // Only cookies configured: no default header or param.
        let rs = load(&ra(
            "foo",
            "c",
            "  jwtRules:\n  - issuer: i\n    jwksUri: https://i/jwks\n    fromCookies: [session]\n",
        ));
        let p = JwtPolicy::compile(&rs, "foo", &BTreeMap::new(), "istio-system", None);
        assert_eq!(
            p.rules[0].locations,
            [TokenLocation::Cookie("session".into())]
        );
    }

    #[test]
    fn outputs_forwarding_claims_timeout_and_jwks() {
        let body = format!(
            "  jwtRules:\n  - issuer: i\n    jwks: {JWKS}\n    jwksUri: https://ignored/jwks\n    audiences: [a1, a2]\n    forwardOriginalToken: true\n    outputPayloadToHeader: X-Jwt-Payload\n    outputClaimToHeaders:\n    - header: X-Sub\n      claim: sub\n    - header: x-org\n      claim: org.id\n    spaceDelimitedClaims: [roles, scope]\n    timeout: 1.5s\n"
        );
        // Both jwks and jwksUri: a validation error, and jwks wins as in Istio.
        let rs = load_set(&ra("foo", "o", &body)).resources;
        let p = JwtPolicy::compile(&rs, "foo", &BTreeMap::new(), "istio-system", None);
        let r = &p.rules[0];
        assert!(matches!(&r.jwks, JwksSource::Inline(j) if j.contains("\"keys\"")));
        assert_eq!(r.audiences, ["a1", "a2"]);
        assert!(r.forward_original_token);
        assert_eq!(r.output_payload_to_header.as_deref(), Some("x-jwt-payload"));
        assert_eq!(
            r.output_claim_to_headers,
            [
                ClaimHeader {
                    header: "x-sub".into(),
                    claim: "sub".into()
                },
                ClaimHeader {
                    header: "x-org".into(),
                    claim: "org.id".into()
                }
            ]
        );
        assert_eq!(
            r.output_headers().collect::<Vec<_>>(),
            ["x-jwt-payload", "x-sub", "x-org"]
        );
        assert_eq!(r.space_delimited_claims, ["scope", "permission", "roles"]);
        assert_eq!(r.timeout, Duration::from_millis(1500));
    }

    #[test]
    fn merged_locations_and_presence() {
        let yaml = [
            ra("foo", "a", "  jwtRules:\n  - issuer: a\n    jwksUri: https://a/j\n"),
            ra("foo", "b", "  jwtRules:\n  - issuer: b\n    jwksUri: https://b/j\n    presence: REQUIRED\n    fromParams: [access_token, t]\n"),
        ]
        .concat();
        let rs = load(&yaml);
        let p = JwtPolicy::compile(&rs, "foo", &BTreeMap::new(), "istio-system", None);
        assert_eq!(
            p.locations(),
            [
                &default_locations()[0],
                &TokenLocation::Param("access_token".into()),
                &TokenLocation::Param("t".into())
            ]
        );
        assert!(!p.rules[0].required && p.rules[1].required);
    }

    #[test]
    fn no_policy_means_empty() {
        let p = JwtPolicy::compile(&[], "foo", &BTreeMap::new(), "istio-system", None);
        assert!(p.is_empty());
        assert!(p.locations().is_empty());
    }
}

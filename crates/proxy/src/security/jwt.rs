//! JWT verification for `RequestAuthentication` (Envoy's `jwt_authn` as Istio configures it).
//!
//! One `JwtAuthenticator` is built per compiled `JwtPolicy` (per config snapshot) and called
//! once per request, after path normalization and before authorization:
//!
//! 1. Client-sent copies of every output header (`outputPayloadToHeader`,
//!    `outputClaimToHeaders`) are removed, whatever the outcome, so they cannot be spoofed.
//! 2. Tokens are looked for in every configured location (headers, query parameters,
//!    cookies). A header prefix (`Bearer `) matches in any case, its trailing space standing
//!    for any run of SP/HTAB, so `Bearer<TAB>token` is a token presented and verified.
//!    None found: `NoToken` (passes; authorization decides), unless a rule says
//!    `presence: REQUIRED` (401 `Jwt is missing`).
//! 3. Every token found must verify against some rule of its (unverified) `iss` that reads
//!    that location; one invalid token fails the request (401), as Envoy.
//! 4. On success the token is stripped from where it was found unless the rule says
//!    `forwardOriginalToken`, and the output headers are written.
//!
//! Verification never lets the token choose how it is checked: the algorithm must be one the
//! JWK supports (RSA: RS*/PS*; EC P-256: ES256; P-384: ES384; Ed25519: EdDSA; narrowed by the
//! JWK's own `alg`); `none` and HMAC are refused outright; header parameters that point at
//! keys (`jwk`, `jku`, `x5u`, `x5c`) and `crit` are refused. Claims are checked by this module
//! rather than by `jsonwebtoken::Validation`, to get Envoy's semantics exactly: `iss` must
//! equal the rule's issuer; `exp` optional, `exp` and `nbf` checked with a 60 s skew; `aud`
//! (string or list) must contain one of the rule's audiences. A rule without audiences
//! accepts tokens without `aud`, or whose `aud` names a destination host the caller passes
//! (Istio: "the service name will be accepted"; Envoy as Istio configures it does not check
//! `aud` at all then: `EmptyAudiences::Any` restores that).
//!
//! Cost: a token verified once is remembered (by its exact text, bounded, sharded) together
//! with the key set that verified it; later requests with it skip the signature check (about
//! 0.8 µs per request in release instead of 40-80 µs) but still get the location, time and
//! audience checks, and a key-set refresh invalidates the entry. A request may carry at most
//! 8 distinct tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use http::header::{HeaderName, HeaderValue, COOKIE};
use http::{HeaderMap, StatusCode, Uri};
use jsonwebtoken::Algorithm;
use serde::Serialize;
use serde_json::{Map, Value};
use trellis_model::authn::{CompiledJwtRule, JwksSource, JwtPolicy, TokenLocation};

use super::jwks::{supported_alg, JwksCache, JwksError, KeySet, KeySource};

/// Longest token considered (bytes); longer ones are malformed.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Most distinct tokens one request may carry; more is refused (each costs a signature check).
const MAX_TOKENS: usize = 8;
/// Verified tokens remembered per authenticator (16 shards), and the longest one cached.
const CACHE_SHARDS: usize = 16;
const CACHE_PER_SHARD: usize = 64;
const MAX_CACHED_TOKEN_LEN: usize = 4096;
/// Longest value written to a claim header.
const MAX_CLAIM_HEADER_LEN: usize = 8 * 1024;
/// Header parameters that would let a token name its own key, or demand extensions we do not
/// implement: a token carrying any of them is refused.
const FORBIDDEN_HEADER_PARAMS: [&str; 5] = ["jwk", "jku", "x5u", "x5c", "crit"];

/// base64url, padding optional (Envoy accepts both).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What a rule without `audiences` accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum EmptyAudiences {
    /// Tokens without `aud`, or whose `aud` contains one of the destination hosts passed to
    /// `authenticate` (Istio's documented behaviour).
    #[default]
    DestinationHosts,
    /// Any `aud` (what Envoy does when Istio leaves `audiences` empty).
    Any,
}

/// Verification knobs (defaults are Envoy's).
#[derive(Clone, Debug, Serialize)]
pub struct AuthnOptions {
    /// Allowed clock skew for `exp` and `nbf` (Envoy: 60 s).
    pub clock_skew: Duration,
    pub empty_audiences: EmptyAudiences,
}

impl Default for AuthnOptions {
    fn default() -> Self {
        AuthnOptions {
            clock_skew: Duration::from_secs(60),
            empty_audiences: EmptyAudiences::default(),
        }
    }
}

/// The result of authenticating one request.
#[derive(Debug)]
pub enum AuthnOutcome {
    /// No token in any location (and none required): the request goes on with no request
    /// principal; authorization decides.
    NoToken,
    /// Every token found is valid; the identity is the first token's (location order).
    Authenticated(Arc<JwtIdentity>),
    /// Answer 401 (see `AuthnFailure`).
    Invalid(Box<AuthnFailure>),
}

/// Who a valid token says the caller is: what authorization's `requestPrincipals` and
/// `request.auth.*` conditions match on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JwtIdentity {
    /// `<iss>/<sub>`, Istio's request principal; `None` when the token has no `sub`.
    pub principal: Option<String>,
    pub issuer: String,
    pub subject: Option<String>,
    /// `aud` as a list (a string `aud` is one entry).
    pub audiences: Vec<String>,
    /// `azp`, the authorized presenter.
    pub presenter: Option<String>,
    /// Every claim, with the rule's space-delimited claims split into lists.
    pub claims: Value,
    /// The RequestAuthentication (`namespace/name`) and `jwtRules` index that verified it.
    pub policy: String,
    pub rule_index: usize,
}

impl JwtIdentity {
    /// A claim by name; `a.b` reads nested claim `b` of object `a` when no top-level claim is
    /// named `a.b`.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        lookup_claim(&self.claims, name)
    }
}

/// Why a request failed authentication. Answer with `status()`, `body()` and a
/// `www-authenticate` header from `www_authenticate(realm)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuthnFailure {
    pub kind: FailureKind,
    /// Specifics for logs (never sent to the client).
    pub detail: String,
    /// The token's `iss`, when it could be read.
    pub issuer: Option<String>,
    /// The rule that rejected the token (`namespace/name`, `jwtRules` index), when one did.
    pub rule: Option<(String, usize)>,
}

/// Failure classes, each with Envoy's `jwt_authn` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FailureKind {
    Missing,
    BadFormat,
    BadHeader,
    UnsupportedAlgorithm,
    ForbiddenHeaderParameter,
    BadPayload,
    UnknownIssuer,
    AudienceNotAllowed,
    Expired,
    NotYetValid,
    KeyNotFound,
    JwksFetchFailed,
    JwksNoValidKeys,
    VerificationFailed,
}

impl FailureKind {
    /// Envoy's text for this failure: the 401 body.
    pub fn message(self) -> &'static str {
        match self {
            FailureKind::Missing => "Jwt is missing",
            FailureKind::BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            FailureKind::BadHeader => "Jwt header is an invalid JSON",
            FailureKind::UnsupportedAlgorithm => "Jwt header [alg] is not supported",
            FailureKind::ForbiddenHeaderParameter => "Jwt verification fails",
            FailureKind::BadPayload => "Jwt payload is an invalid JSON",
            FailureKind::UnknownIssuer => "Jwt issuer is not configured",
            FailureKind::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            FailureKind::Expired => "Jwt is expired",
            FailureKind::NotYetValid => "Jwt not yet valid",
            FailureKind::KeyNotFound => "Jwks doesn't have key to match kid or alg from Jwt",
            FailureKind::JwksFetchFailed => "Jwks remote fetch is failed",
            FailureKind::JwksNoValidKeys => "Jwks doesn't have any valid public key",
            FailureKind::VerificationFailed => "Jwt verification fails",
        }
    }
}

impl AuthnFailure {
    fn new(kind: FailureKind, detail: impl Into<String>) -> AuthnFailure {
        AuthnFailure {
            kind,
            detail: detail.into(),
            issuer: None,
            rule: None,
        }
    }

    /// Always 401 Unauthorized.
    pub fn status(&self) -> StatusCode {
        StatusCode::UNAUTHORIZED
    }

    /// Envoy's message for the failure (`Jwt verification fails`, `Jwt is expired`, ...).
    pub fn body(&self) -> &'static str {
        self.kind.message()
    }

    /// `Bearer realm="<realm>", error="invalid_token"` (no `error` for a missing token), as
    /// Envoy. Quotes, backslashes and control characters are dropped from `realm`.
    pub fn www_authenticate(&self, realm: &str) -> HeaderValue {
        let realm: String = realm
            .chars()
            .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
            .collect();
        let v = if self.kind == FailureKind::Missing {
            format!("Bearer realm=\"{realm}\"")
        } else {
            format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")
        };
        HeaderValue::from_str(&v)
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""))
    }
}

/// The realm Envoy puts in `www-authenticate`: the request URL without its query.
pub fn realm(scheme: &str, authority: &str, path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    format!("{scheme}://{authority}{path}")
}

// ---------------------------------------------------------------------------------------------
// The authenticator
// ---------------------------------------------------------------------------------------------

/// Verifies the tokens of requests against one workload's `JwtPolicy`. Immutable; share it in
/// the config snapshot (`Arc`).
#[derive(Debug)]
pub struct JwtAuthenticator {
    rules: Vec<Rule>,
    locations: Vec<Location>,
    /// Every output header of every rule: removed from each request first.
    output_headers: Vec<HeaderName>,
    required: bool,
    options: AuthnOptions,
    warnings: Vec<String>,
    cache: VerifiedCache,
}

#[derive(Debug)]
struct Rule {
    cfg: CompiledJwtRule,
    keys: RuleKeys,
    payload_header: Option<HeaderName>,
    claim_headers: Vec<(HeaderName, String)>,
}

#[derive(Debug)]
enum RuleKeys {
    Inline(Result<Arc<KeySet>, JwksError>),
    Remote(Arc<KeySource>),
}

#[derive(Debug)]
struct Location {
    spec: TokenLocation,
    /// The header, for header locations.
    header: Option<HeaderName>,
    /// Indices of the rules that read tokens here.
    rules: Vec<usize>,
}

/// One distinct token and the locations it was found in.
struct Found {
    token: String,
    at: Vec<usize>,
}

impl JwtAuthenticator {
    /// Builds the authenticator for `policy`, with default options. Remote key sets come from
    /// (and are shared through) `cache`; call inside a tokio runtime so they start fetching
    /// at once. Inline key sets are parsed here, once.
    pub fn new(policy: &JwtPolicy, cache: &JwksCache) -> JwtAuthenticator {
        JwtAuthenticator::with_options(policy, cache, AuthnOptions::default())
    }

    pub fn with_options(
        policy: &JwtPolicy,
        cache: &JwksCache,
        options: AuthnOptions,
    ) -> JwtAuthenticator {
        let mut warnings = policy.warnings.clone();
        let mut rules = Vec::with_capacity(policy.rules.len());
        let mut locations: Vec<Location> = Vec::new();
        let mut output_headers: Vec<HeaderName> = Vec::new();
        for (i, cfg) in policy.rules.iter().enumerate() {
            let at = format!("{} jwtRules[{}]", cfg.policy, cfg.index);
            let keys = match &cfg.jwks {
                JwksSource::Inline(json) => {
                    let parsed = KeySet::parse(json.as_bytes()).map(Arc::new);
                    if let Err(e) = &parsed {
                        warnings.push(format!(
                            "{at}: inline jwks unusable, its tokens are rejected: {e}"
                        ));
                    }
                    RuleKeys::Inline(parsed)
                }
                JwksSource::Uri(uri) => RuleKeys::Remote(cache.remote(uri, cfg.timeout)),
                JwksSource::Discovery(issuer) => {
                    RuleKeys::Remote(cache.discovered(issuer, cfg.timeout))
                }
            };
            for spec in &cfg.locations {
                match locations.iter_mut().find(|l| &l.spec == spec) {
                    Some(l) => l.rules.push(i),
                    None => {
                        let header = match spec {
                            TokenLocation::Header { name, .. } => {
                                match HeaderName::from_bytes(name.as_bytes()) {
                                    Ok(h) => Some(h),
                                    Err(_) => {
                                        warnings.push(format!("{at}: header {name:?} skipped"));
                                        continue;
                                    }
                                }
                            }
                            _ => None,
                        };
                        locations.push(Location {
                            spec: spec.clone(),
                            header,
                            rules: vec![i],
                        });
                    }
                }
            }
            let mut header = |name: &str| match HeaderName::from_bytes(name.as_bytes()) {
                Ok(h) if !is_reserved_output(&h) => {
                    if !output_headers.contains(&h) {
                        output_headers.push(h.clone());
                    }
                    Some(h)
                }
                _ => {
                    warnings.push(format!("{at}: output header {name:?} ignored"));
                    None
                }
            };
            let payload_header = cfg
                .output_payload_to_header
                .as_deref()
                .and_then(&mut header);
            let claim_headers = cfg
                .output_claim_to_headers
                .iter()
                .filter_map(|c| header(&c.header).map(|h| (h, c.claim.clone())))
                .collect();
            rules.push(Rule {
                cfg: cfg.clone(),
                keys,
                payload_header,
                claim_headers,
            });
        }
        JwtAuthenticator {
            required: policy.rules.iter().any(|r| r.required),
            rules,
            locations,
            output_headers,
            options,
            warnings,
            cache: VerifiedCache::default(),
        }
    }

    /// True when no rule applies: every request passes with `NoToken`.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Problems found building the authenticator (compile warnings, unusable inline keys).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Authenticates a request given as `http::request::Parts`.
    pub async fn authenticate_parts(
        &self,
        parts: &mut http::request::Parts,
        destination_hosts: &[&str],
    ) -> AuthnOutcome {
        self.authenticate(&mut parts.headers, &mut parts.uri, destination_hosts)
            .await
    }

    /// Authenticates one request: reads tokens from `headers` and `uri` (query), verifies them
    /// and, on success, strips them (unless forwarded) and writes the output headers.
    /// `destination_hosts` are the names of the service the request is for, accepted as `aud`
    /// by rules without `audiences`.
    pub async fn authenticate(
        &self,
        headers: &mut HeaderMap,
        uri: &mut Uri,
        destination_hosts: &[&str],
    ) -> AuthnOutcome {
        for h in &self.output_headers {
            headers.remove(h);
        }
        if self.rules.is_empty() {
            return AuthnOutcome::NoToken;
        }
        let found = self.extract(headers, uri);
        if found.is_empty() {
            if self.required {
                return AuthnOutcome::Invalid(Box::new(AuthnFailure::new(
                    FailureKind::Missing,
                    "no token in any configured location and a rule requires one",
                )));
            }
            return AuthnOutcome::NoToken;
        }

        if found.len() > MAX_TOKENS {
            return AuthnOutcome::Invalid(Box::new(AuthnFailure::new(
                FailureKind::BadFormat,
                format!(
                    "{} distinct tokens in one request (at most {MAX_TOKENS})",
                    found.len()
                ),
            )));
        }

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let mut verified: Vec<(&Found, usize, Arc<JwtIdentity>)> = Vec::with_capacity(found.len());
        for f in &found {
            match self.verify_token(f, destination_hosts, now).await {
                Ok((rule, id)) => verified.push((f, rule, id)),
                Err(e) => {
                    tracing::debug!(kind = ?e.kind, detail = %e.detail, issuer = ?e.issuer,
                        "JWT rejected");
                    return AuthnOutcome::Invalid(Box::new(e));
                }
            }
        }

        // Every token is valid: strip and write outputs, then report the first identity.
        let mut identity = None;
        for (f, rule_idx, id) in verified {
            let rule = &self.rules[rule_idx];
            if let Some(h) = &rule.payload_header {
                let payload = f.token.split('.').nth(1).unwrap_or("");
                if !headers.contains_key(h) {
                    if let Ok(v) = HeaderValue::from_str(payload) {
                        headers.insert(h.clone(), v);
                    }
                }
            }
            for (h, claim) in &rule.claim_headers {
                if headers.contains_key(h) {
                    continue;
                }
                if let Some(v) = lookup_claim(&id.claims, claim).and_then(claim_header_value) {
                    headers.insert(h.clone(), v);
                }
            }
            if !rule.cfg.forward_original_token {
                for &l in &f.at {
                    self.strip(l, &f.token, headers, uri);
                }
            }
            identity.get_or_insert(id);
        }
        match identity {
            Some(id) => AuthnOutcome::Authenticated(id),
            None => AuthnOutcome::NoToken,
        }
    }

    /// Every distinct token in every location, in location order.
    fn extract(&self, headers: &HeaderMap, uri: &Uri) -> Vec<Found> {
        let mut found: Vec<Found> = Vec::new();
        let mut add = |token: &str, at: usize| {
            if token.is_empty() {
                return;
            }
            match found.iter_mut().find(|f| f.token == token) {
                Some(f) => {
                    if !f.at.contains(&at) {
                        f.at.push(at)
                    }
                }
                None => found.push(Found {
                    token: token.to_string(),
                    at: vec![at],
                }),
            }
        };
        for (i, loc) in self.locations.iter().enumerate() {
            match &loc.spec {
                TokenLocation::Header { prefix, .. } => {
                    let Some(name) = &loc.header else { continue };
                    for v in headers.get_all(name) {
                        let Ok(v) = v.to_str() else { continue };
                        let token = match prefix {
                            None => Some(v),
                            Some(p) => strip_token_prefix(v, p),
                        };
                        if let Some(t) = token {
                            add(t.trim(), i);
                        }
                    }
                }
                TokenLocation::Param(param) => {
                    for (name, value) in query_pairs(uri.query()) {
                        if name == *param {
                            add(value.trim(), i);
                        }
                    }
                }
                TokenLocation::Cookie(cookie) => {
                    for v in headers.get_all(COOKIE) {
                        let Ok(v) = v.to_str() else { continue };
                        for (name, value) in cookie_pairs(v) {
                            if name == cookie {
                                add(value, i);
                            }
                        }
                    }
                }
            }
        }
        found
    }

    /// Verifies one token against the rules of its issuer that read one of its locations.
    /// Returns the index of the first rule that accepts it, and the identity.
    async fn verify_token(
        &self,
        f: &Found,
        hosts: &[&str],
        now: f64,
    ) -> Result<(usize, Arc<JwtIdentity>), AuthnFailure> {
        let reads = |i: usize| f.at.iter().any(|&l| self.locations[l].rules.contains(&i));
        // A token verified before, with the key set still current: only the time and audience
        // checks depend on the request.
        if let Some(hit) = self.cache.get(&f.token) {
            let rule = &self.rules[hit.rule];
            let keys_current = rule
                .current_keys()
                .is_some_and(|k| Arc::ptr_eq(&k, &hit.keys));
            if keys_current
                && reads(hit.rule)
                && rule
                    .check_claims(
                        &hit.times,
                        &hit.identity.audiences,
                        hosts,
                        now,
                        &self.options,
                    )
                    .is_ok()
            {
                return Ok((hit.rule, hit.identity.clone()));
            }
        }

        let jwt = ParsedJwt::parse(&f.token)?;
        let iss = jwt.issuer().map(str::to_string);
        let candidates = self
            .rules
            .iter()
            .enumerate()
            .filter(|(i, r)| Some(r.cfg.issuer.as_str()) == iss.as_deref() && reads(*i));
        let mut first_failure = None;
        for (i, rule) in candidates {
            match rule.verify(&jwt, hosts, now, &self.options).await {
                Ok(keys) => {
                    let identity = Arc::new(rule.identity(jwt.claims, jwt.audiences));
                    self.cache.insert(
                        &f.token,
                        Cached {
                            rule: i,
                            keys,
                            identity: identity.clone(),
                            times: jwt.times,
                        },
                        now,
                    );
                    return Ok((i, identity));
                }
                Err(mut e) => {
                    e.rule = Some((rule.cfg.policy.clone(), rule.cfg.index));
                    e.issuer.clone_from(&iss);
                    first_failure.get_or_insert(e);
                }
            }
        }
        Err(first_failure.unwrap_or_else(|| {
            let mut e = AuthnFailure::new(
                FailureKind::UnknownIssuer,
                match &iss {
                    Some(i) => format!("no rule for issuer {i:?} reads this token location"),
                    None => "token has no \"iss\" string".to_string(),
                },
            );
            e.issuer = iss;
            e
        }))
    }

    /// Removes `token` from location `l` of the request.
    fn strip(&self, l: usize, token: &str, headers: &mut HeaderMap, uri: &mut Uri) {
        let loc = &self.locations[l];
        match &loc.spec {
            // Envoy removes the whole header.
            TokenLocation::Header { .. } => {
                if let Some(h) = &loc.header {
                    headers.remove(h);
                }
            }
            TokenLocation::Param(param) => {
                let Some(query) = uri.query() else { return };
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
                        !(percent_decode(n) == *param && percent_decode(v).trim() == token)
                    })
                    .collect();
                let path = uri.path();
                let pq = if kept.is_empty() {
                    path.to_string()
                } else {
                    format!("{path}?{}", kept.join("&"))
                };
                let mut parts = uri.clone().into_parts();
                if let Ok(pq) = pq.parse() {
                    parts.path_and_query = Some(pq);
                    if let Ok(u) = Uri::from_parts(parts) {
                        *uri = u;
                    }
                }
            }
            TokenLocation::Cookie(cookie) => {
                let values: Vec<String> = headers
                    .get_all(COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(|v| {
                        v.split(';')
                            .map(str::trim)
                            .filter(|c| {
                                let (n, val) = c.split_once('=').unwrap_or((c, ""));
                                !(n.trim() == cookie && unquote(val.trim()) == token)
                            })
                            .filter(|c| !c.is_empty())
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .collect();
                headers.remove(COOKIE);
                for v in values.into_iter().filter(|v| !v.is_empty()) {
                    if let Ok(v) = HeaderValue::from_str(&v) {
                        headers.append(COOKIE, v);
                    }
                }
            }
        }
    }
}

/// Output headers a claim must never set: hop-by-hop and framing headers, pseudo-headers.
fn is_reserved_output(h: &HeaderName) -> bool {
    use http::header::*;
    [
        HOST,
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        CONNECTION,
        UPGRADE,
        TE,
        PROXY_AUTHORIZATION,
    ]
    .contains(h)
        || h.as_str() == "keep-alive"
        || h.as_str() == "proxy-connection"
}

impl Rule {
    /// Checks claims, then the signature; returns the key set that verified it.
    async fn verify(
        &self,
        jwt: &ParsedJwt<'_>,
        hosts: &[&str],
        now: f64,
        opts: &AuthnOptions,
    ) -> Result<Arc<KeySet>, AuthnFailure> {
        self.check_claims(&jwt.times, &jwt.audiences, hosts, now, opts)?;
        let keys = self.keys_for(jwt).await?;
        let mut tried = 0;
        let verified = keys.candidates(jwt.kid.as_deref(), jwt.alg).any(|key| {
            tried += 1;
            jsonwebtoken::crypto::verify(
                jwt.signature,
                jwt.signing_input.as_bytes(),
                key.decoding_key(),
                jwt.alg,
            )
            .unwrap_or(false)
        });
        if verified {
            return Ok(keys);
        }
        if tried == 0 {
            return Err(AuthnFailure::new(
                FailureKind::KeyNotFound,
                format!(
                    "no key for kid {:?} and alg {:?} among {} keys",
                    jwt.kid,
                    jwt.alg,
                    keys.len()
                ),
            ));
        }
        Err(AuthnFailure::new(
            FailureKind::VerificationFailed,
            format!("signature did not verify with {tried} candidate key(s)"),
        ))
    }

    /// The key set in use now, if any (no fetching).
    fn current_keys(&self) -> Option<Arc<KeySet>> {
        match &self.keys {
            RuleKeys::Inline(Ok(k)) => Some(k.clone()),
            RuleKeys::Inline(Err(_)) => None,
            RuleKeys::Remote(src) => src.keys(),
        }
    }

    /// The key set to verify `jwt` with: refetched (rate-limited) when none is loaded yet or
    /// the token's `kid` (or algorithm) has no key in it.
    async fn keys_for(&self, jwt: &ParsedJwt<'_>) -> Result<Arc<KeySet>, AuthnFailure> {
        let src = match &self.keys {
            RuleKeys::Inline(Ok(k)) => return Ok(k.clone()),
            RuleKeys::Inline(Err(e)) => {
                return Err(AuthnFailure::new(
                    FailureKind::JwksNoValidKeys,
                    e.to_string(),
                ))
            }
            RuleKeys::Remote(src) => src,
        };
        let mut keys = src.keys();
        let refetch = match (&keys, jwt.kid.as_deref()) {
            (None, _) => true,
            (Some(k), Some(kid)) => !k.has_kid(kid),
            (Some(k), None) => k.candidates(None, jwt.alg).next().is_none(),
        };
        if refetch {
            keys = src.refresh_on_demand().await;
        }
        keys.ok_or_else(|| {
            let why = src
                .status()
                .last_error
                .unwrap_or_else(|| JwksError::NotFetched.to_string());
            AuthnFailure::new(FailureKind::JwksFetchFailed, why)
        })
    }

    /// `exp` and `nbf` (with skew), then `aud`.
    fn check_claims(
        &self,
        times: &Times,
        auds: &[String],
        hosts: &[&str],
        now: f64,
        opts: &AuthnOptions,
    ) -> Result<(), AuthnFailure> {
        let skew = opts.clock_skew.as_secs_f64();
        if let Some(exp) = times.exp {
            if now > exp + skew {
                return Err(AuthnFailure::new(
                    FailureKind::Expired,
                    format!("exp {exp} is in the past (now {now:.0}, skew {skew}s)"),
                ));
            }
        }
        if let Some(nbf) = times.nbf {
            if nbf > now + skew {
                return Err(AuthnFailure::new(
                    FailureKind::NotYetValid,
                    format!("nbf {nbf} is in the future (now {now:.0}, skew {skew}s)"),
                ));
            }
        }
        let ok = if !self.cfg.audiences.is_empty() {
            auds.iter().any(|a| self.cfg.audiences.contains(a))
        } else {
            match opts.empty_audiences {
                EmptyAudiences::Any => true,
                EmptyAudiences::DestinationHosts => {
                    auds.is_empty()
                        || auds
                            .iter()
                            .any(|a| hosts.iter().any(|h| h.eq_ignore_ascii_case(a)))
                }
            }
        };
        if ok {
            Ok(())
        } else {
            Err(AuthnFailure::new(
                FailureKind::AudienceNotAllowed,
                format!("token aud {auds:?} not accepted"),
            ))
        }
    }

    fn identity(&self, mut claims: Map<String, Value>, audiences: Vec<String>) -> JwtIdentity {
        for name in &self.cfg.space_delimited_claims {
            if let Some(Value::String(s)) = claims.get(name) {
                let list = s
                    .split(' ')
                    .filter(|p| !p.is_empty())
                    .map(|p| Value::String(p.to_string()))
                    .collect();
                claims.insert(name.clone(), Value::Array(list));
            }
        }
        let text = |n: &str| claims.get(n).and_then(Value::as_str).map(str::to_string);
        let issuer = self.cfg.issuer.clone();
        let subject = text("sub");
        let presenter = text("azp");
        JwtIdentity {
            principal: subject.as_ref().map(|s| format!("{issuer}/{s}")),
            issuer,
            subject,
            audiences,
            presenter,
            claims: Value::Object(claims),
            policy: self.cfg.policy.clone(),
            rule_index: self.cfg.index,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Verified-token cache
// ---------------------------------------------------------------------------------------------

/// A verified token: enough to accept it again without a signature check.
#[derive(Debug)]
struct Cached {
    rule: usize,
    /// The key set that verified it: the entry is only used while that set is current.
    keys: Arc<KeySet>,
    identity: Arc<JwtIdentity>,
    times: Times,
}

/// Tokens verified recently, by their exact text; sharded so concurrent requests rarely
/// contend, and bounded (an entry is evicted when its shard is full).
#[derive(Debug)]
struct VerifiedCache {
    shards: Vec<Mutex<HashMap<String, Arc<Cached>>>>,
}

impl Default for VerifiedCache {
    fn default() -> Self {
        VerifiedCache {
            shards: (0..CACHE_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
    }
}

impl VerifiedCache {
    fn shard(&self, token: &str) -> &Mutex<HashMap<String, Arc<Cached>>> {
        // The signature's last bytes are uniformly distributed.
        let h = token
            .bytes()
            .rev()
            .take(8)
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        &self.shards[h % CACHE_SHARDS]
    }

    fn get(&self, token: &str) -> Option<Arc<Cached>> {
        if token.len() > MAX_CACHED_TOKEN_LEN {
            return None;
        }
        let shard = self.shard(token).lock().unwrap_or_else(|e| e.into_inner());
        shard.get(token).cloned()
    }

    fn insert(&self, token: &str, entry: Cached, now: f64) {
        if token.len() > MAX_CACHED_TOKEN_LEN {
            return;
        }
        let mut shard = self.shard(token).lock().unwrap_or_else(|e| e.into_inner());
        if shard.len() >= CACHE_PER_SHARD {
            shard.retain(|_, c| c.times.exp.is_none_or(|exp| exp > now));
            if shard.len() >= CACHE_PER_SHARD {
                if let Some(k) = shard.keys().next().cloned() {
                    shard.remove(&k);
                }
            }
        }
        shard.insert(token.to_string(), Arc::new(entry));
    }
}

// ---------------------------------------------------------------------------------------------
// Token parsing
// ---------------------------------------------------------------------------------------------

/// A compact JWS, decoded but not verified.
#[derive(Debug)]
struct ParsedJwt<'t> {
    alg: Algorithm,
    kid: Option<String>,
    claims: Map<String, Value>,
    times: Times,
    /// `aud` as a list.
    audiences: Vec<String>,
    /// `header.payload`, what the signature covers.
    signing_input: &'t str,
    signature: &'t str,
}

/// `exp` and `nbf`, seconds since the epoch.
#[derive(Clone, Copy, Debug)]
struct Times {
    exp: Option<f64>,
    nbf: Option<f64>,
}

impl<'t> ParsedJwt<'t> {
    fn parse(token: &'t str) -> Result<ParsedJwt<'t>, AuthnFailure> {
        let bad = |kind, detail: &str| Err(AuthnFailure::new(kind, detail));
        if token.len() > MAX_TOKEN_LEN {
            return bad(FailureKind::BadFormat, "token too long");
        }
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
        {
            return bad(FailureKind::BadFormat, "characters outside base64url");
        }
        let mut parts = token.splitn(4, '.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return bad(FailureKind::BadFormat, "expected three dot-separated parts");
        };
        let mut header = decode_json(h64).ok_or_else(|| {
            AuthnFailure::new(
                FailureKind::BadHeader,
                "header is not base64url JSON object",
            )
        })?;
        let alg = match header.get("alg") {
            Some(Value::String(a)) => supported_alg(a).ok_or_else(|| {
                AuthnFailure::new(
                    FailureKind::UnsupportedAlgorithm,
                    format!("alg {a:?} is not accepted"),
                )
            })?,
            _ => return bad(FailureKind::BadHeader, "header has no \"alg\" string"),
        };
        if let Some(p) = FORBIDDEN_HEADER_PARAMS
            .iter()
            .find(|p| header.contains_key(**p))
        {
            return Err(AuthnFailure::new(
                FailureKind::ForbiddenHeaderParameter,
                format!("header parameter {p:?} is not accepted"),
            ));
        }
        let kid = match header.remove("kid") {
            None => None,
            Some(Value::String(k)) => Some(k),
            Some(_) => return bad(FailureKind::BadHeader, "\"kid\" is not a string"),
        };
        if s64.is_empty() {
            return bad(FailureKind::BadFormat, "empty signature");
        }
        let claims = decode_json(p64).ok_or_else(|| {
            AuthnFailure::new(
                FailureKind::BadPayload,
                "payload is not base64url JSON object",
            )
        })?;
        let times = Times {
            exp: numeric_claim(&claims, "exp")?,
            nbf: numeric_claim(&claims, "nbf")?,
        };
        let audiences = audiences(&claims)?;
        Ok(ParsedJwt {
            alg,
            kid,
            claims,
            times,
            audiences,
            signing_input: &token[..h64.len() + 1 + p64.len()],
            signature: s64,
        })
    }

    fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

fn decode_json(segment: &str) -> Option<Map<String, Value>> {
    let bytes = B64URL.decode(segment).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// `exp` / `nbf`: absent, or a non-negative number of seconds.
fn numeric_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, AuthnFailure> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v >= 0.0 && v.is_finite() => Ok(Some(v)),
            _ => Err(AuthnFailure::new(
                FailureKind::BadPayload,
                format!("\"{name}\" is not a valid time"),
            )),
        },
        Some(_) => Err(AuthnFailure::new(
            FailureKind::BadPayload,
            format!("\"{name}\" is not a number"),
        )),
    }
}

/// `aud` as a list: absent, a string, or a list of strings.
fn audiences(claims: &Map<String, Value>) -> Result<Vec<String>, AuthnFailure> {
    let bad = || {
        AuthnFailure::new(
            FailureKind::BadPayload,
            "\"aud\" is not a string or list of strings",
        )
    };
    match claims.get("aud") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
}

/// A claim by name; a dotted name falls back to a nested lookup.
fn lookup_claim<'v>(claims: &'v Value, name: &str) -> Option<&'v Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    if !name.contains('.') {
        return None;
    }
    name.split('.').try_fold(claims, |v, part| v.get(part))
}

/// A claim rendered as a header value: strings, numbers and booleans, lists of them joined
/// with `,`. Anything else, and any value with control characters (CR, LF, NUL, ...), is
/// dropped rather than written: a claim can never inject a header.
fn claim_header_value(v: &Value) -> Option<HeaderValue> {
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    let text = match v {
        Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()?
            .join(","),
        other => scalar(other)?,
    };
    if text.is_empty()
        || text.len() > MAX_CLAIM_HEADER_LEN
        || text
            .chars()
            .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
    {
        return None;
    }
    HeaderValue::from_str(&text).ok()
}

/// The token after a header `prefix`, or `None` when the value does not start with it. The
/// prefix is compared ASCII case-insensitively (auth schemes are case-insensitive, RFC 9110
/// §11.1), and trailing whitespace in it (`"Bearer "`) stands for any run of SP / HTAB: so
/// `bearer x`, `BEARER x`, `Bearer  x` and `Bearer<TAB>x` all present the token `x`, which is
/// then verified. (Matching only a literal space made `Bearer<TAB><forged>` no token at all:
/// the request passed as anonymous with the forged token forwarded to a backend that splits
/// on any whitespace.) A prefix without trailing whitespace is matched literally.
fn strip_token_prefix<'v>(value: &'v str, prefix: &str) -> Option<&'v str> {
    let scheme = prefix.trim_end_matches([' ', '\t']);
    let head = value.get(..scheme.len())?;
    if !head.eq_ignore_ascii_case(scheme) {
        return None;
    }
    let rest = &value[scheme.len()..];
    if scheme.len() == prefix.len() {
        return Some(rest);
    }
    let token = rest.trim_start_matches([' ', '\t']);
    (token.len() < rest.len()).then_some(token)
}

/// `name=value` pairs of a query string, percent-decoded (`+` stays `+`).
fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(n), percent_decode(v))
        })
}

/// `name=value` pairs of a `Cookie` header; quoted values unquoted.
fn cookie_pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|c| {
        let (n, v) = c.split_once('=')?;
        Some((n.trim(), unquote(v.trim())))
    })
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs the token parser alone (no verification): the entry point of the JWT fuzz target.
/// Returns whether the token is well-formed enough to be verified.
#[doc(hidden)]
pub fn fuzz_parse(token: &str) -> bool {
    ParsedJwt::parse(token).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(percent_decode("a%2Eb"), "a.b");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
        for raw in ["%", "%4", "a%2", "%zz", "%%41"] {
            let _ = percent_decode(raw);
        }
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%%41"), "%A");
    }

    #[test]
    fn claim_values_never_break_header_syntax() {
        let hv =
            |v: Value| claim_header_value(&v).map(|h| h.to_str().unwrap_or("<opaque>").to_string());
        assert_eq!(hv(json!("alice")).as_deref(), Some("alice"));
        assert_eq!(hv(json!(1.5)).as_deref(), Some("1.5"));
        assert_eq!(hv(json!(-3)).as_deref(), Some("-3"));
        assert_eq!(hv(json!([1, true, "x"])).as_deref(), Some("1,true,x"));
        for bad in [
            json!("a\r\nx-injected: 1"),
            json!("a\nb"),
            json!("a\u{0}b"),
            json!("tab\there"),
            json!("a\u{2028}b"),
            json!("\u{7f}"),
            json!(""),
            json!(null),
            json!({"a": 1}),
            json!([["nested"]]),
            json!(["ok", "bad\r\n"]),
        ] {
            assert_eq!(hv(bad.clone()), None, "{bad}");
        }
        assert!(claim_header_value(&json!("x".repeat(MAX_CLAIM_HEADER_LEN + 1))).is_none());
    }

    #[test]
    fn prefixes_and_cookies() {
        for (value, token) in [
            ("Bearer abc", Some("abc")),
            ("BEARER abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("Bearer  abc", Some("abc")),
            ("Bearer\tabc", Some("abc")),
            ("bEaReR\t \t abc", Some("abc")),
            ("Bearer ", Some("")),
            ("Bearer", None),
            ("Bearerabc", None),
            ("Bearer\u{a0}abc", None),
            ("Basic abc", None),
            ("Béarer abc", None),
            ("Bea", None),
        ] {
            assert_eq!(strip_token_prefix(value, "Bearer "), token, "{value:?}");
        }
        // A prefix without trailing whitespace is literal (case aside).
        assert_eq!(strip_token_prefix("Token:abc", "token:"), Some("abc"));
        assert_eq!(strip_token_prefix("Token: abc", "token:"), Some(" abc"));
        assert_eq!(strip_token_prefix("Tok", "token:"), None);
        let pairs: Vec<_> = cookie_pairs("a=1; b=\"2\";c; d = 4 ").collect();
        assert_eq!(pairs, [("a", "1"), ("b", "2"), ("d", "4")]);
    }

    #[test]
    fn nested_claim_lookup() {
        let c = json!({"a": {"b": {"c": 1}}, "x.y": 2, "x": {"y": 3}});
        assert_eq!(lookup_claim(&c, "a.b.c"), Some(&json!(1)));
        assert_eq!(lookup_claim(&c, "x.y"), Some(&json!(2)));
        assert_eq!(lookup_claim(&c, "a.z"), None);
        assert_eq!(lookup_claim(&c, "a..b"), None);
    }

    #[test]
    fn parser_rejects_malformed_tokens() {
        let enc = |v: Value| B64URL.encode(v.to_string());
        let h = enc(json!({"alg": "RS256", "kid": "k"}));
        let p = enc(json!({"iss": "i", "exp": 1}));
        assert!(fuzz_parse(&format!("{h}.{p}.c2ln")));
        for (token, kind) in [
            (format!("{h}.{p}"), FailureKind::BadFormat),
            (format!("{h}.{p}.c2ln.x"), FailureKind::BadFormat),
            (format!("{h}.{p}."), FailureKind::BadFormat),
            (format!("{h} .{p}.c2ln"), FailureKind::BadFormat),
            (format!("!!.{p}.c2ln"), FailureKind::BadFormat),
            (
                format!("{}.{p}.c2ln", enc(json!([1]))),
                FailureKind::BadHeader,
            ),
            (
                format!("{}.{p}.c2ln", enc(json!({"alg": 1}))),
                FailureKind::BadHeader,
            ),
            (
                format!("{}.{p}.c2ln", enc(json!({"alg": "RS256", "kid": 7}))),
                FailureKind::BadHeader,
            ),
            (
                format!("{}.{p}.c2ln", enc(json!({"alg": "none"}))),
                FailureKind::UnsupportedAlgorithm,
            ),
            (
                format!("{}.{p}.c2ln", enc(json!({"alg": "HS256"}))),
                FailureKind::UnsupportedAlgorithm,
            ),
            (
                format!("{}.{p}.c2ln", enc(json!({"alg": "rs256"}))),
                FailureKind::UnsupportedAlgorithm,
            ),
            (
                format!("{h}.{}.c2ln", enc(json!("str"))),
                FailureKind::BadPayload,
            ),
            (
                format!("{h}.{}.c2ln", enc(json!({"exp": -1}))),
                FailureKind::BadPayload,
            ),
            (
                format!("{h}.{}.c2ln", enc(json!({"nbf": "soon"}))),
                FailureKind::BadPayload,
            ),
            (
                format!("{h}.{}.c2ln", enc(json!({"aud": 5}))),
                FailureKind::BadPayload,
            ),
            (
                format!("{h}.{}.c2ln", enc(json!({"aud": ["a", 5]}))),
                FailureKind::BadPayload,
            ),
        ] {
            let e = ParsedJwt::parse(&token).unwrap_err();
            assert_eq!(e.kind, kind, "{token}: {e:?}");
        }
        assert!(!fuzz_parse(&"a".repeat(MAX_TOKEN_LEN + 1)));
    }
}

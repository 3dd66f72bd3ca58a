//! Fuzzes JWT parsing and verification (`trellis_proxy::security::jwt`): the parser hook
//! `jwt::fuzz_parse` on arbitrary text, and the whole `JwtAuthenticator::authenticate` (token
//! extraction from headers, query and cookies, parsing, algorithm and key selection, signature,
//! `iss`/`exp`/`nbf`/`aud`, stripping, output headers) with a fixed inline JWKS: RSA-2048,
//! EC P-256, EC P-384 and Ed25519 keys generated once (`OnceLock`). No network: inline key sets
//! never fetch.
//!
//! Tokens are valid for a chosen rule (then possibly mutated), arbitrary strings, three
//! base64url parts built from arbitrary (JSON-ish) header/payload bytes, or structured headers
//! and claims; each of the last two is signed by a fixed key (with
//! the header's or another algorithm), by an attacker key with a borrowed `kid`, by HMAC with
//! the RSA public key as secret (key confusion), or carries a garbage / arbitrary / empty
//! signature; tokens are mutated (bit flips, truncation, swapped parts, padding, extra part).
//! Up to four placements per request (Authorization Bearer in any case, `access_token` and
//! `token` query parameters, `x-jwt` header, `session` cookie), with client-forged copies of
//! the output headers.
//!
//! Invariants:
//! - nothing panics; `authenticate` completes without waiting (inline keys);
//! - a token `fuzz_parse` refuses never authenticates a request;
//! - Trellis's outcome equals an independent reference model of the module documentation:
//!   the request is `Authenticated` iff every token found verifies for some rule of its `iss`
//!   that reads one of its locations, where verification is: base64url alphabet, three parts,
//!   header and payload JSON objects, `alg` one of RS*/PS*/ES256/ES384/EdDSA, no
//!   `jwk`/`jku`/`x5u`/`x5c`/`crit`, a signature that `jsonwebtoken` verifies with a JWKS key
//!   of the rule whose `kid` matches (when the token has one) and whose key type allows that
//!   `alg`, `exp`/`nbf` within 60 s, `aud` per rule. In particular a token not signed by the
//!   fixed keys is always rejected (with a time tolerance of the call's duration around
//!   `exp`/`nbf`);
//! - `NoToken` exactly when no token was placed;
//! - output headers are never client-controlled: after `authenticate` they exist only on
//!   `Authenticated`, and `x-jwt-payload` is then the payload of a verified token;
//! - on `Authenticated` every placed token has been stripped from the request;
//! - `www_authenticate(realm)` never panics for an arbitrary realm.
//!
//! Run (from `fuzz/`): `cargo +nightly fuzz run jwt_parse --sanitizer none`.
#![no_main]

use std::future::Future;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbitrary::Arbitrary;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use http::{HeaderMap, HeaderValue, Uri};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use trellis_model::authn::{
    default_locations, ClaimHeader, CompiledJwtRule, JwksSource, JwtPolicy, TokenLocation,
};
use trellis_proxy::security::jwt::{fuzz_parse, realm};
use trellis_proxy::security::{AuthnOutcome, JwksCache, JwtAuthenticator, KeySet};

const ISS: &str = "https://issuer.test";
const ISS2: &str = "https://other.test";
const HOSTS: &[&str] = &["svc.test", "svc.test:8080"];
const SKEW: f64 = 60.0;
const MAX_TOKEN_LEN: usize = 16 * 1024;
const OUTPUT_HEADERS: [&str; 3] = ["x-jwt-sub", "x-jwt-payload", "x-jwt-nested"];

const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

const RSA_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const ALG_NAMES: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "none",
    "HS256", "HS512", "rs256", "", "ES512", "EdDSA ",
];
const SIGN_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::HS256,
];

struct Key {
    kid: &'static str,
    algs: &'static [Algorithm],
    enc: EncodingKey,
    dec: DecodingKey,
    jwk: Value,
    public_pem: String,
}

struct Rule {
    issuer: &'static str,
    audiences: &'static [&'static str],
    /// Indices into `Fixture::keys`.
    keys: &'static [usize],
    /// Location kinds this rule reads (see `Loc`).
    reads: &'static [Loc],
}

struct Fixture {
    keys: Vec<Key>,
    attackers: Vec<Key>,
    rsa_public_pem: Vec<u8>,
    rules: Vec<Rule>,
    auth: JwtAuthenticator,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    Bearer,
    AccessTokenParam,
    XJwt,
    Cookie,
    TokenParam,
    /// `Authorization` without the `Bearer ` prefix: not a token location.
    NotALocation,
}

fn gen_key(
    kid: &'static str,
    alg: &'static rcgen::SignatureAlgorithm,
    sign_alg: Algorithm,
    algs: &'static [Algorithm],
) -> Key {
    let kp = rcgen::KeyPair::generate_for(alg).expect("key generation");
    let pem = kp.serialize_pem();
    let enc = match sign_alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .expect("encoding key");
    let jwk: Jwk = if sign_alg == Algorithm::EdDSA {
        // `Jwk::from_encoding_key` only knows PKCS#8 v1 Ed25519 keys; rcgen writes v2.
        serde_json::from_value(json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": B64.encode(kp.public_key_raw()),
        }))
        .expect("ed25519 jwk")
    } else {
        Jwk::from_encoding_key(&enc, sign_alg).expect("jwk")
    };
    let dec = DecodingKey::from_jwk(&jwk).expect("decoding key");
    let mut v = serde_json::to_value(&jwk).expect("jwk json");
    let o = v.as_object_mut().unwrap();
    // No `alg`: the key verifies every algorithm of its type (RSA: RS* and PS*).
    o.remove("alg");
    o.insert("kid".into(), json!(kid));
    o.insert("use".into(), json!("sig"));
    Key {
        kid,
        algs,
        enc,
        dec,
        jwk: v,
        public_pem: kp.public_key_pem(),
    }
}

fn jwks(keys: &[Key], idx: &[usize]) -> String {
    json!({ "keys": idx.iter().map(|&i| keys[i].jwk.clone()).collect::<Vec<_>>() }).to_string()
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let keys = vec![
            gen_key("rsa", &rcgen::PKCS_RSA_SHA256, Algorithm::RS256, RSA_ALGS),
            gen_key(
                "ec256",
                &rcgen::PKCS_ECDSA_P256_SHA256,
                Algorithm::ES256,
                &[Algorithm::ES256],
            ),
            gen_key(
                "ec384",
                &rcgen::PKCS_ECDSA_P384_SHA384,
                Algorithm::ES384,
                &[Algorithm::ES384],
            ),
            gen_key(
                "ed",
                &rcgen::PKCS_ED25519,
                Algorithm::EdDSA,
                &[Algorithm::EdDSA],
            ),
        ];
        // Same kids as the real keys, never in any key set.
        let attackers = vec![
            gen_key("rsa", &rcgen::PKCS_RSA_SHA256, Algorithm::RS256, RSA_ALGS),
            gen_key(
                "ec256",
                &rcgen::PKCS_ECDSA_P256_SHA256,
                Algorithm::ES256,
                &[Algorithm::ES256],
            ),
            gen_key(
                "ed",
                &rcgen::PKCS_ED25519,
                Algorithm::EdDSA,
                &[Algorithm::EdDSA],
            ),
        ];
        // The RSA public key as PEM: the classic HMAC key-confusion secret.
        let rsa_public_pem = keys[0].public_pem.as_bytes().to_vec();
        for idx in [&[0usize, 1, 2, 3][..], &[1], &[3, 0]] {
            let set = KeySet::parse(jwks(&keys, idx).as_bytes()).expect("fixed JWKS parses");
            assert!(
                set.skipped().is_empty() && set.len() == idx.len(),
                "{:?}",
                set.skipped()
            );
        }
        let rules = vec![
            Rule {
                issuer: ISS,
                audiences: &["api"],
                keys: &[0, 1, 2, 3],
                reads: &[Loc::Bearer, Loc::AccessTokenParam],
            },
            Rule {
                issuer: ISS,
                audiences: &[],
                keys: &[1],
                reads: &[Loc::XJwt],
            },
            Rule {
                issuer: ISS2,
                audiences: &["api", "web"],
                keys: &[3, 0],
                reads: &[Loc::Cookie, Loc::TokenParam],
            },
        ];
        let compiled =
            |i: usize, r: &Rule, locations, payload: Option<&str>, claims| CompiledJwtRule {
                policy: "foo/jwt".into(),
                index: i,
                issuer: r.issuer.into(),
                audiences: r.audiences.iter().map(|a| a.to_string()).collect(),
                jwks: JwksSource::Inline(jwks(&keys, r.keys)),
                locations,
                forward_original_token: false,
                output_payload_to_header: payload.map(str::to_string),
                output_claim_to_headers: claims,
                space_delimited_claims: vec!["scope".into(), "permission".into()],
                timeout: Duration::from_secs(5),
                required: false,
            };
        let policy = JwtPolicy {
            rules: vec![
                compiled(
                    0,
                    &rules[0],
                    default_locations(),
                    None,
                    vec![ClaimHeader {
                        header: "x-jwt-sub".into(),
                        claim: "sub".into(),
                    }],
                ),
                compiled(
                    1,
                    &rules[1],
                    vec![TokenLocation::Header {
                        name: "x-jwt".into(),
                        prefix: None,
                    }],
                    Some("x-jwt-payload"),
                    vec![ClaimHeader {
                        header: "x-jwt-nested".into(),
                        claim: "a.b".into(),
                    }],
                ),
                compiled(
                    2,
                    &rules[2],
                    vec![
                        TokenLocation::Cookie("session".into()),
                        TokenLocation::Param("token".into()),
                    ],
                    None,
                    vec![],
                ),
            ],
            warnings: vec![],
        };
        let auth = JwtAuthenticator::new(&policy, &JwksCache::default());
        assert!(auth.warnings().is_empty(), "{:?}", auth.warnings());
        Fixture {
            keys,
            attackers,
            rsa_public_pem,
            rules,
            auth,
        }
    })
}

/// Polls a future that must complete without waiting (inline key sets never fetch).
fn run<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("authenticate waited with inline key sets"),
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// Fuzz input
// ---------------------------------------------------------------------------------------------

#[derive(Arbitrary, Debug, Clone)]
enum V {
    Pick(u8),
    Raw(String),
}

impl V {
    fn get(&self, vocab: &[&str]) -> String {
        match self {
            V::Pick(i) => vocab[*i as usize % vocab.len()].to_string(),
            V::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum JsonVal {
    Str(V),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    List(Vec<V>),
    Obj(Vec<(V, V)>),
}

const STRINGS: &[&str] = &[
    "alice",
    "api",
    "web",
    "svc.test",
    "SVC.TEST",
    "other",
    "read write",
    "",
    ISS,
    ISS2,
    "b",
];

impl JsonVal {
    fn get(&self) -> Value {
        match self {
            JsonVal::Str(v) => json!(v.get(STRINGS)),
            JsonVal::Int(i) => json!(i),
            JsonVal::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            JsonVal::Bool(b) => json!(b),
            JsonVal::Null => Value::Null,
            JsonVal::List(vs) => {
                Value::Array(vs.iter().take(4).map(|v| json!(v.get(STRINGS))).collect())
            }
            JsonVal::Obj(kv) => Value::Object(
                kv.iter()
                    .take(4)
                    .map(|(k, v)| (k.get(&["b", "c"]), json!(v.get(STRINGS))))
                    .collect(),
            ),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Time {
    /// `now + secs`, an integer.
    Rel(i16),
    /// `now + secs`, with a fraction.
    RelFrac(i16, u8),
    Other(JsonVal),
}

#[derive(Arbitrary, Debug)]
struct HeaderSpec {
    alg: Option<V>,
    kid: Option<JsonVal>,
    kid_pick: Option<u8>,
    extra: Vec<(V, JsonVal)>,
}

const HEADER_KEYS: &[&str] = &[
    "typ", "jwk", "jku", "x5u", "x5c", "crit", "cty", "b64", "alg", "kid",
];
const CLAIM_KEYS: &[&str] = &[
    "iss", "sub", "aud", "exp", "nbf", "azp", "scope", "a", "iat",
];
const KIDS: &[&str] = &["rsa", "ec256", "ec384", "ed", "nope", ""];

#[derive(Arbitrary, Debug)]
struct ClaimSpec {
    iss: Option<V>,
    sub: Option<JsonVal>,
    aud: Option<JsonVal>,
    exp: Option<Time>,
    nbf: Option<Time>,
    nested: Option<JsonVal>,
    extra: Vec<(V, JsonVal)>,
}

#[derive(Arbitrary, Debug)]
enum Sig {
    /// Fixed key (index), algorithm (index into SIGN_ALGS; `None`: the header's).
    Fixed(u8, Option<u8>),
    Attacker(u8, Option<u8>),
    /// HMAC with the RSA public key PEM as secret.
    Confusion(u8),
    Garbage(Vec<u8>),
    Text(String),
    Empty,
}

#[derive(Arbitrary, Debug)]
enum Mutation {
    None,
    FlipBit(u16, u8),
    Truncate(u16),
    Insert(u16, u8),
    AppendPadding(u8),
    DropSignature,
    ExtraPart(String),
    SwapHeaderPayload,
    Lowercase,
}

#[derive(Arbitrary, Debug)]
enum TokenSpec {
    /// A token valid for rule `rule` (signed by one of its keys with an algorithm the key
    /// allows, `iss`, `aud` and `exp` right), then `mutation`.
    Valid {
        rule: u8,
        key: u8,
        alg: u8,
        with_kid: bool,
        sub: Option<V>,
        extra: Vec<(V, JsonVal)>,
        mutation: Mutation,
    },
    Raw(String),
    Parts {
        header: Vec<u8>,
        payload: Vec<u8>,
        sig: Sig,
        padded: bool,
    },
    Structured {
        header: HeaderSpec,
        claims: ClaimSpec,
        sig: Sig,
        mutation: Mutation,
    },
}

#[derive(Arbitrary, Debug)]
struct Placement {
    token: u8,
    loc: u8,
    prefix_case: u8,
}

#[derive(Arbitrary, Debug)]
struct Input {
    tokens: Vec<TokenSpec>,
    placements: Vec<Placement>,
    spoof_outputs: bool,
    extra_cookie: Option<String>,
    realm: String,
}

// ---------------------------------------------------------------------------------------------
// Minting
// ---------------------------------------------------------------------------------------------

fn time_value(t: &Time, now: f64) -> Value {
    let base = now.floor() as i64;
    match t {
        Time::Rel(s) => json!(base + i64::from(*s)),
        Time::RelFrac(s, f) => json!(base as f64 + f64::from(*s) + f64::from(*f) / 256.0),
        Time::Other(v) => v.get(),
    }
}

fn header_json(h: &HeaderSpec) -> Value {
    let mut m = Map::new();
    for (k, v) in h.extra.iter().take(3) {
        m.insert(k.get(HEADER_KEYS), v.get());
    }
    if let Some(a) = &h.alg {
        m.insert("alg".into(), json!(a.get(ALG_NAMES)));
    }
    if let Some(k) = &h.kid {
        m.insert("kid".into(), k.get());
    }
    if let Some(k) = h.kid_pick {
        m.insert("kid".into(), json!(KIDS[k as usize % KIDS.len()]));
    }
    Value::Object(m)
}

fn claims_json(c: &ClaimSpec, now: f64) -> Value {
    let mut m = Map::new();
    for (k, v) in c.extra.iter().take(3) {
        m.insert(k.get(CLAIM_KEYS), v.get());
    }
    if let Some(i) = &c.iss {
        m.insert(
            "iss".into(),
            json!(i.get(&[ISS, ISS2, "https://evil.test", ""])),
        );
    }
    if let Some(s) = &c.sub {
        m.insert("sub".into(), s.get());
    }
    if let Some(a) = &c.aud {
        m.insert("aud".into(), a.get());
    }
    if let Some(t) = &c.exp {
        m.insert("exp".into(), time_value(t, now));
    }
    if let Some(t) = &c.nbf {
        m.insert("nbf".into(), time_value(t, now));
    }
    if let Some(n) = &c.nested {
        m.insert("a".into(), json!({ "b": n.get() }));
    }
    Value::Object(m)
}

fn header_alg(header: &[u8]) -> Option<Algorithm> {
    let v: Value = serde_json::from_slice(header).ok()?;
    let name = v.get("alg")?.as_str()?;
    SIGN_ALGS.iter().copied().find(|a| format!("{a:?}") == name)
}

fn sign(f: &Fixture, sig: &Sig, signing_input: &str, header: &[u8]) -> String {
    let pick_alg = |a: Option<u8>, default: Algorithm| match a {
        Some(i) => SIGN_ALGS[i as usize % SIGN_ALGS.len()],
        None => header_alg(header).unwrap_or(default),
    };
    let with = |key: &Key, alg: Algorithm| {
        jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key.enc, alg)
            .unwrap_or_else(|_| "c2ln".to_string())
    };
    match sig {
        Sig::Fixed(k, a) => {
            let key = &f.keys[*k as usize % f.keys.len()];
            with(key, pick_alg(*a, key.algs[0]))
        }
        Sig::Attacker(k, a) => {
            let key = &f.attackers[*k as usize % f.attackers.len()];
            with(key, pick_alg(*a, key.algs[0]))
        }
        Sig::Confusion(a) => {
            let alg = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512][*a as usize % 3];
            jsonwebtoken::crypto::sign(
                signing_input.as_bytes(),
                &EncodingKey::from_secret(&f.rsa_public_pem),
                alg,
            )
            .unwrap()
        }
        Sig::Garbage(b) => B64.encode(b),
        Sig::Text(s) => s.clone(),
        Sig::Empty => String::new(),
    }
}

fn mutate(token: String, m: &Mutation) -> String {
    let mut b = token.into_bytes();
    match m {
        Mutation::None => {}
        Mutation::FlipBit(i, bit) => {
            if !b.is_empty() {
                let i = *i as usize % b.len();
                b[i] ^= 1 << (bit % 7); // stays ASCII
            }
        }
        Mutation::Truncate(n) => {
            let n = *n as usize % (b.len() + 1);
            b.truncate(n);
        }
        Mutation::Insert(i, c) => {
            let i = *i as usize % (b.len() + 1);
            b.insert(i, c & 0x7f);
        }
        Mutation::AppendPadding(n) => b.extend(std::iter::repeat_n(b'=', (*n % 4) as usize)),
        Mutation::DropSignature => {
            if let Some(i) = b.iter().rposition(|&c| c == b'.') {
                b.truncate(i + 1);
            }
        }
        Mutation::ExtraPart(s) => {
            b.push(b'.');
            b.extend(s.bytes().filter(u8::is_ascii));
        }
        Mutation::SwapHeaderPayload => {
            let s = String::from_utf8(b).unwrap();
            let mut parts: Vec<&str> = s.split('.').collect();
            if parts.len() >= 2 {
                parts.swap(0, 1);
            }
            return parts.join(".");
        }
        Mutation::Lowercase => b.make_ascii_lowercase(),
    }
    String::from_utf8(b).unwrap_or_default()
}

fn mint(f: &Fixture, spec: &TokenSpec, now: f64) -> String {
    match spec {
        TokenSpec::Valid {
            rule,
            key,
            alg,
            with_kid,
            sub,
            extra,
            mutation,
        } => {
            let r = &f.rules[*rule as usize % f.rules.len()];
            let k = &f.keys[r.keys[*key as usize % r.keys.len()]];
            let alg = k.algs[*alg as usize % k.algs.len()];
            let mut h = json!({ "alg": format!("{alg:?}"), "typ": "JWT" });
            if *with_kid {
                h["kid"] = json!(k.kid);
            }
            let mut c = Map::new();
            for (name, v) in extra.iter().take(3) {
                c.insert(name.get(CLAIM_KEYS), v.get());
            }
            c.insert("iss".into(), json!(r.issuer));
            c.insert("exp".into(), json!(now.floor() as i64 + 600));
            match r.audiences.first() {
                Some(a) => c.insert("aud".into(), json!(a)),
                None => c.remove("aud"),
            };
            if let Some(sv) = sub {
                c.insert("sub".into(), json!(sv.get(STRINGS)));
            }
            let (h, c) = (h.to_string(), Value::Object(c).to_string());
            let input = format!("{}.{}", B64.encode(&h), B64.encode(&c));
            let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &k.enc, alg)
                .unwrap_or_else(|e| panic!("fixed key {} cannot sign {alg:?}: {e}", k.kid));
            mutate(format!("{input}.{sig}"), mutation)
        }
        TokenSpec::Raw(s) => s.clone(),
        TokenSpec::Parts {
            header,
            payload,
            sig,
            padded,
        } => {
            let enc = |b: &[u8]| {
                if *padded {
                    base64::engine::general_purpose::URL_SAFE.encode(b)
                } else {
                    B64.encode(b)
                }
            };
            let input = format!("{}.{}", enc(header), enc(payload));
            let s = sign(f, sig, &input, header);
            format!("{input}.{s}")
        }
        TokenSpec::Structured {
            header,
            claims,
            sig,
            mutation,
        } => {
            let h = header_json(header).to_string();
            let c = claims_json(claims, now).to_string();
            let input = format!("{}.{}", B64.encode(&h), B64.encode(&c));
            let s = sign(f, sig, &input, h.as_bytes());
            mutate(format!("{input}.{s}"), mutation)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reference model
// ---------------------------------------------------------------------------------------------

fn decode_obj(seg: &str) -> Option<Map<String, Value>> {
    match serde_json::from_slice(&B64.decode(seg).ok()?).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn supported(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Time window for the checks: `lenient` accepts what is valid at some instant of the call,
/// strict only what is valid during all of it.
#[derive(Clone, Copy)]
struct Window {
    before: f64,
    after: f64,
}

/// The reference verdict for `token` under `rule`; `lenient` picks the time window end that
/// favours acceptance.
fn valid_for(f: &Fixture, token: &str, rule: &Rule, w: Window, lenient: bool) -> bool {
    if token.len() > MAX_TOKEN_LEN
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
    {
        return false;
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [h64, p64, s64] = parts[..] else {
        return false;
    };
    let Some(header) = decode_obj(h64) else {
        return false;
    };
    let Some(alg) = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(supported)
    else {
        return false;
    };
    if ["jwk", "jku", "x5u", "x5c", "crit"]
        .iter()
        .any(|p| header.contains_key(*p))
    {
        return false;
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return false,
    };
    if s64.is_empty() {
        return false;
    }
    let Some(claims) = decode_obj(p64) else {
        return false;
    };
    let time = |name: &str| -> Result<Option<f64>, ()> {
        match claims.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(v) if v >= 0.0 && v.is_finite() => Ok(Some(v)),
                _ => Err(()),
            },
            Some(_) => Err(()),
        }
    };
    let (Ok(exp), Ok(nbf)) = (time("exp"), time("nbf")) else {
        return false;
    };
    let auds: Vec<&str> = match claims.get("aud") {
        None => vec![],
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => match a.iter().map(Value::as_str).collect::<Option<Vec<_>>>() {
            Some(v) => v,
            None => return false,
        },
        Some(_) => return false,
    };
    if claims.get("iss").and_then(Value::as_str) != Some(rule.issuer) {
        return false;
    }
    // Lenient: `exp` judged at the earliest instant, `nbf` at the latest; strict: the reverse.
    let (exp_now, nbf_now) = if lenient {
        (w.before, w.after)
    } else {
        (w.after, w.before)
    };
    if exp.is_some_and(|e| exp_now > e + SKEW) || nbf.is_some_and(|n| n > nbf_now + SKEW) {
        return false;
    }
    let aud_ok = if rule.audiences.is_empty() {
        auds.is_empty()
            || auds
                .iter()
                .any(|a| HOSTS.iter().any(|h| h.eq_ignore_ascii_case(a)))
    } else {
        auds.iter().any(|a| rule.audiences.contains(a))
    };
    if !aud_ok {
        return false;
    }
    let signing_input = &token[..h64.len() + 1 + p64.len()];
    rule.keys.iter().map(|&i| &f.keys[i]).any(|k| {
        k.algs.contains(&alg)
            && kid.is_none_or(|want| want == k.kid)
            && jsonwebtoken::crypto::verify(s64, signing_input.as_bytes(), &k.dec, alg)
                .unwrap_or(false)
    })
}

fn valid_at(f: &Fixture, token: &str, locs: &[Loc], w: Window, lenient: bool) -> bool {
    f.rules
        .iter()
        .filter(|r| r.reads.iter().any(|l| locs.contains(l)))
        .any(|r| valid_for(f, token, r, w, lenient))
}

// ---------------------------------------------------------------------------------------------
// The target
// ---------------------------------------------------------------------------------------------

/// Tokens that survive header/cookie/query framing unchanged (no whitespace, `;`, `"`).
fn placeable(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b';' && b != b'"')
}

fn pct(t: &str) -> String {
    let mut s = String::new();
    for b in t.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

fn query_pairs(q: &str) -> Vec<(String, String)> {
    let dec = |s: &str| -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            (dec(n), dec(v))
        })
        .collect()
}

/// Outcome counts, printed every 65536 runs when `TRELLIS_FUZZ_STATS` is set (to see that
/// every branch of the differential is reached).
fn stats(outcome: &AuthnOutcome, strict: bool) {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static C: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
    let i = match outcome {
        AuthnOutcome::NoToken => 0,
        AuthnOutcome::Authenticated(_) => 1,
        AuthnOutcome::Invalid(_) if strict => 3,
        AuthnOutcome::Invalid(_) => 2,
    };
    let n = C[i].fetch_add(1, Relaxed) + 1;
    let total: u64 = C.iter().map(|c| c.load(Relaxed)).sum();
    if total % 65536 == 0 && std::env::var_os("TRELLIS_FUZZ_STATS").is_some() {
        let c: Vec<u64> = C.iter().map(|c| c.load(Relaxed)).collect();
        eprintln!(
            "jwt_parse outcomes: no-token {} authenticated {} invalid {} ({n})",
            c[0],
            c[1],
            c[2] + c[3]
        );
    }
}

fuzz_target!(|input: Input| {
    let f = fixture();
    let t0 = now();
    let tokens: Vec<String> = input
        .tokens
        .iter()
        .take(3)
        .map(|s| mint(f, s, t0))
        .collect();

    // The parser alone.
    for t in &tokens {
        let parsed = fuzz_parse(t);
        if parsed {
            assert!(
                t.len() <= MAX_TOKEN_LEN && t.split('.').count() == 3,
                "{t:?}"
            );
        }
    }

    // Build the request.
    let mut headers = HeaderMap::new();
    if input.spoof_outputs {
        for h in OUTPUT_HEADERS {
            headers.append(h, HeaderValue::from_static("forged"));
        }
    }
    let mut query: Vec<String> = Vec::new();
    let mut cookies: Vec<String> = Vec::new();
    // Another cookie: never a `session` one (that would be an unmodelled token).
    if let Some(c) = input
        .extra_cookie
        .as_ref()
        .filter(|c| !c.contains("session"))
    {
        cookies.push(c.clone());
    }
    // (token, locations it was placed in) for extractable placements.
    let mut placed: Vec<(String, Vec<Loc>)> = Vec::new();
    // Without placements, each token goes to a location of its own.
    let default_placements: Vec<Placement> = (0..tokens.len())
        .map(|i| Placement {
            token: i as u8,
            loc: i as u8,
            prefix_case: 0,
        })
        .collect();
    let placements = if input.placements.is_empty() {
        &default_placements
    } else {
        &input.placements
    };
    for p in placements.iter().take(4) {
        if tokens.is_empty() {
            break;
        }
        let t = &tokens[p.token as usize % tokens.len()];
        if !placeable(t) {
            continue;
        }
        let loc = match p.loc % 6 {
            0 => Loc::Bearer,
            1 => Loc::AccessTokenParam,
            2 => Loc::XJwt,
            3 => Loc::Cookie,
            4 => Loc::TokenParam,
            _ => Loc::NotALocation,
        };
        match loc {
            Loc::Bearer => {
                const PREFIXES: [&str; 6] = [
                    "Bearer ",
                    "bearer ",
                    "BEARER ",
                    "Bearer  ",
                    "Bearer\t",
                    "bEaReR\t \t",
                ];
                let prefix = PREFIXES[p.prefix_case as usize % PREFIXES.len()];
                headers.append(
                    "authorization",
                    HeaderValue::from_str(&format!("{prefix}{t}")).unwrap(),
                );
            }
            Loc::AccessTokenParam => query.push(format!("access_token={}", pct(t))),
            Loc::TokenParam => query.push(format!("token={}", pct(t))),
            Loc::XJwt => {
                headers.append("x-jwt", HeaderValue::from_str(t).unwrap());
            }
            Loc::Cookie => cookies.push(format!("session={t}")),
            Loc::NotALocation => {
                headers.append("authorization", HeaderValue::from_str(t).unwrap());
                continue;
            }
        }
        match placed.iter_mut().find(|(x, _)| x == t) {
            Some((_, locs)) => locs.push(loc),
            None => placed.push((t.clone(), vec![loc])),
        }
    }
    // Visible ASCII only: a `Cookie` value with obs-text is not a string to Trellis (nor to
    // `HeaderValue::to_str`), so its cookies are never read.
    cookies.retain(|c| c.bytes().all(|b| (0x20..0x7f).contains(&b)));
    if !cookies.is_empty() {
        headers.append(
            http::header::COOKIE,
            HeaderValue::from_str(&cookies.join("; ")).unwrap(),
        );
    }
    let pq = if query.is_empty() {
        "/api".to_string()
    } else {
        format!("/api?{}", query.join("&"))
    };
    let mut uri: Uri = pq.parse().expect("query is percent-encoded");

    let outcome = run(f.auth.authenticate(&mut headers, &mut uri, HOSTS));
    let t1 = now();
    let w = Window {
        before: t0,
        after: t1,
    };

    let lenient =
        !placed.is_empty() && placed.iter().all(|(t, locs)| valid_at(f, t, locs, w, true));
    let strict = !placed.is_empty()
        && placed
            .iter()
            .all(|(t, locs)| valid_at(f, t, locs, w, false));

    stats(&outcome, strict);
    match &outcome {
        AuthnOutcome::NoToken => {
            assert!(placed.is_empty(), "NoToken with tokens placed: {placed:?}");
        }
        AuthnOutcome::Authenticated(id) => {
            assert!(
                lenient,
                "request authenticated but the reference rejects a token: {placed:?} -> {id:?}"
            );
            for (t, _) in &placed {
                assert!(
                    fuzz_parse(t),
                    "authenticated a token fuzz_parse refuses: {t:?}"
                );
            }
            // Every placed token was stripped (token headers are removed whole, as Envoy).
            for (t, locs) in &placed {
                if locs.contains(&Loc::Bearer) {
                    assert!(!headers.contains_key("authorization"), "token left: {t:?}");
                }
                if locs.contains(&Loc::XJwt) {
                    assert!(!headers.contains_key("x-jwt"), "token left: {t:?}");
                }
                for v in headers.get_all(http::header::COOKIE) {
                    let v = v.to_str().unwrap_or("");
                    assert!(
                        !v.split(';').any(|c| c.trim() == format!("session={t}")),
                        "token left in cookie: {t:?}"
                    );
                }
                for (n, v) in query_pairs(uri.query().unwrap_or("")) {
                    assert!(
                        !((n == "access_token" || n == "token") && v.trim() == t),
                        "token left in query: {t:?}"
                    );
                }
            }
            if let Some(p) = headers.get("x-jwt-payload") {
                let p = p.to_str().unwrap();
                assert!(
                    placed.iter().any(
                        |(t, locs)| locs.contains(&Loc::XJwt) && t.split('.').nth(1) == Some(p)
                    ),
                    "x-jwt-payload {p:?} is not the payload of a verified x-jwt token"
                );
            }
            let _ = id.claim("a.b");
        }
        AuthnOutcome::Invalid(fail) => {
            assert!(!placed.is_empty(), "Invalid without tokens: {fail:?}");
            assert!(
                !strict,
                "the reference accepts every token but Trellis refused: {placed:?} -> {fail:?}"
            );
            assert_eq!(fail.status(), http::StatusCode::UNAUTHORIZED);
            let _ = fail.body();
            let _ = fail.www_authenticate(&input.realm);
        }
    }
    if !matches!(outcome, AuthnOutcome::Authenticated(_)) {
        for h in OUTPUT_HEADERS {
            assert!(
                !headers.contains_key(h),
                "client-sent output header {h} survived: {outcome:?}"
            );
        }
    }
    for h in OUTPUT_HEADERS {
        if let Some(v) = headers.get(h) {
            assert_ne!(v, "forged", "forged {h} survived");
        }
    }
    let _ = realm("https", &input.realm, "/api?x");
});

//! `auth-service`: issues RS256 JWTs for demo users and publishes the verification key, as the
//! Alphintra auth service does for the ingress gateway's RequestAuthentication
//! (`issuer: https://auth.alphintra.com`, `audiences: [alphintra-api]`,
//! `jwksUri: .../.well-known/jwks.json`).
//!
//! - `POST /api/auth/login` `{"username","password"}`: any non-empty pair is a demo user;
//!   answers `{"access_token","token_type":"Bearer","expires_in"}`.
//! - `POST /api/auth/register`: the same, 201.
//! - `POST /api/auth/refresh` with a valid bearer token (or `{"refresh_token": ...}`): a new one.
//! - `GET /.well-known/jwks.json`, `GET /.well-known/openid-configuration`.
//! - `GET /health`, `/healthz`, `/actuator/health`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::keys::SigningKey;
use crate::server::{error, json, App, Request, ResponseFuture};

/// The issuer of the Alphintra RequestAuthentication (`requestauthentication-jwt.yaml`).
pub const DEFAULT_ISSUER: &str = "https://auth.alphintra.com";
/// Its audience.
pub const DEFAULT_AUDIENCE: &str = "alphintra-api";

#[derive(Clone, Debug)]
pub struct AuthOptions {
    pub issuer: String,
    pub audience: String,
    /// Token lifetime in seconds.
    pub ttl: u64,
    pub workload: String,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            issuer: DEFAULT_ISSUER.to_string(),
            audience: DEFAULT_AUDIENCE.to_string(),
            ttl: 3600,
            workload: "auth-service".to_string(),
        }
    }
}

pub struct AuthService {
    options: AuthOptions,
    key: SigningKey,
    encoding: jsonwebtoken::EncodingKey,
    decoding: jsonwebtoken::DecodingKey,
}

impl AuthService {
    pub fn new(options: AuthOptions, key: SigningKey) -> anyhow::Result<Self> {
        Ok(AuthService {
            encoding: key.encoding_key(),
            decoding: key.decoding_key()?,
            options,
            key,
        })
    }

    /// A signed token for `user`.
    pub fn issue(&self, user: &str) -> anyhow::Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = json!({
            "iss": self.options.issuer,
            "aud": self.options.audience,
            "sub": user,
            "iat": now,
            "nbf": now,
            "exp": now + self.options.ttl,
            "scope": "orders:read orders:write",
            "roles": ["trader"],
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.key.kid.clone());
        header.typ = Some("JWT".to_string());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| anyhow::anyhow!("cannot sign: {e}"))
    }

    /// The subject of a token this service issued, if it is valid.
    fn verify(&self, token: &str) -> Option<String> {
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_issuer(&[&self.options.issuer]);
        v.set_audience(&[&self.options.audience]);
        jsonwebtoken::decode::<Value>(token, &self.decoding, &v)
            .ok()
            .and_then(|d| d.claims.get("sub")?.as_str().map(str::to_string))
    }

    fn token_response(
        &self,
        user: &str,
        status: StatusCode,
    ) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        match self.issue(user) {
            Ok(token) => json(
                status,
                &json!({
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": self.options.ttl,
                }),
            ),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }

    fn respond(&self, req: &Request) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        let o = &self.options;
        match (req.method.clone(), req.path.as_str()) {
            (Method::GET, "/health" | "/healthz" | "/actuator/health" | "/ready") => json(
                StatusCode::OK,
                &json!({"status": "UP", "workload": o.workload}),
            ),
            (Method::GET, "/.well-known/jwks.json") => {
                json(StatusCode::OK, &json!({"keys": [self.key.jwk()]}))
            }
            (Method::GET, "/.well-known/openid-configuration") => json(
                StatusCode::OK,
                &json!({
                    "issuer": o.issuer,
                    "jwks_uri": format!("{}/.well-known/jwks.json", o.issuer.trim_end_matches('/')),
                    "id_token_signing_alg_values_supported": ["RS256"],
                }),
            ),
            (Method::POST, "/api/auth/login" | "/api/auth/register") => {
                let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        r#"expected JSON {"username": "...", "password": "..."}"#,
                    );
                };
                let field = |k: &str| {
                    body.get(k)
                        .and_then(Value::as_str)
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                };
                match (field("username"), field("password")) {
                    (Some(user), Some(_)) => {
                        let status = if req.path.ends_with("/register") {
                            StatusCode::CREATED
                        } else {
                            StatusCode::OK
                        };
                        self.token_response(user, status)
                    }
                    _ => error(
                        StatusCode::UNAUTHORIZED,
                        "username and password are required (any non-empty pair is a demo user, e.g. trader/trader)",
                    ),
                }
            }
            (Method::POST, "/api/auth/refresh") => {
                let from_body = serde_json::from_slice::<Value>(&req.body)
                    .ok()
                    .and_then(|b| {
                        b.get("refresh_token")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    });
                let token = from_body.or_else(|| req.bearer().map(str::to_string));
                match token.as_deref().and_then(|t| self.verify(t)) {
                    Some(user) => self.token_response(&user, StatusCode::OK),
                    None => error(
                        StatusCode::UNAUTHORIZED,
                        "a valid token is required (Authorization: Bearer or {\"refresh_token\"})",
                    ),
                }
            }
            (_, "/api/auth/login" | "/api/auth/register" | "/api/auth/refresh") => {
                error(StatusCode::METHOD_NOT_ALLOWED, "use POST")
            }
            _ => error(StatusCode::NOT_FOUND, &format!("no route for {}", req.path)),
        }
    }
}

impl App for AuthService {
    fn handle(self: Arc<Self>, req: Request) -> ResponseFuture {
        Box::pin(async move { self.respond(&req) })
    }
}

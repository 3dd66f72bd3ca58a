//! Request security in the data plane. Today: end-user authentication with JWTs
//! (`RequestAuthentication`).
//!
//! - `jwks`: key sets: parsing, fetching `jwksUri` over HTTP(S), caching, refresh, fail-closed.
//! - `jwt`: per-request token extraction and verification (`JwtAuthenticator`).
//!
//! Wiring: build one `JwksCache` per proxy process (it outlives config reloads so keys survive
//! them); for each config snapshot, `JwtAuthenticator::new(&JwtPolicy::compile(..), &cache)`;
//! per request, after path normalization and before authorization,
//! `authenticator.authenticate(&mut headers, &mut uri, &destination_hosts).await`, and answer
//! `AuthnOutcome::Invalid(f)` with `f.status()`, `f.body()` and
//! `www-authenticate: f.www_authenticate(&jwt::realm(scheme, authority, path))`.

pub mod jwks;
pub mod jwt;

pub use jwks::{JwksCache, JwksError, JwksOptions, KeySet, KeySource, SourceStatus};
pub use jwt::{
    AuthnFailure, AuthnOptions, AuthnOutcome, EmptyAudiences, FailureKind, JwtAuthenticator,
    JwtIdentity,
};

//! Security in the data plane: mesh identity (mTLS), end-user authentication with JWTs
//! (`RequestAuthentication`); authorization and path normalization run in `http::security`
//! on the model's decisions.
//!
//! - `jwks`: key sets: parsing, fetching `jwksUri` over HTTP(S), caching, refresh, fail-closed.
//! - `jwt`: per-request token extraction and verification (`JwtAuthenticator`).
//! - `mesh`: the workload certificate (local CA, rotation) and mesh mTLS configs
//!   (`MeshIdentity`, the `MeshTlsProvider` of `ProxyState`).
//! - `runtime`: `SecurityRuntime`, built per config snapshot (the `JwtAuthenticator`).
//!
//! Wiring: build one `JwksCache` per proxy process (it outlives config reloads so keys survive
//! them); for each config snapshot, `JwtAuthenticator::new(&JwtPolicy::compile(..), &cache)`;
//! per request, after path normalization and before authorization,
//! `authenticator.authenticate(&mut headers, &mut uri, &destination_hosts).await`, and answer
//! `AuthnOutcome::Invalid(f)` with `f.status()`, `f.body()` and
//! `www-authenticate: f.www_authenticate(&jwt::realm(scheme, authority, path))`.

pub mod jwks;
pub mod jwt;
pub mod mesh;
pub mod runtime;

pub use jwks::{JwksCache, JwksError, JwksOptions, KeySet, KeySource, SourceStatus};
pub use jwt::{
    AuthnFailure, AuthnOptions, AuthnOutcome, EmptyAudiences, FailureKind, JwtAuthenticator,
    JwtIdentity,
};
pub use mesh::MeshIdentity;
pub use runtime::SecurityRuntime;

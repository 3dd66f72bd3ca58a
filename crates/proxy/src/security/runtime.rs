//! The per-config security runtime: what the request path needs beyond the compiled
//! `SecurityConfig`, built once per config snapshot (never per request).

use std::sync::Arc;

use trellis_model::config::ProxyConfig;

use super::jwks::JwksCache;
use super::jwt::JwtAuthenticator;

/// Built when a config is applied, swapped with it.
#[derive(Debug)]
pub struct SecurityRuntime {
    /// The config this runtime belongs to: the request path takes routing and policies from
    /// here, so both come from one snapshot.
    pub config: Arc<ProxyConfig>,
    /// Verifies JWTs for the config's `RequestAuthentication` rules; remote key sets come from
    /// the process-wide `JwksCache`.
    pub jwt: JwtAuthenticator,
}

impl SecurityRuntime {
    /// Builds the runtime for `config` (call inside the proxy's tokio runtime so remote key
    /// sets start fetching at once).
    pub fn new(config: Arc<ProxyConfig>, jwks: &JwksCache) -> SecurityRuntime {
        let jwt = JwtAuthenticator::new(&config.security.jwt, jwks);
        for w in jwt.warnings() {
            tracing::warn!(version = %config.version, "RequestAuthentication: {w}");
        }
        SecurityRuntime { config, jwt }
    }
}

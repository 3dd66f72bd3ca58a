//! Demo workloads that `trellis up` runs for the Alphintra example (`trellis demo-app ...`):
//!
//! - [`echo`]: `service-gateway`, an HTTP/1.1 + h2c echo service reporting its version, its
//!   workload, the caller's mesh identity and the end user's claims;
//! - [`auth`]: `auth-service`, which issues RS256 JWTs matching the Alphintra
//!   RequestAuthentication and serves their JWKS.
//!
//! Each is a plain HTTP server on one address; the mesh (sidecar, mTLS, JWT checks, policy)
//! is around it, never inside it.

pub mod auth;
pub mod echo;
pub mod keys;
pub mod server;

pub use auth::{AuthOptions, AuthService};
pub use echo::{Echo, EchoOptions};
pub use keys::SigningKey;

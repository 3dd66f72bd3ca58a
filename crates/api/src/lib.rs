//! Trellis API: the Istio and Kubernetes resources a mesh is configured with.
//!
//! Owns the typed model (`networking`, `security`, `k8s`, `mesh`), reading YAML/JSON and
//! kustomize directories into located documents (`yaml`, `kustomize`, `load`), and per-resource
//! schema validation (`validate`). No network I/O; no cross-resource analysis (see the
//! `analyze` crate) and no compilation into proxy config (see `model`).

pub mod common;
pub mod diag;
pub mod duration;
pub mod host;
pub mod k8s;
pub mod kustomize;
pub mod load;
pub mod mesh;
pub mod networking;
pub mod resource;
pub mod security;
pub mod source;
pub mod telemetry;
pub mod validate;
pub mod yaml;

pub use diag::{Diagnostic, ResourceRef, Severity};
pub use duration::Duration;
pub use mesh::MeshConfig;
pub use resource::{Kind, Object, Origin, Parsed, Resource, Unrecognized};
pub use source::Location;
pub use validate::{Validate, Validator};

//! The control plane <-> proxy wire protocol: gRPC service `trellis.v1.MeshConfig`, compiled
//! from `proto/trellis.proto` at build time with protox (no system `protoc`).
//!
//! Owns the message types, the split of resource kinds into the two config types (RESOURCES
//! and ENDPOINTS), and the conversion of `trellis_api::Resource`s to and from their wire form
//! (the document's JSON plus its source location). Does not own what is sent to whom (the
//! control crate) or what a proxy does with it (the proxy's `control_client`).

use std::fmt;
use std::sync::Arc;

use trellis_api::source::SpanMap;
use trellis_api::yaml::Document;
use trellis_api::{Diagnostic, Kind, Location, Parsed};

/// Generated messages, client and server.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("trellis.v1");
}

pub use v1::mesh_config_client::MeshConfigClient;
pub use v1::mesh_config_server::{MeshConfig, MeshConfigServer};
pub use v1::{
    control_message, proxy_message, Ack, CertificateResponse, ConfigType, ControlMessage,
    CsrRequest, Hello, Nack, ProxyMessage, ResourceKey, StatusRequest, StatusResponse, Update,
};

/// Istio's port for the plaintext control-plane gRPC server.
pub const DEFAULT_GRPC_PORT: u16 = 15010;
/// Istio's port for control-plane metrics (and Trellis's debug endpoints).
pub const DEFAULT_METRICS_PORT: u16 = 15014;
/// Istio's port for the mTLS control-plane gRPC server (the same service as
/// [`DEFAULT_GRPC_PORT`], authenticated by the proxy's workload certificate).
pub const DEFAULT_MTLS_PORT: u16 = 15012;
/// Service account of the control plane's own certificate (in the mesh root namespace):
/// `spiffe://<trust domain>/ns/<root namespace>/sa/istiod`, as Istio's.
pub const CONTROL_PLANE_SERVICE_ACCOUNT: &str = "istiod";

/// The SPIFFE id a proxy expects of the control plane on the mTLS channel.
pub fn control_plane_identity(trust_domain: &str, root_namespace: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{root_namespace}/sa/{CONTROL_PLANE_SERVICE_ACCOUNT}")
}

/// Which config type a kind travels as: workloads and endpoint slices are ENDPOINTS (they
/// change often and must not resend routes and policies), everything else RESOURCES.
pub fn config_type_of(kind: Kind) -> ConfigType {
    match kind {
        Kind::WorkloadEntry | Kind::Pod | Kind::Deployment | Kind::EndpointSlice => {
            ConfigType::Endpoints
        }
        _ => ConfigType::Resources,
    }
}

impl ConfigType {
    /// The types a proxy receives, in push order.
    pub const ALL: [ConfigType; 2] = [ConfigType::Resources, ConfigType::Endpoints];

    /// `RESOURCES` / `ENDPOINTS`.
    pub fn name(self) -> &'static str {
        match self {
            ConfigType::Resources => "RESOURCES",
            ConfigType::Endpoints => "ENDPOINTS",
            ConfigType::Unspecified => "UNSPECIFIED",
        }
    }
}

impl fmt::Display for ConfigType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl ResourceKey {
    /// The key of a resource.
    pub fn of(r: &trellis_api::Resource) -> Self {
        ResourceKey {
            kind: r.kind.name().to_string(),
            namespace: r.namespace.clone().unwrap_or_default(),
            name: r.name.clone(),
        }
    }

    /// `Kind/namespace/name` (`Kind//name` for cluster-scoped kinds): a map key.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
    }

    /// Parses [`ResourceKey::id`].
    pub fn from_id(id: &str) -> Option<Self> {
        let mut it = id.splitn(3, '/');
        Some(ResourceKey {
            kind: it.next()?.to_string(),
            namespace: it.next()?.to_string(),
            name: it.next()?.to_string(),
        })
    }
}

impl fmt::Display for ResourceKey {
    /// `Kind namespace/name`, as diagnostics print resources.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// The `Kind ns/name` id of a resource (same as [`ResourceKey::id`]).
pub fn resource_id(r: &trellis_api::Resource) -> String {
    format!("{}/{}/{}", r.kind.name(), r.ns(), r.name)
}

/// The wire form of a resource: its document as JSON and where it was read.
pub fn to_wire(r: &trellis_api::Resource) -> v1::Resource {
    let loc = &r.origin.location;
    v1::Resource {
        key: Some(ResourceKey::of(r)),
        json: r.raw.to_string(),
        file: loc.file.to_string(),
        line: u32::try_from(loc.line).unwrap_or(u32::MAX),
        column: u32::try_from(loc.column).unwrap_or(u32::MAX),
    }
}

/// Reads a wire resource back. Errors are located at the resource's source location (field
/// locations inside it are not carried: messages point at the document).
pub fn from_wire(w: &v1::Resource) -> Result<Parsed, Vec<Diagnostic>> {
    let file: Arc<str> = if w.file.is_empty() {
        Arc::from("<control-plane>")
    } else {
        Arc::from(w.file.as_str())
    };
    let location = Location::new(file.clone(), w.line as usize, w.column as usize);
    let value: serde_json::Value = serde_json::from_str(&w.json).map_err(|e| {
        vec![Diagnostic::error(format!("resource is not valid JSON: {e}")).at(location.clone())]
    })?;
    let doc = Document {
        value,
        spans: Arc::new(SpanMap::new(file)),
        location,
    };
    let default_ns = w.key.as_ref().map(|k| k.namespace.as_str()).unwrap_or("");
    trellis_api::Resource::from_document(&doc, default_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_api::load::{LoadOptions, ResourceSet};

    #[test]
    fn wire_round_trip_keeps_identity_and_location() {
        let mut set = ResourceSet::default();
        set.add_text(
            "vs.yaml",
            "# c\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n  namespace: a\nspec:\n  hosts: [r]\n  http:\n  - route:\n    - destination: {host: r}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
            &LoadOptions::default(),
        );
        assert!(set.diagnostics.is_empty(), "{:?}", set.diagnostics);
        for r in &set.resources {
            let w = to_wire(r);
            assert_eq!(w.key.as_ref().unwrap().id(), resource_id(r));
            let Parsed::Resource(back) = from_wire(&w).unwrap() else {
                panic!("unrecognized")
            };
            assert_eq!(back.key(), r.key());
            assert_eq!(back.raw, r.raw);
            assert_eq!(back.origin.location, r.origin.location);
        }
        assert_eq!(set.resources[0].origin.location.line, 2);
        assert_eq!(
            ResourceKey::from_id("Namespace//a").unwrap().to_string(),
            "Namespace a"
        );
    }

    #[test]
    fn kinds_split_into_types() {
        assert_eq!(config_type_of(Kind::WorkloadEntry), ConfigType::Endpoints);
        assert_eq!(config_type_of(Kind::EndpointSlice), ConfigType::Endpoints);
        assert_eq!(config_type_of(Kind::VirtualService), ConfigType::Resources);
        assert_eq!(config_type_of(Kind::Service), ConfigType::Resources);
    }

    #[test]
    fn bad_json_is_located() {
        let w = v1::Resource {
            key: None,
            json: "{".into(),
            file: "f.yaml".into(),
            line: 3,
            column: 1,
        };
        let e = from_wire(&w).unwrap_err();
        assert_eq!(e[0].location.as_ref().unwrap().to_string(), "f.yaml:3:1");
    }
}

//! Kubernetes objects a mesh reasons about. The core kinds are k8s-openapi's types (complete and
//! maintained); cert-manager's `Certificate` is modelled here as far as the mesh needs it (the
//! secret it will create). Also owns validation of the fields the mesh depends on.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::validate::Validator;

/// cert-manager.io/v1 Certificate: only the fields the mesh uses; others are accepted as is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CertificateSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    /// The Secret cert-manager writes the certificate to.
    #[serde(default)]
    pub secret_name: String,
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default)]
    pub common_name: Option<String>,
    #[serde(default)]
    pub issuer_ref: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// Service fields the mesh relies on: port ranges, port names, unique ports.
pub fn validate_service(svc: &Service, v: &mut Validator) {
    let Some(spec) = &svc.spec else { return };
    let ports = spec.ports.as_deref().unwrap_or_default();
    v.at("spec.ports", |v| {
        let mut seen = std::collections::HashSet::new();
        for (i, p) in ports.iter().enumerate() {
            v.at_index(i, |v| {
                if !(1..=65535).contains(&p.port) {
                    v.error_at(
                        "port",
                        format!("port number {} is out of range: expected 1-65535", p.port),
                    );
                }
                let proto = p.protocol.as_deref().unwrap_or("TCP");
                if !seen.insert((p.port, proto.to_string())) {
                    v.error_at("port", format!("duplicate port {}/{proto}", p.port));
                }
                if ports.len() > 1 && p.name.as_deref().unwrap_or("").is_empty() {
                    v.error_at(
                        "name",
                        "ports must be named when a Service has more than one port",
                    );
                }
            })
        }
    });
}

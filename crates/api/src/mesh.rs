//! Placeholder: replaced by MeshConfig.
use serde::{Deserialize, Serialize};
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    pub root_namespace: String,
    pub trust_domain: String,
}
impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            root_namespace: "istio-system".into(),
            trust_domain: "cluster.local".into(),
        }
    }
}

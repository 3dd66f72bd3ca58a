//! Mesh config discovery for CLI commands: `--meshConfigFile`, else the `istio` ConfigMap in
//! the root namespace of the loaded resources, else Istio's defaults.

use std::path::Path;

use anyhow::anyhow;
use trellis_api::load::ResourceSet;
use trellis_api::MeshConfig;

/// Reads a MeshConfig file (or a ConfigMap file holding one); errors carry file:line:column.
pub fn load_mesh_config(file: &Path) -> anyhow::Result<MeshConfig> {
    MeshConfig::from_file(file).map_err(|d| anyhow!("invalid mesh config: {d}"))
}

/// The `istio` ConfigMap in the root namespace, when the inputs hold one.
pub fn mesh_config_from_resources(
    set: &ResourceSet,
    root: &str,
) -> anyhow::Result<Option<MeshConfig>> {
    match MeshConfig::from_resources(&set.resources, root) {
        None => Ok(None),
        Some(Ok(m)) => Ok(Some(m)),
        Some(Err(d)) => Err(anyhow!("invalid mesh config: {d}")),
    }
}

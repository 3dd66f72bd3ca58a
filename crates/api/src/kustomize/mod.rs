//! Native kustomize renderer: `kubectl kustomize <dir>` without an external binary.
//!
//! Owns reading kustomization files (strictly: unknown fields are errors), accumulating
//! resources (files, `List`s, nested kustomizations, components), the generators
//! (`configMapGenerator`, `secretGenerator`, with kustomize's name hash), the builtin
//! transformers in kustomize's order (`patchesStrategicMerge`, `patches`, `namespace`,
//! `namePrefix`/`nameSuffix`, `labels`/`commonLabels`, `commonAnnotations`, `patchesJson6902`,
//! `replicas`, `images`, `replacements`), `configurations`, name reference fix-ups and
//! kustomize's output order (`sortOptions`). Behaviour follows kustomize v5.5 (kubectl v1.32),
//! including its strategic merge patch (a port of kyaml `merge2`, quirks included).
//!
//! Resources read from files keep the spans of their file, even after transformations change
//! their value; generated objects point at the kustomization entry that generates them.
//!
//! Not supported (a "not supported" error, never silently ignored): remote resources, helm
//! charts, `vars`, `crds`, `openapi`, `buildMetadata`, generator/transformer/validator plugins.

mod build;
pub(crate) use build::respan;
mod config;
mod error;
mod fieldspec;
mod generators;
mod kustfile;
mod loader;
mod merge;
mod nameref;
mod replacements;
mod res;
mod resid;
mod schema;
mod selector;
mod styles;
mod transform;
mod util;
mod watch_paths;

use std::path::{Path, PathBuf};

pub use error::KustomizeError;
pub use watch_paths::watch_paths;

use crate::yaml::Document;

/// File names kustomize recognizes, in its lookup order.
pub(crate) const KUSTOMIZATION_FILE_NAMES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// True when `dir` holds a kustomization file.
pub fn is_kustomization_dir(dir: &Path) -> bool {
    kustomization_file(dir).is_some()
}

/// The kustomization file of `dir`, if any.
pub fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_FILE_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Renders the kustomization in `dir` like `kubectl kustomize dir`: every output object, in
/// kustomize's output order, with the location it came from.
pub fn render(dir: &Path) -> Result<Vec<Document>, KustomizeError> {
    build::build(dir)
}

//! Placeholder: replaced by the kustomize renderer.
use crate::yaml::Document;
use std::path::Path;
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KustomizeError(pub String);
impl KustomizeError {
    pub fn into_diagnostic(self, dir: &Path) -> crate::diag::Diagnostic {
        crate::diag::Diagnostic::error(self.0).at(crate::source::Location::new(
            dir.display().to_string(),
            1,
            1,
        ))
    }
}
pub fn is_kustomization_dir(dir: &Path) -> bool {
    kustomization_file(dir).is_some()
}
pub fn kustomization_file(dir: &Path) -> Option<std::path::PathBuf> {
    ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}
pub fn render(dir: &Path) -> Result<Vec<Document>, KustomizeError> {
    let _ = dir;
    Err(KustomizeError("kustomize not implemented yet".into()))
}

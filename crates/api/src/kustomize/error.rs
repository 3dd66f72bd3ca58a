//! Errors of the kustomize renderer, each with the place in config it is about when known.

use std::path::{Path, PathBuf};

use crate::diag::Diagnostic;
use crate::source::Location;
use crate::yaml::YamlError;

#[derive(Debug, thiserror::Error)]
pub enum KustomizeError {
    /// A file is not valid YAML.
    #[error("{0}")]
    Yaml(#[from] YamlError),
    /// A file or directory could not be read.
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    /// Invalid kustomization or a build step that failed, located in config.
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },
    /// A kustomize feature this renderer does not implement.
    #[error("{location}: not supported: {feature}")]
    Unsupported { location: Location, feature: String },
    /// A build step failed and no better location is known.
    #[error("{0}")]
    Build(String),
}

impl KustomizeError {
    pub(crate) fn invalid(location: Location, message: impl Into<String>) -> Self {
        KustomizeError::Invalid {
            location,
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(location: Location, feature: impl Into<String>) -> Self {
        KustomizeError::Unsupported {
            location,
            feature: feature.into(),
        }
    }

    pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> Self {
        KustomizeError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    /// Where in config the error is, when known.
    pub fn location(&self) -> Option<Location> {
        match self {
            KustomizeError::Yaml(e) => Some(e.location.clone()),
            KustomizeError::Io { path, .. } => {
                Some(Location::new(path.display().to_string(), 1, 1))
            }
            KustomizeError::Invalid { location, .. }
            | KustomizeError::Unsupported { location, .. } => Some(location.clone()),
            KustomizeError::Build(_) => None,
        }
    }

    /// The message without its location.
    pub fn message(&self) -> String {
        match self {
            KustomizeError::Yaml(e) => e.message.clone(),
            KustomizeError::Io { message, .. } => format!("cannot read: {message}"),
            KustomizeError::Invalid { message, .. } => message.clone(),
            KustomizeError::Unsupported { feature, .. } => format!("not supported: {feature}"),
            KustomizeError::Build(m) => m.clone(),
        }
    }

    /// A diagnostic at the error's location, or at `dir` when none is known.
    pub fn into_diagnostic(self, dir: &Path) -> Diagnostic {
        let location = self
            .location()
            .unwrap_or_else(|| Location::new(dir.display().to_string(), 1, 1));
        Diagnostic::error(format!("kustomize: {}", self.message())).at(location)
    }
}

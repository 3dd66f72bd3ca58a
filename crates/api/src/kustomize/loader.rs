//! Reading files of a kustomization the way kustomize's loader does: relative to the
//! kustomization directory, refusing files outside it (kustomize's default `LoadRestrictionsRootOnly`)
//! and remote URLs.

use std::path::{Path, PathBuf};

use super::error::KustomizeError;
use super::util::join_clean;
use crate::source::Location;

/// A kustomization directory: how it is shown in messages and where it really is.
#[derive(Clone, Debug)]
pub struct Root {
    pub display: PathBuf,
    pub real: PathBuf,
}

impl Root {
    pub fn new(display: &Path) -> Result<Root, KustomizeError> {
        let real = std::fs::canonicalize(display).map_err(|e| KustomizeError::io(display, e))?;
        Ok(Root {
            display: display.to_path_buf(),
            real,
        })
    }

    /// Path of `rel` for messages.
    pub fn display_of(&self, rel: &str) -> PathBuf {
        join_clean(&self.display, rel)
    }

    /// Reads file `rel` (must be inside the kustomization directory). `at` is the kustomization
    /// entry that names it.
    pub fn read(&self, rel: &str, at: &Location) -> Result<(PathBuf, Vec<u8>), KustomizeError> {
        let display = self.display_of(rel);
        if looks_remote(rel) && !self.real.join(rel).exists() {
            return Err(KustomizeError::unsupported(
                at.clone(),
                format!("remote file {rel:?} (only local files can be used)"),
            ));
        }
        let real = self.resolve(rel).map_err(|e| {
            KustomizeError::invalid(at.clone(), format!("{}: {e}", display.display()))
        })?;
        if real.is_dir() {
            return Err(KustomizeError::invalid(
                at.clone(),
                format!("{}: is a directory, expected a file", display.display()),
            ));
        }
        if !real.starts_with(&self.real) {
            return Err(KustomizeError::invalid(
                at.clone(),
                format!(
                    "security; file '{}' is not in or below '{}'",
                    display.display(),
                    self.display.display()
                ),
            ));
        }
        let bytes = std::fs::read(&real).map_err(|e| {
            KustomizeError::invalid(at.clone(), format!("{}: {e}", display.display()))
        })?;
        Ok((display, bytes))
    }

    /// Like `read` for text files.
    pub fn read_text(&self, rel: &str, at: &Location) -> Result<(PathBuf, String), KustomizeError> {
        let (display, bytes) = self.read(rel, at)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            KustomizeError::invalid(at.clone(), format!("{}: not UTF-8 text", display.display()))
        })?;
        Ok((display, text))
    }

    /// The real path of `rel`: its directory with symlinks resolved, and its file name.
    fn resolve(&self, rel: &str) -> std::io::Result<PathBuf> {
        let joined = self.real.join(rel);
        let meta = std::fs::symlink_metadata(&joined)?;
        if meta.is_dir() {
            return std::fs::canonicalize(&joined);
        }
        let parent = joined.parent().unwrap_or(&self.real);
        let name = joined.file_name().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path")
        })?;
        Ok(std::fs::canonicalize(parent)?.join(name))
    }

    /// Whether `rel` names an existing directory.
    pub fn dir(&self, rel: &str) -> Option<(PathBuf, PathBuf)> {
        let real = std::fs::canonicalize(self.real.join(rel)).ok()?;
        real.is_dir().then(|| (self.display_of(rel), real))
    }

    /// Whether `rel` names an existing file.
    pub fn is_file(&self, rel: &str) -> bool {
        self.real.join(rel).is_file()
    }
}

/// URLs and repository specs kustomize would fetch remotely.
pub fn looks_remote(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    lower.contains("://")
        || lower.starts_with("git@")
        || lower.starts_with("git::")
        || lower.starts_with("github.com/")
        || lower.starts_with("gitlab.com/")
        || lower.starts_with("bitbucket.org/")
        || lower.contains("?ref=")
        || lower.contains(".git//")
}

//! `replacements` (kustomize `ReplacementTransformer`).

use serde_json::Value;

use super::error::KustomizeError;
use super::kustfile::Entry;
use super::loader::Root;
use super::res::Res;

pub fn apply(_list: &mut [Res], entries: &[Entry<Value>], _root: &Root) -> Result<(), KustomizeError> {
    match entries.first() {
        None => Ok(()),
        Some(e) => Err(KustomizeError::unsupported(e.location.clone(), "replacements")),
    }
}

//! Which files a set of inputs depends on, for watchers (the control plane, `trellis proxy`,
//! `trellis up`): the inputs themselves and everything the kustomizations under them pull in
//! from elsewhere (`resources`, `bases`, `components`, patch and generator files). Remote
//! references (URLs, git) are skipped. Best effort: unreadable or malformed kustomizations
//! add nothing (loading reports them).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// `roots` plus every local path the kustomizations under the directories among them
/// reference.
pub fn watch_paths<'a>(roots: impl IntoIterator<Item = &'a PathBuf>) -> Vec<PathBuf> {
    let roots: Vec<&PathBuf> = roots.into_iter().collect();
    let mut out: Vec<PathBuf> = roots.iter().map(|p| (*p).clone()).collect();
    let mut seen = HashSet::new();
    for dir in roots {
        if dir.is_dir() {
            kustomize_references(dir, &mut seen, &mut out, 0);
        }
    }
    out
}

/// Adds the paths a kustomization under `dir` (or its subdirectories) pulls in.
fn kustomize_references(
    dir: &Path,
    seen: &mut HashSet<PathBuf>,
    out: &mut Vec<PathBuf>,
    depth: u32,
) {
    if depth > 16 || !seen.insert(std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            kustomize_references(&p, seen, out, depth + 1);
        }
    }
    let Some(file) = super::kustomization_file(dir) else {
        return;
    };
    let Ok(text) = std::fs::read_to_string(&file) else {
        return;
    };
    let Ok(doc) = serde_saphyr::from_str::<serde_json::Value>(&text) else {
        return;
    };
    let mut refs = Vec::new();
    for key in [
        "resources",
        "bases",
        "components",
        "patchesStrategicMerge",
        "crds",
    ] {
        if let Some(list) = doc.get(key).and_then(|v| v.as_array()) {
            refs.extend(list.iter().filter_map(|v| v.as_str()).map(str::to_string));
        }
    }
    for key in ["patches", "patchesJson6902"] {
        if let Some(list) = doc.get(key).and_then(|v| v.as_array()) {
            refs.extend(
                list.iter()
                    .filter_map(|v| v.get("path")?.as_str())
                    .map(str::to_string),
            );
        }
    }
    for key in ["configMapGenerator", "secretGenerator"] {
        for g in doc
            .get(key)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            for field in ["files", "envs"] {
                for f in g
                    .get(field)
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                {
                    if let Some(s) = f.as_str() {
                        refs.push(s.rsplit_once('=').map_or(s, |(_, p)| p).to_string());
                    }
                }
            }
        }
    }
    for r in refs {
        if r.contains("://") || r.starts_with("github.com/") || r.starts_with("git@") {
            continue;
        }
        let p = dir.join(&r);
        if p.is_dir() {
            out.push(p.clone());
            kustomize_references(&p, seen, out, depth + 1);
        } else if p.exists() {
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_outside_the_root_are_watched() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("base");
        let overlay = d.path().join("overlays/dev");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(&overlay).unwrap();
        std::fs::write(base.join("kustomization.yaml"), "resources: [a.yaml]\n").unwrap();
        std::fs::write(base.join("a.yaml"), "kind: List\n").unwrap();
        std::fs::write(
            overlay.join("kustomization.yaml"),
            "resources: [../../base, https://example.com/x.yaml]\npatches: [{path: p.yaml}]\n",
        )
        .unwrap();
        std::fs::write(overlay.join("p.yaml"), "kind: List\n").unwrap();
        let got = watch_paths([&overlay]);
        assert_eq!(got[0], overlay);
        assert!(got.contains(&overlay.join("../../base")), "{got:?}");
        assert!(
            got.contains(&overlay.join("../../base").join("a.yaml")),
            "{got:?}"
        );
        assert!(got.contains(&overlay.join("p.yaml")), "{got:?}");
        assert!(!got
            .iter()
            .any(|p| p.to_string_lossy().contains("example.com")));
    }
}

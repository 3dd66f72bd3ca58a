//! The native kustomize renderer against `kubectl kustomize` (kustomize v5.5.0).
//!
//! Each directory under `tests/kustomize/` is a case: it is built from `<case>/overlay` when that
//! exists, else from `<case>` itself, and must equal `<case>/expected.yaml` (generated with
//! `kubectl kustomize`). When `kubectl` is on PATH the build is also compared with a live
//! `kubectl kustomize`. Outputs are compared as parsed values, list order included.
//!
//! Cases under `tests/kustomize/errors/<case>` must fail (as `kubectl kustomize` does, except
//! for `unsupported-*` cases); `<case>/expected-error.txt` holds the location (`file:line`,
//! relative to the case) and a fragment of the message, one per line.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use trellis_api::kustomize;
use trellis_api::yaml::parse_documents;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kustomize")
}

fn build_root(case: &Path) -> PathBuf {
    let overlay = case.join("overlay");
    if overlay.is_dir() {
        overlay
    } else {
        case.to_path_buf()
    }
}

fn values(file: &str, text: &str) -> Vec<Value> {
    parse_documents(file, text)
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .into_iter()
        .map(|d| d.value)
        .collect()
}

fn render(dir: &Path) -> Result<Vec<Value>, String> {
    kustomize::render(dir)
        .map(|docs| docs.into_iter().map(|d| d.value).collect())
        .map_err(|e| e.to_string())
}

fn kubectl_available() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn kubectl_kustomize(dir: &Path) -> Result<Vec<Value>, String> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    parse_documents("kubectl output", &String::from_utf8_lossy(&out.stdout))
        .map(|docs| docs.into_iter().map(|d| d.value).collect())
        .map_err(|e| format!("unreadable kubectl output: {e}"))
}

/// A readable account of how two outputs differ.
fn diff(want: &[Value], got: &[Value]) -> Option<String> {
    if want == got {
        return None;
    }
    let id = |v: &Value| {
        format!(
            "{} {}",
            v["kind"].as_str().unwrap_or("?"),
            v["metadata"]["name"].as_str().unwrap_or("?")
        )
    };
    let mut out = format!(
        "want {} objects [{}]\n got {} objects [{}]\n",
        want.len(),
        want.iter().map(id).collect::<Vec<_>>().join(", "),
        got.len(),
        got.iter().map(id).collect::<Vec<_>>().join(", ")
    );
    for (i, (w, g)) in want.iter().zip(got.iter()).enumerate() {
        if w != g {
            out.push_str(&format!(
                "first difference at object {i}:\nwant: {}\n got: {}\n",
                serde_json::to_string_pretty(w).unwrap(),
                serde_json::to_string_pretty(g).unwrap()
            ));
            break;
        }
    }
    Some(out)
}

fn cases() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.join("expected.yaml").is_file())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn cases_match_golden_and_kubectl() {
    let live = kubectl_available();
    let cases = cases();
    assert!(cases.len() >= 8, "fixtures missing: {cases:?}");
    let mut failures = Vec::new();
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let root = build_root(&case);
        let got = match render(&root) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{name}: render failed: {e}"));
                continue;
            }
        };
        let golden_text = std::fs::read_to_string(case.join("expected.yaml")).unwrap();
        let golden = values(&format!("{name}/expected.yaml"), &golden_text);
        if let Some(d) = diff(&golden, &got) {
            failures.push(format!("{name}: differs from expected.yaml\n{d}"));
        }
        if live {
            match kubectl_kustomize(&root) {
                Ok(want) => {
                    if let Some(d) = diff(&want, &got) {
                        failures.push(format!("{name}: differs from kubectl kustomize\n{d}"));
                    }
                }
                Err(e) => failures.push(format!("{name}: kubectl kustomize failed: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn error_cases_are_located() {
    let dir = fixtures().join("errors");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("expected-error.txt").is_file())
        .collect();
    cases.sort();
    assert!(!cases.is_empty());
    let live = kubectl_available();
    let mut failures = Vec::new();
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let root = build_root(&case);
        let expect = std::fs::read_to_string(case.join("expected-error.txt")).unwrap();
        let mut lines = expect.lines();
        let want_loc = lines.next().unwrap_or_default().trim().to_string();
        let want_msg = lines.next().unwrap_or_default().trim().to_string();
        match kustomize::render(&root) {
            Ok(_) => failures.push(format!("{name}: rendered, expected an error")),
            Err(e) => {
                let loc = e.location().map(|l| {
                    let file = Path::new(&*l.file)
                        .strip_prefix(&case)
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| l.file.to_string());
                    format!("{file}:{}", l.line)
                });
                if loc.as_deref() != Some(want_loc.as_str()) {
                    failures.push(format!("{name}: error at {loc:?}, want {want_loc}: {e}"));
                }
                if !e.to_string().contains(&want_msg) {
                    failures.push(format!("{name}: message {e:?} lacks {want_msg:?}"));
                }
                let diag = e.into_diagnostic(&root);
                assert!(diag.is_error() && diag.location.is_some());
            }
        }
        // kubectl renders what this renderer declines ("unsupported-" cases).
        if live && !name.starts_with("unsupported-") && kubectl_kustomize(&root).is_ok() {
            failures.push(format!(
                "{name}: kubectl kustomize succeeds on an error case"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn resources_keep_their_file_locations() {
    let case = fixtures().join("istio-overlay");
    let docs = kustomize::render(&build_root(&case)).unwrap();
    let vs = docs
        .iter()
        .find(|d| d.value["kind"] == "VirtualService")
        .expect("a VirtualService");
    assert!(
        vs.location.file.ends_with("base/virtualservice.yaml"),
        "{}",
        vs.location
    );
    // The patched route still points into the base file.
    let l = vs.spans.locate("/spec/http/0").unwrap();
    assert!(l.file.ends_with("base/virtualservice.yaml"));
    assert!(l.line > 1);
    // Generated objects point at the kustomization that generates them.
    let cm = docs
        .iter()
        .find(|d| d.value["kind"] == "ConfigMap")
        .expect("a ConfigMap");
    assert!(
        cm.location.file.ends_with("kustomization.yaml"),
        "{}",
        cm.location
    );
}

/// Developer aid: compares the directories in `KUST_DIRS` (separated by `:`) with live
/// `kubectl kustomize`. `KUST_DIRS=/tmp/a:/tmp/b cargo test --test kustomize -- --ignored`.
#[test]
#[ignore]
fn compare_dirs_from_env() {
    let Ok(dirs) = std::env::var("KUST_DIRS") else {
        return;
    };
    let mut failures = Vec::new();
    for d in dirs.split(':').filter(|d| !d.is_empty()) {
        let dir = Path::new(d);
        if std::env::var("KUST_NO_KUBECTL").is_ok() {
            let start = std::time::Instant::now();
            let n = render(dir).map(|v| v.len());
            println!("{d}: {n:?} objects in {:?}", start.elapsed());
            continue;
        }
        match (kubectl_kustomize(dir), render(dir)) {
            (Ok(want), Ok(got)) => {
                if let Some(x) = diff(&want, &got) {
                    failures.push(format!("{d}: {x}"));
                }
            }
            (Err(k), Err(o)) => println!("{d}: both fail\n  kubectl: {k}\n  ours: {o}"),
            (Ok(_), Err(o)) => failures.push(format!("{d}: we fail: {o}")),
            (Err(k), Ok(_)) => failures.push(format!("{d}: kubectl fails but we render: {k}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The project's own overlays render exactly as `kubectl kustomize` renders them (goldens in
/// `tests/kustomize-alphintra/<env>.yaml`, and live when kubectl is installed).
#[test]
fn alphintra_overlays_match_kubectl() {
    let live = kubectl_available();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut failures = Vec::new();
    for env in ["dev", "staging", "prod"] {
        let dir = repo
            .join("examples/alphintra/infra/kubernetes/istio/overlays")
            .join(env);
        let got = match render(&dir) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{env}: render failed: {e}"));
                continue;
            }
        };
        let golden_file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/kustomize-alphintra")
            .join(format!("{env}.yaml"));
        let golden = values(
            &format!("{env}.yaml"),
            &std::fs::read_to_string(golden_file).unwrap(),
        );
        if let Some(d) = diff(&golden, &got) {
            failures.push(format!("{env}: differs from the kubectl golden\n{d}"));
        }
        if live {
            match kubectl_kustomize(&dir) {
                Ok(want) => {
                    if let Some(d) = diff(&want, &got) {
                        failures.push(format!("{env}: differs from kubectl kustomize\n{d}"));
                    }
                }
                Err(e) => failures.push(format!("{env}: kubectl kustomize failed: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

//! `trellis analyze` end to end: the real binary on the project's example manifests.
//! Each `examples/broken/<CODE>-*.yaml` must yield its code and exit 79; the Alphintra overlays
//! and the sample manifests must analyze with no errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn trellis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run trellis")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn each_broken_example_yields_its_code_and_exit_79() {
    let dir = root().join("examples/broken");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/broken exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "expected one broken example per analyzer, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let code = &name[..7];
        assert!(
            code.starts_with("IST"),
            "{name}: file names start with the expected code"
        );
        let rel = f
            .strip_prefix(root())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let out = trellis(&["analyze", "--failure-threshold", "Info", &rel]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !stdout.contains(&format!("[{code}]")) || out.status.code() != Some(79) {
            failures.push(format!(
                "{name}: expected [{code}] and exit 79\n{}",
                text(&out)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn alphintra_overlays_analyze_clean() {
    for env in ["dev", "staging", "prod"] {
        let dir = format!("examples/alphintra/infra/kubernetes/istio/overlays/{env}");
        let out = trellis(&["analyze", "-k", &dir]);
        assert_eq!(out.status.code(), Some(0), "{env}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("Error ["), "{env}: {}", text(&out));
    }
}

#[test]
fn sample_manifests_analyze_without_errors() {
    let out = trellis(&["analyze", "tests/manifests/written"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = trellis(&[
        "analyze",
        "--failure-threshold",
        "Error",
        "tests/manifests/istio-samples",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("[IST0106]"),
        "real Istio samples must load unchanged: {}",
        text(&out)
    );
}

#[test]
fn malformed_files_point_at_file_line_column() {
    let dir = root().join("examples/broken/malformed");
    for entry in std::fs::read_dir(&dir).expect("examples/broken/malformed exists") {
        let p = entry.unwrap().path();
        if p.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let rel = p
            .strip_prefix(root())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let out = trellis(&["analyze", &rel]);
        assert_eq!(out.status.code(), Some(79), "{rel}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let re_loc = format!("{rel}:");
        assert!(
            stdout.contains("[IST0106]") && stdout.contains(&re_loc),
            "{rel}: {}",
            text(&out)
        );
    }
}

#[test]
fn json_output_has_istioctl_fields() {
    let out = trellis(&["analyze", "-o", "json", "examples/broken"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let arr = v.as_array().expect("a list of messages");
    assert!(!arr.is_empty());
    for m in arr {
        for k in [
            "code",
            "level",
            "message",
            "origin",
            "reference",
            "documentationUrl",
        ] {
            assert!(m.get(k).is_some(), "missing {k} in {m}");
        }
    }
    let out = trellis(&["analyze", "-o", "yaml", "examples/broken"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("code: IST"));
}

#[test]
fn thresholds_and_suppression() {
    let file = "examples/broken/IST0118-service-port-name-no-protocol.yaml";
    // IST0118 is Info: below the default Error threshold, so exit 0.
    let out = trellis(&["analyze", file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("[IST0118]"));
    let out = trellis(&["analyze", "--failure-threshold", "Info", file]);
    assert_eq!(out.status.code(), Some(79), "{}", text(&out));
    let out = trellis(&["analyze", "--output-threshold", "Warning", file]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("[IST0118]"));
    let out = trellis(&[
        "analyze",
        "--failure-threshold",
        "Info",
        "-S",
        "IST0118=Service *",
        file,
    ]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("[IST0118]"),
        "{}",
        text(&out)
    );
    let out = trellis(&["analyze", "--failure-threshold", "Bogus", file]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn stdin_is_read() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["analyze", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x, namespace: default}\nspec:\n  hosts: [x]\n  http:\n  - route: [{destination: {host: x}}]\n    redirect: {uri: /y}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("[IST0106]") && stdout.contains("<stdin>:"),
        "{}",
        text(&out)
    );
    assert_eq!(out.status.code(), Some(79));
}

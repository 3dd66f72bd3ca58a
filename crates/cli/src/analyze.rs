//! `trellis analyze`: load manifests (files, dirs, stdin, kustomize), validate and analyze them,
//! print messages in istioctl's formats, exit 79 when a message reaches the failure threshold.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use trellis_analyze::{analyze, analyzers::ANALYZERS, messages, Level, Message};
use trellis_api::load::{LoadOptions, ResourceSet};
use trellis_api::MeshConfig;

/// istioctl's exit code when analysis finds messages at or above the failure threshold.
pub const EXIT_ANALYZE_FAILURE: u8 = 79;

#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    /// Files or directories to analyze (`-` for stdin). Directories are read recursively; a
    /// directory holding a kustomization is rendered with kustomize.
    pub paths: Vec<PathBuf>,

    /// Kustomize directories to render and analyze (like `kubectl apply -k`).
    #[arg(short = 'k', long = "kustomize", value_name = "DIR")]
    pub kustomize: Vec<PathBuf>,

    /// Output format: log, json or yaml.
    #[arg(short = 'o', long = "output", default_value = "log")]
    pub output: String,

    /// Exit with code 79 when a message at this level or above is found: Info, Warning, Error.
    #[arg(long = "failure-threshold", default_value = "Error")]
    pub failure_threshold: String,

    /// Only print messages at this level or above: Info, Warning, Error.
    #[arg(long = "output-threshold", default_value = "Info")]
    pub output_threshold: String,

    /// Mesh config file (Istio MeshConfig YAML); otherwise the `istio` ConfigMap in the root
    /// namespace of the inputs, otherwise Istio's defaults.
    #[arg(
        long = "meshConfigFile",
        alias = "mesh-config-file",
        value_name = "FILE"
    )]
    pub mesh_config_file: Option<PathBuf>,

    /// Namespace for namespaced resources that name none.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    pub namespace: String,

    /// Suppress messages: `CODE=Kind name` (`IST0102=Namespace frod`, `*` wildcards allowed).
    #[arg(short = 'S', long = "suppress")]
    pub suppress: Vec<String>,

    /// List the analyzers and exit.
    #[arg(short = 'L', long = "list-analyzers")]
    pub list_analyzers: bool,
}

pub fn run(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    if args.list_analyzers {
        for a in ANALYZERS {
            println!("* {}:\n    {}", a.name, a.description);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let failure = Level::parse(&args.failure_threshold).with_context(|| {
        format!(
            "invalid --failure-threshold {:?}: expected Info, Warning or Error",
            args.failure_threshold
        )
    })?;
    let output_threshold = Level::parse(&args.output_threshold).with_context(|| {
        format!(
            "invalid --output-threshold {:?}: expected Info, Warning or Error",
            args.output_threshold
        )
    })?;
    if !matches!(args.output.as_str(), "log" | "json" | "yaml") {
        bail!(
            "invalid --output {:?}: expected log, json or yaml",
            args.output
        );
    }
    let suppressions = args
        .suppress
        .iter()
        .map(|s| Suppression::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.paths.is_empty() && args.kustomize.is_empty() {
        bail!("nothing to analyze: give files, directories, `-` for stdin, or -k DIR (this build analyzes local files; it does not contact a cluster)");
    }

    let mut mesh = MeshConfig::default();
    if let Some(file) = &args.mesh_config_file {
        mesh = crate::mesh::load_mesh_config(file)?;
    }
    let opts = LoadOptions {
        default_namespace: args.namespace.clone(),
        mesh: mesh.clone(),
    };
    let mut set = ResourceSet::default();
    for p in &args.paths {
        set.add_path(p, &opts);
    }
    for k in &args.kustomize {
        set.add_kustomization(k, &opts);
    }
    if args.mesh_config_file.is_none() {
        if let Some(found) = crate::mesh::mesh_config_from_resources(&set, &mesh.root_namespace)? {
            mesh = found;
        }
    }

    let all = analyze(&set, &mesh);
    let shown: Vec<&Message> = all
        .iter()
        .filter(|m| m.level >= output_threshold)
        .filter(|m| !suppressions.iter().any(|s| s.matches(m)))
        .collect();

    match args.output.as_str() {
        "json" => println!(
            "{}",
            serde_json::to_string_pretty(&shown.iter().map(|m| m.to_output()).collect::<Vec<_>>())?
        ),
        "yaml" => print!(
            "{}",
            serde_saphyr::to_string(&shown.iter().map(|m| m.to_output()).collect::<Vec<_>>())?
        ),
        _ => {
            for m in &shown {
                println!("{m}");
            }
        }
    }
    eprintln!("{}", summary(&set, &shown));
    if shown.iter().any(|m| m.level >= failure) {
        return Ok(ExitCode::from(EXIT_ANALYZE_FAILURE));
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(set: &ResourceSet, shown: &[&Message]) -> String {
    let count = |l: Level| shown.iter().filter(|m| m.level == l).count();
    let mut s = if shown.is_empty() {
        format!(
            "\u{2714} No validation issues found in {} resources from {} inputs.",
            set.resources.len(),
            set.files.len()
        )
    } else {
        format!(
            "Analyzed {} resources from {} inputs: {} errors, {} warnings, {} infos.",
            set.resources.len(),
            set.files.len(),
            count(Level::Error),
            count(Level::Warning),
            count(Level::Info)
        )
    };
    if !set.unrecognized.is_empty() {
        let list: Vec<String> = set
            .unrecognized
            .iter()
            .map(|u| {
                format!(
                    "{} ({}:{})",
                    u.reference(),
                    u.origin.location.file,
                    u.origin.location.line
                )
            })
            .collect();
        s.push_str(&format!(
            "\nSkipped {} resources of kinds Trellis does not analyze: {}",
            list.len(),
            list.join(", ")
        ));
    }
    s
}

/// `-S CODE=Kind name` suppression, as istioctl.
struct Suppression {
    code: String,
    resource: String,
}

impl Suppression {
    fn parse(s: &str) -> anyhow::Result<Self> {
        let (code, resource) = s.split_once('=').with_context(|| {
            format!(
                "invalid suppression {s:?}: expected CODE=Kind name, e.g. IST0102=Namespace frod"
            )
        })?;
        if messages::lookup(code.trim()).is_none() && code.trim() != "*" {
            bail!("invalid suppression {s:?}: unknown message code {code:?}");
        }
        Ok(Suppression {
            code: code.trim().to_ascii_uppercase(),
            resource: resource.trim().to_string(),
        })
    }

    fn matches(&self, m: &Message) -> bool {
        if self.code != "*" && self.code != m.kind.code {
            return false;
        }
        let Some(r) = &m.resource else { return false };
        // istioctl matches "Kind name" or "Kind name.namespace"; accept ns/name too.
        let candidates = [
            format!("{} {}", r.kind, r.name),
            format!(
                "{} {}.{}",
                r.kind,
                r.name,
                r.namespace.as_deref().unwrap_or("")
            ),
            r.to_string(),
        ];
        candidates.iter().any(|c| glob_match(&self.resource, c))
    }
}

/// `*` matches any run of characters.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(idx) => rest = &rest[idx + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("Namespace *", "Namespace frod"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*c", "abbbc"));
        assert!(!glob_match("a*c", "abbbd"));
        assert!(glob_match("Namespace frod", "Namespace frod"));
    }
}

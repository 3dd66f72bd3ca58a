//! `trellis analyze`: placeholder until the analyze crate lands.
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct AnalyzeArgs {
    /// Files or directories to analyze (`-` for stdin).
    paths: Vec<PathBuf>,
}

pub fn run(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let set = trellis_api::load::load_paths(&args.paths, &Default::default());
    for d in &set.diagnostics {
        println!("{d}");
    }
    Ok(ExitCode::SUCCESS)
}

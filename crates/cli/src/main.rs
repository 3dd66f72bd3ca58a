//! The `trellis` binary: thin subcommands over the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod analyze;
mod mesh;

#[derive(Parser)]
#[command(
    name = "trellis",
    version,
    about = "A service mesh that runs the Istio API unchanged"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Analyze Istio configuration and report problems (istioctl analyze).
    Analyze(analyze::AnalyzeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Analyze(args) => analyze::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(1)
        }
    }
}

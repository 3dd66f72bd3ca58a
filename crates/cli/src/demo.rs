//! `trellis demo-app`: the demo workloads of the Alphintra example (crate `trellis-demo`), run by
//! `trellis up` behind their sidecars, or by hand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use trellis_demo::{AuthOptions, AuthService, Echo, EchoOptions, SigningKey};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    #[command(subcommand)]
    pub app: DemoApp,
}

#[derive(clap::Subcommand, Debug)]
pub enum DemoApp {
    /// Echo service standing in for Alphintra's API gateway: answers JSON with its version,
    /// workload, the caller's mesh identity, the end user's token claims and the request.
    ServiceGateway(EchoArgs),
    /// JWT issuer: `POST /api/auth/login`, JWKS at `/.well-known/jwks.json`.
    AuthService(AuthArgs),
}

#[derive(clap::Args, Debug)]
pub struct EchoArgs {
    /// Address to listen on (`trellis up` sets LISTEN_ADDR).
    #[arg(long, env = "LISTEN_ADDR", value_name = "IP:PORT")]
    pub listen: SocketAddr,
    /// Version reported in every answer (the `version` label: stable, canary).
    #[arg(long = "version", default_value = "stable")]
    pub app_version: String,
    /// Workload name reported in every answer.
    #[arg(long, env = "TRELLIS_WORKLOAD", default_value = "service-gateway")]
    pub workload: String,
    /// Redis to PING on `GET /api/cache/ping` (in `trellis up`: the sidecar's outbound
    /// listener for the Redis ServiceEntry).
    #[arg(long, env = "REDIS_ADDR", value_name = "IP:PORT")]
    pub redis: Option<SocketAddr>,
}

#[derive(clap::Args, Debug)]
pub struct AuthArgs {
    /// Address to listen on (`trellis up` sets LISTEN_ADDR).
    #[arg(long, env = "LISTEN_ADDR", value_name = "IP:PORT")]
    pub listen: SocketAddr,
    /// Token issuer (`iss`); the Alphintra RequestAuthentication's by default.
    #[arg(long, env = "JWT_ISSUER", default_value = trellis_demo::auth::DEFAULT_ISSUER)]
    pub issuer: String,
    /// Token audience (`aud`).
    #[arg(long, env = "JWT_AUDIENCE", default_value = trellis_demo::auth::DEFAULT_AUDIENCE)]
    pub audience: String,
    /// Keep the signing key here (generated on first use), so tokens survive restarts.
    /// Without it a new key is generated at every start.
    #[arg(long = "key-dir", value_name = "DIR")]
    pub key_dir: Option<PathBuf>,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// Workload name reported on health checks.
    #[arg(long, env = "TRELLIS_WORKLOAD", default_value = "auth-service")]
    pub workload: String,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    match args.app {
        DemoApp::ServiceGateway(a) => {
            let app = Echo::new(EchoOptions {
                version: a.app_version,
                workload: a.workload,
                redis: a.redis,
            });
            trellis_demo::server::run(a.listen, app, "service-gateway")?;
        }
        DemoApp::AuthService(a) => {
            let key = match &a.key_dir {
                Some(dir) => SigningKey::load_or_generate(dir)?,
                None => SigningKey::generate()?.0,
            };
            eprintln!(
                "auth-service: issuer {} audience {} key {}",
                a.issuer, a.audience, key.kid
            );
            let app = AuthService::new(
                AuthOptions {
                    issuer: a.issuer,
                    audience: a.audience,
                    ttl: a.ttl,
                    workload: a.workload,
                },
                key,
            )?;
            trellis_demo::server::run(a.listen, app, "auth-service")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

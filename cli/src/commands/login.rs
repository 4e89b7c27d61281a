//! `imgfarm login [REGISTRY] -u USER (-p PASS | --password-stdin)` and
//! `imgfarm logout [REGISTRY]`: like `docker login`, the credentials are
//! first checked against the registry (`GET /v2/`, through its token
//! service if it has one), then stored in docker's `config.json`
//! (`$DOCKER_CONFIG`, else `~/.docker`), where docker, skopeo and imgfarm
//! all find them.

use super::image::{runtime, RegistryFlags};
use super::GlobalArgs;
use anyhow::{anyhow, bail, Context};
use clap::Args;
use imgfarm_common::registry::credentials::docker_config_dir;
use imgfarm_common::registry::reference::DOCKER_HUB;
use imgfarm_common::registry::{Credential, RegistryClient};
use std::io::Read;
use std::process::ExitCode;

/// `imgfarm login`
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry host (default: docker.io)
    pub registry: Option<String>,
    /// Username
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin: command lines are visible to other users)
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry_flags: RegistryFlags,
}

/// `imgfarm logout`
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry host (default: docker.io)
    pub registry: Option<String>,
}

/// `docker login` accepts `https://host/...` as the registry: keep the host.
fn registry_host(r: Option<&str>) -> anyhow::Result<String> {
    let r = r.unwrap_or(DOCKER_HUB);
    let r = r
        .strip_prefix("https://")
        .or_else(|| r.strip_prefix("http://"))
        .unwrap_or(r);
    let host = r.split('/').next().unwrap_or(r);
    if host.is_empty()
        || host.len() > 255
        || host.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        bail!("invalid registry {r:?}: give a host or host:port");
    }
    Ok(match host {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        h => h.to_string(),
    })
}

fn config_dir() -> anyhow::Result<std::path::PathBuf> {
    docker_config_dir()
        .ok_or_else(|| anyhow!("no docker config directory: set DOCKER_CONFIG or HOME"))
}

/// Run `imgfarm login`.
pub fn login(_g: &GlobalArgs, a: LoginArgs) -> anyhow::Result<ExitCode> {
    let host = registry_host(a.registry.as_deref())?;
    let user = a.username.ok_or_else(|| {
        anyhow!("a username is needed: imgfarm login {host} -u USER --password-stdin")
    })?;
    let password = if a.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .lock()
            .take(64 * 1024)
            .read_to_string(&mut s)
            .context("reading the password from stdin")?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else {
        bail!("a password is needed: -p PASSWORD or --password-stdin");
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let mut config = a.registry_flags.config();
    config
        .explicit_credentials
        .insert(host.clone(), Credential::basic(&user, &password));
    let client = RegistryClient::new(config);
    runtime()?
        .block_on(client.verify_credentials(&host))
        .with_context(|| format!("logging in to {host}"))?;
    let dir = config_dir()?;
    let path = imgfarm_common::registry::login(&dir, &host, &user, &password)?;
    eprintln!("credentials saved in {}", path.display());
    println!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

/// Run `imgfarm logout`.
pub fn logout(_g: &GlobalArgs, a: LogoutArgs) -> anyhow::Result<ExitCode> {
    let host = registry_host(a.registry.as_deref())?;
    if imgfarm_common::registry::logout(&config_dir()?, &host)? {
        println!("Removing login credentials for {host}");
    } else {
        println!("Not logged in to {host}");
    }
    Ok(ExitCode::SUCCESS)
}

//! The registry side of a farm build's output: which refs the coordinator
//! pushes, with which of the client's credentials, over plain http or not.

use super::super::output::{self, OutputSpec as LocalOutput};
use super::super::BuildArgs;
use anyhow::anyhow;
use imgfarm_common::farm::{OutputSpec, RegistryCredential};
use imgfarm_common::registry::{tls::allows_plain_http, CredentialSources, Reference, Secret};

/// The refs to push: the names of every registry output (`--push -t ...`).
pub fn push_refs(a: &BuildArgs, outputs: &[LocalOutput]) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for o in outputs.iter().filter(|o| o.kind == "registry") {
        for n in output::names(a, o)? {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    Ok(out)
}

/// Where the push goes, with the client's credentials for those hosts
/// (docker/podman config, lent for this build only) and the hosts it would
/// itself reach over plain http (loopback registries).
pub fn output_spec(push: &[String], no_cache: bool) -> anyhow::Result<OutputSpec> {
    let mut hosts: Vec<String> = Vec::new();
    for r in push {
        let parsed: Reference = r.parse().map_err(|e| anyhow!("--push {r}: {e}"))?;
        if !hosts.contains(&parsed.registry) {
            hosts.push(parsed.registry);
        }
    }
    let sources = CredentialSources::from_env();
    let mut credentials = Vec::new();
    for h in &hosts {
        match sources.lookup(h) {
            Ok(Some(c)) => match c.secret {
                Secret::Basic { username, password } => credentials.push(RegistryCredential {
                    host: h.clone(),
                    username,
                    secret: password,
                }),
                Secret::IdentityToken(_) => eprintln!(
                    "WARNING: the credential for {h} in {} is an identity token, which cannot be \
                     lent to the farm; the coordinator pushes to {h} without credentials",
                    c.source
                ),
            },
            Ok(None) => {}
            Err(e) => eprintln!("WARNING: credentials for {h}: {e}"),
        }
    }
    let insecure = hosts
        .iter()
        .filter(|h| allows_plain_http(h, &[]))
        .cloned()
        .collect();
    Ok(OutputSpec {
        push: push.to_vec(),
        credentials,
        insecure,
        no_cache,
        ..OutputSpec::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_push_targets_may_use_plain_http() {
        let spec = output_spec(
            &[
                "localhost:5000/app:1".to_string(),
                "127.0.0.1:5001/app:1".to_string(),
                "registry.example/app:1".to_string(),
            ],
            true,
        )
        .unwrap();
        assert_eq!(spec.insecure, vec!["localhost:5000", "127.0.0.1:5001"]);
        assert!(spec.no_cache);
        assert_eq!(spec.push.len(), 3);
        assert!(output_spec(&["Not A Ref!".to_string()], false).is_err());
    }
}

//! What the kind suites (`kind.rs`, `kind_tls.rs`) share: a client for the
//! current kind cluster or the reason there is none, and running commands.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The workspace root (charts, crds).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Why the suite cannot run here, or a client for the kind cluster.
async fn kind_client() -> Result<Client, String> {
    let kubeconfig = Kubeconfig::read().map_err(|e| format!("no kubeconfig ({e})"))?;
    let context = kubeconfig.current_context.clone().unwrap_or_default();
    if !context.starts_with("kind-")
        && std::env::var("RINGKV_E2E_ANY_CLUSTER").as_deref() != Ok("1")
    {
        return Err(format!(
            "current kube context {context:?} is not a kind cluster (set RINGKV_E2E_ANY_CLUSTER=1 to use it anyway)"
        ));
    }
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("kubeconfig unusable: {e}"))?;
    let client = Client::try_from(config).map_err(|e| format!("no client: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(5), client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => Err(format!("API server of {context} unreachable: {e}")),
        Err(_) => Err(format!("API server of {context} did not answer in 5s")),
    }
}

fn helm_available() -> bool {
    Command::new("helm")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A client, or `None` after printing why `suite` skips. With
/// `RINGKV_KIND=1` (the kind workflow) a missing cluster is a failure.
pub async fn cluster_or_skip(suite: &str) -> Option<Client> {
    let required = std::env::var("RINGKV_KIND").as_deref() == Ok("1");
    let why = match kind_client().await {
        Ok(c) if helm_available() => return Some(c),
        Ok(_) => "`helm` is not on the PATH".to_string(),
        Err(why) => why,
    };
    assert!(!required, "RINGKV_KIND=1 but the {suite} cannot run: {why}");
    eprintln!("SKIPPED {suite}: {why} (set RINGKV_KIND=1 to make this a failure)");
    None
}

/// Runs `cmd`; panics with its output when it fails.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

//! `ringkv local --secure`: a CA, one loopback node certificate, a client
//! certificate for the CLI, a gossip secret and an admin token, kept under
//! DATA/secure/ and reused by later runs (so printed commands stay valid).

use std::path::{Path, PathBuf};

use ringkv_node::security::pki::{Ca, random_hex};

pub struct Secure {
    pub dir: PathBuf,
    pub admin_token: String,
}

impl Secure {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn node_cert(&self) -> PathBuf {
        self.dir.join("node.pem")
    }
    pub fn node_key(&self) -> PathBuf {
        self.dir.join("node-key.pem")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client-key.pem")
    }
    pub fn tokens(&self) -> PathBuf {
        self.dir.join("tokens")
    }
    pub fn token_file(&self) -> PathBuf {
        self.dir.join("admin.token")
    }
    pub fn gossip_secret(&self) -> PathBuf {
        self.dir.join("gossip-secret")
    }

    /// The node flags that turn everything on.
    pub fn node_args(&self) -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = vec!["--tls-mode".into(), "enabled".into()];
        for (flag, path) in [
            ("--tls-cert", self.node_cert()),
            ("--tls-key", self.node_key()),
            ("--tls-ca", self.ca()),
            ("--auth-tokens-file", self.tokens()),
            ("--gossip-secret-file", self.gossip_secret()),
        ] {
            v.push(flag.into());
            v.push(path.into());
        }
        v
    }

    /// How the CLI and the Admin client reach the cluster.
    pub fn connect_options(&self) -> Result<ringkv_client::ConnectOptions, std::io::Error> {
        Ok(ringkv_client::ConnectOptions {
            ca_pem: Some(std::fs::read(self.ca())?),
            identity: Some((
                std::fs::read(self.client_cert())?,
                std::fs::read(self.client_key())?,
            )),
            token: Some(self.admin_token.clone()),
            tls_server_name: None,
        })
    }

    /// What to paste to call the cluster.
    pub fn usage(&self, http: &str, grpc: &str, admin: &str) -> String {
        let d = |p: PathBuf| p.display().to_string();
        format!(
            "secured: TLS (mutual TLS on internode/admin), bearer tokens, authenticated gossip; files in {dir}\n\
             \x20 curl --cacert {ca} -H \"authorization: Bearer $(cat {tok})\" https://{http}/v1/keys/hello -X PUT -d world\n\
             \x20 export RINGKV_CACERT={ca} RINGKV_TOKEN_FILE={tok} RINGKV_CERT={cc} RINGKV_KEY={ck}\n\
             \x20 ringkv --addr https://{grpc} get hello\n\
             \x20 ringkv --admin https://{admin} status     (Admin needs the client certificate)",
            dir = d(self.dir.clone()),
            ca = d(self.ca()),
            tok = d(self.token_file()),
            cc = d(self.client_cert()),
            ck = d(self.client_key()),
        )
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}

/// Creates the files under `data/secure` unless they exist.
pub fn prepare(data: &Path) -> Result<Secure, Box<dyn std::error::Error + Send + Sync>> {
    let dir = data.join("secure");
    std::fs::create_dir_all(&dir)?;
    let token_file = dir.join("admin.token");
    if !token_file.exists() {
        let ca = Ca::generate("ringkv local CA")?;
        let node = ca.issue_loopback("ringkv-local-node")?;
        let client = ca.issue("ringkv-local-client", &["localhost"])?;
        std::fs::write(dir.join("ca.pem"), &ca.cert_pem)?;
        std::fs::write(dir.join("node.pem"), &node.cert_pem)?;
        write_private(&dir.join("node-key.pem"), &node.key_pem)?;
        std::fs::write(dir.join("client.pem"), &client.cert_pem)?;
        write_private(&dir.join("client-key.pem"), &client.key_pem)?;
        write_private(&dir.join("gossip-secret"), &format!("{}\n", random_hex(32)))?;
        let token = random_hex(24);
        write_private(
            &dir.join("tokens"),
            &format!("# role token (read | readwrite | admin)\nadmin {token}\n"),
        )?;
        // Written last: its presence means the set is complete.
        write_private(&token_file, &format!("{token}\n"))?;
    }
    let admin_token = std::fs::read_to_string(&token_file)?.trim().to_string();
    Ok(Secure { dir, admin_token })
}

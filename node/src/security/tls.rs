//! TLS material from PEM files (`tls_cert`, `tls_key`, `tls_ca`), rebuilt
//! whenever the files change on disk (a Kubernetes Secret update) so no
//! restart is needed: each new connection, in or out, uses the material
//! current when it starts; open connections keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::sync::watch;

/// How TLS is used on the node's listeners (`tls_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Plaintext everywhere.
    #[default]
    Disabled,
    /// TLS everywhere; internode/Admin require a client certificate signed
    /// by `tls_ca`; the client APIs accept clients without one.
    Enabled,
    /// As `Enabled`, and the client APIs require a client certificate too.
    Required,
}

impl TlsMode {
    pub fn parse(s: &str) -> Option<TlsMode> {
        match s.trim() {
            "disabled" => Some(TlsMode::Disabled),
            "enabled" => Some(TlsMode::Enabled),
            "required" => Some(TlsMode::Required),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disabled => "disabled",
            TlsMode::Enabled => "enabled",
            TlsMode::Required => "required",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("{what} {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// Which listener a server configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Internode + Admin gRPC: client certificate mandatory.
    Internode,
    /// Client gRPC (7070).
    ClientGrpc,
    /// HTTP/JSON (8080).
    Http,
}

impl Listener {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Listener::Internode => "internode",
            Listener::ClientGrpc => "grpc",
            Listener::Http => "http",
        }
    }
}

/// The configurations built from one version of the files.
struct Material {
    internode: Arc<ServerConfig>,
    client_grpc: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
    /// For the node's own internode/Admin calls: presents the node's cert.
    client: Arc<ClientConfig>,
}

/// The node's TLS state; cheap to share.
pub struct Tls {
    mode: TlsMode,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    current: ArcSwap<Material>,
    /// The file contents `current` was built from.
    loaded: Mutex<Vec<u8>>,
    reloads: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("mode", &self.mode)
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn bad(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Certificates of a PEM file (at least one).
pub fn certs_from_pem(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(what, path, e))?;
    if certs.is_empty() {
        return Err(bad(what, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// The root store of a CA bundle file.
pub fn roots_from_pem(path: &Path, pem: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs_from_pem("tls_ca", path, pem)? {
        roots
            .add(c)
            .map_err(|e| bad("tls_ca", path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

fn rustls_err(e: impl ToString) -> TlsError {
    TlsError::Rustls(e.to_string())
}

impl Tls {
    /// Loads the files; any problem names the file.
    pub fn load(mode: TlsMode, cert: &Path, key: &Path, ca: &Path) -> Result<Arc<Tls>, TlsError> {
        let (bytes, material) = build(mode, cert, key, ca)?;
        Ok(Arc::new(Tls {
            mode,
            cert: cert.into(),
            key: key.into(),
            ca: ca.into(),
            current: ArcSwap::from_pointee(material),
            loaded: Mutex::new(bytes),
            reloads: Default::default(),
        }))
    }

    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// Times the files were re-read with new contents.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn server_config(&self, l: Listener) -> Arc<ServerConfig> {
        let m = self.current.load();
        match l {
            Listener::Internode => m.internode.clone(),
            Listener::ClientGrpc => m.client_grpc.clone(),
            Listener::Http => m.http.clone(),
        }
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current.load().client.clone()
    }

    /// Re-reads the files; rebuilds when their contents changed. A broken
    /// new version (e.g. cert and key from different rotations, written a
    /// moment apart) keeps the old material and is retried next time.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let mut bytes = read("tls_cert", &self.cert)?;
        bytes.extend(read("tls_key", &self.key)?);
        bytes.extend(read("tls_ca", &self.ca)?);
        if *self.loaded.lock() == bytes {
            return Ok(false);
        }
        let (bytes, material) = build(self.mode, &self.cert, &self.key, &self.ca)?;
        self.current.store(Arc::new(material));
        *self.loaded.lock() = bytes;
        self.reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(true)
    }

    /// Polls the files every `every` until `stop`.
    pub async fn watch(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        let mut last_err = String::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.reload_if_changed()).await {
                Ok(Ok(true)) => {
                    last_err.clear();
                    tracing::info!(cert = %self.cert.display(), "TLS certificates reloaded");
                }
                Ok(Ok(false)) => last_err.clear(),
                Ok(Err(e)) => {
                    // Logged once per distinct problem, not every poll.
                    let msg = e.to_string();
                    if msg != last_err {
                        tracing::warn!(error = %msg, "TLS files changed but cannot be used; keeping the previous certificates");
                        last_err = msg;
                    }
                }
                Err(_) => return,
            }
        }
    }
}

fn build(
    mode: TlsMode,
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> Result<(Vec<u8>, Material), TlsError> {
    let cert_pem = read("tls_cert", cert)?;
    let key_pem = read("tls_key", key)?;
    let ca_pem = read("tls_ca", ca)?;
    let chain = certs_from_pem("tls_cert", cert, &cert_pem)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| bad("tls_key", key, format!("no usable PEM private key: {e}")))?;
    let roots = roots_from_pem(ca, &ca_pem)?;
    let p = provider();

    let server = |verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
                  alpn: &[&[u8]]|
     -> Result<Arc<ServerConfig>, TlsError> {
        let mut c = ServerConfig::builder_with_provider(p.clone())
            .with_safe_default_protocol_versions()
            .map_err(rustls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key_der.clone_key())
            .map_err(|e| bad("tls_key", key, format!("does not match tls_cert: {e}")))?;
        c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Ok(Arc::new(c))
    };
    let mandatory = WebPkiClientVerifier::builder_with_provider(roots.clone(), p.clone())
        .build()
        .map_err(rustls_err)?;
    let optional = WebPkiClientVerifier::builder_with_provider(roots.clone(), p.clone())
        .allow_unauthenticated()
        .build()
        .map_err(rustls_err)?;
    let h2: &[&[u8]] = &[b"h2"];
    let h2_h1: &[&[u8]] = &[b"h2", b"http/1.1"];
    let clients = if mode == TlsMode::Required {
        mandatory.clone()
    } else {
        optional
    };
    let internode = server(mandatory, h2)?;
    let client_grpc = server(clients.clone(), h2)?;
    let http = server(clients, h2_h1)?;

    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, p.clone())
        .build()
        .map_err(rustls_err)?;
    let mut client = ClientConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()
        .map_err(rustls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ClusterVerifier(verifier)))
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| bad("tls_key", key, format!("does not match tls_cert: {e}")))?;
    client.alpn_protocols = vec![b"h2".to_vec()];

    let mut bytes = cert_pem;
    bytes.extend(key_pem);
    bytes.extend(ca_pem);
    Ok((
        bytes,
        Material {
            internode,
            client_grpc,
            http,
            client: Arc::new(client),
        },
    ))
}

/// The internode client verifies that a peer's certificate chains to the
/// cluster CA, not that it names the address dialled: peers are dialled by
/// pod IP, which changes on every reschedule (Cassandra's internode
/// encryption does the same unless `require_endpoint_verification`).
/// Holding a certificate of the cluster CA is what makes a peer a member.
#[derive(Debug)]
struct ClusterVerifier(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ClusterVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError as C;
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Dials peers for tonic channels over TLS with the node's current
/// certificate (`Endpoint::connect_with_connector_lazy`): a reconnect
/// after a rotation presents the new one.
#[derive(Clone, Debug)]
pub struct Connector(pub Arc<Tls>);

type Dialed = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tower::Service<http::Uri> for Connector {
    type Response = Dialed;
    type Error = std::io::Error;
    type Future = futures::future::BoxFuture<'static, std::io::Result<Dialed>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.0.client_config();
        Box::pin(async move {
            let invalid =
                |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
            let host = uri
                .host()
                .ok_or_else(|| invalid("no host in the peer address"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri
                .port_u16()
                .ok_or_else(|| invalid("no port in the peer address"))?;
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host).map_err(|e| invalid(&e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

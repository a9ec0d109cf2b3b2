//! A real Azure Blob server on loopback for backup tests: Azurite, the
//! Azure Storage emulator from npm, which `.ci/run` installs into
//! `target/azurite`. Tests that need it skip, saying why, when it (or
//! Node.js) is absent.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use super::server::{Reports, Server};

/// Azurite's well-known development account and key.
const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    port: u16,
    _server: Server,
    _data: tempfile::TempDir,
}

/// `azurite-blob`: $RINGKV_AZURITE_BLOB, else the one `.ci/run` installs.
fn binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("RINGKV_AZURITE_BLOB") {
        return Ok(p.into());
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/azurite/node_modules/.bin/azurite-blob");
    if local.exists() {
        Ok(local)
    } else {
        Err(format!(
            "azurite-blob not found (set RINGKV_AZURITE_BLOB, or run .ci/run, or: npm install --prefix target/azurite azurite@3); looked for {}",
            local.display()
        ))
    }
}

impl Azurite {
    /// Starts Azurite's blob service on a free loopback port (it binds port
    /// 0 and prints the address).
    pub fn start() -> Result<Azurite, String> {
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(binary()?);
        cmd.args(["--blobHost", "127.0.0.1", "--blobPort", "0", "--silent"])
            .args(["--skipApiVersionCheck", "--disableTelemetry", "--location"])
            .arg(data.path());
        let server = Server::start(cmd, Reports::Stdout, "listens on http://127.0.0.1:")?;
        Ok(Azurite {
            port: server.port,
            _server: server,
            _data: data,
        })
    }

    /// The account's endpoint (path style, as the emulator serves it).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// object_store options for this server (what a node gets per call).
    pub fn options(&self) -> HashMap<String, String> {
        HashMap::from([
            ("azure_storage_account_name".into(), ACCOUNT.into()),
            ("azure_storage_account_key".into(), KEY.into()),
            ("azure_storage_endpoint".into(), self.endpoint()),
            ("azure_allow_http".into(), "true".into()),
        ])
    }

    /// Creates a container (object_store cannot): one Shared Key signed
    /// `PUT ?restype=container`.
    pub async fn create_container(&self, name: &str) {
        use base64::Engine as _;
        let date = http_date(std::time::SystemTime::now());
        let version = "2021-08-06";
        // Blob service Shared Key string to sign: verb, eleven empty
        // standard headers (Content-Length is empty when 0), the x-ms-
        // headers, then the canonical resource.
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container"
        );
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &b64.decode(KEY).unwrap());
        let sig = b64.encode(ring::hmac::sign(&key, to_sign.as_bytes()).as_ref());
        // Fails only when one is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let resp = reqwest::Client::new()
            .put(format!("{}/{name}?restype=container", self.endpoint()))
            .header("x-ms-date", date)
            .header("x-ms-version", version)
            .header("Authorization", format!("SharedKey {ACCOUNT}:{sig}"))
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap();
        let status = resp.status();
        assert!(
            status.is_success(),
            "create container {name}: {status} {}",
            resp.text().await.unwrap_or_default()
        );
    }
}

/// `t` as an RFC 1123 HTTP date (`Tue, 01 Dec 2026 19:52:18 GMT`).
fn http_date(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

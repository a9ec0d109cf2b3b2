//! Starting a test server (moto, Azurite) that binds port 0 and prints the
//! port it got; killed when dropped.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running server process and the loopback port it reported.
pub struct Server {
    child: Child,
    pub port: u16,
}

/// Which output the server reports its address on.
pub enum Reports {
    Stdout,
    Stderr,
}

impl Server {
    /// Runs `cmd` and waits (60 s at most) for a line on `on` that contains
    /// `marker` followed by the port. The rest of that output is read to
    /// the end, so a chatty server never blocks on a full pipe.
    pub fn start(mut cmd: Command, on: Reports, marker: &'static str) -> Result<Server, String> {
        let what = format!("{:?}", cmd.get_program());
        cmd.stdin(Stdio::null());
        match on {
            Reports::Stdout => cmd.stdout(Stdio::piped()).stderr(Stdio::null()),
            Reports::Stderr => cmd.stdout(Stdio::null()).stderr(Stdio::piped()),
        };
        let mut child = cmd.spawn().map_err(|e| format!("cannot run {what}: {e}"))?;
        let out: Box<dyn Read + Send> = match on {
            Reports::Stdout => Box::new(child.stdout.take().expect("piped")),
            Reports::Stderr => Box::new(child.stderr.take().expect("piped")),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split(marker).nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if let (Some(tx), Ok(p)) = (tx.take(), port.parse::<u16>()) {
                        let _ = tx.send(p);
                    }
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(port) => Ok(Server { child, port }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("{what} did not report its port within 60 s"))
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

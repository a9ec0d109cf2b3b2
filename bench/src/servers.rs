//! The server processes of one system under test: spawned with their output
//! in a log file, watched, and always stopped (SIGTERM, then SIGKILL) when
//! the [`Servers`] is dropped, also on an error or a panic. Each server gets
//! its own process group, so a Ctrl-C in the terminal reaches only the
//! benchmark, which then stops its servers in order; if the benchmark is
//! killed outright, the kernel sends each server SIGKILL (PR_SET_PDEATHSIG).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::BenchError;

struct Server {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Every server process of one system.
pub struct Servers {
    system: String,
    procs: Vec<Server>,
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(log: &Path, n: usize) -> String {
    let t = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child we spawned and have not reaped yet.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

impl Servers {
    pub fn new(system: &str) -> Servers {
        Servers {
            system: system.to_string(),
            procs: Vec::new(),
        }
    }

    /// Starts `cmd` as server `name`, stdout and stderr appended to `log`.
    /// Call it from the thread that will outlive the server (the death
    /// signal follows the spawning thread, not the process).
    pub fn spawn(&mut self, name: &str, mut cmd: Command, log: &Path) -> Result<u32, BenchError> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(BenchError::io(format!("opening {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(BenchError::io(format!("opening {}", log.display())))?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs before exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| BenchError::Start {
            system: self.system.clone(),
            reason: format!("cannot run {:?} for {name}: {e}", cmd.get_program()),
        })?;
        let pid = child.id();
        self.procs.push(Server {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        });
        Ok(pid)
    }

    /// Process ids of every server (for CPU accounting).
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.child.id()).collect()
    }

    /// An error naming the first server that has exited, with its log tail.
    pub fn check(&mut self) -> Result<(), BenchError> {
        for p in &mut self.procs {
            if let Ok(Some(st)) = p.child.try_wait() {
                return Err(BenchError::Exited {
                    system: self.system.clone(),
                    process: p.name.clone(),
                    status: st.to_string(),
                    log_tail: tail(&p.log, 15),
                });
            }
        }
        Ok(())
    }

    /// The log tail of server `name` (empty when unknown).
    pub fn log_tail(&self, name: &str) -> String {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .map(|p| tail(&p.log, 15))
            .unwrap_or_default()
    }

    /// SIGTERM every server, wait up to `grace` for all of them, SIGKILL
    /// the rest. Returns the names of servers that had to be killed.
    pub fn stop(&mut self, grace: Duration) -> Vec<String> {
        for p in &mut self.procs {
            if matches!(p.child.try_wait(), Ok(None)) {
                signal(p.child.id(), libc::SIGTERM);
            }
        }
        let until = Instant::now() + grace;
        let mut killed = Vec::new();
        for mut p in self.procs.drain(..) {
            loop {
                match p.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= until => {
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        killed.push(p.name.clone());
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        killed
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// A port on 127.0.0.1 that was free a moment ago, for servers that must
/// know their peers' ports before they start (etcd).
pub fn free_port() -> Result<u16, BenchError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(BenchError::io("binding a free port"))?;
    Ok(l.local_addr()
        .map_err(BenchError::io("binding a free port"))?
        .port())
}

/// `name` found on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The first line `bin --version` prints.
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "unknown version".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn stop_terms_then_kills_and_check_reports_exits() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Servers::new("test");
        // One server exits on SIGTERM, one ignores it and must be killed.
        let polite = s
            .spawn(
                "polite",
                sh("echo up; exec sleep 30"),
                &dir.path().join("a.log"),
            )
            .unwrap();
        let stubborn = s
            .spawn(
                "stubborn",
                sh("trap '' TERM; echo stubborn up; while :; do sleep 1; done"),
                &dir.path().join("b.log"),
            )
            .unwrap();
        assert_eq!(s.pids(), vec![polite, stubborn]);
        s.check().unwrap();
        // Wait for the trap to be installed before signalling.
        let until = Instant::now() + Duration::from_secs(10);
        while !s.log_tail("stubborn").contains("stubborn up") && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let killed = s.stop(Duration::from_millis(500));
        assert_eq!(killed, vec!["stubborn".to_string()]);
        for pid in [polite, stubborn] {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "{pid} still there"
            );
        }

        let mut s = Servers::new("test");
        s.spawn(
            "dies",
            sh("echo bad flag >&2; exit 3"),
            &dir.path().join("c.log"),
        )
        .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        let err = loop {
            if let Err(e) = s.check() {
                break e;
            }
            assert!(Instant::now() < until, "exit not seen");
            std::thread::sleep(Duration::from_millis(20));
        };
        match err {
            BenchError::Exited {
                process, log_tail, ..
            } => {
                assert_eq!(process, "dies");
                assert!(log_tail.contains("bad flag"), "{log_tail}");
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn drop_stops_servers() {
        let dir = tempfile::tempdir().unwrap();
        let pid = {
            let mut s = Servers::new("test");
            s.spawn("sleeper", sh("exec sleep 30"), &dir.path().join("s.log"))
                .unwrap()
        };
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn missing_binary_is_a_start_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Servers::new("test");
        let err = s
            .spawn(
                "ghost",
                Command::new("/nonexistent/etcd"),
                &dir.path().join("g.log"),
            )
            .unwrap_err();
        assert!(matches!(err, BenchError::Start { .. }), "{err}");
        assert!(which("sh").is_some());
        assert!(which("surely-not-a-binary-ringkv").is_none());
        assert_ne!(free_port().unwrap(), 0);
    }
}

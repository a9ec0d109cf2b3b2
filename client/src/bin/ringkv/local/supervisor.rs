//! The local cluster's supervisor: it keeps every node it started running,
//! as a StatefulSet keeps its pods. A node that exits unexpectedly is
//! reported and started again on its data directory after a back-off (1 s,
//! doubling to 30 s while it keeps dying within a minute of its start); the
//! others are left alone. Orders from `ringkv local ...` stop, start and
//! kill nodes on purpose, add one, or decommission one.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::process::Child;

use super::{Spawner, log_tail, read_endpoints, signal};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A node that ran this long before dying starts again from `FIRST_BACKOFF`.
const STABLE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Process started, not yet listening.
    Starting,
    Running,
    /// Died; started again at `at`.
    Restarting {
        at: Instant,
    },
    /// Asked to stop (or killed to stay down); its exit is expected.
    Stopping,
    /// Down on purpose until `start`.
    Stopped,
    /// Being decommissioned (still running, still supervised).
    Removing,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Restarting { .. } => "restarting",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Removing => "removing",
        }
    }
}

struct Slot {
    index: u16,
    name: String,
    state: State,
    child: Option<Child>,
    pid: Option<u32>,
    /// Times the supervisor started it again after it died.
    restarts: u32,
    /// When it last started (uptime, and whether it died young).
    started: Instant,
    backoff: Duration,
    /// Killed on request: reported as such, restarted without escalating.
    killed: bool,
    endpoints: Option<serde_json::Value>,
}

pub(super) struct Supervisor {
    spawner: Spawner,
    slots: Mutex<Vec<Slot>>,
    /// The first node's gossip address: the seed when no other node runs.
    first_seed: Mutex<Option<String>>,
}

type Answer = Result<String, String>;

impl Supervisor {
    pub(super) fn spawner(&self) -> &Spawner {
        &self.spawner
    }

    pub(super) fn new(spawner: Spawner) -> Supervisor {
        Supervisor {
            spawner,
            slots: Mutex::new(Vec::new()),
            first_seed: Mutex::new(None),
        }
    }

    fn slots(&self) -> MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A gossip seed for node `i`: a running node's address, or the first
    /// node's.
    fn seed_for(&self, slots: &[Slot], i: u16) -> Option<String> {
        slots
            .iter()
            .filter(|s| s.index != i && s.state == State::Running)
            .find_map(|s| s.endpoints.as_ref()?["gossip"].as_str().map(str::to_string))
            .or_else(|| {
                self.first_seed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            })
    }

    fn running_slot(&self, index: u16, child: Child, ep: serde_json::Value) -> Slot {
        Slot {
            index,
            name: format!("node-{index}"),
            state: State::Running,
            pid: child.id(),
            child: Some(child),
            restarts: 0,
            started: Instant::now(),
            backoff: FIRST_BACKOFF,
            killed: false,
            endpoints: Some(ep),
        }
    }

    /// Starts node `i` at boot and waits until it listens; its line.
    pub(super) async fn boot(&self, i: u16) -> Result<String, String> {
        let seed = self.seed_for(&self.slots(), i);
        let (child, ep) = self.spawner.spawn(i, seed.as_deref()).await?;
        let line = self.spawner.describe(&format!("node-{i}"), &ep);
        {
            let mut first = self.first_seed.lock().unwrap_or_else(|p| p.into_inner());
            if first.is_none() {
                *first = ep["gossip"].as_str().map(str::to_string);
            }
        }
        self.slots().push(self.running_slot(i, child, ep));
        Ok(line)
    }

    /// One round of supervision: notices deaths, restarts what is due,
    /// and announces restarted nodes once they listen.
    pub(super) fn supervise(&self) {
        let mut slots = self.slots();
        let now = Instant::now();
        for k in 0..slots.len() {
            let seed = self.seed_for(&slots, slots[k].index);
            let s = &mut slots[k];
            match s.state {
                State::Starting | State::Running | State::Removing => {
                    let exited = s.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                    if let Some(status) = exited {
                        s.child = None;
                        s.pid = None;
                        s.endpoints = None;
                        let delay = if s.killed {
                            println!(
                                "{} killed on request ({status}); restarting it in {}s",
                                s.name,
                                FIRST_BACKOFF.as_secs()
                            );
                            FIRST_BACKOFF
                        } else {
                            if s.started.elapsed() > STABLE {
                                s.backoff = FIRST_BACKOFF;
                            }
                            let d = s.backoff;
                            s.backoff = (s.backoff * 2).min(MAX_BACKOFF);
                            // A node that exited by itself logged why.
                            let why = if status.code().is_some() {
                                last_line(&self.spawner, &s.name)
                            } else {
                                String::new()
                            };
                            println!(
                                "{} exited unexpectedly ({status}); restarting it on its data in {}s{why}",
                                s.name,
                                d.as_secs(),
                            );
                            d
                        };
                        s.killed = false;
                        s.state = State::Restarting { at: now + delay };
                    } else if s.state == State::Starting
                        && let Some(ep) = read_endpoints(&self.spawner.dir(&s.name))
                    {
                        println!(
                            "{}  [restart #{}]",
                            self.spawner.describe(&s.name, &ep),
                            s.restarts
                        );
                        s.endpoints = Some(ep);
                        s.state = State::Running;
                    }
                }
                State::Restarting { at } if now >= at => {
                    match self.spawner.launch(s.index, seed.as_deref()) {
                        Ok(child) => {
                            s.restarts += 1;
                            s.pid = child.id();
                            s.child = Some(child);
                            s.started = now;
                            s.state = State::Starting;
                        }
                        Err(e) => {
                            eprintln!("{}: cannot start it again: {e}", s.name);
                            s.state = State::Restarting {
                                at: now + s.backoff,
                            };
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Handles one order, answering line by line; the last line starts with
    /// `ok` or `error`.
    pub(super) async fn serve_order(&self, s: tokio::net::UnixStream) -> std::io::Result<()> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let (rd, mut wr) = s.into_split();
        let mut line = String::new();
        BufReader::new(rd).read_line(&mut line).await?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["list"] => Ok(self.list()),
            ["stop", name] => self.stop(name).await,
            ["start", name] => self.start(name).await,
            ["kill", name] => self.kill(name, false).await,
            ["kill", name, "--stay-down"] => self.kill(name, true).await,
            ["add"] => self.add().await,
            ["remove", name] => self.remove(name, &mut wr).await,
            _ => Err(format!(
                "unknown order {:?} (list | stop NODE | start NODE | kill NODE [--stay-down] | add | remove NODE)",
                line.trim()
            )),
        };
        let text = match answer {
            Ok(a) => a,
            Err(e) => format!("error: {e}"),
        };
        // The verdict goes last so the client's exit code follows it.
        let mut out = text.lines().collect::<Vec<_>>();
        if out.len() > 1 && out[0].starts_with("ok") {
            let first = out.remove(0);
            out.push(first);
        }
        wr.write_all((out.join("\n") + "\n").as_bytes()).await
    }

    fn list(&self) -> String {
        let slots = self.slots();
        let now = Instant::now();
        let mut out = vec![format!(
            "{:<8} {:<10} {:>8} {:>8} {:>9}  {:<21} {:<21} {:<21}",
            "NODE", "STATE", "PID", "RESTARTS", "UP", "HTTP", "GRPC", "ADMIN"
        )];
        for s in slots.iter() {
            let ep = |k: &str| {
                s.endpoints
                    .as_ref()
                    .and_then(|e| e[k].as_str())
                    .unwrap_or("-")
                    .to_string()
            };
            let up = match s.state {
                State::Running | State::Starting | State::Removing => {
                    format!("{}s", s.started.elapsed().as_secs())
                }
                State::Restarting { at } => {
                    format!("in {}s", at.saturating_duration_since(now).as_secs())
                }
                _ => "-".into(),
            };
            out.push(format!(
                "{:<8} {:<10} {:>8} {:>8} {:>9}  {:<21} {:<21} {:<21}",
                s.name,
                s.state.name(),
                s.pid.map_or("-".into(), |p| p.to_string()),
                s.restarts,
                up,
                ep("http"),
                ep("grpc"),
                ep("internode"),
            ));
        }
        out.push(format!("ok {} nodes", slots.len()));
        out.join("\n")
    }

    fn find<'a>(slots: &'a mut [Slot], name: &str) -> Result<&'a mut Slot, String> {
        let known: Vec<String> = slots.iter().map(|s| s.name.clone()).collect();
        slots
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("no node called {name} (nodes: {})", known.join(", ")))
    }

    /// Waits until `name`'s process has exited (after a signal); SIGKILLs
    /// it after `grace`.
    async fn wait_exit(&self, name: &str, grace: Duration) {
        let deadline = Instant::now() + grace;
        loop {
            {
                let mut slots = self.slots();
                let Some(s) = slots.iter_mut().find(|s| s.name == name) else {
                    return;
                };
                match s.child.as_mut() {
                    None => return,
                    Some(c) => {
                        if let Ok(Some(_)) = c.try_wait() {
                            s.child = None;
                            s.pid = None;
                            s.endpoints = None;
                            return;
                        }
                        if Instant::now() > deadline {
                            let _ = c.start_kill();
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(&self, name: &str) -> Answer {
        {
            let mut slots = self.slots();
            let s = Self::find(&mut slots, name)?;
            match s.state {
                State::Stopped | State::Stopping => {
                    return Err(format!("{name} is already stopped"));
                }
                State::Removing => return Err(format!("{name} is being removed")),
                State::Restarting { .. } => {
                    s.state = State::Stopped;
                    return Ok(format!(
                        "ok {name} stopped (it was down, waiting to restart)"
                    ));
                }
                State::Starting | State::Running => {
                    s.state = State::Stopping;
                    if let Some(c) = &s.child {
                        signal(c, libc::SIGTERM);
                    }
                }
            }
        }
        self.wait_exit(name, Duration::from_secs(30)).await;
        if let Ok(s) = Self::find(&mut self.slots(), name) {
            s.state = State::Stopped;
        }
        println!("{name} stopped on request");
        Ok(format!(
            "ok {name} stopped; it stays down until `ringkv local start {name}`"
        ))
    }

    async fn start(&self, name: &str) -> Answer {
        {
            let mut slots = self.slots();
            let index = Self::find(&mut slots, name)?.index;
            let seed = self.seed_for(&slots, index);
            let s = Self::find(&mut slots, name)?;
            match s.state {
                State::Stopped | State::Restarting { .. } => {}
                State::Stopping => return Err(format!("{name} is stopping")),
                State::Removing => return Err(format!("{name} is being removed")),
                State::Starting | State::Running => {
                    return Err(format!("{name} is already running"));
                }
            }
            let child = self
                .spawner
                .launch(index, seed.as_deref())
                .map_err(|e| format!("{name}: cannot start: {e}"))?;
            s.pid = child.id();
            s.child = Some(child);
            s.started = Instant::now();
            s.backoff = FIRST_BACKOFF;
            s.state = State::Starting;
        }
        // `supervise` turns it Running once it listens (or restarts it).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut slots = self.slots();
            let s = Self::find(&mut slots, name)?;
            match (s.state, &s.endpoints) {
                (State::Running, Some(ep)) => {
                    return Ok(format!(
                        "ok {name} started: {}",
                        self.spawner.describe(name, ep)
                    ));
                }
                (State::Restarting { .. }, _) => {
                    return Err(format!(
                        "{name} exited during start (the supervisor retries):\n{}",
                        log_tail(&self.spawner.dir(name), 5)
                    ));
                }
                _ if Instant::now() > deadline => {
                    return Err(format!("{name} did not start within 60s"));
                }
                _ => {}
            }
        }
    }

    async fn kill(&self, name: &str, stay_down: bool) -> Answer {
        {
            let mut slots = self.slots();
            let s = Self::find(&mut slots, name)?;
            match (s.state, &s.child) {
                (State::Starting | State::Running | State::Removing, Some(c)) => {
                    signal(c, libc::SIGKILL);
                    if stay_down {
                        s.state = State::Stopping;
                    } else {
                        s.killed = true;
                    }
                }
                _ => return Err(format!("{name} is not running ({})", s.state.name())),
            }
        }
        if stay_down {
            self.wait_exit(name, Duration::from_secs(10)).await;
            if let Ok(s) = Self::find(&mut self.slots(), name) {
                s.state = State::Stopped;
            }
            println!("{name} killed on request; it stays down");
            return Ok(format!(
                "ok {name} killed (SIGKILL); it stays down until `ringkv local start {name}`"
            ));
        }
        // `supervise` reaps it and schedules the restart.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut slots = self.slots();
            let s = Self::find(&mut slots, name)?;
            if matches!(s.state, State::Restarting { .. }) {
                return Ok(format!(
                    "ok {name} killed (SIGKILL); the supervisor restarts it in {}s",
                    FIRST_BACKOFF.as_secs()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("{name} did not die within 10s of SIGKILL"));
            }
        }
    }

    async fn add(&self) -> Answer {
        let (i, seed) = {
            let slots = self.slots();
            let mut i = 0u16;
            while slots.iter().any(|s| s.index == i)
                || self
                    .spawner
                    .dir(&format!("node-{i}"))
                    .join("tokens")
                    .exists()
            {
                i += 1;
            }
            (i, self.seed_for(&slots, i))
        };
        let (child, ep) = self.spawner.spawn(i, seed.as_deref()).await?;
        let name = format!("node-{i}");
        let d = self.spawner.describe(&name, &ep);
        println!("{d}");
        self.slots().push(self.running_slot(i, child, ep));
        Ok(format!(
            "ok added {d}\n{name} is JOINING: it streams its ranges, then turns NORMAL (see `ringkv status`)"
        ))
    }

    async fn remove(&self, name: &str, wr: &mut tokio::net::unix::OwnedWriteHalf) -> Answer {
        use tokio::io::AsyncWriteExt;
        let ep = {
            let mut slots = self.slots();
            let s = Self::find(&mut slots, name)?;
            if s.state != State::Running {
                return Err(format!("{name} is not running ({})", s.state.name()));
            }
            s.state = State::Removing;
            s.endpoints.clone().unwrap_or_default()
        };
        let decommissioned = self.decommission(name, &ep, wr).await;
        if let Err(e) = decommissioned {
            if let Ok(s) = Self::find(&mut self.slots(), name)
                && s.state == State::Removing
            {
                s.state = State::Running;
            }
            return Err(e);
        }
        let _ = wr
            .write_all(format!("{name}: LEFT; stopping it\n").as_bytes())
            .await;
        {
            let mut slots = self.slots();
            let s = Self::find(&mut slots, name)?;
            s.state = State::Stopping;
            if let Some(c) = &s.child {
                signal(c, libc::SIGTERM);
            }
        }
        self.wait_exit(name, Duration::from_secs(15)).await;
        // Its data directory stays, marked LEFT; a restart of `local` skips it.
        self.slots().retain(|s| s.name != name);
        println!("{name} decommissioned (LEFT); its process has ended");
        Ok(format!("ok {name} decommissioned (LEFT) and stopped"))
    }

    async fn decommission(
        &self,
        name: &str,
        ep: &serde_json::Value,
        wr: &mut tokio::net::unix::OwnedWriteHalf,
    ) -> Result<(), String> {
        use tokio::io::AsyncWriteExt;
        let addr = ep["internode"].as_str().unwrap_or_default().to_string();
        let opts = match &self.spawner.secure {
            Some(sec) => sec.connect_options().map_err(|e| e.to_string())?,
            None => Default::default(),
        };
        let mut a = ringkv_client::Admin::connect_with(&addr, &opts)
            .await
            .map_err(|e| e.to_string())?;
        a.decommission().await.map_err(|e| e.to_string())?;
        let _ = wr
            .write_all(format!("{name}: decommissioning (streaming its ranges away)\n").as_bytes())
            .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
        loop {
            let st = a.status().await.map_err(|e| e.to_string())?;
            let d = st.decommission.unwrap_or_default();
            use ringkv_proto::v1::decommission_status::Phase;
            match Phase::try_from(d.phase) {
                Ok(Phase::Done) => return Ok(()),
                Ok(Phase::Failed) => return Err(format!("decommission failed: {}", d.error)),
                _ => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err("decommission did not finish within an hour".into());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Ctrl-C: SIGTERM to every running node, then waits for each.
    pub(super) async fn stop_all(&self) {
        let names: Vec<String> = {
            let mut slots = self.slots();
            let mut names = Vec::new();
            for s in slots.iter_mut() {
                if let Some(c) = &s.child {
                    signal(c, libc::SIGTERM);
                    s.state = State::Stopping;
                    names.push(s.name.clone());
                }
            }
            names
        };
        for name in names {
            let t = Instant::now();
            self.wait_exit(&name, Duration::from_secs(15)).await;
            if t.elapsed() >= Duration::from_secs(15) {
                eprintln!("{name} did not stop in 15s; killed it");
            } else {
                println!("{name} stopped");
            }
        }
    }
}

/// The last line its log holds, to say why a node died.
fn last_line(spawner: &Spawner, name: &str) -> String {
    let tail = log_tail(&spawner.dir(name), 1);
    // Without the terminal colour codes the log may carry.
    let mut plain = String::new();
    let mut chars = tail.trim().chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    if plain.is_empty() {
        plain
    } else {
        format!("; its last log line: {plain}")
    }
}

//! Real network cuts between node processes: every node runs in its own
//! network namespace with its own address on a private bridge, and the test
//! process reaches them all through one more veth. A partition is a set of
//! iptables DROP rules between addresses inside the node namespaces, so
//! packets are lost in flight (peers see timeouts, not refused connections) —
//! what a real network split looks like.
//!
//! Needs root, `ip` (iproute2) and `iptables`; `Network::available` says why
//! not when they are missing, and tests skip with that reason.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn in_ns(ns: &str, args: &[&str]) -> Result<(), String> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    run(&v)
}

/// A private network of namespaces `10.77.<subnet>.0/24`: node i is `.i+1`,
/// the test process is `.254`.
#[derive(Debug)]
pub struct Network {
    subnet: u8,
    hub: String,
    host_if: String,
    nodes: Vec<String>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Network {
    /// Why namespaces cannot be used here, if they cannot.
    pub fn available() -> Result<(), String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        for (tool, flag) in [("ip", "-V"), ("iptables", "--version")] {
            let found = Command::new(tool)
                .arg(flag)
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                return Err(format!(
                    "`{tool}` is not installed (Debian: iproute2, iptables)"
                ));
            }
        }
        let probe = format!("rkprobe{}", std::process::id());
        run(&["ip", "netns", "add", &probe])
            .map_err(|e| format!("cannot create a network namespace: {e}"))?;
        let rules = in_ns(&probe, &["iptables", "-S"]);
        let _ = run(&["ip", "netns", "del", &probe]);
        rules.map_err(|e| format!("iptables does not work inside a namespace: {e}"))
    }

    /// A network with `nodes` node namespaces.
    pub fn create(nodes: usize) -> Result<Network, String> {
        // The host-side veth name doubles as a lock on the subnet: creating
        // it fails if another test (in any process) holds that subnet.
        let start = (std::process::id().wrapping_mul(31))
            .wrapping_add(NEXT.fetch_add(7, Ordering::Relaxed));
        let mut net = None;
        for attempt in 0..250u32 {
            let subnet = ((start.wrapping_add(attempt)) % 250 + 1) as u8;
            let host_if = format!("rk{subnet}h");
            if run(&[
                "ip",
                "link",
                "add",
                &host_if,
                "type",
                "veth",
                "peer",
                "name",
                &format!("rk{subnet}hp"),
            ])
            .is_ok()
            {
                net = Some(Network {
                    subnet,
                    hub: format!("rk{subnet}hub"),
                    host_if,
                    nodes: Vec::new(),
                });
                break;
            }
        }
        let mut net = net.ok_or("no free subnet for a test network")?;
        net.setup_hub()?;
        for _ in 0..nodes {
            net.add_node()?;
        }
        Ok(net)
    }

    fn setup_hub(&mut self) -> Result<(), String> {
        let s = self.subnet;
        let peer = format!("rk{s}hp");
        run(&["ip", "netns", "add", &self.hub])?;
        in_ns(&self.hub, &["ip", "link", "add", "br0", "type", "bridge"])?;
        in_ns(&self.hub, &["ip", "link", "set", "br0", "up"])?;
        run(&["ip", "link", "set", &peer, "netns", &self.hub])?;
        in_ns(&self.hub, &["ip", "link", "set", &peer, "master", "br0"])?;
        in_ns(&self.hub, &["ip", "link", "set", &peer, "up"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", self.host_ip()),
            "dev",
            &self.host_if,
        ])?;
        run(&["ip", "link", "set", &self.host_if, "up"])
    }

    /// Add one more node namespace; returns its index.
    pub fn add_node(&mut self) -> Result<usize, String> {
        let i = self.nodes.len();
        if i >= 250 {
            return Err("at most 250 nodes per test network".into());
        }
        let s = self.subnet;
        let ns = format!("rk{s}n{i}");
        let inner = format!("rk{s}v{i}");
        let outer = format!("rk{s}p{i}");
        run(&["ip", "netns", "add", &ns])?;
        self.nodes.push(ns.clone());
        run(&[
            "ip", "link", "add", &inner, "type", "veth", "peer", "name", &outer,
        ])?;
        run(&["ip", "link", "set", &inner, "netns", &ns])?;
        run(&["ip", "link", "set", &outer, "netns", &self.hub])?;
        in_ns(&self.hub, &["ip", "link", "set", &outer, "master", "br0"])?;
        in_ns(&self.hub, &["ip", "link", "set", &outer, "up"])?;
        in_ns(
            &ns,
            &[
                "ip",
                "addr",
                "add",
                &format!("{}/24", self.ip(i)),
                "dev",
                &inner,
            ],
        )?;
        in_ns(&ns, &["ip", "link", "set", &inner, "up"])?;
        in_ns(&ns, &["ip", "link", "set", "lo", "up"])?;
        Ok(i)
    }

    pub fn ip(&self, node: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, node as u8 + 1)
    }

    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 254)
    }

    /// How many node namespaces there are.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The namespace node `i` runs in.
    pub fn namespace(&self, node: usize) -> &str {
        &self.nodes[node]
    }

    /// Cut every link between nodes of different groups (both directions).
    /// Nodes in no group keep all their links; the test process reaches all.
    pub fn partition(&self, groups: &[&[usize]]) -> Result<(), String> {
        for (gi, g) in groups.iter().enumerate() {
            for (hi, h) in groups.iter().enumerate() {
                if gi == hi {
                    continue;
                }
                for &a in *g {
                    for &b in *h {
                        let peer = self.ip(b).to_string();
                        in_ns(
                            &self.nodes[a],
                            &["iptables", "-A", "INPUT", "-s", &peer, "-j", "DROP"],
                        )?;
                        in_ns(
                            &self.nodes[a],
                            &["iptables", "-A", "OUTPUT", "-d", &peer, "-j", "DROP"],
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs a command inside node `node`'s namespace; its standard output.
    pub fn output(&self, node: usize, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.nodes[node]])
            .args(args)
            .output()
            .map_err(|e| format!("{}: {e}", args.join(" ")))?;
        if !out.status.success() {
            return Err(format!(
                "`{}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Bytes node `node` has sent on TCP that its peers have not yet
    /// acknowledged (iproute2's `ss`): 0 once nothing is in flight.
    pub fn unacked_bytes(&self, node: usize) -> Result<u64, String> {
        let out = self.output(node, &["ss", "-tnH", "state", "established"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum())
    }

    /// Remove every cut.
    pub fn heal(&self) -> Result<(), String> {
        for ns in &self.nodes {
            in_ns(ns, &["iptables", "-F"])?;
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain(std::iter::once(&self.hub)) {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = run(&["ip", "link", "del", &self.host_if]);
    }
}

//! Container networking: the host's network, or an isolated network
//! namespace joined to the host by a veth pair.
//!
//! Built with the `ip` command from iproute2 (a teaching simplification: a
//! netlink socket would avoid the dependency and the process spawns, at the
//! cost of a few hundred lines of message encoding). Names:
//! netns `serverlab-<pid>-<n>` (bind-mounted under /run/netns by `ip`),
//! veth `slv<pid hex>x<n>h` on the host and `…c` in the container, at most
//! 15 bytes (IFNAMSIZ − 1).
//!
//! Addresses: each container gets one /30 from the test range
//! 10.213.0.0/16: host end `.1`, container end `.2` of its block. The block
//! is the first one not already assigned on this host, searched from a
//! start derived from the pid, so parallel runners rarely collide.

use super::{Result, SandboxError};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::Mutex;

/// The range isolated containers draw their /30 subnets from.
pub const TEST_RANGE: &str = "10.213.0.0/16";

/// Which network a container sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Net {
    /// The host's network namespace (no isolation, no setup cost).
    #[default]
    Host,
    /// Its own namespace: loopback up, plus a veth to the host.
    Isolated,
}

impl std::str::FromStr for Net {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Net, String> {
        match s {
            "host" => Ok(Net::Host),
            "isolated" => Ok(Net::Isolated),
            other => Err(format!("--net must be host or isolated, not {other:?}")),
        }
    }
}

/// The two ends of an isolated container's link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetAddrs {
    /// The host's end (the container's default gateway).
    pub host: Ipv4Addr,
    /// The container's end: connect here to reach a server inside.
    pub container: Ipv4Addr,
    /// Prefix length of the link (30).
    pub prefix_len: u8,
}

/// A live isolated network: namespace, veth pair, addresses.
#[derive(Debug)]
pub struct NetSetup {
    /// Namespace name (`serverlab-<pid>-<n>`).
    pub netns: String,
    /// Host-side veth name.
    pub veth_host: String,
    /// The link's addresses.
    pub addrs: NetAddrs,
}

/// Serialises address choice within this process (the scan and the
/// assignment must not interleave).
static CHOOSE: Mutex<()> = Mutex::new(());

/// Runs `ip ARGS`, turning a failure into an error that shows its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| SandboxError::Net(format!("cannot run `ip` (iproute2): {e}")))?;
    if !out.status.success() {
        return Err(SandboxError::Net(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The veth names for owner `pid`, container number `n`.
pub fn veth_names(pid: u32, n: u32) -> (String, String) {
    (format!("slv{pid:x}x{n}h"), format!("slv{pid:x}x{n}c"))
}

/// The /30 block `index` (0..16384) of the test range.
pub fn block(index: u32) -> NetAddrs {
    let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + (index % 16384) * 4;
    NetAddrs {
        host: Ipv4Addr::from(base + 1),
        container: Ipv4Addr::from(base + 2),
        prefix_len: 30,
    }
}

impl NetSetup {
    /// Creates the namespace, the veth pair and the addresses, and brings
    /// everything (loopback included) up. Undoes what it did on error.
    pub fn create(pid: u32, n: u32) -> Result<NetSetup> {
        let _guard = CHOOSE.lock().unwrap_or_else(|p| p.into_inner());
        let owner = super::owner::Owner::me().tag();
        let netns = format!("{}-{owner}-{n}", super::PREFIX);
        let (host, peer) = veth_names(pid, n);
        let used = ip(&["-o", "-4", "addr", "show"])?;
        let start = pid.wrapping_mul(31).wrapping_add(n);
        let addrs = (0..16384)
            .map(|i| block(start.wrapping_add(i)))
            .find(|a| !used.contains(&format!(" {}/", a.host)))
            .ok_or_else(|| SandboxError::Net(format!("every /30 of {TEST_RANGE} is in use")))?;
        let setup = NetSetup {
            netns,
            veth_host: host,
            addrs,
        };
        if let Err(e) = setup.configure(&peer) {
            setup.remove();
            return Err(e);
        }
        Ok(setup)
    }

    fn configure(&self, peer: &str) -> Result<()> {
        let (ns, host) = (self.netns.as_str(), self.veth_host.as_str());
        let h = format!("{}/{}", self.addrs.host, self.addrs.prefix_len);
        let c = format!("{}/{}", self.addrs.container, self.addrs.prefix_len);
        let gw = self.addrs.host.to_string();
        ip(&["netns", "add", ns])?;
        ip(&["link", "add", host, "type", "veth", "peer", "name", peer])?;
        ip(&["link", "set", peer, "netns", ns])?;
        ip(&["addr", "add", &h, "dev", host])?;
        ip(&["link", "set", host, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "addr", "add", &c, "dev", peer])?;
        ip(&["-n", ns, "link", "set", peer, "up"])?;
        ip(&["-n", ns, "route", "add", "default", "via", &gw])?;
        Ok(())
    }

    /// Opens the namespace for `setns(2)` in the child.
    pub fn open(&self) -> Result<OwnedFd> {
        let path = format!("/run/netns/{}", self.netns);
        std::fs::File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| SandboxError::io("open", path, e))
    }

    /// Deletes the veth pair (its peer goes with it) and the namespace.
    /// Idempotent: already-gone parts are not errors.
    pub fn remove(&self) {
        remove_veth(&self.veth_host);
        remove_netns(&self.netns);
    }
}

/// Deletes a host-side veth if it exists.
pub fn remove_veth(name: &str) {
    let _ = ip(&["link", "del", name]);
}

/// Deletes a named network namespace if it exists.
pub fn remove_netns(name: &str) {
    let _ = ip(&["netns", "del", name]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz_and_blocks_are_30s() {
        let (h, c) = veth_names(4_194_304, 999);
        assert!(h.len() <= 15 && c.len() <= 15, "{h} {c}");
        assert!(h.starts_with("slv") && h.ends_with('h'));
        let a = block(0);
        assert_eq!(
            (a.host, a.container),
            (Ipv4Addr::new(10, 213, 0, 1), Ipv4Addr::new(10, 213, 0, 2))
        );
        let b = block(16383);
        assert_eq!(b.container, Ipv4Addr::new(10, 213, 255, 254));
        assert_eq!(block(16384), block(0));
        assert_eq!("isolated".parse::<Net>(), Ok(Net::Isolated));
        assert!("bridge".parse::<Net>().is_err());
    }
}

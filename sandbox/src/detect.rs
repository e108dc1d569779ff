//! Which cgroup hierarchy to use, found at run time from /proc/self/mountinfo.
//!
//! - Pure v2: one `cgroup2` mount whose root lists controllers → v2.
//! - v1 or hybrid (v1 controllers mounted, maybe plus a controller-less
//!   cgroup2 tree such as `/sys/fs/cgroup/unified`) → v1, since a controller
//!   bound to v1 is unavailable in v2.
//!
//! The roots are plain paths, so tests point a [`Layout`] at a fake cgroupfs
//! tree in a temporary directory.

use super::{Result, SandboxError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The v1 controllers serverlab uses.
pub const V1_CONTROLLERS: [&str; 7] = [
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer",
];

/// Cgroup version in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    /// One hierarchy per controller (or group of controllers).
    V1,
    /// The unified hierarchy.
    V2,
}

impl CgroupVersion {
    /// `"v1"` or `"v2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        }
    }
}

/// Where the hierarchies are mounted. serverlab creates its cgroups directly
/// under these roots, as runc's cgroupfs driver does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Which back end.
    pub version: CgroupVersion,
    /// v2: the unified root. v1: unused.
    pub v2_root: PathBuf,
    /// v1: controller → mount root (co-mounted controllers share a path).
    pub v1_mounts: BTreeMap<String, PathBuf>,
}

impl Layout {
    /// A v2 layout rooted at `root` (a real mount or a fake tree).
    pub fn v2(root: impl Into<PathBuf>) -> Layout {
        Layout {
            version: CgroupVersion::V2,
            v2_root: root.into(),
            v1_mounts: BTreeMap::new(),
        }
    }

    /// A v1 layout from controller → mount root pairs.
    pub fn v1<I, S, P>(mounts: I) -> Layout
    where
        I: IntoIterator<Item = (S, P)>,
        S: Into<String>,
        P: Into<PathBuf>,
    {
        Layout {
            version: CgroupVersion::V1,
            v2_root: PathBuf::new(),
            v1_mounts: mounts
                .into_iter()
                .map(|(c, p)| (c.into(), p.into()))
                .collect(),
        }
    }

    /// Detects the layout of this host.
    pub fn detect() -> Result<Layout> {
        let path = "/proc/self/mountinfo";
        let text = std::fs::read_to_string(path)
            .map_err(|e| SandboxError::NoCgroups(format!("{path}: {e}")))?;
        Self::from_mountinfo(&text, |p| {
            std::fs::read_to_string(p.join("cgroup.controllers")).ok()
        })
    }

    /// Decides from mountinfo text; `controllers_of` reads a v2 root's
    /// `cgroup.controllers` (injectable for tests).
    pub fn from_mountinfo(
        text: &str,
        controllers_of: impl Fn(&Path) -> Option<String>,
    ) -> Result<Layout> {
        let mut v1 = BTreeMap::new();
        let mut v2 = Vec::new();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split_whitespace().nth(4) else {
                continue;
            };
            let mut r = right.split_whitespace();
            let (fstype, _source, options) = (r.next(), r.next(), r.next().unwrap_or(""));
            match fstype {
                Some("cgroup2") => v2.push(PathBuf::from(mount_point)),
                Some("cgroup") => {
                    for opt in options.split(',') {
                        if V1_CONTROLLERS.contains(&opt) {
                            v1.entry(opt.to_string())
                                .or_insert_with(|| PathBuf::from(mount_point));
                        }
                    }
                }
                _ => {}
            }
        }
        if !v1.is_empty() {
            return Ok(Layout::v1(v1));
        }
        for root in v2 {
            if controllers_of(&root).is_some_and(|c| !c.trim().is_empty()) {
                return Ok(Layout::v2(root));
            }
        }
        Err(SandboxError::NoCgroups(
            "neither cgroup v1 controllers nor a cgroup2 tree with controllers is mounted".into(),
        ))
    }

    /// v1: the mount root of `controller`, if mounted.
    pub fn v1_mount(&self, controller: &str) -> Option<&Path> {
        self.v1_mounts.get(controller).map(PathBuf::as_path)
    }

    /// Every root directory under which serverlab cgroups may live (v1:
    /// each distinct mount; v2: the unified root).
    pub fn roots(&self) -> Vec<PathBuf> {
        match self.version {
            CgroupVersion::V2 => vec![self.v2_root.clone()],
            CgroupVersion::V1 => {
                let mut r: Vec<PathBuf> = self.v1_mounts.values().cloned().collect();
                r.sort();
                r.dedup();
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:12 - cgroup cgroup rw,cpu
34 30 0:30 / /sys/fs/cgroup/cpuacct rw,relatime shared:13 - cgroup cgroup rw,cpuacct
35 30 0:31 / /sys/fs/cgroup/memory rw,relatime shared:14 - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/systemd rw,relatime shared:15 - cgroup cgroup rw,xattr,name=systemd
";

    #[test]
    fn hybrid_uses_v1_with_separate_cpu_and_cpuacct() {
        let l = Layout::from_mountinfo(HYBRID, |_| Some(String::new())).unwrap();
        assert_eq!(l.version, CgroupVersion::V1);
        assert_eq!(l.v1_mount("cpu"), Some(Path::new("/sys/fs/cgroup/cpu")));
        assert_eq!(
            l.v1_mount("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpuacct"))
        );
        assert_eq!(l.v1_mount("pids"), None);
        assert!(!l.v1_mounts.contains_key("name=systemd"));
    }

    #[test]
    fn comounted_v1_and_pure_v2() {
        let co = "33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let l = Layout::from_mountinfo(co, |_| None).unwrap();
        assert_eq!(l.v1_mount("cpu"), l.v1_mount("cpuacct"));
        assert_eq!(l.roots().len(), 1);

        let pure = "25 22 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let l =
            Layout::from_mountinfo(pure, |_| Some("cpuset cpu io memory pids\n".into())).unwrap();
        assert_eq!(l, Layout::v2("/sys/fs/cgroup"));
        assert!(
            Layout::from_mountinfo(pure, |_| Some(String::new())).is_err(),
            "empty v2, no v1: nothing usable"
        );
    }
}

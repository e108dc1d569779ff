//! The cgroup back ends on the real kernel, the v2 one above all. Most
//! users' machines are pure v2; a hybrid host (v1 controllers beside a controller-less cgroup2
//! tree, like the reference machine) uses v1 for its limits, but the v2
//! tree still joins tasks, accounts their CPU, kills them (`cgroup.kill`,
//! or the freezer of kernels before 5.14) and removes cgroups. These tests
//! run all of that on whichever cgroup2 tree is mounted; the limits
//! themselves need the tree's controllers and are tested where it has them
//! (here: refused, clearly). The detected hierarchy (v1 here) kills the
//! same forking tree. Needs root and a cgroup2 mount (as build.rs found
//! them), else ignored with that reason.

mod common;

use common::{processes_running, wait_for};
use sandbox::cgroup::Cgroup;
use sandbox::owner::Owner;
use sandbox::{CgroupVersion, Layout, Limits, Net, Sandbox, SandboxError};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The cgroup2 tree of this machine: the unified hierarchy of a pure v2
/// host, or the one a hybrid host mounts beside v1.
fn cgroup2_tree() -> PathBuf {
    common::still_root();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .expect("build.rs found a cgroup2 mount, and it is gone")
}

/// A cgroup named as serverlab names them, so that a test that dies
/// leaves nothing the next start would not remove.
fn cgroup(layout: &Layout, hint: &str) -> Cgroup {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "serverlab-{hint}-{}-{}",
        Owner::me().tag(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    Cgroup::create(layout, &name, &Limits::default()).unwrap()
}

/// Four chains of shells in `cg`: once the first shell is there, each
/// link forks the next and becomes `sleep <tag>`, up to 250 links a chain
/// (a bounded stand-in for a server that forks as it goes). Every link is
/// a new task that forks, so a kill that lists the tasks and then signals
/// them may miss a newest link unless nothing can fork in between.
/// Returns once 50 tasks are in the cgroup, while it still grows.
fn forking_tree(cg: &Cgroup, tag: &str) -> Child {
    let link =
        format!("n=$1; if [ $n -lt 250 ]; then sh -c \"$LINK\" sh $((n+1)) & fi; exec sleep {tag}");
    let first = format!(
        "until grep -q '{name}' /proc/$$/cgroup; do sleep 0.01; done; \
         for c in 1 2 3 4; do sh -c \"$LINK\" sh 0 & done; wait",
        name = cg.name()
    );
    let child = Command::new("sh")
        .args(["-c", &first])
        .env("LINK", link)
        .spawn()
        .unwrap();
    // v1: one cgroup.procs per hierarchy.
    for procs in cg.procs_files() {
        std::fs::write(procs, child.id().to_string()).unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(10), || cg.tasks().len() >= 50),
        "the tree grows in the cgroup: {} tasks",
        cg.tasks().len()
    );
    child
}

/// Kills a forking tree with `kill`, then checks that every task is gone,
/// that the CPU it used was counted, and that the cgroup is removed.
fn kills_a_forking_tree(
    layout: &Layout,
    hint: &str,
    tag: &str,
    kill: impl Fn(&Cgroup) -> sandbox::Result<()>,
) {
    let cg = cgroup(layout, hint);
    let dirs = cg.dirs();
    let mut child = forking_tree(&cg, tag);
    kill(&cg).unwrap_or_else(|e| panic!("kill: {e}; left: {:?}", cg.tasks()));
    assert_eq!(cg.tasks(), Vec::<i32>::new());
    assert!(child.wait().unwrap().code().is_none(), "killed by a signal");
    assert!(
        wait_for(Duration::from_secs(2), || processes_running(&[
            "sleep", tag
        ])
        .is_empty()),
        "a forked task escaped the kill"
    );
    let mut acc = sandbox::Accounting::default();
    cg.read_accounting(&mut acc).unwrap();
    assert_eq!(acc.cgroup, layout.version.as_str());
    assert!(
        acc.cpu_usage_us > 0 && acc.cpu_usage_us >= acc.cpu_user_us,
        "{acc:?}"
    );
    cg.remove().unwrap();
    assert!(dirs.iter().all(|d| !d.exists()), "{dirs:?} removed");
}

fn v2_tree() -> Layout {
    let layout = Layout::v2(cgroup2_tree());
    assert_eq!(layout.version, CgroupVersion::V2);
    layout
}

#[test]
#[cfg_attr(
    not(all(serverlab_root, serverlab_cgroup2)),
    ignore = "needs root and a cgroup2 mount"
)]
fn kill_takes_a_tree_that_is_still_forking() {
    // cgroup.kill where the kernel has it (5.14), else the freezer.
    kills_a_forking_tree(&v2_tree(), "v2kill", "61.25", Cgroup::kill_all);
}

#[test]
#[cfg_attr(
    not(all(serverlab_root, serverlab_cgroup2)),
    ignore = "needs root and a cgroup2 mount"
)]
fn the_freezer_kills_a_forking_tree_as_old_kernels_must() {
    // Before 5.14 there is no cgroup.kill: freeze until `frozen 1`, kill
    // each task, thaw. A listing taken before the freeze has taken would
    // miss the tasks forked after it.
    kills_a_forking_tree(&v2_tree(), "v2freeze", "61.5", Cgroup::kill_all_frozen);
}

#[test]
#[cfg_attr(
    not(all(serverlab_root, serverlab_cgroup2)),
    ignore = "needs root and a cgroup2 mount"
)]
fn the_detected_hierarchy_kills_a_forking_tree() {
    // v1 here (freeze through freezer.state, SIGKILL each, thaw); the
    // unified hierarchy on a pure v2 host.
    common::still_root();
    let layout = Layout::detect().unwrap();
    kills_a_forking_tree(&layout, "detkill", "61.625", Cgroup::kill_all);
}

/// A whole container in the v2 tree: joined before exec, accounted,
/// removed at stop; a limit whose controller the tree lacks is refused,
/// naming it, and leaves no cgroup behind.
#[test]
#[cfg_attr(
    not(all(serverlab_root, serverlab_cgroup2)),
    ignore = "needs root and a cgroup2 mount"
)]
fn a_container_in_the_v2_tree_is_accounted_and_removed() {
    let tree = cgroup2_tree();
    let layout = Layout::v2(&tree);
    let busy = "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done";
    let mut cmd = Command::new("sh");
    cmd.args(["-c", busy]);
    let mut c = Sandbox::spawn_in(&layout, "v2run", &Limits::default(), Net::Host, cmd).unwrap();
    let dir = c.cgroup().unwrap().dir("").unwrap().to_path_buf();
    assert!(dir.starts_with(&tree), "{dir:?}");
    let status = c.wait_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    let acc = c.stop().unwrap();
    assert_eq!(acc.cgroup, "v2");
    assert!(!acc.unlimited);
    // The shell's loop ran in the cgroup: its CPU is there.
    assert!(acc.cpu_usage_us >= 10_000 && acc.cpu_user_us > 0, "{acc:?}");
    assert!(!dir.exists(), "{dir:?} removed");

    let controllers = std::fs::read_to_string(tree.join("cgroup.controllers")).unwrap();
    let half = Limits {
        cpus: Some(0.5),
        ..Default::default()
    };
    let mut cmd = Command::new("true");
    cmd.arg("v2cpu");
    let made = Sandbox::spawn_in(&layout, "v2cpu", &half, Net::Host, cmd);
    if controllers.split_whitespace().any(|c| c == "cpu") {
        let c = made.unwrap();
        let max = std::fs::read_to_string(c.cgroup().unwrap().dir("").unwrap().join("cpu.max"));
        assert_eq!(max.unwrap().trim(), "50000 100000");
        c.stop().unwrap();
    } else {
        match made {
            Err(e @ SandboxError::Unsupported { limit: "cpus", .. }) => {
                assert!(e.to_string().contains("cpu.max"), "{e}")
            }
            other => panic!("cpus without a cpu controller: {:?}", other.err()),
        }
    }
    let ours = format!("-{}-", Owner::me().tag());
    let left: Vec<String> = std::fs::read_dir(&tree)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("serverlab-v2cpu") && n.contains(&ours))
        .collect();
    assert_eq!(left, Vec::<String>::new());
}

/// What a killed runner leaves in a v2 tree (a cgroup with a task in it)
/// is killed and removed by the next start's clean-up.
#[test]
#[cfg_attr(
    not(all(serverlab_root, serverlab_cgroup2)),
    ignore = "needs root and a cgroup2 mount"
)]
fn leftovers_in_a_v2_tree_are_killed_and_removed() {
    let tree = cgroup2_tree();
    // Named after this process, but with a start time it never had: an
    // owner that is gone, as a crashed runner's is.
    let dead = Owner {
        pid: std::process::id() as i32,
        start: Some(1),
    };
    assert!(dead.gone());
    let dir = tree.join(format!("serverlab-v2left-{}-0", dead.tag()));
    std::fs::create_dir(&dir).unwrap();
    let mut sleeper = Command::new("sleep").arg("61.75").spawn().unwrap();
    std::fs::write(dir.join("cgroup.procs"), sleeper.id().to_string()).unwrap();

    let report = sandbox::cleanup::cleanup_leftovers_in(Some(&Layout::v2(&tree)));
    assert!(report.cgroups.contains(&dir), "{report:?}");
    assert!(!dir.exists());
    assert!(
        sleeper.wait().unwrap().code().is_none(),
        "the task left inside was killed"
    );
}

/// What a test made in a cgroup tree, undone even when it fails: the
/// task killed, the directories removed (deepest first), and a
/// controller the test handed down at the root taken back.
struct Undo {
    task: Option<Child>,
    dirs: Vec<PathBuf>,
    root_control: Option<(PathBuf, String)>,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(t) = &mut self.task {
            let _ = t.kill();
            let _ = t.wait();
        }
        for d in self.dirs.iter().rev() {
            let _ = sandbox::cgroup::rmdir_retry(d);
        }
        if let Some((file, value)) = &self.root_control {
            let _ = std::fs::write(file, value);
        }
    }
}

/// Handing a controller down on the real kernel, with one the tree has
/// (hugetlb, on a hybrid host): enabled and read back; refused, with the
/// pids and the way out, in a cgroup that holds a process of its own —
/// which the kernel itself refuses (EBUSY), so the message is no guess;
/// allowed once the process is in a leaf.
#[test]
#[cfg_attr(
    not(all(serverlab_root, serverlab_cgroup2)),
    ignore = "needs root and a cgroup2 mount"
)]
fn controllers_are_handed_down_and_internal_processes_refused() {
    use sandbox::cgroup::v2::enable_controllers;
    let tree = cgroup2_tree();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let has = |p: &Path, c: &str| read(p).split_whitespace().any(|x| x == c);
    let Some(c) = read(&tree.join("cgroup.controllers"))
        .split_whitespace()
        .next()
        .map(String::from)
    else {
        panic!("the cgroup2 tree at {tree:?} offers no controller to hand down");
    };
    let root_control = tree.join("cgroup.subtree_control");
    let mut undo = Undo {
        task: None,
        dirs: Vec::new(),
        root_control: (!has(&root_control, &c)).then(|| (root_control.clone(), format!("-{c}"))),
    };
    enable_controllers(&tree, &[&c]).unwrap();
    assert!(has(&root_control, &c));

    let x = tree.join(format!("serverlab-v2deleg-{}-0", Owner::me().tag()));
    std::fs::create_dir(&x).unwrap();
    undo.dirs.push(x.clone());
    assert!(has(&x.join("cgroup.controllers"), &c), "{c} handed down");
    let sleeper = Command::new("sleep").arg("61.875").spawn().unwrap();
    let pid = sleeper.id();
    undo.task = Some(sleeper);
    std::fs::write(x.join("cgroup.procs"), pid.to_string()).unwrap();

    let err = enable_controllers(&x, &[&c]).unwrap_err().to_string();
    assert!(err.contains(&format!("pids {pid}")), "{err}");
    assert!(err.contains("init/cgroup.procs"), "{err}");
    let kernel = std::fs::write(x.join("cgroup.subtree_control"), format!("+{c}"));
    assert_eq!(
        kernel.map_err(|e| e.raw_os_error()),
        Err(Some(libc::EBUSY)),
        "the kernel refuses it too"
    );

    let leaf = x.join("init");
    std::fs::create_dir(&leaf).unwrap();
    undo.dirs.push(leaf.clone());
    std::fs::write(leaf.join("cgroup.procs"), pid.to_string()).unwrap();
    enable_controllers(&x, &[&c]).unwrap();
    assert!(has(&leaf.join("cgroup.controllers"), &c));
}

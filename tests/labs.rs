//! Every lab, as CI runs it: `serverlab lab run N --fast` on this machine,
//! its claims checked; then `serverlab lab check N` finds the same run by
//! itself and says the same.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_serverlab");

/// A scratch folder to run the labs in, removed at the end.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn serverlab(dir: &PathBuf, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn every_lab_shows_its_claims_in_fast_mode() {
    let dir = Scratch(std::env::temp_dir().join(format!("serverlab-labs-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let list = serverlab(&dir.0, &["lab", "list"]);
    assert!(list.status.success());
    let listing = String::from_utf8_lossy(&list.stdout).into_owned();
    let numbers: Vec<String> = listing
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.parse::<u32>().is_ok())
        .map(String::from)
        .collect();
    assert!(numbers.len() >= 5, "{listing}");
    // Without root, claims about the container's CPU and memory cannot be
    // evaluated (and say so); none may fail.
    let root = nix::unistd::geteuid().is_root();
    for n in &numbers {
        let run = serverlab(&dir.0, &["lab", "run", n, "--fast", "--quiet"]);
        let out = String::from_utf8_lossy(&run.stdout).into_owned();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "lab {n}: {out}\n{err}");
        assert!(!out.contains("DID NOT HOLD"), "lab {n}: {out}");
        let summary = out.lines().last().unwrap_or_default().to_string();
        let (held, total) = summary
            .split_once(" of ")
            .and_then(|(h, rest)| {
                Some((
                    h.parse::<u32>().ok()?,
                    rest.split(' ').next()?.parse::<u32>().ok()?,
                ))
            })
            .unwrap_or_else(|| panic!("lab {n}: no summary in {out}"));
        // A claim missed while the host took the CPUs is "not judged":
        // the lab says so, and it is no evidence that the claim is wrong.
        let not_judged = out.matches("not judged (host interference)").count() as u32;
        if not_judged > 0 {
            eprintln!("lab {n}: {not_judged} claims not judged: the host took the CPUs");
        }
        if root {
            assert_eq!(held + not_judged, total, "lab {n}: {out}");
        }
        // Found again without naming the folder, with the same verdict.
        let check = serverlab(&dir.0, &["lab", "check", n]);
        let again = String::from_utf8_lossy(&check.stdout);
        assert!(check.status.success(), "lab {n}: {again}");
        assert!(again.ends_with(&format!("{summary}\n")), "lab {n}: {again}");
        assert!(again.contains("-fast-"), "lab {n}: {again}");
    }
    let unknown = serverlab(&dir.0, &["lab", "run", "99"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no lab 99"));
}

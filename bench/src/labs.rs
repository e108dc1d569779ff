//! The classroom labs (`docs/labs/`): each a handout, a suite whose
//! `[[claim]]`s state what the lab expects, and notes for the instructor.
//! The suites are embedded, like the shipped suites, so that `serverlab
//! lab run N` works from any folder.

use crate::suite::{Suite, SuiteError};

/// One lab.
#[derive(Debug, Clone, Copy)]
pub struct Lab {
    /// Its number in the reading path (`serverlab lab run 2`).
    pub number: u32,
    /// Its folder under `docs/labs/`.
    pub folder: &'static str,
    pub title: &'static str,
    /// What it needs beyond `serverlab` itself.
    pub needs: &'static str,
    /// Roughly how long its full run takes on 2 cores.
    pub minutes: u32,
    /// The suite's TOML.
    text: &'static str,
}

macro_rules! lab {
    ($number:expr, $folder:literal, $title:literal, $needs:literal, $minutes:expr) => {
        Lab {
            number: $number,
            folder: $folder,
            title: $title,
            needs: $needs,
            minutes: $minutes,
            text: include_str!(concat!("../../docs/labs/", $folder, "/lab.toml")),
        }
    };
}

/// Every lab there is, in reading order.
pub const LABS: &[Lab] = &[
    lab!(
        1,
        "01-iterative-vs-concurrent",
        "Iterative versus concurrent: Little's law",
        "nothing (no root)",
        1
    ),
    lab!(
        2,
        "02-events-vs-threads",
        "Events versus threads",
        "root for the memory claim (cgroups); the rest runs without",
        2
    ),
    lab!(
        3,
        "03-containers",
        "Containers: what they hide, and how they share a CPU",
        "root (cgroups and namespaces); without it nothing is in force",
        1
    ),
    lab!(
        4,
        "04-finding-a-server",
        "Finding a server: well-known ports, a directory, a super server",
        "nothing (no root)",
        1
    ),
    lab!(
        5,
        "05-state-behind-a-dispatcher",
        "Stateful, stateless and soft state behind a dispatcher",
        "nothing (no root)",
        1
    ),
    lab!(
        6,
        "06-scaling-by-replication",
        "Scaling by replication: what the dispatcher costs",
        "root for the CPU figures (cgroups)",
        1
    ),
    lab!(
        7,
        "07-honest-measurement",
        "Tail latency and honest measurement",
        "nothing (no root)",
        1
    ),
    lab!(
        8,
        "08-live-migration",
        "Live migration: pre-copy, stop-and-copy and post-copy",
        "nothing (no root)",
        1
    ),
];

/// The sections every handout has, in this order.
pub const HANDOUT_SECTIONS: [&str; 5] = [
    "## The question",
    "## Background",
    "## Predict",
    "## Steps",
    "## Questions",
];

/// The sections of every lab's instructor notes.
pub const INSTRUCTOR_SECTIONS: [&str; 3] = [
    "## Expected results",
    "## What students get wrong",
    "## Variations",
];

impl Lab {
    /// Lab `number`, or why there is none.
    pub fn find(number: u32) -> Result<&'static Lab, String> {
        LABS.iter().find(|l| l.number == number).ok_or_else(|| {
            let have: Vec<String> = LABS.iter().map(|l| l.number.to_string()).collect();
            format!(
                "no lab {number} (labs: {}; `serverlab lab list` shows them)",
                have.join(", ")
            )
        })
    }

    /// Its suite, claims included.
    pub fn suite(&self) -> Result<Suite, SuiteError> {
        Suite::parse(&format!("docs/labs/{}/lab.toml", self.folder), self.text)
    }

    /// Where its handout is, from the project's root.
    pub fn handout(&self) -> String {
        format!("docs/labs/{}/README.md", self.folder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lab_parses_states_claims_and_has_its_documents() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for lab in LABS {
            let suite = lab
                .suite()
                .unwrap_or_else(|e| panic!("lab {}: {e}", lab.number));
            assert!(
                !suite.claims.is_empty(),
                "lab {} states no claim",
                lab.number
            );
            let sections = [
                ("README.md", &HANDOUT_SECTIONS[..]),
                ("instructor.md", &INSTRUCTOR_SECTIONS[..]),
            ];
            for (doc, headings) in sections {
                let path = root.join("docs/labs").join(lab.folder).join(doc);
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                for h in headings {
                    assert!(text.contains(h), "{} lacks {h:?}", path.display());
                }
            }
            let fast = suite.clone().fast();
            assert!(fast.name.ends_with("-fast") && fast.repetitions == 1);
        }
        assert!(Lab::find(99).is_err());
    }
}

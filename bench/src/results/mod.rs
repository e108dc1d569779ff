//! The results store: one folder per suite run, files programs can re-read.
//!
//! ```text
//! results/<suite>-<YYYYMMDD-HHMMSS>/
//!   suite.toml          the suite as it was run
//!   env.json            kernel, CPU, cores, cgroup version, commit, rustc
//!   runs/<key>.json     one per finished run, written atomically
//!   runs/<key>.hgrm     its corrected latency distribution
//!   summary.csv         one row per run
//!   report.html         the report
//! ```
//!
//! A run file appears only once the run is over (temp file + rename), so a
//! folder never holds half a run; `--resume` skips every key with a file.

mod env;
mod record;

pub use env::Env;
pub use record::{AutoStep, Metrics, Percentiles, Placement, RunRecord, Status, Steal, TimePoint};

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Errors of the store; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        source: std::io::Error,
    },
    /// A JSON file does not hold what it should.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: serde_json::Error,
    },
    /// The folder is not a results folder.
    #[error("{0}: not a results folder (no env.json)")]
    NotResults(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One results folder.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Makes `<base>/<suite>-<timestamp>/` (a suffix is added if it exists).
    pub fn create(base: &Path, suite: &str) -> Result<Store, StoreError> {
        let stamp = timestamp(SystemTime::now());
        let mut dir = base.join(format!("{suite}-{stamp}"));
        let mut n = 1;
        while dir.exists() {
            n += 1;
            dir = base.join(format!("{suite}-{stamp}-{n}"));
        }
        std::fs::create_dir_all(dir.join("runs")).map_err(io(&dir))?;
        Ok(Store { dir })
    }

    /// Opens an existing folder (for `--resume` and `report`).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        if !dir.join("env.json").is_file() {
            return Err(StoreError::NotResults(dir.to_path_buf()));
        }
        std::fs::create_dir_all(dir.join("runs")).map_err(io(dir))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `name` in the folder atomically: a temp file, then rename.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{}.tmp", name.replace('/', "_")));
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(path)
    }

    /// Writes `env.json`.
    pub fn write_env(&self, env: &Env) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(env).expect("Env serialises");
        self.write_file("env.json", &json).map(|_| ())
    }

    /// Reads `env.json`.
    pub fn env(&self) -> Result<Env, StoreError> {
        let path = self.dir.join("env.json");
        let text = std::fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&text).map_err(|source| StoreError::Json { path, source })
    }

    /// Writes one finished run (and its `.hgrm`, when there is one).
    pub fn write_run(&self, run: &RunRecord, hgrm: Option<&str>) -> Result<(), StoreError> {
        if let Some(text) = hgrm {
            self.write_file(&format!("runs/{}.hgrm", run.key), text.as_bytes())?;
        }
        let json = serde_json::to_vec_pretty(run).expect("RunRecord serialises");
        self.write_file(&format!("runs/{}.json", run.key), &json)
            .map(|_| ())
    }

    /// Keys of every run already in the folder.
    pub fn finished_keys(&self) -> Result<BTreeSet<String>, StoreError> {
        let runs = self.dir.join("runs");
        let mut keys = BTreeSet::new();
        for entry in std::fs::read_dir(&runs).map_err(io(&runs))? {
            let name = entry.map_err(io(&runs))?.file_name();
            let name = name.to_string_lossy();
            if let Some(key) = name.strip_suffix(".json") {
                if !name.starts_with('.') {
                    keys.insert(key.to_string());
                }
            }
        }
        Ok(keys)
    }

    /// Every run in the folder, sorted by key.
    pub fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let mut out = Vec::new();
        for key in self.finished_keys()? {
            let path = self.dir.join("runs").join(format!("{key}.json"));
            let text = std::fs::read(&path).map_err(io(&path))?;
            let run: RunRecord = serde_json::from_slice(&text)
                .map_err(|source| StoreError::Json { path, source })?;
            out.push(run);
        }
        Ok(out)
    }

    /// Writes `summary.csv`: one row per run.
    pub fn write_summary(&self, runs: &[RunRecord]) -> Result<(), StoreError> {
        let path = self.dir.join("summary.csv");
        let mut w = csv::Writer::from_writer(Vec::new());
        let csv_err = |e: csv::Error| StoreError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        };
        w.write_record(record::CSV_HEADER).map_err(csv_err)?;
        for run in runs {
            w.write_record(run.csv_row()).map_err(csv_err)?;
        }
        let bytes = w.into_inner().map_err(|e| StoreError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        self.write_file("summary.csv", &bytes).map(|_| ())
    }

    /// Removes temp files an interrupted write may have left.
    pub fn remove_temp_files(&self) {
        for dir in [self.dir.clone(), self.dir.join("runs")] {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') && name.ends_with(".tmp") {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
    }
}

/// `YYYYMMDD-HHMMSS` in UTC.
pub fn timestamp(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// UTC calendar fields (Howard Hinnant's days-to-civil algorithm).
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32) {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn calendar() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(timestamp(t), "20231114-221320");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}

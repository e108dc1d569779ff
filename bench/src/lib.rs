//! serverlab's suites, sandbox (cgroups and namespaces), runner, results and report.

pub mod report;
pub mod results;
pub mod runner;
pub mod sandbox;
pub mod suite;

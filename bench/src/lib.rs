//! serverlab's suites, sandbox (cgroups and namespaces), runner, results and report.

pub mod sandbox;

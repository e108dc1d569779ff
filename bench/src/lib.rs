//! serverlab's suites, runner, results and report; the runs' containers come
//! from the `sandbox` crate.

pub mod claims;
pub mod labs;
pub mod report;
pub mod results;
pub mod runner;
pub mod suite;

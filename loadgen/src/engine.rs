//! The engine (being built): per-thread mio loops.

use crate::{LoadConfig, LoadError, LoadReport};
use std::sync::atomic::AtomicBool;

pub fn run(config: &LoadConfig, _stop: &AtomicBool) -> Result<LoadReport, LoadError> {
    config.validate()?;
    Err(LoadError::Config("the engine is not built yet".into()))
}

//! The catalog of `dr` workflows and the actions they are made of.
//!
//! Owns: [`DrCatalog`] (the [`dr_orchestrator::Catalog`] the `dr` binary
//! uses), one module per workflow, the actions implementing
//! [`dr_orchestrator::TypedAction`] (the engine runs them as
//! [`dr_orchestrator::Typed`]), and the typed configuration `dr.toml`
//! ([`config::Config`]) they are built from.
//!
//! Refuses: persistence and scheduling. Actions do one attempt of a side
//! effect and report; retries, timeouts and resumption are the engine's.

pub mod actions;
pub mod config;
mod params;
pub mod recoveries;
pub mod synthetic;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use dr_orchestrator::{Catalog, CatalogError, WorkflowDef, WorkflowInfo};

use crate::config::Config;

/// A recovery of the guide: what `dr workflows` lists, and how to build it
/// from the configuration and the run's parameters.
pub(crate) struct Recovery {
    pub info: fn() -> WorkflowInfo,
    pub build: fn(&Config, &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError>,
}

/// Every workflow `dr` knows. The recoveries read the configuration
/// (`dr.toml`), loaded once, when the first of them is built; `synthetic`
/// reads none.
#[derive(Debug, Default)]
pub struct DrCatalog {
    config_path: Option<PathBuf>,
    config: OnceLock<Result<Arc<Config>, String>>,
}

impl DrCatalog {
    /// Reads the configuration from [`config::DEFAULT_PATH`] when a workflow needs it.
    pub fn new() -> Self {
        DrCatalog::default()
    }

    /// Reads the configuration from `path` (`--config`), or the default path.
    pub fn with_config(path: Option<PathBuf>) -> Self {
        DrCatalog { config_path: path, config: OnceLock::new() }
    }

    fn config(&self, workflow: &str) -> Result<Arc<Config>, CatalogError> {
        let loaded = self.config.get_or_init(|| {
            let path = self.config_path.clone().unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
            Config::load(&path).map(Arc::new).map_err(|e| {
                let hint = if self.config_path.is_none() { "; pass --config FILE (or set DR_CONFIG)" } else { "" };
                format!("{e}{hint}; `dr config check` shows every problem")
            })
        });
        loaded.clone().map_err(|detail| CatalogError::Config { workflow: workflow.to_owned(), detail })
    }
}

impl Catalog for DrCatalog {
    fn workflows(&self) -> Vec<WorkflowInfo> {
        std::iter::once(synthetic::info()).chain(recoveries::ALL.iter().map(|r| (r.info)())).collect()
    }

    fn release(&self, run: dr_orchestrator::RunId) {
        actions::ssh::pool::close_run(run);
    }

    fn build(&self, name: &str, params: &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError> {
        if name == synthetic::NAME {
            return synthetic::build(params);
        }
        let Some(recovery) = recoveries::ALL.iter().find(|r| (r.info)().name == name) else {
            return Err(CatalogError::UnknownWorkflow {
                name: name.to_owned(),
                known: self.workflows().iter().map(|w| w.name.to_owned()).collect(),
            });
        };
        let config = self.config(name)?;
        let mut def = (recovery.build)(&config, params)?;
        def.config_digest = Some(config.digest());
        if def.target_secs == 0 {
            def.target_secs = config.targets.minutes(def.level).map_or(0, |m| u64::from(m) * 60);
        }
        Ok(def)
    }
}

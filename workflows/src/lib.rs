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
pub mod assess;
pub mod checklist;
pub mod config;
mod params;
pub mod procs;
pub mod recoveries;
pub mod synthetic;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use dr_orchestrator::{Catalog, CatalogError, WorkflowDef, WorkflowInfo};

use crate::config::Config;

/// A recovery of the guide: what `dr workflows` lists, and how to build it
/// from the configuration and the run's parameters.
pub(crate) struct Recovery {
    pub info: fn() -> WorkflowInfo,
    pub build: fn(&Config, &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError>,
}

/// Every workflow `dr` knows. The recoveries read the configuration
/// (`dr.toml`): the file named with `--config`, else — for a run that already
/// started — the file it was started with, else [`config::DEFAULT_PATH`];
/// each file is loaded once. `synthetic` reads none.
#[derive(Debug, Default)]
pub struct DrCatalog {
    config_path: Option<PathBuf>,
    loaded: Mutex<BTreeMap<PathBuf, Result<Arc<Config>, String>>>,
}

impl DrCatalog {
    /// Reads the configuration from [`config::DEFAULT_PATH`] when a workflow needs it.
    pub fn new() -> Self {
        DrCatalog::default()
    }

    /// Reads the configuration from `path` (`--config`), or the default path.
    pub fn with_config(path: Option<PathBuf>) -> Self {
        DrCatalog { config_path: path, loaded: Mutex::new(BTreeMap::new()) }
    }

    fn config(&self, workflow: &str, recorded: Option<&str>) -> Result<(PathBuf, Arc<Config>), CatalogError> {
        let (path, given) = match (&self.config_path, recorded) {
            (Some(path), _) => (path.clone(), true),
            (None, Some(recorded)) => (PathBuf::from(recorded), true),
            (None, None) => (PathBuf::from(config::DEFAULT_PATH), false),
        };
        let mut loaded = self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = loaded.entry(path.clone()).or_insert_with(|| {
            Config::load(&path).map(Arc::new).map_err(|e| {
                let hint = if given { "" } else { "; pass --config FILE (or set DR_CONFIG)" };
                format!("{e}{hint}; `dr config check` shows every problem")
            })
        });
        let config = entry.clone().map_err(|detail| CatalogError::Config { workflow: workflow.to_owned(), detail })?;
        Ok((path, config))
    }

    fn build_with(&self, name: &str, params: &BTreeMap<String, String>, recorded: Option<&str>) -> Result<WorkflowDef, CatalogError> {
        if name == synthetic::NAME {
            return synthetic::build(params);
        }
        let Some(recovery) = recoveries::ALL.iter().find(|r| (r.info)().name == name) else {
            return Err(CatalogError::UnknownWorkflow {
                name: name.to_owned(),
                known: self.workflows().iter().map(|w| w.name.to_owned()).collect(),
            });
        };
        let (path, config) = self.config(name, recorded)?;
        let mut def = (recovery.build)(&config, params)?;
        def.config_digest = Some(config.digest());
        let absolute = std::path::absolute(&path).unwrap_or(path);
        def.config_path = Some(absolute.to_string_lossy().into_owned());
        if def.target_secs == 0 {
            def.target_secs = config.targets.minutes(def.level).map_or(0, |m| u64::from(m) * 60);
        }
        Ok(def)
    }
}

/// What every workflow of the catalog is and takes (`dr workflows`), without
/// reading any configuration.
pub(crate) fn workflow_infos() -> Vec<WorkflowInfo> {
    std::iter::once(synthetic::info()).chain(recoveries::ALL.iter().map(|r| (r.info)())).collect()
}

impl Catalog for DrCatalog {
    fn workflows(&self) -> Vec<WorkflowInfo> {
        workflow_infos()
    }

    fn release(&self, run: dr_orchestrator::RunId) {
        actions::ssh::pool::close_run(run);
    }

    fn build(&self, name: &str, params: &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError> {
        self.build_with(name, params, None)
    }

    fn build_for_run(&self, name: &str, params: &BTreeMap<String, String>, recorded: Option<&str>) -> Result<WorkflowDef, CatalogError> {
        self.build_with(name, params, recorded)
    }
}

//! The catalog of `dr` workflows and the actions they are made of.
//!
//! Owns: [`DrCatalog`] (the [`dr_orchestrator::Catalog`] the `dr` binary
//! uses), one module per workflow, the actions implementing
//! [`dr_orchestrator::Action`], and the typed configuration `dr.toml`
//! ([`config::Config`]) they are built from.
//!
//! Refuses: persistence and scheduling. Actions do one attempt of a side
//! effect and report; retries, timeouts and resumption are the engine's.

pub mod actions;
pub mod config;
mod params;
pub mod synthetic;

use std::collections::BTreeMap;

use dr_orchestrator::{Catalog, CatalogError, WorkflowDef, WorkflowInfo};

/// Every workflow `dr` knows.
#[derive(Clone, Debug, Default)]
pub struct DrCatalog;

impl DrCatalog {
    pub fn new() -> Self {
        DrCatalog
    }
}

impl Catalog for DrCatalog {
    fn workflows(&self) -> Vec<WorkflowInfo> {
        vec![synthetic::info()]
    }

    fn release(&self, run: dr_orchestrator::RunId) {
        actions::ssh::pool::close_run(run);
    }

    fn build(&self, name: &str, params: &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError> {
        match name {
            synthetic::NAME => synthetic::build(params),
            _ => Err(CatalogError::UnknownWorkflow {
                name: name.to_owned(),
                known: self.workflows().iter().map(|w| w.name.to_owned()).collect(),
            }),
        }
    }
}

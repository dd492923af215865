//! `dr stats`: incidents, MTTR and availability, RTO met per level, drills.

use std::path::PathBuf;

pub async fn run(_state_dir: Option<PathBuf>, _args: super::StatsArgs) -> anyhow::Result<u8> {
    anyhow::bail!("not yet")
}

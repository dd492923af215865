//! `dr maturity`: the guide's maturity table, from evidence.

use std::path::PathBuf;

pub async fn run(_state_dir: Option<PathBuf>, _json: bool) -> anyhow::Result<u8> {
    anyhow::bail!("not yet")
}

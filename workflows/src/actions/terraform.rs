//! `terraform.apply` / `terraform.destroy`: terraform run in its directory
//! with `-auto-approve -input=false` (and `-target` when given), with a probe:
//! `terraform plan -detailed-exitcode` (`-destroy` for a destroy) — exit 0
//! means nothing is left to do, so a lost attempt took effect and is not run
//! again; exit 2 means it did not.
//!
//! Owns: the command line and the probe's reading of plan's exit codes.
//! Refuses: anything interactive (input is off; approval is the engine's gate).

use std::path::PathBuf;

use dr_orchestrator::{ActionCtx, ActionError, TypedAction};
use serde::{Deserialize, Serialize};

use super::command::{run_owned, CommandOutput, CommandParams};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TerraformVerb {
    Apply,
    Destroy,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerraformParams {
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub verb: TerraformVerb,
    /// `-target=…`; everything when absent.
    pub target: Option<String>,
}

/// `terraform.apply` or `terraform.destroy`, probed by `plan -detailed-exitcode`.
#[derive(Clone, Debug)]
pub struct Terraform {
    pub params: TerraformParams,
}

impl Terraform {
    pub fn new(binary: impl Into<PathBuf>, dir: impl Into<PathBuf>, verb: TerraformVerb, target: Option<&str>) -> Self {
        Terraform { params: TerraformParams { binary: binary.into(), dir: dir.into(), verb, target: target.map(str::to_owned) } }
    }

    fn command(&self, args: Vec<String>) -> CommandParams {
        let mut args = args;
        args.extend(self.params.target.as_ref().map(|t| format!("-target={t}")));
        CommandParams::new(&self.params.binary).args(args).cwd(&self.params.dir)
    }
}

impl TypedAction for Terraform {
    const KIND: &'static str = "terraform.run";
    type Params = TerraformParams;
    type Output = CommandOutput;

    fn params(&self) -> &TerraformParams {
        &self.params
    }

    fn summary(&self, output: &CommandOutput) -> String {
        format!("`{}` exited {}", output.command, output.exit_code)
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<CommandOutput, ActionError> {
        let verb = match self.params.verb {
            TerraformVerb::Apply => "apply",
            TerraformVerb::Destroy => "destroy",
        };
        let params = self.command(vec![verb.into(), "-auto-approve".into(), "-input=false".into()]);
        run_owned(&params, ctx, ctx.timeout(None)).await
    }

    /// `terraform plan -detailed-exitcode`: 0, nothing left to do (the lost
    /// attempt took effect); 2, changes pending (it did not).
    async fn probe(&self, ctx: &ActionCtx) -> Result<Option<CommandOutput>, ActionError> {
        let mut args: Vec<String> = vec!["plan".into(), "-detailed-exitcode".into(), "-input=false".into()];
        if self.params.verb == TerraformVerb::Destroy {
            args.push("-destroy".into());
        }
        let mut params = self.command(args);
        params.ok_codes = vec![2];
        let plan = run_owned(&params, ctx, ctx.timeout(None)).await?;
        Ok((plan.exit_code == 0).then_some(plan))
    }
}

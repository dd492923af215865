//! `terraform.apply` / `terraform.destroy` against the lab's terraform
//! stand-in: they do what they say, and their probe (`plan
//! -detailed-exitcode`) tells whether a lost attempt took effect.

use std::sync::Arc;

use dr_lab::lab::testing::TestLab;
use dr_orchestrator::{ActionCtx, SystemClock, TypedAction};
use dr_workflows::actions::terraform::{Terraform, TerraformVerb};

#[tokio::test]
async fn the_probe_says_whether_a_destroy_or_an_apply_took_effect() {
    let lab = TestLab::stub().expect("lab starts");
    let init = lab.terraform(&["init"]).expect("terraform init");
    assert!(init.status.success());
    let ctx = ActionCtx::detached("terraform", Arc::new(SystemClock));
    let target = Some("libvirt_domain.k8s-worker-2");
    let binary = lab.dir().join("bin/terraform");
    let dir = lab.dir().join("terraform");
    let destroy = Terraform::new(&binary, &dir, TerraformVerb::Destroy, target);
    let apply = Terraform::new(&binary, &dir, TerraformVerb::Apply, target);

    assert!(destroy.probe(&ctx).await.unwrap().is_none(), "the VM runs: a destroy has not taken effect");
    assert!(apply.probe(&ctx).await.unwrap().is_some(), "the VM runs: nothing to apply");
    destroy.run(&ctx).await.expect("destroy");
    assert!(destroy.probe(&ctx).await.unwrap().is_some(), "destroyed: the probe sees it");
    assert!(apply.probe(&ctx).await.unwrap().is_none(), "destroyed: an apply is pending");
    apply.run(&ctx).await.expect("apply");
    assert!(apply.probe(&ctx).await.unwrap().is_some(), "created again");
    let journal = lab.bastion_journal();
    assert_eq!(journal.iter().filter(|l| l.contains("terraform apply")).count(), 1, "{journal:?}");
    assert_eq!(journal.iter().filter(|l| l.contains("terraform destroy")).count(), 1, "{journal:?}");
}

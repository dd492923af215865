//! The guide's recoveries against the lab, with the real `dr`: lab up → the
//! scenario's fault → `dr start WORKFLOW --config DIR/dr.toml --yes` exits 0
//! → the platform is healthy again, with the evidence the scenario needs.

use std::process::Output;

use dr_tests::lab::testing::TestLab;
use serde_json::Value;

use crate::support::{code, stderr, Bastion};

/// A lab with the simulated API server and a bastion to run `dr` on.
struct Scene {
    lab: TestLab,
    bastion: Bastion,
}

impl Scene {
    fn new() -> Self {
        Scene { lab: TestLab::simulated().expect("the lab starts"), bastion: Bastion::new() }
    }

    fn fault(&self, name: &str, node: Option<&str>) {
        self.lab.fault(name, node).unwrap_or_else(|e| panic!("fault {name}: {e:#}"));
        assert_eq!(self.health()["healthy"], false, "fault {name} breaks the platform: {}", self.health());
    }

    fn health(&self) -> Value {
        self.lab.health().expect("the lab reports its health")
    }

    fn dr(&self, args: &[&str]) -> Output {
        let config = self.lab.config_path();
        let mut all = vec!["--config", config.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        self.bastion.run(&all)
    }

    /// `dr start WORKFLOW --yes` must succeed and leave the platform healthy.
    fn recover(&self, workflow: &str, params: &[&str]) -> Value {
        let mut args = vec!["start", workflow, "--yes"];
        for p in params {
            args.extend(["-p", p]);
        }
        let out = self.dr(&args);
        assert_eq!(code(&out), Some(0), "{workflow}: {}", stderr(&out));
        let health = self.health();
        assert_eq!(health["healthy"], true, "{workflow} left the platform unhealthy: {health}");
        self.bastion.status()
    }
}

fn step<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["steps"].as_array().unwrap().iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("no step {id}: {status}"))
}

#[test]
fn network_recovery_restarts_kube_proxy_and_coredns_and_dns_answers_again() {
    let scene = Scene::new();
    scene.fault("network", None);
    let status = scene.recover("network-recovery", &[]);
    let evidence = step(&status, "endpoints")["output"]["summary"].as_str().unwrap().to_owned();
    assert!(evidence.contains("kube-dns"), "the evidence names the broken Service: {evidence}");
    assert_eq!(step(&status, "verify-dns")["status"], "succeeded");
    assert_eq!(status["config_digest"].as_str().map(str::len), Some(64), "the config is pinned to the run");
}

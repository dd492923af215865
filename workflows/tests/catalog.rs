//! Every workflow of the catalog builds from a valid `dr.toml` and passes the
//! graph checks (dependencies earlier, conditions and gates read only
//! dependencies, cleanup steps apart), so a wiring mistake fails here rather
//! than at an operator's `dr start`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dr_orchestrator::Catalog;
use dr_workflows::DrCatalog;

fn valid_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/config/valid.toml")
}

/// The parameters a workflow needs to build (its required ones).
fn params_for(name: &str) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    if name == "worker-node-recovery" {
        params.insert("node".to_owned(), "k8s-worker-1".to_owned());
    }
    params
}

#[test]
fn every_workflow_builds_and_validates() {
    let catalog = DrCatalog::with_config(Some(valid_config()));
    let workflows = catalog.workflows();
    assert!(workflows.len() >= 6, "{:?}", workflows.iter().map(|w| w.name).collect::<Vec<_>>());
    for info in workflows {
        let def = catalog.build(info.name, &params_for(info.name)).unwrap_or_else(|e| panic!("{}: {e}", info.name));
        def.validate().unwrap_or_else(|e| panic!("{}: {e}", info.name));
        assert_eq!(def.level, info.level, "{}", info.name);
        if info.name != "synthetic" {
            assert_eq!(def.config_digest.as_deref().map(str::len), Some(64), "{}: the config digest is pinned", info.name);
            assert!(def.target_secs > 0, "{}: the RTO target comes from [targets]", info.name);
        }
        // The definition is stable: built twice, hashed the same.
        let again = catalog.build(info.name, &params_for(info.name)).unwrap();
        assert_eq!(def.hash(), again.hash(), "{}", info.name);
    }
}

#[test]
fn a_workflow_that_needs_the_configuration_says_which_file_is_missing_and_how_to_give_one() {
    let catalog = DrCatalog::with_config(Some(PathBuf::from("/nonexistent/dr.toml")));
    let err = catalog.build("pod-recovery", &BTreeMap::new()).unwrap_err().to_string();
    assert!(err.contains("pod-recovery") && err.contains("/nonexistent/dr.toml"), "{err}");
    assert!(catalog.build("synthetic", &BTreeMap::new()).is_ok(), "synthetic reads no configuration");
    let catalog = DrCatalog::with_config(Some(valid_config()));
    let err = catalog.build("worker-node-recovery", &BTreeMap::new()).unwrap_err().to_string();
    assert!(err.contains("node") && err.contains("k8s-worker-1"), "a missing node names the workers: {err}");
    let params = BTreeMap::from([("node".to_owned(), "k8s-control-plane-1".to_owned())]);
    let err = catalog.build("worker-node-recovery", &params).unwrap_err().to_string();
    assert!(err.contains("k8s-worker-2"), "the control plane is not a worker: {err}");
}

fn partial(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/config/partial").join(name)
}

#[test]
fn a_workflow_needing_a_section_the_file_lacks_names_the_workflow_the_section_and_the_file() {
    let path = partial("serve_only.toml");
    let catalog = DrCatalog::with_config(Some(path.clone()));
    let err = catalog.build("etcd-recovery", &BTreeMap::new()).unwrap_err().to_string();
    let expected = format!("workflow etcd-recovery needs the configuration: [etcd] in {}, which has no such section; add it (see docs/CONFIG.md)", path.display());
    assert_eq!(err, expected);
    for info in catalog.workflows() {
        let result = catalog.build(info.name, &params_for(info.name));
        if info.name == "synthetic" {
            assert!(result.is_ok(), "synthetic needs no section: {result:?}");
        } else {
            let err = result.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(info.name) && err.contains(&path.display().to_string()) && err.contains("no such section"), "{}: {err}", info.name);
        }
    }

    // Only [cluster]: what talks to the API server builds; the rest names its first missing section.
    let path = partial("cluster_only.toml");
    let catalog = DrCatalog::with_config(Some(path.clone()));
    for name in ["pod-recovery", "network-recovery", "argocd-recovery"] {
        let def = catalog.build(name, &BTreeMap::new()).unwrap_or_else(|e| panic!("{name}: {e}"));
        def.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let err = catalog.build("etcd-recovery", &BTreeMap::new()).unwrap_err().to_string();
    assert!(err.contains("[etcd] in ") && err.contains("cluster_only.toml"), "{err}");
    let err = catalog.build("worker-node-recovery", &params_for("worker-node-recovery")).unwrap_err().to_string();
    assert!(err.starts_with("workflow worker-node-recovery needs the configuration: [terraform] in "), "{err}");
    let err = catalog.build("dr-drill", &BTreeMap::new()).unwrap_err().to_string();
    assert!(err.contains("[backup] in "), "{err}");
}

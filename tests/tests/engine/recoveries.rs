//! The guide's recoveries against the lab, with the real `dr`: lab up → the
//! scenario's fault → `dr start WORKFLOW --config DIR/dr.toml --yes` exits 0
//! → the platform is healthy again, with the evidence the scenario needs.

use std::collections::BTreeMap;
use std::process::Output;

use dr_lab::lab::testing::TestLab;
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

    /// A lab whose backups are these many hours old.
    fn with_backups_aged(hours: &[u64]) -> Self {
        let lab = TestLab::start(|options| {
            options.api = dr_lab::lab::ApiChoice::Simulated;
            options.backup_ages = hours.iter().map(|h| std::time::Duration::from_secs(h * 3600)).collect();
        })
        .expect("the lab starts");
        Scene { lab, bastion: Bastion::new() }
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

    /// `dr start WORKFLOW --yes` must succeed and leave the platform healthy;
    /// before it, `dr assess` must name that workflow (and its parameters).
    fn recover(&self, workflow: &str, params: &[&str]) -> Value {
        let out = self.dr(&["assess", "--json"]);
        assert_eq!(code(&out), Some(1), "assess finds the fault: {}", stderr(&out));
        let assessment: Value = serde_json::from_slice(&out.stdout).expect("assess --json");
        assert_eq!(assessment["workflow"], workflow, "dr assess names the workflow: {assessment}");
        for p in params {
            let (key, value) = p.split_once('=').unwrap();
            if key == "node" {
                assert_eq!(assessment["params"][key], value, "{assessment}");
            }
        }
        let mut args = vec!["start", workflow, "--yes"];
        for p in params {
            args.extend(["-p", p]);
        }
        let out = self.dr(&args);
        assert_eq!(code(&out), Some(0), "{workflow}: {}", stderr(&out));
        let status = self.lab.status();
        assert_eq!(status["healthy"], true, "{workflow} left the platform unhealthy (dr-lab status): {status}");
        let out = self.dr(&["assess", "--json"]);
        assert_eq!(code(&out), Some(0), "assess finds nothing wrong after {workflow}: {}", String::from_utf8_lossy(&out.stdout));
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

const WORKER: &str = dr_lab::lab::WORKERS[0];

fn node_schedulable(health: &Value, node: &str) -> bool {
    let nodes = health["nodes"].as_array().cloned().unwrap_or_default();
    nodes.iter().any(|n| n["name"] == node && n["ready"] == true && n["unschedulable"] != true)
}

#[test]
fn worker_node_recovery_brings_a_stopped_kubelet_back_and_uncordons() {
    let scene = Scene::new();
    scene.fault("worker-down", Some(WORKER));
    let status = scene.recover("worker-node-recovery", &[&format!("node={WORKER}")]);
    assert_eq!(step(&status, "wait-ready")["status"], "succeeded");
    assert_eq!(step(&status, "recreate-destroy")["status"], "skipped", "the restart path sufficed: {status}");
    assert_eq!(step(&status, "uncordon")["status"], "succeeded");
    assert!(node_schedulable(&scene.health(), WORKER), "{}", scene.health());
    let journal = scene.lab.journal(WORKER).join("\n");
    let containerd = journal.find("systemctl restart containerd").expect("containerd restarted");
    let kubelet = journal.find("systemctl restart kubelet").expect("kubelet restarted");
    assert!(containerd < kubelet, "containerd first, then the kubelet: {journal}");
    assert!(!scene.lab.bastion_journal().iter().any(|l| l.contains("destroy")), "nothing destroyed");
}

#[test]
fn worker_node_recovery_recreates_a_dead_worker_only_after_confirmation() {
    let scene = Scene::new();
    scene.fault("worker-dead", Some(WORKER));
    // Without --yes the run stops at the gate: nothing is destroyed.
    let out = scene.dr(&["start", "worker-node-recovery", "-p", &format!("node={WORKER}")]);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("Re-create its VM"), "the gate says what it will do: {}", stderr(&out));
    let status = scene.bastion.status();
    assert_eq!(step(&status, "recreate-destroy")["status"], "gated");
    assert!(!scene.lab.bastion_journal().iter().any(|l| l.contains("destroy")), "nothing destroyed before the approval");

    // Approved: the VM is re-created, its new host key trusted, the node joins with a fresh token and comes back.
    let out = scene.dr(&["approve", "@latest", "recreate-destroy"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let status = scene.bastion.status();
    for id in ["recreate-destroy", "recreate-apply", "trust-host-key", "join", "wait-ready-new", "uncordon"] {
        assert_eq!(step(&status, id)["status"], "succeeded", "{id}: {status}");
    }
    assert_eq!(scene.health()["healthy"], true, "{}", scene.health());
    assert!(node_schedulable(&scene.health(), WORKER), "{}", scene.health());
    // The bootstrap token never reaches the run's record.
    let history = scene.bastion.run(&["history", "@latest", "--json"]);
    let text = String::from_utf8_lossy(&history.stdout);
    assert!(find_bootstrap_token(&text).is_none(), "a bootstrap token is in the history: {:?}", find_bootstrap_token(&text));
    let status = serde_json::to_string(&scene.bastion.status()).unwrap();
    assert!(find_bootstrap_token(&status).is_none(), "a bootstrap token is in the status");
    assert!(find_bootstrap_token(&stderr(&out)).is_none(), "a bootstrap token was printed");
}

/// The first `[a-z0-9]{6}.[a-z0-9]{16}` word (a kubeadm bootstrap token) in `text`.
fn find_bootstrap_token(text: &str) -> Option<String> {
    let word = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    text.split(|c: char| !(word(c) || c == '.'))
        .find(|w| w.len() == 23 && w.as_bytes()[6] == b'.' && w.chars().enumerate().all(|(i, c)| if i == 6 { c == '.' } else { word(c) }))
        .map(str::to_owned)
}

#[test]
fn pod_recovery_restarts_the_owner_of_the_crashing_pods_found_at_run_time() {
    let scene = Scene::new();
    scene.fault("pod-crash", None);
    let status = scene.recover("pod-recovery", &[]);
    let found = &step(&status, "find")["output"]["value"];
    let owners: Vec<String> = found["restart"].as_array().unwrap().iter().map(|o| format!("{}/{}/{}", o["kind"], o["namespace"], o["name"])).collect();
    assert!(!owners.is_empty(), "find recorded the owners to restart: {found}");
    let restarted = &step(&status, "restart-owners")["output"]["value"]["restarted"];
    let restarted: Vec<String> = restarted.as_array().unwrap().iter().map(|r| format!("{}/{}/{}", r["workload"]["kind"], r["workload"]["namespace"], r["workload"]["name"])).collect();
    assert_eq!(owners, restarted, "exactly the owners find recorded were restarted");
    assert_eq!(step(&status, "verify")["status"], "succeeded");
}

#[test]
fn pod_recovery_replaces_a_statefulsets_stuck_pod_that_a_rollout_restart_alone_would_never_pass() {
    let scene = Scene::new();
    scene.fault("pod-crash", Some("demo/api-cache"));
    let status = scene.recover("pod-recovery", &[]);
    let restarted = &step(&status, "restart-owners")["output"]["value"]["restarted"];
    let restarted = restarted.as_array().unwrap();
    assert_eq!(restarted.len(), 1, "{restarted:?}");
    assert_eq!(restarted[0]["workload"]["kind"], "StatefulSet");
    assert_eq!(restarted[0]["workload"]["name"], "api-cache");
    assert_eq!(restarted[0]["replaced"], serde_json::json!(["api-cache-0"]), "the stuck pod was replaced: {restarted:?}");
    assert_eq!(restarted[0]["complete"], true);
    assert_eq!(step(&status, "verify")["status"], "succeeded");
}

#[test]
fn argocd_recovery_restarts_argocd_and_brings_every_application_to_synced_and_healthy() {
    let scene = Scene::new();
    scene.fault("argocd-down", None);
    let status = scene.recover("argocd-recovery", &[]);
    let restarted = step(&status, "restart-argocd")["output"]["value"]["restarted"].as_array().unwrap().clone();
    assert!(restarted.len() >= 3, "every ArgoCD workload restarted: {status}");
    let controller = restarted.iter().find(|r| r["workload"]["name"] == "argocd-application-controller").expect("the application controller restarted");
    assert_eq!(controller["workload"]["kind"], "StatefulSet", "it is a StatefulSet, as upstream: {controller}");
    assert_eq!(controller["complete"], true);
    assert_eq!(step(&status, "verify")["status"], "succeeded");
    let health = scene.health();
    let apps = health["apps"].as_array().cloned().unwrap_or_default();
    assert!(!apps.is_empty() && apps.iter().all(|a| a["sync"] == "Synced" && a["health"] == "Healthy"), "{health}");
}

#[test]
fn etcd_recovery_restores_the_newest_backup_and_what_came_after_it_is_gone() {
    let scene = Scene::new();
    let newest = scene.lab.backups().iter().min_by_key(|b| b.age_secs).expect("the lab made backups").clone();
    let name = newest.path.file_name().unwrap().to_string_lossy().into_owned();
    scene.lab.etcd().put("/lab/written-after-the-backups", "lost by the restore").expect("put");
    assert!(scene.lab.etcd().get("/lab/seed/after-backups").expect("get").is_some());
    scene.fault("etcd-corrupt", None);
    let status = scene.recover("etcd-recovery", &[]);
    assert_eq!(step(&status, "health")["status"], "failed-tolerated", "etcd did not answer: {status}");
    assert_eq!(step(&status, "snapshot-live")["status"], "skipped");
    let chosen = &step(&status, "choose")["output"]["value"];
    assert_eq!(chosen["source"], "backup");
    assert_eq!(chosen["name"], name.as_str(), "the newest backup: {chosen}");
    assert_eq!(chosen["within_rpo"], true);
    assert!(step(&status, "restore")["approved"]["by"].as_str().unwrap().contains("--yes"), "the gate was passed by --yes");
    let lab = scene.lab.status();
    assert_eq!(lab["etcd_marker"], name.as_str(), "etcd's data came from the newest backup: {lab}");
    assert_eq!(scene.lab.etcd().get("/lab/written-after-the-backups").expect("get"), None, "a key written after the snapshot is gone");
    assert_eq!(scene.lab.etcd().get("/lab/seed/after-backups").expect("get"), None);
}

/// Destructive commands the nodes' and the bastion's journals recorded, with how often.
fn destructive_commands(scene: &Scene) -> BTreeMap<String, usize> {
    let mut lines: Vec<String> = scene.lab.bastion_journal();
    for node in [dr_lab::lab::CONTROL_PLANE, dr_lab::lab::WORKERS[0], dr_lab::lab::WORKERS[1]] {
        lines.extend(scene.lab.journal(node).into_iter().map(|l| format!("{node}: {l}")));
    }
    let mut counts = BTreeMap::new();
    for line in lines {
        for needle in ["terraform apply", "terraform destroy", "kubeadm init", "kubeadm join", "kubeadm reset", "systemctl stop etcd"] {
            if line.contains(needle) && !line.contains("sudo ") {
                let node = line.split(':').next().unwrap_or("bastion").to_owned();
                *counts.entry(format!("{node} {needle}")).or_insert(0) += 1;
            }
        }
    }
    counts
}

#[test]
fn complete_recovery_rebuilds_the_lost_host_from_the_newest_backup() {
    let scene = Scene::new();
    let newest = scene.lab.backups().iter().min_by_key(|b| b.age_secs).expect("backups").clone();
    let name = newest.path.file_name().unwrap().to_string_lossy().into_owned();
    scene.fault("host-lost", None);
    let status = scene.recover("complete-recovery", &[]);
    let chosen = &step(&status, "choose-backup")["output"]["value"];
    assert_eq!(chosen["name"], name.as_str());
    assert_eq!(step(&status, "accept-rpo-loss")["status"], "skipped", "within the RPO, nothing to accept");
    assert!(step(&status, "host-setup")["approved"]["by"].as_str().unwrap().contains("--yes"));
    assert_eq!(scene.lab.status()["etcd_marker"], name.as_str(), "etcd holds the newest backup's data");
    assert_eq!(scene.lab.etcd().get("/lab/seed/after-backups").expect("get"), None, "what came after the backup is gone");
    for node in [dr_lab::lab::CONTROL_PLANE, dr_lab::lab::WORKERS[0], dr_lab::lab::WORKERS[1]] {
        assert_eq!(step(&status, &format!("ready-{node}"))["status"], "succeeded", "{node}");
    }
}

#[test]
fn complete_recovery_stops_at_its_gate_when_every_backup_is_older_than_the_rpo_even_with_yes() {
    let scene = Scene::with_backups_aged(&[30, 50]);
    scene.fault("host-lost", None);
    let out = scene.dr(&["start", "complete-recovery", "--yes"]);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("older than the RPO") && text.contains("30h") || text.contains("1d06h"), "the gate names the loss: {text}");
    let status = scene.bastion.status();
    assert_eq!(step(&status, "accept-rpo-loss")["status"], "gated");
    assert_eq!(step(&status, "host-setup")["attempts"], 0, "nothing done before the loss is accepted");
    assert!(!scene.lab.bastion_journal().iter().any(|l| l.contains("terraform") || l.contains("setup-host")), "nothing created");
}

/// The crash matrix, sampled: `dr` SIGKILLed at a step's `after-start` or
/// `after-action`, then `dr resume`; the platform ends healthy and no
/// destructive command ran more often than its step's resume class allows.
/// (Some steps with `DR_CRASH_MATRIX_STEPS=a,b`; every step of every workflow
/// in the ignored `*_survives_a_sigkill_at_every_step` tests.)
#[test]
fn complete_recovery_survives_a_sigkill_at_its_steps() {
    // The CI sample; the whole matrix is complete_recovery_survives_a_sigkill_at_every_step.
    let chosen = std::env::var("DR_CRASH_MATRIX_STEPS").unwrap_or_default();
    let steps: Vec<&str> = if chosen.is_empty() { vec!["terraform-apply", "restore-etcd"] } else { chosen.split(',').map(str::trim).collect() };
    let phases = ["after-start", "after-action"];
    for step_id in steps {
        for phase in phases {
            let scene = Scene::new();
            scene.fault("host-lost", None);
            let config = scene.lab.config_path();
            let args = ["--config", config.to_str().unwrap(), "start", "complete-recovery", "--yes"];
            let out = scene.bastion.run_crashing(&args, &format!("{step_id}:{phase}"));
            assert!(crate::support::killed(&out), "{step_id}:{phase}: dr was not killed: {}", stderr(&out));
            // The run remembers its configuration: resume needs no --config.
            let out = scene.bastion.run(&["resume", "@latest"]);
            assert_eq!(code(&out), Some(0), "{step_id}:{phase}: resume: {}", stderr(&out));
            let lab = scene.lab.status();
            assert_eq!(lab["healthy"], true, "{step_id}:{phase}: {lab}");
            let counts = destructive_commands(&scene);
            for (command, n) in &counts {
                // terraform apply is probed (plan -detailed-exitcode), the restore by its marker: nothing runs twice.
                assert_eq!(*n, 1, "{step_id}:{phase}: {command} ran {n} times: {counts:?}");
            }
        }
    }
}

#[test]
fn control_plane_recovery_rebuilds_it_restores_etcd_and_rejoins_the_workers_with_a_fresh_token() {
    let scene = Scene::new();
    let newest = scene.lab.backups().iter().min_by_key(|b| b.age_secs).expect("backups").clone();
    let name = newest.path.file_name().unwrap().to_string_lossy().into_owned();
    scene.fault("control-plane-lost", None);
    let status = scene.recover("control-plane-recovery", &[]);
    assert_eq!(scene.lab.status()["etcd_marker"], name.as_str());
    // The joins came after the restore: their tokens were made in the restored etcd.
    let seq = |id: &str| {
        let events = scene.bastion.assert_history_contiguous();
        events.iter().find(|e| e["kind"] == "step-succeeded" && e["step"] == id).and_then(|e| e["seq"].as_u64()).unwrap()
    };
    for worker in dr_lab::lab::WORKERS {
        assert!(seq(&format!("rejoin-{worker}")) > seq("restore-etcd"), "{worker} re-joined after the restore");
        assert_eq!(step(&status, &format!("ready-{worker}"))["status"], "succeeded");
    }
    let history = String::from_utf8_lossy(&scene.bastion.run(&["history", "@latest", "--json"]).stdout).into_owned();
    assert!(find_bootstrap_token(&history).is_none(), "no bootstrap token in the history");
}

/// The names of the objects of one type (`namespaces`, `deployments`) the API server holds.
fn object_names(scene: &Scene, type_suffix: &str) -> Vec<String> {
    let state = scene.lab.kube().expect("an in-process API server").state();
    state["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["type"].as_str().is_some_and(|t| t.ends_with(type_suffix)))
        .map(|o| o["object"]["metadata"]["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn the_drill_drains_a_worker_records_its_result_and_always_cleans_up() {
    let scene = Scene::new();
    let out = scene.dr(&["start", "dr-drill"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let status = scene.bastion.status();
    let record = &step(&status, "record")["output"]["value"];
    assert_eq!(record["problems"], serde_json::json!([]), "{record}");
    assert_eq!(record["passed"].as_array().unwrap().len(), 7, "{record}");
    let check = &step(&status, "drain-check")["output"]["value"];
    let placements = check["placements"].as_array().unwrap();
    assert!(!placements.is_empty() && placements.iter().all(|p| p["node"] == dr_lab::lab::WORKERS[1]), "every pod placed on the other worker: {check}");
    assert!(check["needed"]["cpu_millis"].as_i64().unwrap() >= 100 * placements.len() as i64, "the pods' requests counted: {check}");
    assert!(check["budgets"].as_array().unwrap().iter().any(|b| b["budget"] == "demo/web" && b["blocks"] == false), "{check}");
    let evicted = step(&status, "drain")["output"]["value"]["evicted"].as_array().unwrap().len();
    assert_eq!(evicted, placements.len(), "the drain evicted exactly the pods the check placed");
    assert_eq!(step(&status, "uncordon")["status"], "succeeded");
    assert_eq!(step(&status, "remove-test-resources")["status"], "succeeded");
    assert!(node_schedulable(&scene.health(), dr_lab::lab::WORKERS[0]), "the drilled worker is uncordoned: {}", scene.health());
    assert!(!object_names(&scene, "namespaces").contains(&"dr-test".to_owned()), "dr-test is removed");
    assert!(!object_names(&scene, "deployments").contains(&"dr-test-app".to_owned()), "the test deployment is removed");
    assert_eq!(scene.lab.status()["healthy"], true, "{}", scene.lab.status());
}

#[test]
fn a_budget_that_allows_no_disruption_is_a_drill_finding_and_the_worker_is_never_drained() {
    use dr_lab::kube::resources::PDBS;
    let scene = Scene::new();
    let server = scene.lab.kube().expect("the simulated API");
    let pdb = serde_json::json!({"metadata": {"name": "api-strict"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "api"}}}});
    server.shared().lock().store.create(&PDBS, "demo", pdb).expect("the strict budget is created");
    let out = scene.dr(&["start", "dr-drill"]);
    assert_eq!(code(&out), Some(0), "a drill with findings still completes: {}", stderr(&out));
    let status = scene.bastion.status();
    assert_eq!(step(&status, "drain-check")["status"], "failed-tolerated", "{status}");
    let error = step(&status, "drain-check")["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("demo/api-strict") && error.contains("no disruption"), "the check names the budget: {error}");
    assert_eq!(step(&status, "drain")["status"], "skipped", "no drain that would hang on the budget");
    let record = &step(&status, "record")["output"]["value"];
    assert!(record["problems"].to_string().contains("drain-check"), "the finding is recorded: {record}");
    let journal = scene.lab.kube().unwrap().shared().lock().store.get(&dr_lab::kube::resources::NODES, "", dr_lab::lab::WORKERS[0]).cloned().unwrap();
    assert_ne!(journal.pointer("/spec/unschedulable"), Some(&serde_json::json!(true)), "never cordoned");
    assert!(!object_names(&scene, "namespaces").contains(&"dr-test".to_owned()), "cleanup ran");
}

/// A SIGKILL of `dr` at `STEP:PHASE` of `workflow` after `fault`, then `dr
/// resume` (the run finds its dr.toml itself): the platform ends healthy, and
/// each destructive command ran once — or twice where the crashed step's
/// resume class reruns it (`allow_twice`).
fn crash_and_resume(fault: (&str, Option<&str>), workflow: &str, params: &[&str], crash_at: &str, allow_twice: &[&str]) {
    let scene = Scene::new();
    scene.fault(fault.0, fault.1);
    let config = scene.lab.config_path();
    let mut args = vec!["--config", config.to_str().unwrap(), "start", workflow, "--yes"];
    for p in params {
        args.extend(["-p", p]);
    }
    let out = scene.bastion.run_crashing(&args, crash_at);
    assert!(crate::support::killed(&out), "{workflow} {crash_at}: dr was not killed: {}", stderr(&out));
    let out = scene.bastion.run(&["resume", "@latest"]);
    assert_eq!(code(&out), Some(0), "{workflow} {crash_at}: resume: {}", stderr(&out));
    let lab = scene.lab.status();
    assert_eq!(lab["healthy"], true, "{workflow} {crash_at}: {lab}");
    let twice = repeated_destructive_commands(&scene, allow_twice);
    assert!(twice.is_empty(), "{workflow} {crash_at}: ran more often than allowed: {}", twice.join(", "));
}

/// Destructive commands that ran more than once, beyond what is allowed: a
/// command listed in `allow_twice`, or one on a node whose step the SIGKILL
/// interrupted mid-command (the crashed step, or a parallel one in flight) and
/// whose probe then found it not done — its resume class runs it again.
fn repeated_destructive_commands(scene: &Scene, allow_twice: &[&str]) -> Vec<String> {
    let rerun = rerun_steps(scene);
    let allowed = |command: &str| {
        allow_twice.iter().any(|a| command.contains(a)) || rerun.iter().any(|step| command.split(' ').next().is_some_and(|node| step.contains(node)))
    };
    destructive_commands(scene).into_iter().filter(|(c, n)| *n > 1 && !allowed(c)).map(|(c, n)| format!("{c} x{n}")).collect()
}

#[test]
fn the_other_recoveries_survive_a_sigkill_at_their_destructive_steps() {
    let worker = dr_lab::lab::WORKERS[0];
    let node = format!("node={worker}");
    for (fault, workflow, params, crash_at, twice) in [
        (("etcd-corrupt", None), "etcd-recovery", vec![], "restore:after-start", vec![]),
        (("etcd-corrupt", None), "etcd-recovery", vec![], "restore:after-action", vec![]),
        (("control-plane-lost", None), "control-plane-recovery", vec![], "kubeadm-init:after-action", vec![]),
        (("control-plane-lost", None), "control-plane-recovery", vec![], "apply:after-action", vec![]),
        // A join is probed by its marker: found done, it is not run again.
        (("control-plane-lost", None), "control-plane-recovery", vec![], "rejoin-k8s-worker-1:after-action", vec![]),
        (("worker-dead", Some(worker)), "worker-node-recovery", vec![node.as_str()], "recreate-destroy:after-action", vec![]),
        (("worker-dead", Some(worker)), "worker-node-recovery", vec![node.as_str()], "join:after-action", vec![]),
    ] {
        crash_and_resume(fault, workflow, &params, crash_at, &twice);
    }
}

#[test]
fn the_drill_cleans_up_after_a_sigkill_during_its_drain() {
    let scene = Scene::new();
    let config = scene.lab.config_path();
    let out = scene.bastion.run_crashing(&["--config", config.to_str().unwrap(), "start", "dr-drill"], "drain:after-action");
    assert!(crate::support::killed(&out), "{}", stderr(&out));
    let out = scene.bastion.run(&["resume", "@latest"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(node_schedulable(&scene.health(), dr_lab::lab::WORKERS[0]), "uncordoned after the crash: {}", scene.health());
    assert!(!object_names(&scene, "namespaces").contains(&"dr-test".to_owned()));
}

/// The step ids of `workflow`, main phase then cleanup, from `dr workflows show --json`.
fn step_ids(scene: &Scene, workflow: &str, params: &[&str]) -> Vec<String> {
    let mut args = vec!["workflows", "show", workflow, "--json"];
    for p in params {
        args.extend(["-p", p]);
    }
    let out = scene.dr(&args);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let shown: Value = serde_json::from_slice(&out.stdout).expect("workflows show --json");
    shown["steps"].as_array().expect("steps").iter().map(|s| s["id"].as_str().expect("id").to_owned()).collect()
}

/// The full crash matrix of one workflow: for every step and both failpoints
/// (`after-start`, `after-action`), a fresh lab with `fault`, `dr start
/// WORKFLOW --yes` SIGKILLed there, then `dr resume` → exit 0, the platform
/// healthy, `check` holds, and no destructive command ran twice. A failpoint
/// the scenario never reaches (a branch not taken) lets the run finish: it
/// must then succeed all the same. Prints the matrix; fails with every cell
/// that went wrong.
fn full_crash_matrix(fault: Option<(&str, Option<&str>)>, workflow: &str, params: &[&str], check: impl Fn(&Scene) -> Result<(), String>) {
    let steps = step_ids(&Scene::new(), workflow, params);
    let (mut killed, mut not_reached, mut failures) = (0, Vec::new(), Vec::new());
    for step_id in &steps {
        for phase in ["after-start", "after-action"] {
            let at = format!("{step_id}:{phase}");
            let scene = Scene::new();
            if let Some((name, node)) = fault {
                scene.fault(name, node);
            }
            let config = scene.lab.config_path();
            let mut args = vec!["--config", config.to_str().unwrap(), "start", workflow, "--yes"];
            for p in params {
                args.extend(["-p", p]);
            }
            let out = scene.bastion.run_crashing(&args, &at);
            let outcome = if crate::support::killed(&out) {
                killed += 1;
                let out = scene.bastion.run(&["resume", "@latest"]);
                (code(&out) == Some(0)).then_some(()).ok_or_else(|| format!("resume exited {:?}: {}", code(&out), stderr(&out)))
            } else {
                not_reached.push(at.clone());
                (code(&out) == Some(0)).then_some(()).ok_or_else(|| format!("not killed, exited {:?}: {}", code(&out), stderr(&out)))
            };
            let lab = scene.lab.status();
            let twice = repeated_destructive_commands(&scene, &[]);
            let verdict = outcome
                .and_then(|()| if lab["healthy"] == true { Ok(()) } else { Err(format!("platform unhealthy: {lab}")) })
                .and_then(|()| if twice.is_empty() { Ok(()) } else { Err(format!("ran twice: {}", twice.join(", "))) })
                .and_then(|()| check(&scene));
            eprintln!("crash matrix {workflow} {at}: {}", match &verdict { Ok(()) => "ok".to_owned(), Err(e) => format!("FAILED {e}") });
            if let Err(e) = verdict {
                failures.push(format!("{at}: {e}"));
            }
        }
    }
    eprintln!("crash matrix {workflow}: {} steps, {killed} kills resumed, not reached: {not_reached:?}", steps.len());
    assert!(killed > 0, "{workflow}: no failpoint was reached");
    assert!(failures.is_empty(), "{workflow}: {} of {} cells failed:\n{}", failures.len(), steps.len() * 2, failures.join("\n"));
}

/// Steps of the latest run whose probe, after a crash, found them not done (so they ran again).
fn rerun_steps(scene: &Scene) -> Vec<String> {
    let out = scene.bastion.run(&["history", "@latest", "--json"]);
    let events: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    events
        .iter()
        .filter(|e| e["kind"] == "step-probed" && e["output"].is_null())
        .filter_map(|e| e["step"].as_str().map(str::to_owned))
        .collect()
}

fn fine(_: &Scene) -> Result<(), String> {
    Ok(())
}

#[test]
#[ignore = "the full crash matrix: minutes per workflow; cargo nextest run --run-ignored only -E 'test(every_step)'"]
fn pod_recovery_survives_a_sigkill_at_every_step() {
    full_crash_matrix(Some(("pod-crash", None)), "pod-recovery", &[], fine);
}

#[test]
#[ignore = "the full crash matrix: minutes per workflow; cargo nextest run --run-ignored only -E 'test(every_step)'"]
fn network_recovery_survives_a_sigkill_at_every_step() {
    full_crash_matrix(Some(("network", None)), "network-recovery", &[], fine);
}

#[test]
#[ignore = "the full crash matrix: minutes per workflow; cargo nextest run --run-ignored only -E 'test(every_step)'"]
fn worker_node_recovery_of_a_stopped_kubelet_survives_a_sigkill_at_every_step() {
    let node = format!("node={WORKER}");
    full_crash_matrix(Some(("worker-down", Some(WORKER))), "worker-node-recovery", &[&node], |scene| {
        node_schedulable(&scene.health(), WORKER).then_some(()).ok_or_else(|| format!("{WORKER} not Ready and schedulable"))
    });
}

#[test]
#[ignore = "the full crash matrix: minutes per workflow; cargo nextest run --run-ignored only -E 'test(every_step)'"]
fn worker_node_recovery_of_a_dead_worker_survives_a_sigkill_at_every_step() {
    let node = format!("node={WORKER}");
    full_crash_matrix(Some(("worker-dead", Some(WORKER))), "worker-node-recovery", &[&node], |scene| {
        node_schedulable(&scene.health(), WORKER).then_some(()).ok_or_else(|| format!("{WORKER} not Ready and schedulable"))
    });
}

#[test]
#[ignore = "the full crash matrix: minutes per workflow; cargo nextest run --run-ignored only -E 'test(every_step)'"]
fn argocd_recovery_survives_a_sigkill_at_every_step() {
    full_crash_matrix(Some(("argocd-down", None)), "argocd-recovery", &[], fine);
}

#[test]
#[ignore = "the full crash matrix: minutes per workflow; cargo nextest run --run-ignored only -E 'test(every_step)'"]
fn etcd_recovery_survives_a_sigkill_at_every_step() {
    full_crash_matrix(Some(("etcd-corrupt", None)), "etcd-recovery", &[], |scene| {
        let newest = scene.lab.backups().iter().min_by_key(|b| b.age_secs).map(|b| b.path.file_name().unwrap().to_string_lossy().into_owned());
        let marker = scene.lab.status()["etcd_marker"].as_str().map(str::to_owned);
        (marker == newest).then_some(()).ok_or_else(|| format!("etcd data from {marker:?}, not the newest backup {newest:?}"))
    });
}

#[test]
#[ignore = "the full crash matrix: minutes per workflow; cargo nextest run --run-ignored only -E 'test(every_step)'"]
fn control_plane_recovery_survives_a_sigkill_at_every_step() {
    full_crash_matrix(Some(("control-plane-lost", None)), "control-plane-recovery", &[], fine);
}

#[test]
#[ignore = "the full crash matrix: minutes per workflow; cargo nextest run --run-ignored only -E 'test(every_step)'"]
fn complete_recovery_survives_a_sigkill_at_every_step() {
    full_crash_matrix(Some(("host-lost", None)), "complete-recovery", &[], fine);
}

#[test]
#[ignore = "the full crash matrix: minutes per workflow; cargo nextest run --run-ignored only -E 'test(every_step)'"]
fn the_drill_survives_a_sigkill_at_every_step() {
    full_crash_matrix(None, "dr-drill", &[], |scene| {
        if !node_schedulable(&scene.health(), WORKER) {
            return Err(format!("{WORKER} left cordoned"));
        }
        if object_names(scene, "namespaces").contains(&"dr-test".to_owned()) {
            return Err("dr-test left behind".into());
        }
        Ok(())
    });
}

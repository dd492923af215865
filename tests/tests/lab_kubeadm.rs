//! kubeadm in the lab fails where the real one would on a wrong order of
//! steps: bootstrap tokens live in etcd (a token made before an etcd restore
//! is unknown after it), and `kubeadm init` makes a new cluster CA unless the
//! PKI was restored first (a join pinning the old CA hash fails).

use dr_lab::lab::testing::TestLab;
use dr_lab::lab::{Lab, CONTROL_PLANE, WORKERS};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command line on a node; (success, stdout, stderr).
fn on(lab: &Lab, node: &str, command: &str) -> (bool, String, String) {
    let out = lab.ssh(node, command).expect("ssh");
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn join_command(lab: &Lab) -> String {
    let (ok, out, err) = on(lab, CONTROL_PLANE, "sudo kubeadm token create --print-join-command");
    assert!(ok, "{err}");
    out.trim().to_string()
}

fn ca_hash(join: &str) -> String {
    join.split_whitespace().find(|w| w.starts_with("sha256:")).expect("a CA hash").to_string()
}

#[test]
fn a_token_is_a_bootstrap_token_secret_in_etcd() {
    let lab = TestLab::simulated().expect("lab starts");
    let join = join_command(&lab);
    let token = join.split_whitespace().skip_while(|w| *w != "--token").nth(1).expect("a token");
    let id = token.split('.').next().expect("an id");
    let stored = lab.etcd().get(&format!("/registry/secrets/kube-system/bootstrap-token-{id}")).expect("etcd get");
    let stored: serde_json::Value = serde_json::from_str(&stored.expect("the token is in etcd")).expect("JSON");
    assert_eq!(stored["type"], "bootstrap.kubernetes.io/token");
    let (ok, listed, err) = on(&lab, CONTROL_PLANE, "sudo kubeadm token list");
    assert!(ok, "{err}");
    assert!(listed.lines().any(|l| l == id), "{listed}");
}

#[test]
fn a_token_made_before_an_etcd_restore_fails_to_join_after_it() {
    let lab = TestLab::simulated().expect("lab starts");
    let worker = WORKERS[0];
    let newest = lab.backups().last().expect("a backup").clone();
    let before = join_command(&lab);
    let restore = std::process::Command::new(lab.dir().join("bin/k8s-restore.sh")).arg(&newest.path).output().expect("k8s-restore.sh");
    assert!(restore.status.success(), "{}", text(&restore.stderr));

    let (ok, _, err) = on(&lab, worker, &format!("sudo kubeadm reset -f && sudo {before}"));
    assert!(!ok, "a token the restored etcd never held must not join");
    assert!(err.contains("couldn't validate the identity of the API Server: could not find a JWS signature"), "{err}");
    // A token made after the restore joins.
    let after = join_command(&lab);
    let (ok, _, err) = on(&lab, worker, &format!("sudo {after}"));
    assert!(ok, "{err}");
}

#[test]
fn a_join_with_an_unknown_token_or_without_a_ca_hash_fails() {
    let lab = TestLab::simulated().expect("lab starts");
    let worker = WORKERS[1];
    let join = join_command(&lab);
    let (ok, _, err) = on(&lab, worker, "sudo kubeadm reset -f && sudo kubeadm join 127.0.0.10:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:00");
    assert!(!ok);
    assert!(err.contains("could not find a JWS signature in the cluster-info ConfigMap for token ID \"abcdef\""), "{err}");
    let without_hash = join.split(" --discovery-token-ca-cert-hash").next().expect("join").to_string();
    let (ok, _, err) = on(&lab, worker, &format!("sudo {without_hash}"));
    assert!(!ok);
    assert!(err.contains("without caCertHashes can be unsafe"), "{err}");
    let (ok, _, err) = on(&lab, worker, &format!("sudo {without_hash} --discovery-token-unsafe-skip-ca-verification"));
    assert!(ok, "{err}");
}

#[test]
fn kubeadm_init_makes_a_new_ca_unless_the_pki_was_restored_first() {
    let lab = TestLab::simulated().expect("lab starts");
    let first = ca_hash(&join_command(&lab));
    let init = "sudo kubeadm reset -f >/dev/null && sudo kubeadm init --pod-network-cidr=10.244.0.0/16 --upload-certs";

    let (ok, out, err) = on(&lab, CONTROL_PLANE, init);
    assert!(ok, "{err}");
    let second = ca_hash(&out);
    assert_ne!(first, second, "init without the old PKI makes a new CA");
    assert!(out.contains("[certs] Generating \"ca\" certificate and key"), "{out}");
    let (ok, out, err) = on(&lab, CONTROL_PLANE, init);
    assert!(ok, "{err}");
    let third = ca_hash(&out);
    assert_ne!(second, third, "each init without restored PKI makes another CA");

    // A join pinning an old CA fails with kubeadm's message, even with a fresh token.
    let fresh = join_command(&lab);
    let pinned_old = fresh.replace(&third, &first);
    let (ok, _, err) = on(&lab, WORKERS[0], &format!("sudo kubeadm reset -f && sudo {pinned_old}"));
    assert!(!ok);
    assert!(err.contains("cluster CA found in cluster-info ConfigMap is invalid: none of the public keys"), "{err}");

    // Restoring the PKI (the bastion's copy of the original CA) before init keeps the CA.
    let (ok, _, err) = on(&lab, CONTROL_PLANE, "sudo kubeadm reset -f >/dev/null");
    assert!(ok, "{err}");
    let pki = lab.node(CONTROL_PLANE).expect("node").root.join("etc/kubernetes/pki");
    std::fs::create_dir_all(&pki).expect("pki dir");
    for file in ["ca.crt", "ca.key"] {
        std::fs::copy(lab.dir().join("pki").join(file), pki.join(file)).expect("restore the PKI");
    }
    let (ok, out, err) = on(&lab, CONTROL_PLANE, "sudo kubeadm init --upload-certs");
    assert!(ok, "{err}");
    assert!(out.contains("[certs] Using existing ca certificate authority"), "{out}");
    assert_eq!(ca_hash(&out), first, "the restored CA is the cluster's CA again");
    let (ok, _, err) = on(&lab, WORKERS[0], &format!("sudo {}", join_command(&lab)));
    assert!(ok, "{err}");
}

//! The lab's certificates, made with the `openssl` command: the cluster CA
//! (`/etc/kubernetes/pki/ca.{crt,key}`, whose public key the join commands'
//! `--discovery-token-ca-cert-hash` pins), an etcd CA and the leaf
//! certificates kubeadm keeps in `/etc/kubernetes/pki/etcd/` (server, peer,
//! healthcheck-client) plus `apiserver-etcd-client`. ECDSA P-256 keys, ten
//! years. Owns file generation only.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use super::process::run;

const CURVE: &str = "ec_paramgen_curve:prime256v1";

/// Writes the cluster CA `ca.{crt,key}` (CN `kubernetes`) into `dir`.
pub fn generate_cluster_ca(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", CURVE, "-nodes"])
        .args(["-keyout", "ca.key", "-out", "ca.crt", "-days", "3650", "-subj", "/CN=kubernetes"]))?;
    Ok(())
}

/// Writes `ca.{crt,key}`, `server.*`, `peer.*`, `healthcheck-client.*` and
/// `apiserver-etcd-client.*` into `dir`. Server and peer certificates name
/// `sans` (e.g. `IP:127.0.0.1`, `DNS:localhost`).
pub fn generate_etcd_pki(dir: &Path, node_name: &str, sans: &[String]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", CURVE, "-nodes"])
        .args(["-keyout", "ca.key", "-out", "ca.crt", "-days", "3650", "-subj", "/CN=etcd-ca"]))?;
    let san = format!("subjectAltName={}", sans.join(","));
    let both = "extendedKeyUsage=serverAuth,clientAuth";
    leaf(dir, "server", &format!("/CN={node_name}"), &[&san, both])?;
    leaf(dir, "peer", &format!("/CN={node_name}"), &[&san, both])?;
    leaf(dir, "healthcheck-client", "/O=system:masters/CN=kube-etcd-healthcheck-client", &["extendedKeyUsage=clientAuth"])?;
    leaf(dir, "apiserver-etcd-client", "/O=system:masters/CN=kube-apiserver-etcd-client", &["extendedKeyUsage=clientAuth"])?;
    let _ = std::fs::remove_file(dir.join("ca.srl"));
    Ok(())
}

fn leaf(dir: &Path, name: &str, subject: &str, extensions: &[&str]) -> Result<()> {
    let ext_file = dir.join(format!("{name}.ext"));
    let mut ext = extensions.join("\n");
    ext.push_str("\nkeyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n");
    std::fs::write(&ext_file, ext)?;
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-new", "-newkey", "ec", "-pkeyopt", CURVE, "-nodes"])
        .args(["-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr"), "-subj", subject]))?;
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["x509", "-req", "-in", &format!("{name}.csr"), "-CA", "ca.crt", "-CAkey", "ca.key"])
        .args(["-CAcreateserial", "-days", "3650", "-out", &format!("{name}.crt")])
        .args(["-extfile", &format!("{name}.ext")]))?;
    std::fs::remove_file(dir.join(format!("{name}.csr")))?;
    std::fs::remove_file(ext_file)?;
    Ok(())
}

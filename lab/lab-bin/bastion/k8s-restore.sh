#!/bin/bash
# k8s-restore.sh BACKUP.tar.gz: the guide's /usr/local/bin/k8s-restore.sh for
# the lab. Unpacks the backup, copies etcd-snapshot.db to the control plane's
# /tmp and restores it there with the node's own commands (systemctl stop
# etcd, rm -rf /var/lib/etcd/member, etcdctl snapshot restore, chown,
# systemctl start etcd), which journal on the control plane as over ssh.
# Needs an initialised control plane (kubeadm init).
set -euo pipefail
. "@LAB_DIR@/bin/lab-common.sh"
PATH=$LAB_SYSTEM_PATH
lab_bastion_journal k8s-restore.sh "$@"
backup=${1:?usage: k8s-restore.sh BACKUP.tar.gz}
[ -f "$backup" ] || { echo "k8s-restore: no such backup: $backup" >&2; exit 1; }
cp_root=$LAB_DIR/nodes/$LAB_CONTROL_PLANE
[ -e "$cp_root/etc/kubernetes/admin.conf" ] || { echo "k8s-restore: the control plane $LAB_CONTROL_PLANE is not initialised (kubeadm init)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$backup" -C "$work"
[ -f "$work/etcd-snapshot.db" ] || { echo "k8s-restore: $backup holds no etcd-snapshot.db" >&2; exit 1; }
echo "k8s-restore: restoring etcd from $(basename "$backup")"
cp "$work/etcd-snapshot.db" "$cp_root/tmp/etcd-snapshot.db"
on_cp() { LAB_NODE=$LAB_CONTROL_PLANE PATH="$cp_root/bin:$LAB_SYSTEM_PATH" "$@"; }
on_cp sudo systemctl stop etcd
on_cp sudo rm -rf /var/lib/etcd/member
on_cp sudo env ETCDCTL_API=3 etcdctl snapshot restore /tmp/etcd-snapshot.db --name "$LAB_CONTROL_PLANE" \
  --initial-cluster "$LAB_CONTROL_PLANE=$LAB_ETCD_PEER_URL" --initial-advertise-peer-urls "$LAB_ETCD_PEER_URL" \
  --data-dir /var/lib/etcd >/dev/null
on_cp sudo chown -R etcd:etcd /var/lib/etcd
on_cp sudo systemctl start etcd
echo "k8s-restore: done"

#!/bin/bash
# etcd/run.sh: starts (detached), stops and probes the lab's real etcd, the
# control plane's etcd, with the same flags every time. Its data dir and
# certificates live in the control-plane node root, as kubeadm lays them out.
# Usage: run.sh start|stop|status|health
set -uo pipefail
. "@LAB_DIR@/bin/lab-common.sh"
PATH=$LAB_SYSTEM_PATH

root=$LAB_DIR/nodes/$LAB_CONTROL_PLANE
pki=$root/etc/kubernetes/pki/etcd
data=$root/var/lib/etcd
pidfile=$LAB_DIR/etcd/etcd.pid
log=$LAB_DIR/etcd/etcd.log

running() { lab_pid_alive "$pidfile"; }

health() {
  ETCDCTL_API=3 /usr/bin/etcdctl --endpoints="$LAB_ETCD_CLIENT_URL" \
    --cacert="$LAB_DIR/pki/etcd/ca.crt" --cert="$LAB_DIR/pki/etcd/healthcheck-client.crt" \
    --key="$LAB_DIR/pki/etcd/healthcheck-client.key" --command-timeout=2s --dial-timeout=1s \
    endpoint health >/dev/null 2>&1
}

case ${1:-} in
  start)
    if running; then exit 0; fi
    for f in ca.crt server.crt server.key peer.crt peer.key; do
      [ -f "$pki/$f" ] || { echo "etcd: cannot start: missing $pki/$f" >&2; exit 1; }
    done
    mkdir -p "$data" && chmod 700 "$data"
    # A port the lab chose can be held for a moment by someone's outgoing
    # connection (the same ephemeral range): etcd then dies on "address
    # already in use"; it is started again a few times before giving up.
    for try in 1 2 3 4 5 6; do
    mark=$(wc -l <"$log" 2>/dev/null || echo 0)
    setsid /usr/bin/etcd --name "$LAB_CONTROL_PLANE" --data-dir "$data" \
      --listen-client-urls "$LAB_ETCD_CLIENT_URL" --advertise-client-urls "$LAB_ETCD_CLIENT_URL" \
      --listen-peer-urls "$LAB_ETCD_PEER_URL" --initial-advertise-peer-urls "$LAB_ETCD_PEER_URL" \
      --initial-cluster "$LAB_CONTROL_PLANE=$LAB_ETCD_PEER_URL" --initial-cluster-state new \
      --initial-cluster-token lab-etcd \
      --cert-file "$pki/server.crt" --key-file "$pki/server.key" \
      --trusted-ca-file "$pki/ca.crt" --client-cert-auth \
      --peer-cert-file "$pki/peer.crt" --peer-key-file "$pki/peer.key" \
      --peer-trusted-ca-file "$pki/ca.crt" --peer-client-cert-auth \
      --snapshot-count 10000 --heartbeat-interval 25 --election-timeout 250 --logger zap --log-outputs stderr \
      </dev/null >>"$log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 300); do
      if ! running; then
        rm -f "$pidfile"
        if [ "$try" -lt 6 ] && tail -n +"$((mark + 1))" "$log" | grep -q "address already in use"; then
          sleep 0.5
          continue 2
        fi
        echo "etcd: failed to start (see $log)" >&2
        exit 1
      fi
      health && exit 0
      sleep 0.05
    done
    echo "etcd: started but not healthy after 15 s (see $log)" >&2
    exit 1
    done
    ;;
  stop)
    if [ -f "$pidfile" ]; then
      pid=$(cat "$pidfile")
      # etcd syncs its WAL on every commit, so a kill after a short grace
      # period loses nothing; its graceful shutdown can take seconds.
      kill "$pid" 2>/dev/null
      for _ in $(seq 20); do lab_pid_alive "$pidfile" || break; sleep 0.05; done
      kill -9 "$pid" 2>/dev/null
      rm -f "$pidfile"
    fi
    exit 0
    ;;
  status) running ;;
  health) running && health ;;
  *) echo "usage: run.sh start|stop|status|health" >&2; exit 2 ;;
esac

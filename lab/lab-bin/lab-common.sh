# lab-common.sh: sourced by every lab script (bastion and node side).
# Owns: where the lab lives (LAB_DIR, baked in when the lab writes its scripts),
# the lab's settings (lab.env), the journal, calls to the lab control API and
# the mapping of node paths (/var/lib/etcd, /etc/kubernetes, /tmp) into a
# node's root directory. Refuses: touching paths outside the lab.
LAB_DIR="@LAB_DIR@"
# shellcheck disable=SC1091
. "$LAB_DIR/lab.env"
export LAB_DIR LAB_API LAB_PACE LAB_USER LAB_CONTROL_PLANE LAB_NODES
export LAB_ETCD_CLIENT_URL LAB_ETCD_PEER_URL

lab_now() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }

# The system PATH: lab scripts run their helpers (cat, cp, rm...) unmapped.
LAB_SYSTEM_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Node context: LAB_NODE from the login shell, else from the script's place
# (<lab>/nodes/<node>/bin/<command>). The PATH becomes the system's unless
# the caller passes keep-path (sudo, which runs node commands).
lab_node_context() {
  [ "${1:-}" = keep-path ] || PATH=$LAB_SYSTEM_PATH
  if [ -z "${LAB_NODE:-}" ]; then
    LAB_NODE=$(basename "$(dirname "$(dirname "$(readlink -f "$0")")")")
  fi
  LAB_NODE_ROOT="$LAB_DIR/nodes/$LAB_NODE"
  export LAB_NODE LAB_NODE_ROOT
}

# One journal line per node-side command: timestamp and command line.
lab_journal() {
  printf '%s %s\n' "$(lab_now)" "$*" >>"$LAB_NODE_ROOT/journal.log"
}

# One journal line per bastion-side command.
lab_bastion_journal() {
  printf '%s %s\n' "$(lab_now)" "$*" >>"$LAB_DIR/bastion-journal.log"
}

# POST a JSON body to the lab control API; prints the answer.
lab_api_post() {
  local path=$1 body=${2:-'{}'}
  /usr/bin/curl -fsS -k --max-time 10 -X POST -H 'Content-Type: application/json' \
    --data "$body" "$LAB_API$path"
}

lab_api_get() {
  /usr/bin/curl -fsS -k --max-time 10 "$LAB_API$1"
}

# Sleep for a pace-dependent time: lab_pace_sleep FAST_SECONDS REALISTIC_SECONDS
lab_pace_sleep() {
  if [ "${LAB_PACE:-fast}" = realistic ]; then sleep "$2"; else [ "$1" = 0 ] || sleep "$1"; fi
}

# Map one argument: node paths (and --flag=/node/path) go into the node root;
# the well-known etcd endpoint goes to the lab's etcd.
lab_map() {
  local arg=$1 prefix='' value=$1
  case $arg in --*=*) prefix=${arg%%=*}=; value=${arg#*=} ;; esac
  case $value in
    "$LAB_DIR" | "$LAB_DIR"/*) ;;
    /var/lib/etcd | /var/lib/etcd/* | /etc/kubernetes | /etc/kubernetes/* | /tmp | /tmp/* | /var/lib/kubelet | /var/lib/kubelet/* | /home | /home/*)
      value=$LAB_NODE_ROOT$value ;;
  esac
  value=${value//https:\/\/127.0.0.1:2379/$LAB_ETCD_CLIENT_URL}
  printf '%s' "$prefix$value"
}

# MAPPED=( mapped "$@" )
lab_map_args() {
  MAPPED=()
  local a
  for a in "$@"; do MAPPED+=("$(lab_map "$a")"); done
}

# Refuses (exit 1) when a non-option argument names a path outside the lab.
lab_guard_paths() {
  local cmd=$1 a p
  shift
  for a in "$@"; do
    case $a in -*) continue ;; esac
    p=$(realpath -m -- "$a")
    case $p in "$LAB_DIR" | "$LAB_DIR"/*) ;; *)
      echo "$cmd: refusing to touch '$a' outside the lab node ($LAB_NODE_ROOT)" >&2
      exit 1 ;;
    esac
  done
}

lab_node_port() { cat "$LAB_DIR/sshd/$1/port"; }
lab_node_address() { cat "$LAB_DIR/sshd/$1/address"; }
# Whether process $1 is alive (a zombie, not yet reaped by init, counts as dead).
lab_alive() {
  local state
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
  state=$(sed 's/^.*) \(.\).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [ "$state" != Z ] && [ "$state" != X ]
}

# Whether the pid in file $1 names a live process.
lab_pid_alive() {
  [ -f "$1" ] || return 1
  lab_alive "$(cat "$1" 2>/dev/null)"
}

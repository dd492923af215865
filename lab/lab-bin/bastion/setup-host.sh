#!/bin/bash
# setup-host.sh stand-in: records the call and marks this part of the host ready
# ($LAB_DIR/host/packages), which terraform apply and verify-setup.sh check.
set -euo pipefail
. "@LAB_DIR@/bin/lab-common.sh"
PATH=$LAB_SYSTEM_PATH
lab_bastion_journal setup-host.sh "$@"
mkdir -p "$LAB_DIR/host"
lab_pace_sleep 0 5
date -u +%FT%TZ >"$LAB_DIR/host/packages"
echo "setup-host: done"

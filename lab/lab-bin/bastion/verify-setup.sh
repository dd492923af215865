#!/bin/bash
# verify-setup.sh stand-in: checks the host is ready for the rebuild: the
# setup scripts ran, and terraform, the ssh key and the backups are in place.
set -uo pipefail
. "@LAB_DIR@/bin/lab-common.sh"
PATH=$LAB_SYSTEM_PATH
lab_bastion_journal verify-setup.sh "$@"
problems=0
check() { if eval "$2"; then echo "✓ $1"; else echo "✗ $1" >&2; problems=$((problems + 1)); fi; }
check "packages installed (setup-host.sh)" '[ -e "$LAB_DIR/host/packages" ]'
check "libvirt and sudo configured (setup-libvirt-sudo.sh)" '[ -e "$LAB_DIR/host/libvirt" ]'
check "storage pool ready (setup-storage.sh)" '[ -e "$LAB_DIR/host/storage" ]'
check "terraform available" '[ -x "$LAB_DIR/bin/terraform" ]'
check "terraform configuration present" '[ -f "$LAB_DIR/terraform/main.tf" ]'
check "ssh key present" '[ -f "$LAB_DIR/ssh/id_ed25519" ]'
check "backup directory readable" '[ -d "$LAB_DIR/backup" ]'
check "lab API reachable" '/usr/bin/curl -sk --max-time 5 -o /dev/null "$LAB_API/lab/v1/health"'
if [ $problems -gt 0 ]; then echo "verify-setup: $problems problem(s)" >&2; exit 1; fi
echo "verify-setup: host ready"

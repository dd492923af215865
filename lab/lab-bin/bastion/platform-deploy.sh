#!/bin/bash
# platform-deploy.sh stand-in: (re)installs ArgoCD and its applications into
# the simulated cluster through the lab control API.
set -euo pipefail
. "@LAB_DIR@/bin/lab-common.sh"
PATH=$LAB_SYSTEM_PATH
lab_bastion_journal platform-deploy.sh "$@"
echo "Deploying platform services (ArgoCD, applications)..."
lab_pace_sleep 0 10
lab_api_post /lab/v1/platform/deploy '{}' >/dev/null || { echo "platform-deploy: the cluster refused the deployment" >&2; exit 1; }
echo "Platform deployed"

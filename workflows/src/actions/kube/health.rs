//! Health checks of the cluster: endpoints, events, DNS, nodes and kube-system.

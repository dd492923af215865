//! ArgoCD Applications through the dynamic API (argoproj.io/v1alpha1).

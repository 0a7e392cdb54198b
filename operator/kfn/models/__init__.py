"""Pydantic models of the kfn.dev/v1alpha1 resources: the one source of truth for the CRDs."""

"""Pure builders of the Kubernetes objects kfn owns: functions of their inputs, no API calls."""

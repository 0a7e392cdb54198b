"""The in-pod agent: serves the Lambda Runtime API to the function process, one invocation at a time."""

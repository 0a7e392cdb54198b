"""The gateway: the Lambda Invoke API in front of the execution environments."""

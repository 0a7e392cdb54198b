"""kfn: AWS-Lambda-like functions on Kubernetes.

The import package lives under ``operator/`` (the source root); it is named
``kfn`` so that nothing shadows the standard library's ``operator`` module.
"""

__version__ = "0.1.0"

"""trtrepo: build, serve and benchmark Triton model repositories for vision models."""


__version__ = "0.1.0"

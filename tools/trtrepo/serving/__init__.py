"""What serves and talks to servers: tritonserver's start and supervision, the nginx guard, API keys, the stub
watchdog, MPS, replicas, object stores, Kubernetes manifests and the inference client. Imports the repository
format, the backend's entry files and the core; never the build or the measurements."""

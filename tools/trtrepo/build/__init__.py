"""What builds a repository: the plan (repo.toml), the build loop, staging and publishing, export to ONNX,
calibration data, the accuracy gate, ensembles and pipelines, the TF-Serving export. Runs in `trtrepo repo` and its
kin, never inside the server; imports accuracy, serving (to find the server's backends), format, engines, models."""

"""The Triton model-repository format as trtrepo writes it: config.pbtxt through model_config_pb2, the manifest of
what each variant was built from, and the validation of a repository against both. Imports engines and the core."""

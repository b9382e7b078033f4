"""A stand-in for TF-Serving's gRPC PredictionService, for tests only (no TF-Serving binary exists here): it reads
an export of `trtrepo tfserving` the way TF-Serving does (models.config through TF-Serving's ModelServerConfig
proto, each model's latest version folder) and answers GetModelMetadata with the SavedModel's own signature defs
and Predict by running the SavedModel, so that perf_analyzer --service-kind tfserving can be run for real."""

from __future__ import annotations

from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf import text_format


class StandIn:
    def __init__(self, export: Path) -> None:
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2
        from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc
        from tensorflow_serving.config import model_server_config_pb2

        config = text_format.Parse((export / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
        self.models = {}
        for entry in config.model_config_list.config:
            latest = max((p for p in (export / entry.name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
            saved = saved_model_pb2.SavedModel.FromString((latest / "saved_model.pb").read_bytes())
            self.models[entry.name] = (saved.meta_graphs[0].signature_def, tf.saved_model.load(str(latest)))
        standin = self

        class Service(prediction_service_pb2_grpc.PredictionServiceServicer):
            def GetModelMetadata(self, request, context):
                signatures, _ = standin.models[request.model_spec.name]
                response = get_model_metadata_pb2.GetModelMetadataResponse()
                response.model_spec.CopyFrom(request.model_spec)
                signature_map = get_model_metadata_pb2.SignatureDefMap()
                for name, signature in signatures.items():
                    signature_map.signature_def[name].CopyFrom(signature)
                response.metadata["signature_def"].Pack(signature_map)
                return response

            def Predict(self, request, context):
                _, loaded = standin.models[request.model_spec.name]
                run = loaded.signatures[request.model_spec.signature_name or "serving_default"]
                outputs = run(**{name: tf.constant(tf.make_ndarray(tensor)) for name, tensor in request.inputs.items()})
                response = predict_pb2.PredictResponse()
                response.model_spec.CopyFrom(request.model_spec)
                for name, value in outputs.items():
                    response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
                return response

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                                  options=[("grpc.max_receive_message_length", 1 << 30), ("grpc.max_send_message_length", 1 << 30)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Service(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def __enter__(self) -> "StandIn":
        self.server.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.stop(grace=None)

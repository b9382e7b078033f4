"""The tensor model behind the probe: each image's mean as a classifier's 1000 scores. Decoupled when its config
says so, answering as a pipelined trtrepo variant does (its response, then the final flag alone)."""

import json

import triton_python_backend_utils as pb_utils  # first: with trtrepo's server it makes the environment importable
import numpy as np


class TritonPythonModel:
    def initialize(self, args):
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(json.loads(args["model_config"]))

    def execute(self, requests):
        answers = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            answer = pb_utils.InferenceResponse([pb_utils.Tensor("y", np.repeat(x.mean((1, 2, 3))[:, None], 1000, 1))])
            if self.decoupled:
                sender = request.get_response_sender()
                sender.send(answer)
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            else:
                answers.append(answer)
        return None if self.decoupled else answers

"""ResNet50 spec: pre/post-processing and weight loading, shared by clients, evaluation and engines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trtrepo.errors import UserError
from trtrepo.models import get_model
from trtrepo.models.weights import download_state_dict

spec = get_model("resnet50")


def test_preprocess_gives_normalized_chw_float32(images, tmp_path):
    for path in sorted(images.iterdir()):
        sample = spec.preprocess(path)
        assert sample.shape == (3, 224, 224) and sample.dtype == np.float32
    # A mid-grey image lands near zero after ImageNet mean/std normalization.
    from PIL import Image

    grey = tmp_path / "grey_mid.png"  # not in the shared images folder, which other tests count
    Image.new("RGB", (500, 300), (124, 116, 104)).save(grey)
    assert np.abs(spec.preprocess(grey)).max() < 0.02


def test_postprocess_softmax_top_k_with_class_names():
    logits = np.full((2, 1000), -5.0, dtype=np.float32)
    logits[0, 1] = 5.0  # goldfish
    logits[1, 967], logits[1, 504] = 4.0, 3.0  # espresso, coffee mug
    first, second = spec.postprocess({"logits": logits}, top_k=2)
    assert first[0][0] == "goldfish" and first[0][1] > 0.9
    assert [label for label, _ in second] == ["espresso", "coffee mug"]
    assert second[0][1] > second[1][1]


@pytest.mark.parametrize("content, message", [(None, "no such image file"), (b"not an image", "not a readable image")])
def test_bad_images_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "photo.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        spec.preprocess(path)


def test_state_dict_file_round_trips_and_mismatch_is_reported(tmp_path):
    network = spec.build_network("random")
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": network.state_dict()}, path)
    loaded = spec.build_network(str(path))
    assert torch.equal(loaded.fc.weight, network.fc.weight)
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "wrong.pt")
    with pytest.raises(UserError, match="do not fit the network"):
        spec.build_network(str(tmp_path / "wrong.pt"))
    (tmp_path / "corrupt.pt").write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="is not a PyTorch checkpoint"):
        spec.build_network(str(tmp_path / "corrupt.pt"))
    with pytest.raises(UserError, match="does not exist"):
        spec.build_network(str(tmp_path / "absent.pt"))


def test_unreachable_download_is_a_one_line_offline_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(UserError, match="cannot download pretrained weights") as error:
        download_state_dict("http://127.0.0.1:9/resnet50-unreachable.pth", "resnet50")
    assert "--weights random" in str(error.value)


def test_unknown_model_lists_known_ones():
    from trtrepo.models import MODELS

    with pytest.raises(UserError, match=fr"known: {', '.join(sorted(MODELS))}; or declare it in the plan \(\[\[model\]\]\)$"):
        get_model("resnet51")

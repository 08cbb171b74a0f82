from __future__ import annotations

import numpy as np
import pytest

from distree_mqtt.data import ImageSet
from distree_mqtt.evaluation.exit_cache import collect_exits
from distree_mqtt.model.input_spec import InputSpec


@pytest.mark.parametrize("show_progress", [True, False])
def test_exit_collection_shows_progress_only_when_asked(tiny_network, show_progress, capsys) -> None:
    rng = np.random.default_rng(0)
    images = ImageSet(
        images=rng.integers(0, 256, (24, 1, 28, 28), dtype=np.uint8), labels=rng.integers(0, 10, 24)
    )
    spec = InputSpec(shape=(1, 28, 28), color="gray", mean=[0.13], std=[0.3], class_names=list("0123456789"))
    cache = collect_exits(tiny_network, images, spec, batch_size=2, show_progress=show_progress)
    assert [tuple(logits.shape) for logits in cache.logits] == [(24, 10)] * 3
    assert ("exits on 24 images" in capsys.readouterr().err) == show_progress

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from distree_mqtt.evaluation.tradeoff import exit_indices
from distree_mqtt.model.criteria import ExitObservation, criterion_names, get_criterion

logit_rows = arrays(np.float32, (6, 10), elements=st.floats(-8, 8, width=32))


def _history(*logits: np.ndarray) -> list[ExitObservation]:
    return [ExitObservation(logits=torch.from_numpy(np.asarray(row, dtype=np.float32))) for row in logits]


@pytest.mark.parametrize("name", ["max_softmax", "entropy", "margin", "patience"])
@given(logits=logit_rows, boost=st.floats(0.1, 6.0))
@settings(max_examples=60, deadline=None)
def test_confidence_scores_grow_when_the_top_class_grows(name, logits, boost) -> None:
    criterion = get_criterion(name)
    earlier = logits[::-1].copy()
    raised = logits.copy()
    top = raised.argmax(axis=1)
    raised[np.arange(len(raised)), top] += boost
    before = criterion.score(_history(earlier, logits))
    after = criterion.score(_history(earlier, raised))
    assert torch.all(after >= before - 1e-5)


@given(logits=logit_rows, previous=logit_rows, mix=st.floats(0.05, 1.0))
@settings(max_examples=60, deadline=None)
def test_feature_difference_grows_as_consecutive_predictions_converge(logits, previous, mix) -> None:
    criterion = get_criterion("feature_difference")
    p_new = torch.softmax(torch.from_numpy(logits), 1)
    p_old = torch.softmax(torch.from_numpy(previous), 1)
    closer = (1 - mix) * p_new + mix * p_old
    far = criterion.score(_history(previous, logits))
    near = criterion.score(_history(previous, torch.log(closer).numpy()))
    assert torch.all(near >= far - 1e-5)
    identical = criterion.score(_history(logits, logits))
    assert torch.allclose(identical, torch.ones(6), atol=1e-5)


def test_patience_counts_consecutive_agreement() -> None:
    criterion = get_criterion("patience")
    cat = np.array([[5.0, 0.0]])
    dog = np.array([[0.0, 5.0]])
    assert float(criterion.score(_history(cat))) < 1.0
    assert 1.0 < float(criterion.score(_history(cat, cat))) < 2.0
    assert 2.0 < float(criterion.score(_history(cat, cat, cat))) < 3.0
    assert float(criterion.score(_history(cat, dog, cat))) < 1.0  # the run is broken


@pytest.mark.parametrize("name", criterion_names())
@given(seed=st.integers(0, 10_000), low=st.floats(0, 1), step=st.floats(0, 1))
@settings(max_examples=25, deadline=None)
def test_raising_a_threshold_never_lets_more_samples_exit(name, seed, low, step) -> None:
    rng = np.random.default_rng(seed)
    history = _history(*(rng.normal(0, 3, (40, 10)) for _ in range(3)))
    criterion = get_criterion(name)
    scores = np.stack([criterion.score(history[: k + 1]).numpy() for k in range(2)])
    scale = 3.0 if name == "patience" else 1.0
    exits_low = exit_indices(scores, np.array([low, low]) * scale)
    exits_high = exit_indices(scores, np.array([low + step, low + step]) * scale)
    assert (exits_high >= exits_low).all()


def test_unknown_criterion_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown exit criterion 'nope'; known: entropy"):
        get_criterion("nope")

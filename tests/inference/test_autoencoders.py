"""The task-inference autoencoders (ExpertGate's gate): one per task routes held-out samples to their own task
well above chance, its relatedness picks the closest earlier task, and it survives the run folder's
safetensors round trip."""

from __future__ import annotations

import pytest
import torch

from growsearch.config.space import InferenceConfig
from growsearch.data.benchmarks import load_benchmark
from growsearch.errors import ConfigError
from growsearch.inference.autoencoders import TaskAutoencoder, relatedness, route, train_autoencoder


@pytest.fixture(scope="module")
def autoencoders(digits_stream):
    return [
        train_autoencoder(task.train.x, InferenceConfig(), seed=i)
        for i, task in enumerate(digits_stream.tasks)
    ]


def test_held_out_samples_go_to_their_own_task_well_above_chance(autoencoders, digits_stream):
    shares = []
    for j, task in enumerate(digits_stream.tasks):
        routed = route(autoencoders, task.test.x, temperature=2.0)
        shares.append(float((routed == j).double().mean()))
    chance = 1 / len(autoencoders)
    assert min(shares) > 2 * chance, shares
    assert sum(shares) / len(shares) > 0.7, shares


def test_relatedness_picks_the_earlier_task_the_new_one_resembles(digits_stream):
    """A new task drawn from task 0's classes (its held-out samples) is most related to task 0."""
    config = InferenceConfig()
    earlier = [
        train_autoencoder(task.train.x, config, seed=i) for i, task in enumerate(digits_stream.tasks[:3])
    ]
    new_x = torch.cat([digits_stream.tasks[0].val.x, digits_stream.tasks[0].test.x])
    new = train_autoencoder(new_x, config, seed=9)
    scores = [relatedness(autoencoder, new, new_x) for autoencoder in earlier]
    assert max(range(3), key=lambda k: scores[k]) == 0, scores
    assert scores[0] > scores[1] and scores[0] > scores[2]


def test_an_autoencoder_survives_its_tensors(autoencoders, digits_stream):
    x = digits_stream.tasks[2].test.x
    again = TaskAutoencoder.from_tensors(autoencoders[2].tensors())
    assert torch.equal(again.errors(x), autoencoders[2].errors(x))


def test_recurrent_autoencoders_route_sequences_and_round_trip():
    """GIM's task inference: on sequences (digits read row by row) an LSTM autoencoder per task routes
    held-out samples to their own task well above chance, and is rebuilt exactly from its tensors."""
    stream = load_benchmark("seq-split-digits", max_per_task=80, seed=0)
    config = InferenceConfig(autoencoder="auto", lr=0.01, epochs=15)
    autoencoders = [train_autoencoder(task.train.x, config, seed=i) for i, task in enumerate(stream.tasks)]
    assert all(autoencoder.recurrent for autoencoder in autoencoders)
    shares = [
        float((route(autoencoders, t.test.x, 2.0) == j).double().mean()) for j, t in enumerate(stream.tasks)
    ]
    assert min(shares) > 2 / len(autoencoders) and sum(shares) / len(shares) > 0.7, shares
    rebuilt = TaskAutoencoder.from_tensors(autoencoders[1].tensors())
    assert rebuilt.recurrent
    assert torch.equal(rebuilt.errors(stream.tasks[1].test.x), autoencoders[1].errors(stream.tasks[1].test.x))


def test_a_recurrent_autoencoder_on_images_is_refused_by_name(digits_stream):
    with pytest.raises(ConfigError, match="inference.autoencoder: lstm reads .steps, features. sequences"):
        train_autoencoder(digits_stream.tasks[0].train.x, InferenceConfig(autoencoder="lstm"), seed=0)

"""Multiply-adds of one sample's forward pass through a plain torch module (the task classifier, an
autoencoder): what `fit` charges per sample for the models trained beside the module graph."""

from __future__ import annotations

from torch import nn


def module_macs(module: nn.Module, steps: int = 1) -> int:
    """Its linear layers' products and an LSTM's four gates', each per step (`steps`: a sequence's length,
    every layer applied at each step; 1 for an image); activations are not counted."""
    macs = 0
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            macs += steps * layer.in_features * layer.out_features
        elif isinstance(layer, nn.LSTM):
            inputs = layer.input_size
            for _ in range(layer.num_layers):
                macs += steps * 4 * layer.hidden_size * (inputs + layer.hidden_size)
                inputs = layer.hidden_size
    return macs

"""Batched random crop with padding and horizontal flip, seeded per batch."""

import pytest
import torch
import torch.nn.functional as F

from growsearch.data.normalize import CIFAR100_STATS
from growsearch.errors import ConfigError
from growsearch.train.augment import Augmentation, augments_by_default, batch_generator, default_augmentation


def _batch(n=64, c=3, h=32, w=32, seed=0):
    return torch.rand((n, c, h, w), generator=torch.Generator().manual_seed(seed)) + 0.5  # no zeros


def test_same_keys_same_batch_other_steps_differ():
    x, aug = _batch(), Augmentation(crop_padding=4, flip=True)
    one = aug.apply(x, batch_generator(7, 0, 3))
    assert torch.equal(one, aug.apply(x, batch_generator(7, 0, 3)))
    assert not torch.equal(one, aug.apply(x, batch_generator(7, 0, 4)))
    assert not torch.equal(one, aug.apply(x, batch_generator(8, 0, 3)))
    assert not torch.equal(one, aug.apply(x, batch_generator(7, 1, 3)))
    assert torch.equal(x, _batch())  # the input is left as it was


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.uint8])
def test_shape_and_dtype_kept(dtype):
    x = (_batch(n=5, h=16, w=24) * 100).to(dtype)
    out = Augmentation(crop_padding=3, flip=True).apply(x, batch_generator(0, 0))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device


def test_each_crop_is_the_padded_image_shifted_and_zeros_only_where_it_shifted():
    p, x = 4, _batch(n=64, h=12, w=10)
    out = Augmentation(crop_padding=p, flip=False).apply(x, batch_generator(1, 2))
    padded = F.pad(x, (p, p, p, p))
    shifts = set()
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 12, dx : dx + 10])
        ]
        assert len(matches) == 1  # exactly one crop of the zero-padded image
        dy, dx = matches[0]
        shifts.add((dy, dx))
        zero_rows, zero_cols = abs(dy - p), abs(dx - p)
        expected_zeros = 3 * (zero_rows * 10 + zero_cols * 12 - zero_rows * zero_cols)
        assert int((out[i] == 0).sum()) == expected_zeros
    assert len(shifts) > 20  # offsets drawn per sample, over the whole range


def test_flipped_images_equal_torch_flip():
    x = _batch(n=64)
    out = Augmentation(crop_padding=0, flip=True).apply(x, batch_generator(3, 9))
    flipped = [torch.equal(out[i], torch.flip(x[i], dims=(-1,))) for i in range(len(x))]
    kept = [torch.equal(out[i], x[i]) for i in range(len(x))]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54


def test_nothing_to_do_returns_a_copy():
    x = _batch(n=4)
    aug = Augmentation(crop_padding=0, flip=False)
    out = aug.apply(x, batch_generator(0, 0))
    assert not aug.active and torch.equal(out, x) and out.data_ptr() != x.data_ptr()
    assert Augmentation(4, True).apply(x[:0], batch_generator(0, 0)).shape == (0, 3, 32, 32)


def test_default_fill_is_black_after_normalisation():
    aug = default_augmentation("split-cifar100")
    assert aug == Augmentation(4, True, CIFAR100_STATS.black())
    x = CIFAR100_STATS.apply(_batch(n=32) - 0.5)  # [0, 1) images, normalised as the loader does
    back = CIFAR100_STATS.invert(aug.apply(x, batch_generator(0, 5)))
    assert back.min() > -1e-6 and back.max() < 1 + 1e-6
    assert (back.abs() < 1e-6).any()  # the padding: black in [0, 1]
    assert default_augmentation("split-cifar100", normalized=False) == Augmentation(4, True, 0.0)


def test_which_benchmarks_augment_by_default():
    for name in (
        "split-cifar10",
        "split-cifar100",
        "split-cifar100-b50-5",
        "split-tinyimagenet",
        "split-imagenet100",
    ):
        assert augments_by_default(name) and default_augmentation(name).crop_padding == 4
    for name in ("split-digits", "split-mnist", "permuted-mnist5k", "seq-split-digits", "ctrl-minus"):
        assert not augments_by_default(name) and default_augmentation(name) is None


def test_a_cifar_sized_batch_keeps_channels_last():
    x = torch.rand(256, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    out = default_augmentation("split-cifar10").apply(x, batch_generator(0, 0, 0))
    assert out.shape == (256, 3, 32, 32) and out.is_contiguous(memory_format=torch.channels_last)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="crop_padding=-1"):
        Augmentation(-1, True)
    with pytest.raises(ConfigError, match="flip=1"):
        Augmentation(4, 1)
    with pytest.raises(ConfigError, match="fill=\\[0.0\\]"):
        Augmentation(4, True, [0.0])
    with pytest.raises(ValueError, match="integers >= 0"):
        batch_generator(0, -1)
    with pytest.raises(ValueError, match=r"\(n, C, H, W\)"):
        Augmentation(4, True).apply(torch.zeros(3, 32, 32), batch_generator(0))
    with pytest.raises(ValueError, match="fill holds 3 values for a batch of 1 channels"):
        Augmentation(4, True, (0.0, 0.0, 0.0)).apply(torch.zeros(2, 1, 8, 8), batch_generator(0))

"""TinyImageNet (official layout) and ImageNet-100 (ImageFolder) from small generated JPEG files."""

import shutil

import numpy as np
import pytest
import torch

from growsearch.data import load_benchmark
from growsearch.data.images import resize_crop
from growsearch.data.normalize import IMAGENET_STATS, TINYIMAGENET_STATS
from growsearch.data.streams import class_order
from growsearch.errors import DataError

PYCIL_100 = class_order("pycil", tuple(range(100)), 0)


def test_split_tinyimagenet_from_official_layout(tiny_root, label_of_colour):
    stream = load_benchmark("split-tinyimagenet", data_root=tiny_root, normalize=False)
    assert len(stream) == 10 and stream.input_shape == (3, 64, 64) and stream.normalization is None
    for t, task in enumerate(stream.tasks):
        assert task.classes == tuple(range(20 * t, 20 * t + 20))  # wnids.txt's lines, in its order
        assert (len(task.train), len(task.val), len(task.test)) == (60, 20, 20)
        assert task.n_outputs == 20 and task.train.x.dtype == torch.float32
        for split in (task.train, task.val, task.test):
            assert label_of_colour(split.x) == [task.classes[i] for i in split.y.tolist()]


def test_tinyimagenet_normalised_by_default(tiny_root):
    plain = load_benchmark("split-tinyimagenet", data_root=tiny_root, normalize=False, scenario="class-il")
    stream = load_benchmark("split-tinyimagenet", data_root=tiny_root, scenario="class-il")
    assert stream.normalization == TINYIMAGENET_STATS
    mean = torch.tensor(TINYIMAGENET_STATS.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(TINYIMAGENET_STATS.std).reshape(1, 3, 1, 1)
    for a, b in zip(plain.tasks, stream.tasks, strict=True):
        assert torch.equal(b.test.y, a.test.y) and b.test.y.max() < 200 and b.n_outputs == 200
        assert torch.equal(b.train.x, (a.train.x - mean) / std)


def test_tinyimagenet_missing_files_name_the_root_and_file(tmp_path, tiny_root):
    with pytest.raises(
        DataError, match=r"'split-tinyimagenet'.*does not exist.*tiny-imagenet-200/wnids\.txt"
    ):
        load_benchmark("split-tinyimagenet", data_root=tmp_path / "nowhere")
    root = tmp_path / "copy"
    shutil.copytree(tiny_root, root)
    folder = root / "tiny-imagenet-200"
    (folder / "val" / "val_annotations.txt").rename(folder / "val" / "annotations.bak")
    with pytest.raises(DataError, match=r"does not hold the dataset.*val_annotations\.txt.*cs231n"):
        load_benchmark("split-tinyimagenet", data_root=root)
    (folder / "val" / "annotations.bak").rename(folder / "val" / "val_annotations.txt")
    wnid = (folder / "wnids.txt").read_text().split()[7]
    shutil.rmtree(folder / "train" / wnid / "images")
    with pytest.raises(DataError, match=rf"train/{wnid}/images' holds no images"):
        load_benchmark("split-tinyimagenet", data_root=root)


def test_tinyimagenet_bad_files(tmp_path, tiny_root):
    from PIL import Image

    root = tmp_path / "copy"
    shutil.copytree(tiny_root, root)
    folder = root / "tiny-imagenet-200"
    lines = (folder / "val" / "val_annotations.txt").read_text().splitlines()
    (folder / "val" / "val_annotations.txt").write_text("\n".join([*lines, "val_x.JPEG\tn99999999\t0"]))
    with pytest.raises(DataError, match=r"line 201: expected .*wnids\.txt, found 'val_x"):
        load_benchmark("split-tinyimagenet", data_root=root)
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines))
    Image.new("RGB", (32, 32)).save(folder / "val" / "images" / "val_3.JPEG", format="JPEG")
    with pytest.raises(DataError, match=r"val_3\.JPEG' is 32x32; expected 64x64"):
        load_benchmark("split-tinyimagenet", data_root=root)
    (folder / "val" / "images" / "val_3.JPEG").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot read .*val_3\.JPEG' as an image"):
        load_benchmark("split-tinyimagenet", data_root=root)


def test_tinyimagenet_with_too_few_classes(tmp_path, make_tinyimagenet_root):
    make_tinyimagenet_root(tmp_path, train_per_class=1, n_classes=3)
    with pytest.raises(DataError, match="holds 3 classes, expected 200"):
        load_benchmark("split-tinyimagenet", data_root=tmp_path)


def test_split_imagenet100_from_an_image_folder(imagenet_root, label_of_colour):
    stream = load_benchmark("split-imagenet100", data_root=imagenet_root, normalize=False)
    assert len(stream) == 10 and stream.input_shape == (3, 32, 32)
    assert [c for task in stream.tasks for c in task.classes] == list(PYCIL_100)  # PyCIL's order
    for task in stream.tasks:
        assert (len(task.train), len(task.val), len(task.test)) == (30, 10, 10)
        for split in (task.train, task.val, task.test):
            assert label_of_colour(split.x) == [task.classes[i] for i in split.y.tolist()]
    in_sorted = load_benchmark(
        "split-imagenet100", data_root=imagenet_root, class_order="sorted", scenario="class-il"
    )
    assert in_sorted.normalization == IMAGENET_STATS
    assert in_sorted.tasks[3].classes == tuple(range(30, 40)) and in_sorted.tasks[3].test.y.tolist() == list(
        range(30, 40)
    )


def test_imagenet100_layout_errors(tmp_path, imagenet_root):
    with pytest.raises(
        DataError, match=r"'split-imagenet100'.*does not exist.*imagenet100/train'.*ImageFolder"
    ):
        load_benchmark("split-imagenet100", data_root=tmp_path / "nowhere")
    root = tmp_path / "copy"
    shutil.copytree(imagenet_root, root)
    shutil.rmtree(root / "imagenet100" / "val" / "n00000042")
    with pytest.raises(DataError, match=r"val/n00000042' holds no images"):
        load_benchmark("split-imagenet100", data_root=root)
    shutil.rmtree(root / "imagenet100" / "val")
    with pytest.raises(DataError, match=r"does not hold the dataset: expected .*imagenet100/val'"):
        load_benchmark("split-imagenet100", data_root=root)


def test_resize_crop_is_torchvisions_resize_and_centre_crop():
    from PIL import Image
    from torchvision import transforms

    rng = np.random.default_rng(0)
    pipeline = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32)])
    for shape in ((75, 50, 3), (41, 97, 3), (32, 32, 3), (20, 28, 3)):  # portrait, landscape, exact, smaller
        img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        assert np.array_equal(np.asarray(resize_crop(img, 32)), np.asarray(pipeline(img)))


def test_greyscale_and_png_images_are_read_as_rgb(tmp_path):
    from PIL import Image

    from growsearch.data.images import decode

    Image.new("L", (50, 40), 200).save(tmp_path / "grey.png")
    Image.new("RGB", (40, 40), (24, 56, 128)).save(tmp_path / "colour.png")
    x = decode([tmp_path / "grey.png", tmp_path / "colour.png"], 32, exact=False)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.uint8
    assert x[0].unique().tolist() == [200] and x[1, :, 5, 5].tolist() == [24, 56, 128]

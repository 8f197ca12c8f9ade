"""The device check: what growsearch's real-size path does on a GPU, measured side by side in one run.

On CIFAR-shaped data (`--data-root` with CIFAR-100 in its python layout, or labelled synthetic 32x32 images
it writes when none is given: for throughput, never for accuracy), one task each:
1. training images per second on the reduced ResNet-18 (20 base filters, batch norm per task) for six
   representative methods (PackNet, Piggyback, MNTDP-D, MNTDP-S, Side-Tuning, ExpertGate);
2. bf16 autocast (with channels-last and cuDNN's autotuner) against fp32, on PackNet's ResNet;
3. packed trials (K = 8 candidates as one computation) against one at a time for RCL, CLEAS and MNTDP-D, on a
   small conv net without batch norm (packs refuse batch norm, whose statistics would mix candidates);
4. the ray backend with `gpus_per_trial: 0.25` (four trials sharing the device) against one trial at a time
   (not with --smoke).
Each ratio compares two runs made one after the other in this process, after an untimed warm-up. The last
two lines are `gpu packed speed-up: X` (the smallest of the three methods') and `gpu amp speed-up: Y`.

Run:  python benchmarks/gpu.py [--data-root R] [--device cuda] [--smoke]
      (--smoke: tiny sizes, two of the six methods and one packed search, on the CPU in seconds: a test
      runs it to keep the script working)
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from growsearch.backends import RayOptions
from growsearch.config.space import load_space, space_from_dict
from growsearch.data.synthetic import write_synthetic_cifar100
from growsearch.runner import RunOptions, load_stream, start_run

RESNET_METHODS = ("packnet", "piggyback", "mntdp-d", "mntdp-s", "side-tuning", "expert-gate")
PACKED_METHODS = ("rcl", "cleas", "mntdp-d")
CONV = [{"conv": {"channels": 32, "kernel": 3, "padding": 1, "pool": 2}}, {"linear": 128}]


def space(method: str, args: argparse.Namespace, **sections: Any):
    """The method's shipped space on the check's network (the reduced ResNet-18 unless given) and sizes."""
    raw = copy.deepcopy(load_space(method).to_dict())
    raw["network"] = sections.pop("network", {"preset": "resnet18-reduced"})
    sizes = {"epochs": args.epochs, "device": args.device, "batch_size": args.batch_size}
    raw["training"] = {**raw["training"], **sizes, **sections.pop("training", {})}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return space_from_dict(raw, f"<gpu check {method}>")


def images_per_second(result: Any, train_sizes: list[int]) -> float:
    """Training images a second over the run's tasks: the passes over a task's data (its training compute
    over one pass's) times its samples, over the tasks' seconds."""
    images = seconds = 0.0
    for record in result.records:
        images += record.train_macs / max(record.pass_macs, 1) * train_sizes[record.task]
        seconds += record.seconds or 0.0
    return images / max(seconds, 1e-9)


def run(space_: Any, options: RunOptions, root: Path, name: str) -> tuple[Any, float, list[int]]:
    """One run: its result, wall seconds, and each task's training samples."""
    sizes = [len(task.train) for task in load_stream(options).tasks]
    started = time.perf_counter()
    result = start_run(space_, options, root / name, ray=RayOptions())
    return result, time.perf_counter() - started, sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, in seconds")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    smoke = args.smoke
    args.batch_size = 16 if smoke else 128
    per_class = 5 if smoke else 50  # synthetic: 100 classes
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    sizes = "smoke" if smoke else "full"
    print(f"device check on {args.device} ({name}), torch {torch.__version__}, {sizes} sizes")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        root = Path(folder)
        data_root = args.data_root or str(
            write_synthetic_cifar100(root / "data", per_class, per_class // 5 + 1)
        )
        one_task = RunOptions(
            benchmark="split-cifar100",
            n_tasks=1,
            data_root=data_root,
            seed=0,
            max_per_task=20 if smoke else None,
        )
        if not smoke:  # first-call costs (kernels, cuDNN's autotuner) charged to no row
            start_run(space("mntdp-d", args, search={"n_trials": 1}), one_task, root / "warm-up")

        print("\n1. training images per second, reduced ResNet-18, one task:")
        for method in RESNET_METHODS[:2] if smoke else RESNET_METHODS:
            result, _, sizes = run(
                space(method, args, search={"n_trials": 1}), one_task, root, f"resnet-{method}"
            )
            print(f"   {method:<12} {images_per_second(result, sizes):>10,.0f} images/s")

        print("\n2. precision, PackNet's ResNet:")
        rates = {}
        for precision in ("fp32", "bf16"):
            packnet = space("packnet", args, training={"precision": precision})
            result, _, sizes = run(packnet, one_task, root, f"amp-{precision}")
            rates[precision] = images_per_second(result, sizes)
            print(f"   {precision:<5} {rates[precision]:>10,.0f} images/s")
        amp = rates["bf16"] / rates["fp32"]

        print("\n3. packed trials (K = 8) against one at a time, a conv net without batch norm, two tasks:")
        packed: list[float] = []
        two_tasks = dataclasses.replace(one_task, n_tasks=2)
        for method in PACKED_METHODS[:1] if smoke else PACKED_METHODS:
            walls = {}
            for pack in (1, 8):
                search = {"pack": pack} if method == "mntdp-d" else {"pack": pack, "n_trials": 8}
                conv = space(method, args, network={"layers": CONV}, search=search)
                walls[pack] = run(conv, two_tasks, root, f"pack-{method}-{pack}")[1]
            packed.append(walls[1] / walls[8])
            print(f"   {method:<8} alone {walls[1]:.1f} s, packed {walls[8]:.1f} s: {packed[-1]:.2f}x")

        if smoke:
            print("\n4. ray with shared GPUs: not run with --smoke")
        else:
            print("\n4. ray backend, 8 trials a task: gpus_per_trial 0.25 (four at once) against 1:")
            walls = {}
            for share in (1.0, 0.25):
                backend = {"gpus_per_trial": share, "max_concurrent_trials": int(1 / share)}
                search = {"n_trials": 8, "sampler": "random"}
                shared = space("mntdp-d", args, network={"layers": CONV}, search=search, backend=backend)
                walls[share] = run(
                    shared, dataclasses.replace(two_tasks, backend="ray"), root, f"ray-{share}"
                )[1]
            ratio = walls[1.0] / walls[0.25]
            print(f"   one trial a GPU {walls[1.0]:.1f} s, four sharing {walls[0.25]:.1f} s: {ratio:.2f}x")
    print(f"\ngpu packed speed-up: {min(packed):.2f}")
    print(f"gpu amp speed-up: {amp:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

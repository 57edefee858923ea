"""Training on cached trunk features: a frozen trunk runs once per augmented view, not once per step.

A registry entry may list its model's `trunk`: the modules its forward runs first, in order, with
nothing in between. While they are frozen (and their batch norms keep ImageNet statistics) their
output depends only on the input image, so training can compute it once for a fixed number of
augmented views and train the rest of the network on those tensors. On a CPU most of an
EfficientNet's or InceptionV3's compute is in the early, high-resolution stages, so fine-tuning the
last stages gets several times faster; the price is a finite pool of augmentations.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm


@contextmanager
def trunk_skipped(model: nn.Module, trunk: tuple[str, ...]):
    """Inside, `model(features)` takes the trunk's output instead of an image."""
    originals = {name: model.get_submodule(name) for name in trunk}
    try:
        for name in trunk:
            model.set_submodule(name, nn.Identity())
        yield model
    finally:
        for name, module in originals.items():
            model.set_submodule(name, module)


def trunk_parameters(model: nn.Module, trunk: tuple[str, ...]) -> list[str]:
    return [f"{name}.{p}" for name in trunk for p, _ in model.get_submodule(name).named_parameters()]


@torch.no_grad()  # not inference_mode: the tail trains on these tensors
def trunk_features(model: nn.Module, trunk: tuple[str, ...], loader: DataLoader, desc: str,
                   progress: bool = True) -> torch.Tensor:
    """The trunk's output for every sample of a loader of (image, label, index), in index order, as float16.

    Batches run on the model's device (a GPU's, with --device cuda); the features are kept in CPU memory,
    from where the training loader hands them back to the device batch by batch."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks, order = [], []
    for images, _, indices in tqdm(loader, desc=desc, disable=not progress, leave=False):
        images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
        for name in trunk:
            images = model.get_submodule(name)(images)
        chunks.append(images.half().cpu())
        order.append(indices)
    model.train(was_training)
    return torch.cat(chunks)[torch.cat(order).argsort()]


class CachedViews(Dataset):
    """(features, label, index) with each sample's features taken from the view chosen for this epoch."""

    def __init__(self, views: torch.Tensor, labels: list[int], view_of: torch.Tensor):
        self.views, self.labels, self.view_of = views, labels, view_of  # views: (K, N, ...)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.views[self.view_of[i], i].float(), self.labels[i], i

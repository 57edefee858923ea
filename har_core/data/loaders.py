"""Batches of one split of a run's split manifest, for evaluating, exporting and training."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from har_core.data.datasets import dataset_for


def split_loader(root: Path, manifest: pd.DataFrame, split: str, classes: list[str], transform,
                 batch_size: int = 64, workers: int = 0, shuffle: bool = False, sampler=None,
                 generator: torch.Generator | None = None, pin_memory: bool = False,
                 also: Dataset | None = None) -> DataLoader:
    """Batches of one split of the manifest; `also`: more samples drawn with them (unlabelled pictures)."""
    rows = manifest[manifest["split"] == split]
    index = {c: i for i, c in enumerate(classes)}
    dataset = dataset_for(root, rows["filename"].tolist(), [index[l] for l in rows["label"]], transform)
    if also is not None:
        dataset = ConcatDataset([dataset, also])
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, generator=generator, pin_memory=pin_memory,
                      persistent_workers=False, drop_last=False)

"""Which training pictures excite each channel most: a channel's "favourite" pictures, and where in them.

One pass of the run's training pictures through the model records, for every stage (`ModelSpec.stages`) and
every channel, the picture's strongest response anywhere in the map (the spatial maximum: a channel that fires
on a bicycle wheel should rank the picture with the wheel first, however small the wheel). The `TOP_K` best
pictures per channel are stored beside the embeddings in `channels.safetensors`, keyed like them by the weights
that computed them and the data they were computed on; the map itself is recomputed for the few pictures shown.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import safetensors.numpy
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from har_core.models.artifacts import Run
from har_core.explain.cam import Explanation, overlay_on_picture
from har_core.data.datasets import DataIndex, dataset_for
from har_core.data.fileio import atomic_write_bytes
from har_core.models.inference import LoadedModel
from har_core.explain.inside import stage_tap, stages_of

CHANNELS = "channels.safetensors"
TOP_K = 8


class ChannelError(RuntimeError):
    """Channel tops that cannot be used; the message names the run and says what to do."""


@dataclass
class ChannelTops:
    run: str
    model: str
    weights: str  # sha256 of the weights file that computed them (Run.weights_sha256)
    fingerprint: str  # the data's fingerprint then (har_core.data.datasets.DataIndex.fingerprint)
    files: list[str]  # the training pictures ranked, as paths under the data folder
    rows: dict[str, np.ndarray]  # stage module -> (channels, TOP_K) rows of `files`, strongest first
    scores: dict[str, np.ndarray]  # stage module -> (channels, TOP_K) the spatial maxima, float32

    def top(self, module: str, channel: int, count: int = TOP_K) -> list[tuple[str, float]]:
        """The pictures that excite `channel` of stage `module` most: (file, strongest response), best first."""
        if module not in self.rows:
            raise ChannelError(f"{self.run}: no channel tops for stage {module}; compute them again")
        rows, scores = self.rows[module][channel][:count], self.scores[module][channel][:count]
        return [(self.files[int(r)], float(s)) for r, s in zip(rows, scores)]

    def save(self, path: Path) -> None:
        tensors = {f"{kind}/{module}": array for module in self.rows
                   for kind, array in (("rows", self.rows[module].astype(np.int32)),
                                       ("scores", self.scores[module].astype(np.float16)))}
        meta = {"run": self.run, "model": self.model, "weights": self.weights, "fingerprint": self.fingerprint,
                "files": self.files}
        atomic_write_bytes(path, safetensors.numpy.save(tensors, {"har": json.dumps(meta)}))


def load_channel_tops(run: Run) -> ChannelTops:
    """The run's stored channel tops, read whole and checked against its weights; ChannelError, one line with
    what to do, otherwise."""
    path = run.path / CHANNELS
    try:
        with safetensors.safe_open(str(path), framework="numpy") as handle:
            meta = json.loads(handle.metadata()["har"])
            arrays = {key: handle.get_tensor(key) for key in handle.keys()}
        tops = checked_tops(meta, arrays)
    except FileNotFoundError:
        raise ChannelError(f"{run.name}: no channel tops yet; compute them with `python -m train.embed "
                           f"{run.path} --channels` (or the button here)") from None
    except Exception as error:  # noqa: BLE001 - safetensors, JSON, key and shape errors all mean: unreadable
        raise ChannelError(f"{run.name}: {CHANNELS} is corrupt ({error}); compute the channel tops again") from None
    if tops.model != run.card["model"] or tops.weights != run.weights_sha256():
        raise ChannelError(f"{run.name}: {CHANNELS} was computed by other weights than the run's (trained or "
                           "changed since); compute the channel tops again")
    return tops


def checked_tops(meta, arrays: dict[str, np.ndarray]) -> ChannelTops:
    """ChannelTops from a file's metadata and arrays, every part checked: the metadata's fields, a scores array
    beside each rows array of the same shape, and every row a picture of the file list (ValueError otherwise)."""
    if not isinstance(meta, dict):
        raise ValueError(f"its metadata is a {type(meta).__name__}, not an object")
    for key in ("run", "model", "weights", "fingerprint"):
        if not isinstance(meta.get(key), str):
            raise ValueError(f"its metadata lacks \"{key}\"")
    files = meta.get("files")
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise ValueError("its metadata lacks the list of training pictures")
    modules = {key.split("/", 1)[1] for key in arrays if key.startswith(("rows/", "scores/"))}
    if not modules or len(arrays) != 2 * len(modules):
        raise ValueError("its arrays are not pairs of rows and scores")
    rows, scores = {}, {}
    for module in modules:
        if f"rows/{module}" not in arrays or f"scores/{module}" not in arrays:
            raise ValueError(f"stage {module} lacks its rows or its scores")
        rows[module], scores[module] = arrays[f"rows/{module}"].astype(np.int64), arrays[f"scores/{module}"]
        if rows[module].ndim != 2 or rows[module].shape != scores[module].shape:
            raise ValueError(f"stage {module}'s rows and scores differ in shape")
        if rows[module].size and not (0 <= rows[module].min() and rows[module].max() < len(files)):
            raise ValueError(f"stage {module} names a picture outside its list of {len(files)}")
        scores[module] = scores[module].astype(np.float32)
    return ChannelTops(run=meta["run"], model=meta["model"], weights=meta["weights"], fingerprint=meta["fingerprint"],
                       files=files, rows=rows, scores=scores)


def training_files(run: Run, index: DataIndex) -> list[str]:
    """The run's training pictures that the data folder holds, in manifest order."""
    manifest = run.manifest()
    if manifest is None:
        raise ChannelError(f"{run.name}: no split manifest, so no training pictures to rank")
    usable = {rel for rel, _ in index.samples}
    files = [f for f in manifest.loc[manifest["split"] == "train", "filename"] if f in usable]
    if not files:
        raise ChannelError(f"{run.name}: {index.root} holds none of its training pictures; pick the data folder "
                           "it was trained on")
    return files


def compute_channel_tops(loaded: LoadedModel, index: DataIndex, batch_size: int = 32, device: str = "cpu",
                         progress: bool = True, on_batch: Callable[[int, int], None] | None = None,
                         top_k: int = TOP_K) -> ChannelTops:
    """Rank the run's training pictures for every channel of every stage, from one forward pass over them."""
    stages = stages_of(loaded)
    files = training_files(loaded.run, index)
    loader = DataLoader(dataset_for(index.root, files, None, loaded.transform), batch_size=batch_size)
    maxima: dict[str, list[torch.Tensor]] = {module: [] for _, module in stages}
    loaded.model.eval()
    with torch.inference_mode(), stage_tap(loaded).capture() as captured:
        for done, (batch, _, _) in enumerate(tqdm(loader, desc=f"channel tops ({loaded.name})",
                                                  disable=not progress), 1):
            loaded.model(batch.to(device))
            for module in maxima:
                maxima[module].append(captured.pop(module).amax(dim=(2, 3)))  # (batch, channels)
            if on_batch is not None:
                on_batch(done, len(loader))
    rows, scores = {}, {}
    for module, parts in maxima.items():
        strongest = torch.cat(parts).T  # (channels, pictures), ranked in float32 (stored as float16)
        found = strongest.topk(min(top_k, strongest.shape[1]), dim=1)
        rows[module], scores[module] = found.indices.numpy(), found.values.numpy()
    return ChannelTops(run=loaded.name, model=loaded.run.card["model"], weights=loaded.weights,
                       fingerprint=index.fingerprint(), files=files, rows=rows, scores=scores)


def store_channel_tops(loaded: LoadedModel, index: DataIndex, **options) -> ChannelTops:
    """Compute the run's channel tops and write them into its folder (an unwritable folder raises OSError)."""
    tops = compute_channel_tops(loaded, index, **options)
    tops.save(loaded.run.path / CHANNELS)
    return tops


def channel_maps(loaded: LoadedModel, pictures: list[Image.Image], module: str, channel: int) -> np.ndarray:
    """(pictures, height, width): `channel` of stage `module` on each picture, raw, from one batch forward."""
    batch = loaded.preprocess(pictures)
    with torch.inference_mode(), stage_tap(loaded).capture() as captured:
        loaded.model(batch)
    return captured[module][:, channel].numpy()


def channel_regions(loaded: LoadedModel, pictures: list[Image.Image], module: str, channel: int) -> list[Image.Image]:
    """Each picture with where `channel` of stage `module` fires in it, laid over the whole picture (the part
    the model never saw dimmed). One scale for all: the strongest response among these pictures, so a picture
    that excites the channel less looks cooler."""
    maps = np.clip(channel_maps(loaded, pictures, module, channel), 0, None)
    maps = maps / (maps.max() if maps.max() > 0 else 1.0)
    size, crop = loaded.run.card["input_size"], loaded.run.card["crop_pct"]
    return [overlay_on_picture(Explanation(heatmap=m, view=p, target=-1, probs=np.zeros(0)), p, size, crop,
                               opacity=0.35, longest=320) for m, p in zip(maps, pictures)]  # the photo stays visible

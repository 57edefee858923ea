"""Data sets on disk: the Kaggle HAR layout or class folders, splits, transforms, torch Datasets."""
from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pandas as pd
from tqdm.auto import tqdm

from har_core.data.fileio import atomic_write_text, is_inside
from har_core.data.imaging import (IMAGE_SUFFIXES, ImageError, eval_pixels, eval_resize, load_image, read_file,
                                  resize_side)
from har_core.data.video import VIDEO_SUFFIXES, Clip, VideoError, clip_facts, probe, read_clip, read_video_file

# torch, torchvision, timm and scikit-learn are imported inside the transforms, data sets and splits that use them:
# the app's first page lists data folders and reads run folders without them (they were most of a cold start, #41)
if TYPE_CHECKING:
    import torch

SPLITS = ("train", "val", "test")
# A manifest's optional fourth column marks the half of val that calibrates ("1"); the other half chooses the
# checkpoint. Calibration on pictures the checkpoint choice never saw keeps the sets' guarantee honest.
CALIBRATE = "calibrate"


class DataError(RuntimeError):
    pass


@dataclass
class DataIndex:
    """What a data folder holds: labelled samples (path relative to root), classes, and problems."""

    root: Path
    layout: str  # "kaggle" | "folders" (of images) | "clips" (class folders of video clips)
    samples: list[tuple[str, str]]  # (relative path, label)
    classes: list[str]
    problems: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    digests: dict[str, str] = field(default_factory=dict)  # relative path -> sha256 of the file's bytes
    repeated_rows: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason): listed twice

    def fingerprint(self) -> str:
        """Names, labels and contents of every sample: changes when any picture or label changes."""
        digest = hashlib.sha256()
        for rel, label in sorted(self.samples):
            digest.update(f"{rel},{label},{self.digests.get(rel, '')}\n".encode())
        return digest.hexdigest()[:16]

    def copies(self) -> list[list[str]]:
        """Groups of samples with identical contents (the same picture under several names)."""
        groups: dict[str, list[str]] = {}
        for rel, picture in self.group_of().items():
            groups.setdefault(picture, []).append(rel)
        return [members for members in groups.values() if len(members) > 1]

    def group_of(self) -> dict[str, str]:
        """Sample -> its picture: copies share one group, so a split keeps them on one side."""
        return {rel: self.digests.get(rel, rel) for rel, _ in self.samples}


def fingerprint_change(recorded: str | None, index: DataIndex) -> str | None:
    """'fingerprint OLD -> NEW' when the data no longer has the fingerprint a run recorded (None: unchanged)."""
    now = index.fingerprint()
    return f"fingerprint {recorded} -> {now}" if recorded and recorded != now else None


def detect_layout(root: Path) -> str:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    if (root / "Training_set.csv").is_file():
        return "kaggle"
    suffixes = {f.suffix.lower() for d in root.iterdir() if d.is_dir() for f in d.iterdir()}
    if suffixes & set(IMAGE_SUFFIXES):
        return "folders"
    if suffixes & set(VIDEO_SUFFIXES):
        return "clips"
    raise DataError(f"{root} is neither the Kaggle layout (Training_set.csv + train/) "
                    "nor one folder of images (or of video clips) per class")


def _read_listing(csv_path: Path, image_dir: str, labelled: bool):
    """Rows of a Kaggle CSV as (relative path, label or '') plus the rows that make no sense."""
    rows, problems = [], []
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except Exception as error:
        raise DataError(f"cannot read {csv_path.name}: {error}") from None
    needed = ["filename", "label"] if labelled else ["filename"]
    if any(column not in frame.columns for column in needed):
        raise DataError(f"{csv_path.name} needs the columns {', '.join(needed)}; found {list(frame.columns)}")
    for record in frame.itertuples(index=False):
        name = str(record.filename).strip()
        label = str(record.label).strip() if labelled else ""
        if not name or "/" in name or "\\" in name or name.startswith(".."):
            problems.append((name or "(empty)", "invalid file name"))
        elif labelled and not label:
            problems.append((f"{image_dir}/{name}", "no label"))
        else:
            rows.append((f"{image_dir}/{name}", label))
    return rows, problems


def _repeated_rows(rows):
    """The first row of each file name, and the later ones that list it again (reported, never used)."""
    first: dict[str, str] = {}
    kept, repeated = [], []
    for rel, label in rows:
        if rel in first:
            same = label == first[rel]
            repeated.append((rel, "listed twice" + ("" if same else f" with different labels ({first[rel]}, {label})")))
        else:
            first[rel] = label
            kept.append((rel, label))
    return kept, repeated


def _read_checked(path: Path, clips: bool) -> bytes:
    """A sample's bytes once it is known to decode (a small draft of an image, the first frame of a clip)."""
    if clips:
        data = read_video_file(path)
        probe(data)
    else:
        data = read_file(path)
        load_image(data, draft_size=32)
    return data


def _check_images(root: Path, rows, problems, progress: bool, confine: bool, clips: bool = False,
                  on_progress: Callable[[int, int], None] | None = None):
    """Keep rows whose image (or clip) decodes, with the sha256 of each file's bytes; report the rest.
    `confine`: files that resolve outside `root` (symlinks) are refused; `on_progress(done, total)` is told every
    hundred files."""
    good, digests = [], {}
    for done, (rel, label) in enumerate(tqdm(rows, desc=f"checking {'clips' if clips else 'images'}",
                                             disable=not progress, leave=False)):
        if on_progress is not None and done % 100 == 0:
            on_progress(done, len(rows))
        path = root / rel
        if confine and not is_inside(root, path):
            problems.append((rel, "outside the data folder"))
            continue
        try:
            data = _read_checked(path, clips)
        except (ImageError, VideoError) as error:
            problems.append((rel, str(error)))
            continue
        good.append((rel, label))
        digests[rel] = hashlib.sha256(data).hexdigest()
    return good, digests


def readable_images(root: Path, files: list[str], progress: bool = True) -> tuple[list[str], list[tuple[str, str]]]:
    """Of `files` under `root`, those that decode (checked as `scan` checks a data set), and the others with why."""
    problems: list[tuple[str, str]] = []
    good, _ = _check_images(Path(root), [(rel, None) for rel in files], problems, progress, confine=False)
    return [rel for rel, _ in good], problems


def scan(root: str | Path, classes: list[str] | None = None, progress: bool = True, confine: bool = False,
         max_images: int = 0, on_progress: Callable[[int, int], None] | None = None) -> DataIndex:
    """Index the labelled images under `root`, reporting (not crashing on) anything unusable.

    `classes` fixes the class list (a run's classes); labels outside it are reported and skipped.
    A file listed twice is used once and reported; pictures with identical contents are found by hash
    (`DataIndex.copies`). `confine` refuses files resolving outside `root`; `max_images` (0: no limit)
    refuses a folder listing more images before any is read; `on_progress(done, total)` follows the check.
    """
    root = Path(root)
    layout = detect_layout(root)
    if layout == "kaggle":
        rows, problems = _read_listing(root / "Training_set.csv", "train", labelled=True)
    else:
        rows, problems = [], []
        suffixes = VIDEO_SUFFIXES if layout == "clips" else IMAGE_SUFFIXES
        for folder in sorted(d for d in root.iterdir() if d.is_dir()):
            rows += [(f"{folder.name}/{f.name}", folder.name) for f in sorted(folder.iterdir())
                     if f.suffix.lower() in suffixes]
    if max_images and len(rows) > max_images:
        raise DataError(f"{root.name} lists {len(rows)} images, more than this server scans ({max_images}); "
                        "ask the operator to raise the limit or choose a smaller folder")
    rows, repeated = _repeated_rows(rows)
    known = set(classes) if classes is not None else None
    if known is not None:
        problems += [(rel, f"unknown label '{label}'") for rel, label in rows if label not in known]
        rows = [(rel, label) for rel, label in rows if label in known]
    samples, digests = _check_images(root, rows, problems, progress, confine, clips=layout == "clips",
                                     on_progress=on_progress)
    if not samples:
        raise DataError(f"no usable labelled images in {root}")
    return DataIndex(root=root, layout=layout, samples=samples,
                     classes=list(classes) if classes is not None else sorted({l for _, l in samples}),
                     problems=problems + repeated, digests=digests, repeated_rows=repeated)


def listing_stamp(root: str | Path) -> str:
    """Names, sizes and modification times of what a scan reads (the listing CSV and the image or class
    folders, one level deep): changes when a picture or a label is added, removed, replaced or edited."""
    root = Path(root)
    digest = hashlib.sha256()
    folders = [root]
    for folder in folders:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            try:
                stat = entry.stat()
            except OSError:
                continue
            digest.update(f"{Path(entry.path).relative_to(root)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
            if entry.is_dir() and folder == root:
                folders.append(Path(entry.path))
    return digest.hexdigest()[:16]


def scan_cache_dir() -> Path:
    """Where scans are kept between server starts (HAR_CACHE, default ~/.cache/har_studio)."""
    return Path(os.environ.get("HAR_CACHE") or Path.home() / ".cache" / "har_studio") / "scans"


def _stored_scan(root: Path, classes: list[str] | None, confine: bool, max_images: int, stamp: str) -> Path:
    key = hashlib.sha256(json.dumps([str(root.resolve()), classes, confine, max_images, stamp]).encode())
    return scan_cache_dir() / f"{key.hexdigest()[:24]}.json"


def scan_is_stored(root: str | Path, classes: list[str] | None = None, confine: bool = False, max_images: int = 0,
                   stamp: str | None = None) -> bool:
    """Whether `scan_cached` with these options answers from disk (False: it will decode every picture)."""
    root = Path(root)
    return _stored_scan(root, classes, confine, max_images, stamp or listing_stamp(root)).is_file()


def scan_cached(root: str | Path, classes: list[str] | None = None, confine: bool = False, max_images: int = 0,
                stamp: str | None = None, on_progress: Callable[[int, int], None] | None = None) -> DataIndex:
    """`scan`, stored on disk keyed by the folder's listing stamp (and the scan's own options): decoding and
    hashing 11,100 pictures happens once, not at every server start; any change to the folder rescans it.
    `on_progress(done, total)` follows a scan that is not stored yet."""
    root = Path(root)
    stamp = stamp or listing_stamp(root)
    path = _stored_scan(root, classes, confine, max_images, stamp)
    try:
        stored = json.loads(path.read_text())
        return DataIndex(root=root, layout=stored["layout"], samples=[tuple(s) for s in stored["samples"]],
                         classes=stored["classes"], problems=[tuple(p) for p in stored["problems"]],
                         digests=stored["digests"], repeated_rows=[tuple(r) for r in stored["repeated_rows"]])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not stored yet, or unreadable: scan
    index = scan(root, classes=classes, progress=False, confine=confine, max_images=max_images,
                 on_progress=on_progress)
    try:
        atomic_write_text(path, json.dumps({"layout": index.layout, "samples": index.samples, "classes": index.classes,
                                            "problems": index.problems, "digests": index.digests,
                                            "repeated_rows": index.repeated_rows}))
    except OSError:
        pass  # a read-only home: the scan still answers, it is just not kept
    return index


def unlabelled_images(target: str | Path) -> tuple[Path, list[str], list[tuple[str, str]]]:
    """Images to predict: a Testing_set.csv (Kaggle), a folder, or one image. Returns root, rel paths, problems."""
    target = Path(target)
    if target.is_file() and target.suffix.lower() == ".csv":
        rows, problems = _read_listing(target, "test", labelled=False)
        root = target.parent
        existing = [rel for rel, _ in rows if (root / rel).is_file()]
        problems += [(rel, "file not found") for rel, _ in rows if not (root / rel).is_file()]
        return root, existing, problems
    if target.is_file():
        return target.parent, [target.name], []
    if target.is_dir():
        files = sorted(f.relative_to(target).as_posix() for f in target.rglob("*")
                       if f.suffix.lower() in IMAGE_SUFFIXES)
        return target, files, []
    raise DataError(f"nothing to predict at {target}")


# ---- splits --------------------------------------------------------------------------------

def make_split(index: DataIndex, seed: int = 0, val: float = 0.15, test: float = 0.15) -> pd.DataFrame:
    """Stratified train/val/test split; one row per sample with its split. Copies of one picture
    (identical contents under several names) always land in the same split: the pictures are split,
    stratified by their first name's label, and every name follows its picture."""
    samples = pd.DataFrame(index.samples, columns=["filename", "label"])
    samples["group"] = samples["filename"].map(index.group_of())
    frame = samples.drop_duplicates("group")  # one row per picture; without copies, every sample
    from sklearn.model_selection import train_test_split
    try:
        rest, test_part = train_test_split(frame, test_size=test, stratify=frame["label"], random_state=seed)
        train_part, val_part = train_test_split(rest, test_size=val / (1 - test), stratify=rest["label"],
                                                random_state=seed)
    except ValueError as error:  # sklearn's reason names split sizes, not images; say what to add
        counts = frame["label"].value_counts()
        raise DataError(
            f"{len(frame)} images in {len(counts)} classes are too few for a stratified train/val/test split "
            f"({val:.0%} val, {test:.0%} test): every class needs images in every split and each split one "
            f"image per class (smallest class: {counts.idxmin()}, {counts.min()} images). Add images or "
            f"pass a split manifest (--split). [{error}]") from None
    split_of = {g: name for part, name in ((train_part, "train"), (val_part, "val"), (test_part, "test"))
                for g in part["group"]}
    samples["split"] = samples["group"].map(split_of)
    samples = samples.drop(columns="group").sort_values(["split", "filename"]).reset_index(drop=True)
    return with_calibration_half(samples, seed, index.group_of())


def with_calibration_half(manifest: pd.DataFrame, seed: int = 0, group_of: dict | None = None) -> pd.DataFrame:
    """The manifest with its CALIBRATE column: half of each class's val pictures (copies of one picture kept
    together through `group_of`, file -> picture), drawn with `seed`. Other splits get ""."""
    frame = manifest.copy()
    val = frame[frame["split"] == "val"]
    groups = val["filename"].map(group_of or {}).fillna(val["filename"])
    chosen = set()
    for _, rows in val.assign(group=groups).drop_duplicates("group").groupby("label"):
        picked = rows.sample(frac=0.5, random_state=seed)["group"] if len(rows) > 1 else rows["group"][:0]
        chosen.update(picked)
    frame[CALIBRATE] = ["1" if s == "val" and g in chosen else "" for s, g in
                        zip(frame["split"], frame["filename"].map(group_of or {}).fillna(frame["filename"]))]
    return frame


def choice_part(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest without its calibration pictures: what training may look at to choose its checkpoint."""
    if CALIBRATE not in manifest:
        return manifest
    return manifest[manifest[CALIBRATE] != "1"].reset_index(drop=True)


def calibration_files(manifest: pd.DataFrame) -> set[str] | None:
    """The val pictures kept for calibration, or None for a manifest that keeps none apart (all of val)."""
    if CALIBRATE not in manifest or not (manifest[CALIBRATE] == "1").any():
        return None
    return set(manifest.loc[manifest[CALIBRATE] == "1", "filename"])


def leaks(manifest: pd.DataFrame, index: DataIndex) -> list[list[tuple[str, str]]]:
    """Copies of one picture that a manifest puts in different splits: [(filename, split), ...] per picture."""
    split_of = dict(zip(manifest["filename"], manifest["split"]))
    found = []
    for members in index.copies():
        placed = [(rel, split_of[rel]) for rel in members if rel in split_of]
        if len({split for _, split in placed}) > 1:
            found.append(placed)
    return found


def describe_leaks(found: list[list[tuple[str, str]]], limit: int = 3) -> str:
    shown = "; ".join(" = ".join(f"{rel} ({split})" for rel, split in group) for group in found[:limit])
    return f"{len(found)} picture(s) are in two splits under different names: {shown}" + \
        (" …" if len(found) > limit else "")


def write_manifest(frame: pd.DataFrame, path: Path) -> None:
    columns = ["filename", "label", "split"] + ([CALIBRATE] if CALIBRATE in frame else [])
    atomic_write_text(path, frame[columns].to_csv(index=False, quoting=csv.QUOTE_MINIMAL))


def read_manifest(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(frame.columns[:3]) != ["filename", "label", "split"] or not set(frame["split"]) <= set(SPLITS):
        raise DataError(f"{path} is not a split manifest (filename,label,split)")
    if frame["filename"].duplicated().any():
        raise DataError(f"{path} lists an image twice")
    return frame


# ---- transforms, derived from the registry entry's data config -----------------------------

@dataclass(frozen=True)
class EvalResize:
    """The first step of an image model's eval transform: the shorter side to `side`, with its interpolation
    (the What-if edits are applied after it, at the model's own size)."""
    side: int
    interpolation: str

    def __call__(self, image):
        return eval_resize(image, self.side, self.interpolation)


class EvalTransform:
    """An image model's eval transform, timm's (shorter side to floor(size / crop_pct), centre crop, [0, 1],
    normalise) as har_core.data.imaging.eval_pixels computes it: `pixels` for ONNX Runtime without torch, a call for
    a torch tensor; both the very same numbers."""

    def __init__(self, data_config: dict):
        self.size, self.crop_pct = data_config["input_size"][-1], data_config["crop_pct"]
        self.interpolation = data_config["interpolation"]
        self.mean, self.std = tuple(data_config["mean"]), tuple(data_config["std"])
        self.resize = EvalResize(resize_side(self.size, self.crop_pct), self.interpolation)

    def pixels(self, image):
        """A float32 (3, size, size) NumPy array."""
        return eval_pixels(image, self.size, self.crop_pct, self.interpolation, self.mean, self.std)

    def __call__(self, image) -> torch.Tensor:
        import torch
        return torch.from_numpy(self.pixels(image))

    def __repr__(self) -> str:
        return (f"EvalTransform(size={self.size}, crop_pct={self.crop_pct}, interpolation={self.interpolation!r}, "
                f"mean={self.mean}, std={self.std})")


def eval_transform(data_config: dict):
    """What a run's eval sees: an image model's `EvalTransform`, a clip model's `ClipTransform`."""
    if "frames" in data_config:
        return ClipTransform(data_config)
    return EvalTransform(data_config)


def augmentation_names(augment: str, known) -> list[str]:
    names = [n.strip() for n in augment.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; choose from {', '.join(known)}")
    return names


def train_transform(data_config: dict, augment: str):
    """Training transform from a comma-separated list of augmentation names (see AUGMENTATIONS)."""
    if "frames" in data_config:
        return ClipTransform(data_config, augmentation_names(augment, CLIP_AUGMENTATIONS), training=True)
    from torchvision import transforms as T
    names = augmentation_names(augment, AUGMENTATIONS)
    size = data_config["input_size"][-1]
    interpolation = T.InterpolationMode(data_config["interpolation"])
    if "rrc" in names:
        steps = [T.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=interpolation)]
    else:
        steps = [T.Resize(resize_side(size, data_config["crop_pct"]), interpolation=interpolation), T.CenterCrop(size)]
    steps += [AUGMENTATIONS[n](T) for n in names if n not in ("rrc", "erasing")]
    steps += [T.ToTensor(), T.Normalize(data_config["mean"], data_config["std"])]
    if "erasing" in names:
        steps.append(T.RandomErasing(p=0.25))
    return T.Compose(steps)


AUGMENTATIONS = {  # each made from torchvision.transforms (T), imported when a training transform is built
    "rrc": None,  # random resized crop: replaces resize + centre crop
    "flip": lambda T: T.RandomHorizontalFlip(),
    "rotate": lambda T: T.RandomRotation(15),
    "affine": lambda T: T.RandomAffine(0, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=8),
    "perspective": lambda T: T.RandomPerspective(0.2, p=0.3),
    "color": lambda T: T.ColorJitter(0.3, 0.3, 0.3, 0.05),
    "randaugment": lambda T: T.RandAugment(num_ops=2, magnitude=9),
    "erasing": None,  # RandomErasing(0.25), applied to the normalised tensor
}


CLIP_AUGMENTATIONS = ("rrc", "flip")  # the same random crop and flip for every frame of a clip


class ClipTransform:
    """A decoded clip -> a (3, frames, size, size) tensor: a window of `frames` consecutive samples (every
    `frame_stride`-th frame), random in training (temporal jitter), else the clip's centre; a clip too short
    repeats its last frame. Resize, crop (random in training with "rrc"), flip and normalisation are drawn
    once per clip, so all its frames move together."""

    def __init__(self, data_config: dict, augment: list[str] = (), training: bool = False):
        import torch
        from torchvision import transforms as T
        from torchvision.transforms import v2
        self.frames, self.stride, self.training = data_config["frames"], data_config["frame_stride"], training
        size = data_config["input_size"][-1]
        interpolation = T.InterpolationMode(data_config["interpolation"])
        steps = [v2.Resize(resize_side(size, data_config["crop_pct"]), interpolation=interpolation, antialias=True),
                 v2.RandomCrop(size) if training and "rrc" in augment else v2.CenterCrop(size)]
        if training and "flip" in augment:
            steps.append(v2.RandomHorizontalFlip())
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(data_config["mean"], data_config["std"])]
        self.steps = v2.Compose(steps)

    def window(self, available: int) -> torch.Tensor:
        """Indices of the frames that make the clip."""
        import torch
        start = self.first(available)
        return (start + torch.arange(self.frames)).clamp(max=available - 1)

    def first(self, available: int) -> int:
        """The window's first sample among `available`: random in training, else centred."""
        import torch
        spare = max(0, available - self.frames)
        return int(torch.randint(spare + 1, ())) if self.training else spare // 2

    def read(self, path: Path) -> Clip:
        """Only the window's frames of a clip file: the window is placed from the container's stated duration
        and rate, then the decoder seeks to it (a clip without a stated duration is read from its start)."""
        seconds, rate = clip_facts(path)
        rate = rate or 25.0  # as read_clip: a stream without a rate is taken as 25 fps
        available = int(seconds * rate / self.stride) if seconds else self.frames
        start = self.first(available) * self.stride / rate
        return read_clip(path, stride=self.stride, start=start, frames=self.frames)

    def __call__(self, clip: Clip) -> torch.Tensor:
        import torch
        from torchvision.transforms import v2
        frames = [clip.frames[i] for i in self.window(len(clip.frames)).tolist()]
        stacked = torch.stack([v2.functional.pil_to_tensor(frame) for frame in frames])  # (T, 3, H, W) uint8
        return self.steps(stacked).transpose(0, 1).contiguous()  # (3, T, size, size)


class ImageDataset:
    """Files under `root` with their labels, each read and turned into a tensor by `transform`: a map-style data
    set (torch's DataLoader and ConcatDataset take any object with __len__ and __getitem__)."""

    def __init__(self, root: Path, files: list[str], labels: list[int] | None, transform):
        self.root, self.files, self.labels, self.transform = Path(root), files, labels, transform

    def __len__(self) -> int:
        return len(self.files)

    def read(self, path: Path):
        return load_image(path)

    def __getitem__(self, i: int):
        sample = self.read(self.root / self.files[i])
        label = self.labels[i] if self.labels is not None else -1
        return self.transform(sample), label, i


class ClipDataset(ImageDataset):
    def read(self, path: Path) -> Clip:
        return self.transform.read(path)


def dataset_for(root: Path, files: list[str], labels: list[int] | None, transform) -> ImageDataset:
    """The data set a transform reads: clips for a clip model's transform, else images."""
    return (ClipDataset if isinstance(transform, ClipTransform) else ImageDataset)(root, files, labels, transform)


def class_weights_sampler(labels: list[int], num_classes: int, generator: torch.Generator):
    """Weighted random sampler that draws every class equally often."""
    import torch.utils.data
    counts = torch.bincount(torch.tensor(labels), minlength=num_classes).float().clamp(min=1)
    weights = (1.0 / counts)[torch.tensor(labels)]
    return torch.utils.data.WeightedRandomSampler(weights, num_samples=len(labels), replacement=True,
                                                  generator=generator)

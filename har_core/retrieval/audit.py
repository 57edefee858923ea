"""Data quality from embeddings: near-duplicates (above all across splits), likely label errors, outliers.

- Near-duplicates: image pairs whose embeddings' cosine similarity reaches a threshold (FAISS neighbours).
  A pair split across train and test means the model is tested on a picture it has practically seen. With
  the pictures at hand (`root`), each pair is also compared on its pixels (`pixel_match`: the correlation of
  32×32 grey thumbnails) and only pairs that look the same there are kept: a network fine-tuned on a data
  set packs one class's photos so close that no cosine threshold alone separates copies from look-alikes.
- Likely label errors: cleanlab's `find_label_issues` on out-of-sample probabilities. Validation and test
  images take the model's own probabilities (it never trained on them); training images (and images the
  run's split does not list) take cross-validated probabilities of a linear probe on the embeddings.
- Outliers: cleanlab's `OutOfDistribution` score from the distance to the nearest neighbours; images far
  beyond the rest (Tukey's far-out fence on that distance) are flagged.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from har_core.retrieval.embeddings import Embeddings, normalised
from har_core.data.imaging import ImageError, load_image
from har_core.retrieval.search import VectorIndex, neighbours_of

# cosine similarity from which two images count as near-duplicates: chosen on a development run of
# bench/label_audit.py (seed 1: re-encoded, shrunk copies scored 0.925–0.983 with EfficientNet-Lite2,
# the closest distinct photos up to 0.914); the reported figures use seed 0
DUPLICATE_THRESHOLD = 0.92
# 32×32 grey correlation from which a pair is the same photo: read off HAR's candidate pairs (README, "Copies in
# HAR"): re-encoded, re-cropped, watermarked or captioned copies, consecutive video frames and a few shots of one
# photo session score 0.85–1.0; the other photos of the same kind that Lite2's 0.92 cosine lets through, below
PIXEL_MATCH = 0.85
THUMBNAIL = 32
SPLIT_ORDER = {("test", "train"): 0, ("train", "val"): 1, ("test", "val"): 2}  # leakage first, worst first


@dataclass
class Audit:
    duplicates: pd.DataFrame  # file_a, split_a, label_a, file_b, split_b, label_b, similarity, across_splits
    label_issues: pd.DataFrame  # filename, split, given, suggested, label_quality, source; most likely first
    outliers: pd.DataFrame  # filename, split, label, typicality; flagged ones, least typical first
    candidates: int | None = None  # pairs above the cosine threshold, when the pixels were then checked

    def summary(self) -> str:
        across = int(self.duplicates["across_splits"].sum()) if len(self.duplicates) else 0
        checked = "" if self.candidates is None else f" (the same pixels, of {self.candidates:,} close in the embedding)"
        return (f"{len(self.duplicates):,} near-duplicate pair(s){checked}, {across:,} across splits; "
                f"{len(self.label_issues):,} likely label error(s); {len(self.outliers):,} outlier(s)")


def near_duplicates(embeddings: Embeddings, threshold: float = DUPLICATE_THRESHOLD, k: int = 10) -> pd.DataFrame:
    """Pairs of images at least `threshold` similar, each pair once: pairs across train and test first."""
    columns = ["file_a", "split_a", "label_a", "file_b", "split_b", "label_b", "similarity", "across_splits"]
    if len(embeddings) < 2:
        return pd.DataFrame(columns=columns)
    index = VectorIndex.build(embeddings.vectors)
    similarities, rows = neighbours_of(index, embeddings.vectors, min(k, len(embeddings) - 1),
                                       exclude=np.arange(len(embeddings)))
    pairs = {}
    for a, b in zip(*np.nonzero(similarities >= threshold)):
        first, second = sorted((a, int(rows[a, b])))
        pairs[(first, second)] = max(pairs.get((first, second), 0.0), float(similarities[a, b]))
    records = []
    for (a, b), similarity in pairs.items():
        if embeddings.splits[b] == "train" != embeddings.splits[a]:
            a, b = b, a  # the training image on the left
        records.append({"file_a": embeddings.files[a], "split_a": embeddings.splits[a], "label_a": embeddings.labels[a],
                        "file_b": embeddings.files[b], "split_b": embeddings.splits[b], "label_b": embeddings.labels[b],
                        "similarity": round(similarity, 4),
                        "across_splits": embeddings.splits[a] != embeddings.splits[b]})
    frame = pd.DataFrame(records, columns=columns)
    if frame.empty:
        return frame
    rank = [SPLIT_ORDER.get(tuple(sorted((a, b))), 3) for a, b in zip(frame["split_a"], frame["split_b"])]
    return (frame.assign(_rank=rank).sort_values(["_rank", "similarity"], ascending=[True, False])
            .drop(columns="_rank").reset_index(drop=True))


def pixel_signature(path) -> np.ndarray | None:
    """A picture's 32×32 grey thumbnail, centred and scaled to unit length (None: it cannot be read). Kept per
    file version: another threshold on the Dataset page compares the same pictures again without decoding them."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return _signature(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=60_000)  # 4 KB each: HAR's 11,100 pictures hold 45 MB at most
def _signature(path: str, mtime_ns: int, size: int) -> np.ndarray | None:
    try:
        grey = load_image(path).convert("L").resize((THUMBNAIL, THUMBNAIL), Image.BILINEAR)
    except ImageError:
        return None
    values = np.asarray(grey, np.float32).ravel()
    values -= values.mean()
    return values / max(float(np.linalg.norm(values)), 1e-6)  # a flat grey picture correlates with nothing


def pixel_match(duplicates: pd.DataFrame, root) -> pd.DataFrame:
    """The pairs with a `pixels` column: the correlation of their thumbnails (NaN where a file cannot be read)."""
    signatures = {}
    for name in set(duplicates["file_a"]) | set(duplicates["file_b"]):
        signatures[name] = pixel_signature(Path(root) / name)
    scores = [float(signatures[a] @ signatures[b]) if signatures[a] is not None and signatures[b] is not None
              else float("nan") for a, b in zip(duplicates["file_a"], duplicates["file_b"])]
    return duplicates.assign(pixels=np.round(scores, 4))


def out_of_sample_probs(embeddings: Embeddings, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Probabilities no image was fitted on, and where each row's came from ('model' or 'probe')."""
    from sklearn import linear_model as linear  # here: Predict imports this module (near_duplicates), and the
    from sklearn import model_selection as selection  # audit alone needs these
    probs = embeddings.probs.astype(np.float64).copy()
    source = ["model" if split in ("val", "test") else "probe" for split in embeddings.splits]
    fitted = np.flatnonzero(np.array(source) == "probe")
    labels = embeddings.label_ids
    if len(fitted):
        counts = np.bincount(labels[fitted], minlength=len(embeddings.classes))
        folds = int(min(5, counts[counts > 0].min()))
        present = np.flatnonzero(counts)
        if folds >= 2 and len(present) >= 2:
            probe = linear.LogisticRegression(C=1.0, max_iter=2000)
            folding = selection.StratifiedKFold(folds, shuffle=True, random_state=seed)
            predicted = selection.cross_val_predict(probe, normalised(embeddings.vectors[fitted]), labels[fitted],
                                                    cv=folding, method="predict_proba", n_jobs=1)
            probs[fitted] = 0.0
            probs[np.ix_(fitted, present)] = predicted
        else:  # too few training images per class to cross-validate: the model's own (in-sample) view
            source = ["model" if s == "probe" else s for s in source]
    return probs / probs.sum(1, keepdims=True), source


def label_issues(embeddings: Embeddings, seed: int = 0) -> pd.DataFrame:
    """Images whose out-of-sample prediction disagrees with their given label, ranked by cleanlab's label
    quality (self-confidence: the probability of the given label), most likely errors first. `confident`
    marks the ones cleanlab's confident learning also flags (a stricter test: the other class is predicted
    above that class's typical confidence)."""
    from cleanlab.filter import find_label_issues  # here, as in out_of_sample_probs
    from cleanlab.rank import get_label_quality_scores
    columns = ["filename", "split", "given", "suggested", "label_quality", "confident", "source"]
    labels = embeddings.label_ids
    if len(embeddings) < 2 * len(embeddings.classes) or len(set(labels)) < 2:
        return pd.DataFrame(columns=columns)
    probs, source = out_of_sample_probs(embeddings, seed)
    # n_jobs=1: by default cleanlab forks a pool of workers, and a fork inside the app's threaded server hangs
    ranked = find_label_issues(labels, probs, filter_by="predicted_neq_given",
                               return_indices_ranked_by="self_confidence", n_jobs=1)
    confident = find_label_issues(labels, probs, n_jobs=1)
    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    return pd.DataFrame({"filename": [embeddings.files[i] for i in ranked],
                         "split": [embeddings.splits[i] for i in ranked],
                         "given": [embeddings.labels[i] for i in ranked],
                         "suggested": [embeddings.classes[int(probs[i].argmax())] for i in ranked],
                         "label_quality": quality[ranked].round(4), "confident": confident[ranked],
                         "source": [source[i] for i in ranked]}, columns=columns)


def outliers(embeddings: Embeddings, k: int = 10) -> pd.DataFrame:
    """Images far from every neighbour, least typical first (typicality: cleanlab's score, 0–1)."""
    from cleanlab.outlier import OutOfDistribution  # here, as in out_of_sample_probs
    columns = ["filename", "split", "label", "typicality"]
    if len(embeddings) <= k + 1:
        return pd.DataFrame(columns=columns)
    typicality = OutOfDistribution(params={"k": k}).fit_score(features=normalised(embeddings.vectors), verbose=False)
    distance = -np.log(np.clip(typicality, 1e-12, None))  # grows with the mean distance to the k neighbours
    q1, q3 = np.percentile(distance, [25, 75])
    flagged = np.flatnonzero(distance > q3 + 3 * (q3 - q1))
    flagged = flagged[np.argsort(typicality[flagged])]
    return pd.DataFrame({"filename": [embeddings.files[i] for i in flagged],
                         "split": [embeddings.splits[i] for i in flagged],
                         "label": [embeddings.labels[i] for i in flagged],
                         "typicality": typicality[flagged].round(4)}, columns=columns)


def audit(embeddings: Embeddings, threshold: float = DUPLICATE_THRESHOLD, seed: int = 0, root=None) -> Audit:
    """The three lists; with the pictures' folder (`root`), near-duplicates are the pairs that also look the
    same on their pixels (`pixel_match`; pairs whose files cannot be read are kept, unconfirmed)."""
    duplicates, candidates = near_duplicates(embeddings, threshold), None
    if root is not None:
        candidates, duplicates = len(duplicates), pixel_match(duplicates, root)
        duplicates = duplicates[~(duplicates["pixels"] < PIXEL_MATCH)].reset_index(drop=True)
    return Audit(duplicates, label_issues(embeddings, seed), outliers(embeddings), candidates)

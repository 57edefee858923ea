"""Embeddings → search index → neighbours → retrieval-augmented prediction → map, on tiny models and data."""
import json
import shutil
import threading

import numpy as np
import pytest
import safetensors
import torch

from conftest import CLASSES, synthetic_image
from har_core.models.artifacts import open_run
from har_core.data.datasets import scan
from har_core.retrieval.embeddings import (EMBEDDINGS, EmbeddingError, Embeddings, embed_data, load_embeddings, reduce,
                                           run_embeddings, staleness)
from har_core.models.inference import load_run, predict_all
from har_core.retrieval.projection import MAP_FILE, embedding_map, project
from har_core.retrieval.search import INDEX_FILE, VectorIndex, neighbours_of, training_index
from har_core.retrieval.similarity import (RETRIEVAL, augmented, choose_weight, neighbour_answer, reduction_effect,
                                           retrieval_report, vote)
from train import embed as embed_cli


def clustered(n_per: int = 40, clusters: int = 5, dim: int = 32, seed: int = 0, noise: float = 0.3):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    labels = np.repeat(np.arange(clusters), n_per)
    return (centres[labels] + noise * rng.standard_normal((len(labels), dim))).astype(np.float32), labels


def fake_embeddings(vectors, labels, splits, classes=None, probs=None) -> Embeddings:
    classes = classes or [f"c{i}" for i in range(int(max(labels)) + 1)]
    n = len(vectors)
    if probs is None:
        probs = np.eye(len(classes), dtype=np.float32)[labels] * 0.9 + 0.1 / len(classes)
    return Embeddings(run="fake", model="custom_cnn", classes=classes, fingerprint="f", files=[f"img_{i}.jpg" for i in range(n)],
                      digests=[f"d{i}" for i in range(n)], labels=[classes[l] for l in labels], splits=list(splits),
                      vectors=np.asarray(vectors, np.float32), probs=np.asarray(probs, np.float32), ident="fake")


def test_the_embedding_is_the_heads_input_and_comes_from_the_same_forward(tiny_runs):
    loaded = load_run(tiny_runs / "custom_cnn")
    images = [synthetic_image(i % 3, seed=500 + i) for i in range(4)]
    prediction = predict_all([loaded], images, embed=True)[0]
    with torch.no_grad():
        batch = loaded.preprocess(images).to(memory_format=torch.channels_last)
        expected = loaded.model.pool(loaded.model.features(batch)).flatten(1).numpy()
    assert prediction.embeddings.shape == (4, 512)
    np.testing.assert_allclose(prediction.embeddings, expected, rtol=1e-4, atol=1e-5)
    tta = predict_all([loaded], images, tta=True, embed=True)[0]  # two views per image; the unflipped is kept
    np.testing.assert_allclose(tta.embeddings, expected, rtol=1e-4, atol=1e-5)
    assert predict_all([loaded], images)[0].embeddings is None


def test_the_tap_records_only_its_own_threads_forwards(tiny_runs):
    loaded = load_run(tiny_runs / "custom_cnn")
    mine = [synthetic_image(0, seed=1)]
    alone = predict_all([loaded], mine, embed=True)[0].embeddings
    stop = threading.Event()

    def other_visitor():
        while not stop.is_set():
            predict_all([loaded], [synthetic_image(2, seed=7)] * 3)

    worker = threading.Thread(target=other_visitor)
    worker.start()
    try:
        for _ in range(20):
            np.testing.assert_allclose(predict_all([loaded], mine, embed=True)[0].embeddings, alone, rtol=1e-5)
    finally:
        stop.set()
        worker.join()


def test_embeddings_are_stored_reused_by_content_and_checked(tiny_runs, kaggle_data, copy_of, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_runs / "custom_cnn", run_dir)
    run = open_run(run_dir)
    stored = run_embeddings(run)  # written by train.train at the end of training
    index = scan(kaggle_data, classes=run.classes, progress=False)
    assert stored.files == [rel for rel, _ in index.samples] and stored.fingerprint == index.fingerprint()
    assert sorted(set(stored.splits)) == ["test", "train", "val"]

    data = copy_of(kaggle_data)  # one picture changes, one label changes
    synthetic_image(2, seed=999).save(data / "train" / "Image_1.jpg", quality=95)
    csv = (data / "Training_set.csv").read_text().replace("Image_2.jpg,cycling", "Image_2.jpg,dancing")
    (data / "Training_set.csv").write_text(csv)
    changed = scan(data, classes=run.classes, progress=False)
    assert "fingerprint" in staleness(stored, changed.fingerprint())
    calls = []
    again = embed_data(load_run(run), changed, run.manifest(), stored, on_batch=lambda done, total: calls.append(total))
    assert calls == [1]  # only the changed picture went through the model
    row = again.row_of["train/Image_1.jpg"]
    assert not np.allclose(again.vectors[row], stored.vectors[stored.row_of["train/Image_1.jpg"]], atol=1e-2)
    assert again.labels[again.row_of["train/Image_2.jpg"]] == "dancing"
    fresh = embed_data(load_run(run), changed, run.manifest())
    np.testing.assert_allclose(again.vectors, fresh.vectors, atol=2e-2)  # reused (float16) = recomputed

    again.save(run_dir / EMBEDDINGS)
    assert load_embeddings(run_dir / EMBEDDINGS, "run").labels == again.labels
    (run_dir / EMBEDDINGS).write_bytes((run_dir / EMBEDDINGS).read_bytes()[:200])
    with pytest.raises(EmbeddingError, match="corrupt"):
        run_embeddings(run)
    (run_dir / EMBEDDINGS).unlink()
    with pytest.raises(EmbeddingError, match="train.embed"):
        run_embeddings(run)


def test_embeddings_of_another_class_list_or_data_with_other_classes_are_refused(tiny_runs, kaggle_data, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_runs / "custom_cnn", run_dir)
    found = run_embeddings(open_run(run_dir))
    ids = found.label_ids
    found.classes = ["a", "b", "c"]
    found.labels = [found.classes[i] for i in ids]  # a file of another class list names its labels in its classes
    found.save(run_dir / EMBEDDINGS)
    with pytest.raises(EmbeddingError, match="another model or class list"):
        run_embeddings(open_run(run_dir))
    two_classes = scan(kaggle_data, classes=CLASSES[:2], progress=False)
    with pytest.raises(EmbeddingError, match="classes differ"):
        embed_data(load_run(tiny_runs / "custom_cnn"), two_classes, None)


def test_exact_search_finds_the_nearest_by_cosine_and_ivf_agrees_on_clustered_data():
    vectors, _ = clustered(n_per=200, clusters=10, dim=24)
    index = VectorIndex.build(vectors)
    assert index.kind == "exact"
    query = vectors[17] * 3.0  # the same direction, another length: cosine similarity 1
    similarities, rows = index.search(query, 3)
    assert rows[0, 0] == 17 and similarities[0, 0] == pytest.approx(1.0, abs=1e-5)
    brute = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) @ (query / np.linalg.norm(query))
    assert list(rows[0]) == list(np.argsort(-brute)[:3])

    approximate = VectorIndex.build(vectors, exact_limit=100, nprobe=8)
    assert approximate.kind == "ivf"
    queries = clustered(n_per=10, clusters=10, dim=24, seed=0, noise=0.35)[0]
    _, truth = index.search(queries, 10)
    _, found = approximate.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
    assert recall >= 0.9


def test_a_stored_index_is_loaded_only_for_the_embeddings_it_was_built_from(tmp_path):
    vectors, labels = clustered(n_per=30, clusters=3)
    found = fake_embeddings(vectors, labels, ["train"] * 60 + ["test"] * 30)
    stored = VectorIndex.build(vectors[:60], np.arange(60), exact_limit=10, nprobe=3)  # an IVF index, kept
    stored.save(tmp_path, found.ident)
    assert training_index(found, tmp_path).kind == "ivf"
    found.ident = "newer"
    assert training_index(found, tmp_path).kind == "exact"  # stale: rebuilt
    (tmp_path / INDEX_FILE).write_bytes(b"broken")
    found.ident = "fake"
    assert training_index(found, tmp_path).kind == "exact"  # unreadable: rebuilt


def test_neighbours_leave_out_the_query_itself_and_vote_by_label():
    vectors = np.array([[1, 0], [0.99, 0.1], [0.98, 0.2], [0, 1], [0.1, 0.99]], np.float32)
    found = fake_embeddings(vectors, [0, 0, 1, 1, 1], ["train"] * 5)
    index = VectorIndex.build(vectors)
    similarities, rows = neighbours_of(index, vectors[:1], 2, exclude=np.array([0]))
    assert list(rows[0]) == [1, 2] and similarities[0, 0] < 1
    np.testing.assert_allclose(vote(rows, found), [[0.5, 0.5]])
    _, rows = neighbours_of(index, vectors[:1], 9, exclude=np.array([0]))  # more than there are: padded
    assert list(rows[0]) == [1, 2, 4, 3, -1, -1, -1, -1, -1]
    np.testing.assert_allclose(vote(rows, found), [[0.25, 0.75]])


def test_the_mixing_weight_is_chosen_on_validation_with_ties_to_the_smaller_weight():
    labels = np.array([0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45]])  # the model gets 1 of 3
    votes = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # the neighbours get all 3
    weight = choose_weight(probs, votes, labels)
    assert weight == pytest.approx(0.2)  # the smallest weight that mends both (0.1 and 0.15 mend one)
    assert (augmented(probs, votes, weight).argmax(1) == labels).all()
    assert choose_weight(probs, probs, labels) == 0.0  # nothing to gain: the model alone


def test_retrieval_report_and_the_embed_command(tiny_runs, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_runs / "custom_cnn", run_dir)
    report = embed_cli.main([str(run_dir), "--quiet", "--index", "always", "--map"])
    out = capsys.readouterr().out
    assert "36 images embedded" in out and "kNN (k=10)" in out
    assert (run_dir / INDEX_FILE).is_file() and (run_dir / MAP_FILE).is_file()
    run = open_run(run_dir)
    again = retrieval_report(run, run_embeddings(run))
    assert again == report and report["test"]["n"] == len(run.predictions("test"))
    assert report["test"]["model"] == pytest.approx(run.card["metrics"]["test"]["accuracy"])
    shutil.rmtree(tmp_path / "missing", ignore_errors=True)
    with pytest.raises(SystemExit, match="data folder .* not found"):
        embed_cli.main([str(run_dir), "--data", str(tmp_path / "missing"), "--quiet"])


def test_reduced_embeddings_keep_their_projection_and_uploads_go_through_it(tmp_path):
    vectors, labels = clustered(n_per=40, clusters=5, dim=64, noise=0.8)
    jitter = 0.05 * np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    vectors[1], vectors[3] = 1.02 * vectors[0] + jitter[0], 0.97 * vectors[2] + jitter[1]  # two near-copies
    splits = np.where(np.arange(len(labels)) % 5 == 0, "val", "train")
    full = fake_embeddings(vectors, labels, splits)
    lossless, small = reduce(full, 64), reduce(full, 3)
    assert lossless.vectors.shape == (200, 64) and small.vectors.shape == (200, 3)
    # all 64 directions are a rotation of the unit vectors: every neighbour list stays the same
    lossless_effect = reduction_effect(full, lossless)
    assert lossless_effect["top_k_overlap"] == pytest.approx(1.0)
    assert lossless_effect["knn_full"] == lossless_effect["knn_reduced"] > 0.9
    cut = reduction_effect(full, small)
    assert cut["top_k_overlap"] < 0.9 and cut["pictures"] == 40 and cut["dims"] == "64 → 3"
    assert lossless_effect["near_duplicates_full"] == lossless_effect["near_duplicates_both"] \
        == lossless_effect["near_duplicates_reduced"] == 2
    assert cut["near_duplicates_both"] == 2 and cut["near_duplicates_reduced"] > 2  # 3-d cosines crowd together
    with pytest.raises(EmbeddingError, match="choose 2 to 63"):
        reduce(full, 65)
    with pytest.raises(EmbeddingError, match="160 training pictures cannot fit 161"):
        reduce(fake_embeddings(np.tile(vectors, (1, 3)), labels, splits), 161)

    small.save(tmp_path / EMBEDDINGS)
    loaded = load_embeddings(tmp_path / EMBEDDINGS, "fake")
    np.testing.assert_allclose(loaded.reduction.components, small.reduction.components)
    np.testing.assert_allclose(small.reduction.components @ small.reduction.components.T, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(loaded.vectors, small.vectors, atol=2e-3)  # float16 storage
    # an upload's raw head input (here: a training picture's own, scaled) lands on its stored reduced vector
    row = int(loaded.rows("train")[7])
    np.testing.assert_allclose(loaded.query(3.5 * vectors[row])[0], loaded.vectors[row], atol=2e-3)
    index = training_index(loaded)
    answer = neighbour_answer(index, loaded, 3.5 * vectors[row], loaded.probs[row], weight=0.0, k=3)
    assert answer.rows[0] == row and answer.similarities[0] == pytest.approx(1.0, abs=1e-3)
    # unreduced embeddings take an upload's vector as it is
    assert np.array_equal(full.query(vectors[:1]), vectors[:1])


def test_pictures_added_to_reduced_embeddings_are_projected_like_the_rest(tiny_runs, kaggle_data, copy_of, tmp_path):
    run = open_run(tiny_runs / "custom_cnn")
    index = scan(kaggle_data, classes=run.classes, progress=False)
    full = embed_data(load_run(run), index, run.manifest())
    small = reduce(full, 5)
    data = copy_of(kaggle_data)
    synthetic_image(2, seed=999).save(data / "train" / "Image_1.jpg", quality=95)  # new bytes: embedded anew
    changed = scan(data, classes=run.classes, progress=False)
    calls = []
    again = embed_data(load_run(run), changed, run.manifest(), small, on_batch=lambda done, total: calls.append(total))
    assert calls == [1] and again.reduction is small.reduction and again.vectors.shape[1] == 5
    new_full = embed_data(load_run(run), changed, run.manifest())
    row = again.row_of["train/Image_1.jpg"]
    np.testing.assert_allclose(again.vectors[row], small.reduction.apply(new_full.vectors[row])[0], atol=1e-4)
    kept = again.row_of["train/Image_3.jpg"]
    np.testing.assert_allclose(again.vectors[kept], small.vectors[small.row_of["train/Image_3.jpg"]], atol=1e-6)


def test_the_embed_command_stores_reduced_embeddings_and_says_what_search_lost(tiny_runs, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_runs / "custom_cnn", run_dir)
    report = embed_cli.main([str(run_dir), "--quiet", "--reduce", "4"])
    out = capsys.readouterr().out
    assert "(4-d (reduced from 512))" in out and "512 → 4 dimensions" in out and "overlap the full vectors'" in out
    assert "with the full vectors: test kNN" in out
    stored = run_embeddings(open_run(run_dir))
    assert stored.vectors.shape[1] == 4 and stored.reduction.components.shape == (4, 512)
    assert json.loads((run_dir / RETRIEVAL).read_text())["reduction"] == report["reduction"]
    assert report["reduction"]["dims"] == "512 → 4" and report["reduction"]["retrieval_full"]["test"]["n"] > 0
    embed_cli.main([str(run_dir), "--quiet"])  # embedded again without --reduce: the same space, the cost kept
    assert run_embeddings(open_run(run_dir)).vectors.shape[1] == 4
    assert json.loads((run_dir / RETRIEVAL).read_text())["reduction"] == report["reduction"]
    with pytest.raises(SystemExit):
        embed_cli.main([str(run_dir), "--quiet", "--reduce", "1"])


def test_a_data_folder_missing_images_is_embedded_without_them(tiny_runs, kaggle_data, copy_of, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_runs / "custom_cnn", run_dir)
    data = copy_of(kaggle_data)
    (data / "train" / "Image_3.jpg").unlink()
    embed_cli.main([str(run_dir), "--data", str(data), "--quiet"])
    assert "1 image(s) of custom_cnn's split are missing" in capsys.readouterr().err
    found = run_embeddings(open_run(run_dir))
    assert "train/Image_3.jpg" not in found.row_of and len(found) == 35


def test_the_map_keeps_clusters_apart_and_is_computed_once(tmp_path, monkeypatch):
    vectors, labels = clustered(n_per=30, clusters=3, dim=40, noise=0.2)
    found = fake_embeddings(vectors, labels, ["train"] * 90)
    table = embedding_map(found, tmp_path)
    xy = table[["x", "y"]].to_numpy()
    centres = np.array([xy[labels == c].mean(0) for c in range(3)])
    within = max(np.linalg.norm(xy[labels == c] - centres[c], axis=1).mean() for c in range(3))
    between = min(np.linalg.norm(centres[a] - centres[b]) for a in range(3) for b in range(a + 1, 3))
    assert between > 3 * within
    monkeypatch.setattr("har_core.retrieval.projection.project", lambda *a, **k: pytest.fail("recomputed"))
    np.testing.assert_allclose(embedding_map(found, tmp_path)[["x", "y"]].to_numpy(), xy)
    assert project(vectors[:2]).shape == (2, 2)  # too few for UMAP: a line
    same = fake_embeddings(np.zeros((20, 8)), labels[:20], ["train"] * 20)
    assert same.collapsed and not found.collapsed
    np.testing.assert_allclose(project(same.vectors)[:, 0], np.arange(20))  # a collapsed model: a line, no UMAP


def change_weights(run_dir):
    """Retrain stand-in: scale the run's first conv kernels and save the weights again."""
    from har_core.models import artifacts
    model = load_run(run_dir).model
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        conv.weight.mul_(-3.0)
    artifacts.save_weights(run_dir / artifacts.WEIGHTS, model)


def test_embeddings_made_by_other_weights_are_recomputed_everywhere(tiny_runs, tmp_path, capsys):
    """Finding 1 of the second trust review: vectors were reused when only the architecture and classes matched."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_runs / "custom_cnn", run_dir)
    embed_cli.main([str(run_dir), "--quiet", "--map"])
    before = run_embeddings(open_run(run_dir))
    capsys.readouterr()
    change_weights(run_dir)
    with pytest.raises(EmbeddingError, match="other weights"):
        run_embeddings(open_run(run_dir))
    embed_cli.main([str(run_dir), "--quiet", "--map"])
    assert "other weights" in capsys.readouterr().out  # the command says why it embeds everything anew
    after = run_embeddings(open_run(run_dir))
    run = open_run(run_dir)
    fresh = embed_data(load_run(run), scan(run.data_root(), classes=after.classes, progress=False), run.manifest())
    assert after.ident != before.ident and after.weights == run.weights_sha256() != before.weights
    assert not np.allclose(after.vectors, before.vectors, atol=1e-2)
    np.testing.assert_allclose(after.vectors, fresh.vectors, atol=2e-2)
    assert json.loads((run_dir / RETRIEVAL).read_text())["embeddings"] == after.ident  # the report follows
    with safetensors.safe_open(str(run_dir / MAP_FILE), framework="numpy") as handle:
        assert handle.metadata()["embeddings"] == after.ident  # and so does the map


def test_the_audit_folder_does_not_lend_another_networks_vectors(tiny_runs, kaggle_data, tmp_path, capsys):
    from train import audit as audit_cli
    first, second = tmp_path / "first", tmp_path / "second"
    shutil.copytree(tiny_runs / "custom_cnn", first)
    shutil.copytree(tiny_runs / "custom_cnn", second)
    change_weights(second)  # same architecture and classes, other weights
    out = tmp_path / "audit"
    audit_cli.main([str(kaggle_data), "--run", str(first), "--out", str(out), "--quiet"])
    capsys.readouterr()
    audit_cli.main([str(kaggle_data), "--run", str(second), "--out", str(out), "--quiet"])
    assert "other weights" in capsys.readouterr().out
    stored = load_embeddings(out / EMBEDDINGS, "second")
    fresh = embed_data(load_run(second), scan(kaggle_data, classes=stored.classes, progress=False),
                       open_run(second).manifest())
    np.testing.assert_allclose(stored.vectors, fresh.vectors, atol=2e-2)


def test_the_audit_embeds_anew_at_full_size_where_the_run_ships_reduced_vectors(tiny_runs, kaggle_data, tmp_path,
                                                                                 capsys):
    from train import audit as audit_cli
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_runs / "custom_cnn", run_dir)
    embed_cli.main([str(run_dir), "--quiet", "--reduce", "4"])
    capsys.readouterr()
    audit_cli.main([str(kaggle_data), "--run", str(run_dir), "--out", str(tmp_path / "audit"), "--quiet"])
    assert "stored reduced" in capsys.readouterr().out
    audited = load_embeddings(tmp_path / "audit" / EMBEDDINGS, "run")
    assert audited.reduction is None and audited.vectors.shape[1] == 512


def test_embedding_a_folder_without_the_runs_training_pictures_says_so_in_one_line(tiny_runs, tmp_path):
    from conftest import write_kaggle_dataset
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_runs / "custom_cnn", run_dir)
    other = write_kaggle_dataset(tmp_path / "other", per_class=4, extras=False)
    for picture in (other / "train").iterdir():  # other names: none of the run's pictures
        picture.rename(picture.with_name("x" + picture.name))
    csv = other / "Training_set.csv"
    csv.write_text(csv.read_text().replace("Image_", "xImage_"))
    with pytest.raises(SystemExit, match="holds none of custom_cnn's .* training pictures"):
        embed_cli.main([str(run_dir), "--data", str(other), "--quiet"])


class StubRun:
    """What retrieval_report reads of a run: its folder (no stored index there), stored predictions and manifest."""

    def __init__(self, path, frames, manifest=None):
        self.path, self.frames, self._manifest = path, frames, manifest

    def predictions(self, split):
        return self.frames.get(split)

    def manifest(self):
        return self._manifest


def test_retrieval_report_matches_a_brute_force_knn_searches_only_training_rows_and_takes_its_weight_from_val(
        tmp_path):
    import pandas as pd
    vectors, labels = clustered(n_per=30, clusters=3, dim=8, seed=3, noise=0.9)
    rng = np.random.default_rng(0)
    splits = rng.choice(["train", "val", "test"], size=len(labels), p=[0.6, 0.2, 0.2])
    found = fake_embeddings(vectors, labels, splits)
    index = training_index(found)
    assert sorted(index.rows.tolist()) == found.rows("train").tolist()
    _, rows = index.search(vectors[found.rows("val", "test")], 10)
    assert set(np.asarray(splits)[rows.ravel()]) == {"train"}  # neighbours are training pictures only
    classes = found.classes
    # the model: right on val only when confident; on test always right. A vote helps val, so a weight > 0
    # wins on val whatever test would prefer
    frames = {}
    for split in ("val", "test"):
        part = found.rows(split)
        probs = np.full((len(part), 3), 0.2)
        wrong = (labels[part] + 1) % 3
        probs[np.arange(len(part)), labels[part] if split == "test" else wrong] = 0.6
        frames[split] = pd.DataFrame({"filename": [found.files[r] for r in part], "true": [classes[l] for l in labels[part]],
                                      "predicted": "", "confidence": 0.6,
                                      **{f"prob_{c}": probs[:, i] for i, c in enumerate(classes)}})
    report = retrieval_report(StubRun(tmp_path, frames), found, k=10)
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    train = found.rows("train")
    for split in ("val", "test"):
        part = found.rows(split)
        nearest = train[np.argsort(-(normed[part] @ normed[train].T), axis=1)[:, :10]]
        by_hand = [np.bincount(labels[n], minlength=3).argmax() for n in nearest]  # ties: the lower class, as argmax
        assert report[split]["knn"] == pytest.approx(float(np.mean(np.array(by_hand) == labels[part])))
    assert report["val"]["model"] == 0.0 and report["test"]["model"] == 1.0
    val_probs = frames["val"][[f"prob_{c}" for c in classes]].to_numpy()
    _, val_rows = neighbours_of(index, vectors[found.rows("val")], 10)
    assert report["weight"] == choose_weight(val_probs, vote(val_rows, found), labels[found.rows("val")]) > 0


def test_the_retrieval_weight_is_chosen_on_the_calibration_half_of_val_only(tmp_path):
    """#39.4: the mixing weight was chosen on all of val, half of which chose the checkpoint. The calibration half
    here gains from the vote (the model is wrong, its neighbours right); the other half loses (the model right,
    its neighbours from another class): all of val would choose 0, the calibration half chooses more."""
    import pandas as pd
    rng = np.random.default_rng(1)
    centres = np.eye(3, 8, dtype=np.float32) * 5
    train_labels = np.repeat(np.arange(3), 20)
    cal_labels, choice_labels = np.arange(12) % 3, np.arange(30) % 3
    vectors = np.concatenate([centres[train_labels], centres[cal_labels], centres[(choice_labels + 1) % 3]])
    vectors = vectors + 0.1 * rng.standard_normal(vectors.shape).astype(np.float32)
    labels = np.concatenate([train_labels, cal_labels, choice_labels])
    found = fake_embeddings(vectors, labels, ["train"] * 60 + ["val"] * 42)
    classes, val_rows = found.classes, found.rows("val")
    answers = np.concatenate([(cal_labels + 1) % 3, choice_labels])  # wrong on the calibration half, right after
    probs = np.full((42, 3), 0.2)
    probs[np.arange(42), answers] = 0.6
    frame = pd.DataFrame({"filename": [found.files[r] for r in val_rows], "true": [classes[l] for l in labels[val_rows]],
                          "predicted": "", "confidence": 0.6, **{f"prob_{c}": probs[:, i] for i, c in enumerate(classes)}})
    manifest = pd.DataFrame({"filename": found.files, "label": found.labels, "split": found.splits,
                             "calibrate": [""] * 60 + ["1"] * 12 + [""] * 30})
    run = StubRun(tmp_path, {"val": frame}, manifest)
    report = retrieval_report(run, found, k=10)
    assert report["weight"] > 0 and report["weight_chosen_on"] == {"part": "calibration half of val", "pictures": 12}
    assert report["val"]["n"] == 42  # the figures still cover all of val
    everything = retrieval_report(StubRun(tmp_path, {"val": frame}, manifest.drop(columns="calibrate")), found, k=10)
    assert everything["weight"] == 0 and everything["weight_chosen_on"] == {"part": "all of val", "pictures": 42}

"""Visitors' forwards batched per model (har_core.models.batching): each visitor gets the answer its pictures get alone,
a broken request fails only its own visitor, slow explanations never hold the quick queue, no thread is left."""
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, synthetic_image
from har_core.models import batching
from har_core.explain import cam
from har_core.models.batching import ModelQueue
from har_core.models.inference import load_run, predict_all

RUNS = ROOT / "assets" / "runs"
WAIT_S = 120  # only so that a broken queue fails the test instead of hanging it


def batch_threads():
    return [thread for thread in threading.enumerate() if thread.name.startswith("har-batch-")]


@pytest.fixture(scope="module")
def two_runs():
    """Two bundled runs of different architectures and input sizes (custom CNN 128 px, MobileNetV2)."""
    return [load_run(RUNS / name, backend="pytorch") for name in ("custom_cnn", "mobilenet_v2")]


@pytest.fixture(autouse=True)
def no_queue_left():
    yield
    batching.close_all()
    assert batch_threads() == []


def pictures(count: int, seed: int) -> list[Image.Image]:
    """Pictures of different sizes and shapes (each model resizes and crops them its own way)."""
    rng = np.random.default_rng(seed)
    sizes = [(40, 40), (300, 200), (97, 411), (128, 128), (640, 480), (33, 250)]
    found = []
    for i in range(count):
        width, height = sizes[i % len(sizes)]
        base = synthetic_image(i % 3, seed + i, size=max(width, height)).resize((width, height))
        noise = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        found.append(Image.fromarray(np.asarray(base, dtype=np.uint8) // 2 + noise))
    return found


def at_once(calls: list) -> list:
    """Run every call in its own thread, all released together; each one's result or the exception it raised."""
    results, start = [None] * len(calls), threading.Barrier(len(calls))

    def run(i):
        start.wait()
        try:
            results[i] = calls[i]()
        except Exception as error:  # noqa: BLE001 - compared by the test
            results[i] = error
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in threads), "a visitor still waits for its answer"
    return results


def test_visitors_of_two_runs_at_once_get_the_answers_their_pictures_get_alone(two_runs):
    # each visitor: (model, pictures, tta); one carries two pictures, TTA and not in the same queue
    visitors = [(loaded, pictures(2 if i == 1 else 1, seed=10 * i + m), i % 3 == 0)
                for m, loaded in enumerate(two_runs) for i in range(6)]
    for loaded in two_runs:  # every request of a model arrives before its first forward: batched for certain
        queue = batching.queue_of(loaded)
        queue.window_s, queue.max_images = WAIT_S, sum(len(p) for m, p, _ in visitors if m is loaded)
    answers = at_once([lambda m=m, p=p, t=t: predict_all([m], p, tta=t, embed=True, shared=True)[0]
                       for m, p, t in visitors])
    for (loaded, images, tta), answer in zip(visitors, answers):
        assert not isinstance(answer, Exception), answer
        alone = loaded.predict(images, tta)  # the model's own forward of these pictures, nobody else's
        np.testing.assert_allclose(answer.probs, alone, atol=1e-5)
        assert (answer.probs.argmax(1) == alone.argmax(1)).all()
        _, vectors = loaded.forward(loaded.preprocess(images), tta, embed=True)
        np.testing.assert_allclose(answer.embeddings, vectors, rtol=1e-4, atol=1e-5)
    for loaded in two_runs:  # six requests (seven pictures) per model: one forward per TTA mode
        queue = batching.queue_of(loaded)
        assert (queue.forwards, queue.requests) == (2, 6)


def test_a_broken_request_fails_only_its_own_visitor(two_runs):
    loaded = two_runs[0]
    images = pictures(4, seed=3)
    good = [loaded.preprocess([image]) for image in images]
    size = loaded.run.card["input_size"]
    broken = torch.zeros(1, 4, size, size)  # four channels: breaks the joined batch, and fails alone too
    queue = ModelQueue(loaded.forward, name="broken", window_s=WAIT_S, max_images=5)
    try:
        answers = at_once([lambda b=b: queue.submit(b) for b in good[:2] + [broken] + good[2:]])
    finally:
        queue.close()
    assert isinstance(answers[2], RuntimeError)
    for batch, image, answer in zip(good, images, answers[:2] + answers[3:]):
        assert not isinstance(answer, Exception), answer
        np.testing.assert_allclose(answer[0], loaded.predict([image]), atol=1e-5)
    assert queue.requests == 4  # the four good ones answered (the broken one never got an answer)


def test_a_slow_explanation_never_holds_the_quick_answers(two_runs):
    """An occlusion map is stopped inside one of its forwards until a quick prediction of the same model,
    through the shared queue, has its answer: the answer cannot wait for the slow method."""
    loaded = two_runs[0]
    slow_picture, quick_picture = pictures(2, seed=5)
    inside, release, slow = threading.Event(), threading.Event(), {}

    def hold(module, args, output):
        if threading.current_thread().name == "slow" and not release.is_set():
            inside.set()
            release.wait(WAIT_S)
    handle = loaded.model.register_forward_hook(hold)
    try:
        thread = threading.Thread(target=lambda: slow.update(maps=cam.class_maps(loaded, slow_picture, cam.OCCLUSION)),
                                  name="slow")
        thread.start()
        assert inside.wait(WAIT_S)
        quick = predict_all([loaded], [quick_picture], shared=True)[0]
        held = "maps" not in slow  # the occlusion had not finished when the quick answer came
        release.set()
        thread.join(WAIT_S)
    finally:
        release.set()
        handle.remove()
    assert held and "maps" in slow
    np.testing.assert_allclose(quick.probs, loaded.predict([quick_picture]), atol=1e-5)


def test_an_idle_worker_ends_by_itself(two_runs):
    loaded = two_runs[0]
    queue = ModelQueue(loaded.forward, name="idle", idle_s=0.0)
    image = pictures(1, seed=7)[0]
    try:
        probs, _ = queue.submit(loaded.preprocess([image]))
        for thread in batch_threads():
            thread.join(WAIT_S)
        assert batch_threads() == []
        again, _ = queue.submit(loaded.preprocess([image]))  # the next request starts another worker
    finally:
        queue.close()
    np.testing.assert_allclose(probs, loaded.predict([image]), atol=1e-5)
    np.testing.assert_allclose(again, loaded.predict([image]), atol=1e-5)


def test_through_an_int8_export_the_room_gets_the_answers_each_picture_gets_alone(tiny_runs, copy_of, kaggle_data):
    """The app's default (auto) answers a run through its int8 export once it has one: batched visitors there too
    get what their pictures get alone (static quantization: a picture's answer does not depend on its batch)."""
    from har_core.models.backend import AUTO
    from har_core.models.export import export_run
    run = copy_of(tiny_runs / "custom_cnn")
    export_run(run, quantize="int8", data=kaggle_data, on_step=lambda line: None)
    loaded = load_run(run, backend=AUTO)
    assert loaded.backend == "onnxruntime-int8"
    visitors = [(pictures(2 if i == 1 else 1, seed=50 + i), i % 3 == 0) for i in range(6)]
    queue = batching.queue_of(loaded)
    queue.window_s, queue.max_images = WAIT_S, sum(len(p) for p, _ in visitors)
    answers = at_once([lambda p=p, t=t: predict_all([loaded], p, tta=t, embed=True, shared=True)[0]
                       for p, t in visitors])
    for (images, tta), answer in zip(visitors, answers):
        assert not isinstance(answer, Exception), answer
        alone = loaded.predict(images, tta)  # the int8 model's own forward of these pictures
        np.testing.assert_allclose(answer.probs, alone, atol=1e-5)
        assert answer.backend == "onnxruntime-int8"
    assert (queue.forwards, queue.requests) == (2, 6)
    queue.close()  # its worker joined while the model lives: freed at return, the queue would end without a join

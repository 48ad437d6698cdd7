"""trainer.predict and trainer.evaluate_run on a real tiny run: they give back what the run itself wrote
(submission.csv scores, the final and best models' mAPs), read every kind of image, and refuse clearly."""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from PIL import Image

from cli_in_process import run_module
from models import create_model, list_models
from shards.classes import VOC, VOC_CLASSES
from shards.reader import decode_rgb
from train_helpers import TINY, run, single
from trainer.tools import evaluate_run, predict
from trainer.recipe.network import build_model
from trainer.tools.run_model import PRETRAINED_SUFFIX, architecture
from trainer.config import TrainConfig


@pytest.fixture(scope="module")
def trained(shards_dir, tmp_path_factory) -> Path:
    """A finished 3-epoch one-process run (final = epoch 3, best/ = the best-val epoch)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    run(single(["--shards", str(shards_dir), "--out", str(out), "--epochs", "3", *TINY]))
    return out


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    # The commands build an Accelerator in this process: Accelerate's singleton must not leak across tests.
    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


@contextmanager
def one_thread():
    """The run trained with OMP_NUM_THREADS=1 (train_helpers.env): the same float sums, bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def call(main, args: list, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def refused(main, args: list, capsys) -> str:
    """The one error line of a refusal (exit 2, nothing like a crash)."""
    code, out, err = call(main, args, capsys)
    assert code == 2 and "Traceback" not in out + err, out + err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def stored_jpegs(shards_dir: Path, folder: Path) -> dict[str, bytes]:
    """The test split's JPEGs exactly as packed (the bytes the run decoded), written to folder/ID.jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    for tar_path in sorted(shards_dir.glob("test-*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".jpg"):
                    found[member.name.removesuffix(".jpg")] = tar.extractfile(member).read()
    for image_id, data in found.items():
        (folder / f"{image_id}.jpg").write_bytes(data)
    return found


def read_csv(path: Path) -> dict[str, np.ndarray]:
    rows = list(csv.reader(path.open()))
    assert rows[0][0] == "id" and len(rows[0]) == 21
    return {row[0]: np.array(row[1:], dtype=np.float64) for row in rows[1:]}


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.slow
def test_predict_gives_stored_test_images_the_scores_of_the_runs_submission(trained, shards_dir, tmp_path, capsys,
                                                                            monkeypatch):
    ids = sorted(stored_jpegs(shards_dir, tmp_path / "images"))
    monkeypatch.chdir(tmp_path)  # relative paths, read where the user is
    code, stdout, stderr = run_module("trainer.predict", ["--run", trained, "images", "--weights", "final", "--top",
                                                          "3", "--batch-size", "4", "--out", "scores.csv", "--cpu"],
                                      capsys)
    assert code == 0, stdout + stderr
    assert "weights final (epoch 3 of 3)" in stdout  # which weights, said before the scores
    assert f"{len(ids)} images scored, 0 unreadable" in stdout
    ours, runs = read_csv(tmp_path / "scores.csv"), read_csv(trained / "submission.csv")  # the run wrote it with final
    assert list(ours) == ids == list(runs)
    assert max(np.abs(ours[i] - runs[i]).max() for i in ids) < 1e-5
    # the table: each image's most probable class on the image's own line
    lines = stdout.splitlines()
    for image_id in ids[:5]:
        line = next(line for line in lines if f"images/{image_id}.jpg" in line)
        assert f" {VOC_CLASSES[int(np.argmax(runs[image_id]))]} " in line


@pytest.mark.slow
def test_tta_flip_gives_the_same_scores_through_predict_and_evaluate_run(trained, shards_dir, tmp_path, capsys):
    ids = sorted(stored_jpegs(shards_dir, tmp_path / "images"))
    code, stdout, stderr = run_module("trainer.predict", ["--run", trained, tmp_path / "images", "--weights", "final",
                                                          "--out", tmp_path / "flip.csv", "--tta", "flip", "--cpu"],
                                      capsys)
    assert code == 0 and "--tta flip" in stdout, stdout + stderr
    code, stdout, stderr = run_module("trainer.evaluate_run", ["--run", trained, "--weights", "final", "--tta", "flip",
                                                               "--out", tmp_path / "eval", "--cpu"], capsys)
    assert code == 0 and "tta flip" in stdout, stdout + stderr
    predicted, evaluated = read_csv(tmp_path / "flip.csv"), read_csv(tmp_path / "eval" / "submission.csv")
    assert list(predicted) == ids == list(evaluated)
    assert max(np.abs(predicted[i] - evaluated[i]).max() for i in ids) < 1e-5
    block = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert block["tta"] == "flip" and set(block["thresholded"]) == {"CP", "CR", "CF1", "OP", "OR", "OF1"}


@pytest.mark.slow
def test_predict_reads_every_kind_of_image_and_names_the_unreadable(trained, shards_dir, tmp_path, capsys):
    stored = stored_jpegs(shards_dir, tmp_path / "stored")
    image_id, data = sorted(stored.items())[0]
    rgb = Image.fromarray(decode_rgb(data).permute(1, 2, 0).numpy())  # the pixels the trainer decoded
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    files = {"original.jpg": data, "lossless.png": encoded(rgb, "PNG"),
             "alpha.PNG": encoded(Image.merge("RGBA", (*rgb.split(), rgb.convert("L"))), "PNG"),
             "gray_png.png": encoded(rgb.convert("L"), "PNG"), "palette.png": encoded(rgb.convert("P"), "PNG"),
             "gray_jpeg.jpg": encoded(rgb.convert("L"), "JPEG"), "cmyk.JPEG": encoded(rgb.convert("CMYK"), "JPEG"),
             "sub/nested.jpeg": encoded(rgb, "JPEG"), "png_named.jpg": encoded(rgb, "PNG"),
             "broken.jpg": np.random.default_rng(0).bytes(3000), "truncated.jpg": data[: len(data) // 2],
             "notes.txt": b"not an image, and not looked at"}
    for name, content in files.items():
        (photos / name).write_bytes(content)

    code, out, err = call(predict.main, ["--run", trained, photos, "--weights", "final", "--top", "20",
                                         "--out", tmp_path / "scores.csv", "--cpu"], capsys)
    assert code == 0, out + err
    assert (f"9 images scored, 2 unreadable: {photos / 'broken.jpg'} (not an image: neither JPEG nor PNG nor another "
            f"format PIL reads); {photos / 'truncated.jpg'} (does not decode: ") in out
    assert "notes.txt" not in out
    scores = read_csv(tmp_path / "scores.csv")
    assert list(scores) == ["alpha", "cmyk", "gray_jpeg", "gray_png", "lossless", "nested", "original", "palette",
                            "png_named"]
    # the same pixels give the same scores, whatever the file: PNG is lossless and alpha is dropped
    np.testing.assert_array_equal(scores["lossless"], scores["original"])
    np.testing.assert_array_equal(scores["alpha"], scores["original"])
    np.testing.assert_array_equal(scores["png_named"], scores["original"])
    with open(trained / "submission.csv") as fh:  # and the ones the run has for this test image
        row = next(r for r in csv.reader(fh) if r[0] == image_id)
    assert np.abs(scores["original"] - np.array(row[1:], dtype=np.float64)).max() < 1e-5


@pytest.mark.slow
def test_predict_refuses_with_one_line(trained, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no image here")
    (tmp_path / "a" / "x.jpg").write_bytes(encoded(Image.new("RGB", (40, 30), "red"), "JPEG"))
    (tmp_path / "b" / "x.png").write_bytes(encoded(Image.new("RGB", (40, 30), "blue"), "PNG"))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    base = ["--run", trained, "--cpu"]
    assert "nowhere.jpg: no such file or folder" in refused(predict.main, [*base, tmp_path / "nowhere.jpg"], capsys)
    assert "no .jpg, .jpeg, .png files in this folder" in refused(predict.main, [*base, tmp_path / "empty"], capsys)
    err = refused(predict.main, [*base, tmp_path / "a", tmp_path / "b", "--out", tmp_path / "s.csv"], capsys)
    assert f"{tmp_path / 'a' / 'x.jpg'} and {tmp_path / 'b' / 'x.png'} would both have the id 'x'" in err
    assert not (tmp_path / "s.csv").exists()
    err = refused(predict.main, [*base, tmp_path / "bad.jpg"], capsys)
    assert f"none of the images could be scored: 0 images scored, 1 unreadable: {tmp_path / 'bad.jpg'}" in err
    assert "--top 21: must be between 1 and 20" in refused(predict.main, [*base, tmp_path / "a", "--top", "21"], capsys)
    assert "has no config.yaml" in refused(predict.main, ["--run", tmp_path, tmp_path / "a"], capsys)
    err = refused(predict.main, [*base, tmp_path / "a", "--weights", tmp_path / "nope"], capsys)
    assert "--weights" in err and "not best, final or a checkpoint directory" in err


@pytest.mark.slow
def test_evaluate_run_final_on_test_reproduces_the_runs_final_test(trained, tmp_path, capsys):
    with one_thread():  # `python -m trainer.evaluate_run` in this process, with the run's float sums
        code, stdout, stderr = run_module("trainer.evaluate_run", ["--run", trained, "--weights", "final", "--cpu"],
                                          capsys)
    assert code == 0, stdout + stderr
    assert "mAP" in stdout and "17 images" in stdout  # the AP table and the count
    out, summary = trained / "eval-final-test", json.loads((trained / "summary.json").read_text())
    block = json.loads((out / "summary.json").read_text())
    final = summary["final_model"]
    assert (block["map"], block["map_voc07"], block["missing_classes"]) == \
        (final["test_map"], final["test_map_voc07"], final["missing_classes"])
    assert block["loss"] == pytest.approx(final["test_loss"], rel=1e-6)
    assert (block["weights"], block["epoch"], block["split"], block["images"]) == ("final", 3, "test", 17)
    assert (block["thresholded"], block["top3"], block["tta"]) == \
        (final["test_thresholded"], final["test_top3"], "none")  # the run's own tta: none
    # the run wrote its files from the final model (--test-with final): the same bytes
    assert (out / "submission.csv").read_bytes() == (trained / "submission.csv").read_bytes()
    assert (out / "per_class_ap.csv").read_bytes() == (trained / "per_class_ap.csv").read_bytes()


@pytest.mark.slow
def test_evaluate_run_best_and_a_checkpoint_directory(trained, tmp_path, capsys):
    summary = json.loads((trained / "summary.json").read_text())
    best_state = json.loads((trained / "best" / "trainer_state.json").read_text())
    with one_thread():
        code, out, err = call(evaluate_run.main, ["--run", trained, "--split", "val", "--out", tmp_path / "v",
                                                  "--cpu"], capsys)  # default weights: best
        assert code == 0, out + err
        val = json.loads((tmp_path / "v" / "summary.json").read_text())
        assert (val["weights"], val["epoch"], val["map"]) == ("best", summary["best_val_epoch"], best_state["val_map"])
        assert not (tmp_path / "v" / "submission.csv").exists()  # val: no submission

        assert call(evaluate_run.main, ["--run", trained, "--weights", "best", "--out", tmp_path / "t", "--cpu"],
                    capsys)[0] == 0
        # best_model is null when the best epoch is the final one (then it is the final model's result)
        expected = (summary["best_model"] or summary["final_model"])["test_map"]
        assert json.loads((tmp_path / "t" / "summary.json").read_text())["map"] == expected

        code, out, _ = call(evaluate_run.main, ["--run", trained, "--weights", trained / "checkpoints" / "epoch_0003",
                                                "--out", tmp_path / "c", "--cpu"], capsys)
        block = json.loads((tmp_path / "c" / "summary.json").read_text())
        assert code == 0 and (block["weights"], block["epoch"]) == ("epoch_0003", 3)
        assert block["map"] == summary["final_model"]["test_map"] and "weights epoch 3:" in out


@pytest.mark.slow
def test_evaluate_run_refuses_with_one_line(trained, shards_dir, tmp_path, capsys):
    def shards_with(change) -> Path:
        folder = tmp_path / f"shards{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        manifest = json.loads((shards_dir / "manifest.json").read_text())
        change(manifest["splits"])
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return folder

    base = ["--run", trained, "--cpu"]
    assert "has no config.yaml" in refused(evaluate_run.main, ["--run", tmp_path], capsys)
    no_test = shards_with(lambda splits: splits.pop("test"))
    assert "no split 'test' (packed: train, val)" in refused(evaluate_run.main, [*base, "--shards", no_test], capsys)
    hidden = shards_with(lambda splits: splits["test"].update(labeled=False, positives=None))
    err = refused(evaluate_run.main, [*base, "--shards", hidden], capsys)
    assert "packed without annotations" in err and "scoring needs labels" in err and "trainer.predict" in err
    assert "invalid choice: 'train'" in refused(evaluate_run.main, [*base, "--split", "train"], capsys)

    bare = tmp_path / "bare_run"  # a run's config.yaml without its weights
    bare.mkdir()
    shutil.copy(trained / "config.yaml", bare / "config.yaml")
    err = refused(evaluate_run.main, ["--run", bare, "--weights", "final"], capsys)
    assert "--weights final:" in err and "no complete end-of-epoch checkpoint" in err
    assert "best/model.safetensors does not exist" in refused(evaluate_run.main, ["--run", bare, "--weights", "best"],
                                                              capsys)
    moved = tmp_path / "moved_run"  # its shards are no longer where config.yaml says
    moved.mkdir()
    (moved / "config.yaml").write_text((trained / "config.yaml").read_text().replace(str(shards_dir), "/gone/shards"))
    assert "the run's shards /gone/shards (from its config.yaml; --shards DIR" in \
        refused(evaluate_run.main, ["--run", moved], capsys)


@pytest.mark.parametrize("name", [m for m in list_models() if m.endswith(PRETRAINED_SUFFIX)])
def test_a_pretrained_models_weights_fit_its_twin_built_without_the_imagenet_file(name, tmp_path):
    base = name.removesuffix(PRETRAINED_SUFFIX)
    imagenet = tmp_path / "stand_in.pth"  # a stand-in for torchvision's file: the twin's own tensors
    torch.save(create_model(base).state_dict(), imagenet)
    trained_state = create_model(name, weights=str(imagenet)).state_dict()
    cfg = architecture(TrainConfig(model=name, weights="/not/on/this/machine.pth", freeze_features=True,
                                   image_size=64))
    assert (cfg.model, cfg.weights, cfg.freeze_features) == (base, None, False)
    build_model(cfg, VOC).load_state_dict(trained_state)  # strict: every tensor of the run's weights, nothing else


def test_predict_turns_a_photo_with_an_exif_orientation_upright(tmp_path):
    """A phone photo stored sideways with its EXIF tag is scored upright, as packing stores one without XML."""
    upright = np.zeros((40, 60, 3), dtype=np.uint8)
    upright[:10] = 255  # a white band at the top of the upright view
    exif = Image.Exif()
    exif[0x0112] = 6  # "turned 90 degrees": viewers rotate the stored pixels 90 degrees clockwise
    path = tmp_path / "phone.jpg"
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)
    image = predict.decode_image(path)
    assert tuple(image.shape) == (3, 40, 60)  # the upright frame, not the stored 60 x 40
    assert image[:, :10].float().mean() > 200 and image[:, 12:].float().mean() < 50
    plain = tmp_path / "plain.jpg"
    Image.fromarray(upright).save(plain, quality=95)
    assert torch.equal(predict.decode_image(plain), decode_rgb(plain.read_bytes()))  # untagged: as before

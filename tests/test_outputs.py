"""The files a run leaves: submission.csv, per_class_ap.csv, plots, summary.json, AP table."""

import csv
import io
import json

import numpy as np
import pytest
from rich.console import Console

from shards.classes import VOC, VOC_CLASSES
from trainer.evaluation.metrics import average_precisions
from trainer.rundir.outputs import ap_table, write_per_class_ap, write_submission, write_summary
from trainer.rundir.plots import history_figures, plot_history

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_submission_round_trip(tmp_path):
    ids = ["000120", "000001", "000005", "010000"]  # unsorted, with leading zeros
    scores = np.random.default_rng(0).random((4, VOC.num_classes)).astype(np.float32)
    path = write_submission(tmp_path / "submission.csv", ids, scores, VOC_CLASSES)
    header, *rows = _read_csv(path)
    assert header == ["id", *VOC_CLASSES]
    assert [r[0] for r in rows] == ["000001", "000005", "000120", "010000"]
    by_id = {r[0]: np.array(r[1:], dtype=np.float32) for r in rows}
    assert len(by_id) == len(rows) == len(ids)  # every image exactly once
    for i, image_id in enumerate(ids):
        # Bit-exact float32 round trip: AP recomputed from the file equals AP in memory.
        np.testing.assert_array_equal(by_id[image_id], scores[i])


def test_submission_refuses_duplicates_ints_and_non_probabilities(tmp_path):
    scores = np.full((3, VOC.num_classes), 0.5)
    with pytest.raises(ValueError, match=r"more than once.*'000002'"):
        write_submission(tmp_path / "s.csv", ["000001", "000002", "000002"], scores, VOC_CLASSES)
    with pytest.raises(TypeError, match="leading zeros"):
        write_submission(tmp_path / "s.csv", [1, 2, 3], scores, VOC_CLASSES)
    with pytest.raises(ValueError, match="sigmoid"):
        write_submission(tmp_path / "s.csv", ["a", "b", "c"], scores * 3, VOC_CLASSES)
    with pytest.raises(ValueError, match="3 ids"):
        write_submission(tmp_path / "s.csv", ["a", "b", "c"], scores[:, :5], VOC_CLASSES)
    assert not list(tmp_path.iterdir())  # nothing written, not even a temp file


def test_per_class_ap_writes_missing_classes_as_empty(tmp_path):
    rng = np.random.default_rng(1)
    states = rng.choice([-1, 1], size=(40, VOC.num_classes)).astype(np.int8)
    states[:, VOC_CLASSES.index("bus")] = -1
    metrics = average_precisions(states, rng.random((40, VOC.num_classes)), VOC_CLASSES)
    header, *rows = _read_csv(write_per_class_ap(tmp_path / "per_class_ap.csv", metrics))
    # the decision columns come after the AP ones, so readers of the first four keep working
    assert header == ["class", "positives", "ap", "ap_voc07", "precision", "recall", "f1"]
    assert [r[0] for r in rows] == list(VOC_CLASSES)
    bus = rows[VOC_CLASSES.index("bus")]
    assert bus == ["bus", "0", "", "", "", "", ""]  # empty, not 0: 0 would read as a real AP
    car = rows[VOC_CLASSES.index("car")]
    assert int(car[1]) == int(np.sum(states[:, VOC_CLASSES.index("car")] == 1))
    assert float(car[2]) == pytest.approx(metrics["ap"][VOC_CLASSES.index("car")], abs=1e-6)
    assert float(car[3]) == pytest.approx(metrics["ap_voc07"][VOC_CLASSES.index("car")], abs=1e-6)
    for column, key in ((4, "precision"), (5, "recall"), (6, "f1")):
        assert float(car[column]) == pytest.approx(metrics["per_class"][key][VOC_CLASSES.index("car")], abs=1e-6)


def test_ap_table_shows_every_class_missing_ones_and_the_mean():
    states = np.ones((3, VOC.num_classes), dtype=np.int8)
    states[:, VOC_CLASSES.index("sheep")] = -1
    metrics = average_precisions(states, np.full((3, VOC.num_classes), 0.5), VOC_CLASSES)
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(ap_table(metrics))
    text = console.file.getvalue()
    assert all(name in text for name in VOC_CLASSES)
    sheep_line = next(line for line in text.splitlines() if "sheep" in line)
    assert "missing" in sheep_line
    assert "mAP (1 missing, left out)" in text and "1.0000" in text
    # every class is scored 0.5 (>= the threshold), so predicted: right but for sheep, which has no positive
    # (left out of CP, not of OP)
    assert "thresholded (score >= 0.5): CP 1.0000 CR 1.0000 CF1 1.0000 OP 0.9500 OR 1.0000 OF1 0.9744" in text
    # the top 3 are the first three classes (ties to the lower index): 3 of 19 positives per image
    assert f"top-3: CP 0.1579 CR 0.1579 CF1 0.1579 OP 1.0000 OR {3 / 19:.4f}" in text
    assert "P@0.5" in text and "F1@0.5" in text


def test_plot_history_writes_both_pngs(tmp_path):
    # As read back from history.csv: strings, empty cells where not evaluated.
    rows = [
        {"epoch": "1", "train_loss": "0.70", "val_loss": "0.69", "train_map": "0.1", "val_map": "0.1"},
        {"epoch": "2", "train_loss": "0.50", "val_loss": "", "train_map": "", "val_map": ""},
        {"epoch": "3", "train_loss": "0.40", "val_loss": "0.45", "train_map": "0.4", "val_map": "0.3"},
    ]
    loss_png, map_png = plot_history(rows, tmp_path / "run")
    assert (loss_png.name, map_png.name) == ("loss.png", "map.png")
    for png in (loss_png, map_png):
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        assert png.stat().st_size > 5_000  # axes, curves and labels, not an empty canvas
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["loss.png", "map.png"]


def test_plots_say_what_they_show_and_mark_sparse_evaluations():
    # The demo's shape: evaluated at epochs 1, 9 and 18 only, a first val loss ~10x the later ones.
    rows = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": {1: 1.37, 9: 0.15, 18: 0.14}.get(e),
             "train_map": {1: 0.1, 9: 0.4, 18: 0.6}.get(e), "val_map": {1: 0.1, 9: 0.35, 18: 0.5}.get(e)}
            for e in range(1, 19)]
    loss, mean_ap = history_figures(rows, title="demo (vocnet), test mAP 0.5391")
    loss_ax, map_ax = loss.axes[0], mean_ap.axes[0]
    assert loss_ax.get_title() == "Loss: demo (vocnet), test mAP 0.5391" and "test mAP 0.5391" in map_ax.get_title()
    assert loss_ax.get_yscale() == "log", "a linear axis lets the first val loss flatten the curve"
    lines = {line.get_label(): line for line in (*loss_ax.get_lines(), *map_ax.get_lines())}
    assert lines["train"].get_linestyle() == "-" and len(lines["train"].get_xdata()) == 18
    sparse = lines["val (evaluated at 3 of 18 epochs)"]
    assert sparse.get_linestyle() == ":" and sparse.get_marker() == "o" and list(sparse.get_xdata()) == [1, 9, 18]


def test_plot_history_with_only_train_loss(tmp_path):
    # A first epoch without evaluation must still plot, not crash on missing keys.
    loss_png, map_png = plot_history([{"epoch": 1, "train_loss": 0.7, "val_map": None}], tmp_path)
    assert loss_png.read_bytes()[:8] == PNG_SIGNATURE and map_png.read_bytes()[:8] == PNG_SIGNATURE


def test_summary_is_json_with_numpy_values(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")
    write_summary(path, {"model": "final", "test_map": np.float32(0.5), "ap": np.array([0.25, None]),
                         "best_val_epoch": np.int64(3)})
    assert json.loads(path.read_text()) == {"model": "final", "test_map": 0.5, "ap": [0.25, None],
                                            "best_val_epoch": 3}
    with pytest.raises(TypeError, match="object"):
        write_summary(path, {"bad": object()})
    assert json.loads(path.read_text())["model"] == "final"  # failed write kept the old file
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_result_files_are_readable_by_others_and_leave_no_temp_files(tmp_path):
    # Shared run directories on a cluster: mkstemp's 0600 would hide results from the group.
    write_submission(tmp_path / "submission.csv", ["000001"], np.full((1, VOC.num_classes), 0.5, np.float32),
                     VOC_CLASSES)
    write_summary(tmp_path / "summary.json", {"test_map": 0.5})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.csv", "summary.json"]
    for path in tmp_path.iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path

"""The class list as data: what manifest.json and config.yaml record, and the one-line refusals
when a run, its weights or a submission meet shards of another list."""

import json

import pytest

from shards.classes import VOC, VOC_CLASSES, ClassList, ClassListError, class_list
from shards.manifest import MANIFEST_NAME, ManifestError, load_manifest
from trainer.rundir.provenance import run_classes, same_classes

COCOISH = ClassList(("person", "traffic light", "stop sign"))


def test_voc_keeps_the_reports_21_logits_and_writes_no_new_key():
    assert (VOC.num_classes, VOC.num_logits, VOC.first_logit) == (20, 21, 1)
    assert VOC.to_manifest() == {"classes": list(VOC_CLASSES)}  # VOC's manifest.json is byte for byte the old one
    assert class_list({"classes": list(VOC_CLASSES)}) == VOC  # and reads back as the report's layout


def test_another_list_has_one_logit_per_class_and_says_so():
    record = COCOISH.to_manifest()
    assert record == {"classes": ["person", "traffic light", "stop sign"], "background_logit": False}
    assert class_list(record) == COCOISH and (COCOISH.num_logits, COCOISH.first_logit) == (3, 0)
    assert COCOISH.index()["traffic light"] == 1


@pytest.mark.parametrize("names, why", [((), "empty"), (("cat", "cat"), "listed twice"), (("cat", " dog"), "spaces"),
                                        (("cat", ""), "non-empty")])
def test_an_unusable_list_is_refused_saying_why(names, why):
    with pytest.raises(ClassListError, match=why):
        ClassList(names)


def test_the_first_difference_is_named():
    assert COCOISH.difference(ClassList(("person", "traffic light", "stop sign"))) is None
    assert "class 1 is 'traffic light' in one and 'bus' in the other" in COCOISH.difference(
        ClassList(("person", "bus", "stop sign")))
    assert "3 classes against 2" in COCOISH.difference(ClassList(("person", "traffic light")))
    assert "__background__" in VOC.difference(ClassList(VOC_CLASSES))  # same names, another head


def test_a_manifest_with_a_broken_class_list_is_refused_naming_the_file(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"classes": ["a", "a"], "background_logit": False, "splits": {}}))
    with pytest.raises(ManifestError, match=f"{tmp_path / MANIFEST_NAME}.*listed twice"):
        load_manifest(tmp_path)


def test_a_run_records_its_list_and_older_runs_are_voc(shards_dir):
    assert run_classes({"settings": {}}) == VOC  # config.yaml written before the key existed
    assert run_classes({"settings": {}, **COCOISH.to_manifest()}) == COCOISH
    why = same_classes(COCOISH, class_list(load_manifest(shards_dir)), "--run runs/coco", shards_dir)
    assert why.startswith("--run runs/coco is for classes [person, traffic light, stop sign; 3 logits]")
    assert f"the shards in {shards_dir} hold [aeroplane" in why and "logit 0 is __background__" in why
    assert "\n" not in why

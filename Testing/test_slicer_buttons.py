"""Seg2Med module buttons not clicked elsewhere: "Edit in Segment Editor" (a fake Segment Editor module behind
the real ``slicer.util.selectModule``), "Download selected model" (the registry's verified download of a
``file://`` archive: no network) and "Add local bundle folder..." (the folder dialog answered by the test)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("slicer")
from slicerharness import fakes  # noqa: E402
from slicerharness.fixtures import harness, slicer_tag  # noqa: E402,F401
from test_slicer_gui import errors, log_text, make_phantom, open_seg2med  # noqa: E402


def combo_items(combo) -> list[str]:  # noqa: ANN001
    return [combo.itemText(i) for i in range(combo.count)]


# ------------------------------------------------------------------------------------ Segment Editor
def test_edit_opens_the_segment_editor_with_the_segmentation_and_the_input(harness) -> None:
    slicer = harness.slicer
    editor_module = fakes.install_fake_segment_editor(harness)
    widget, ui = open_seg2med(harness)
    p = widget.logic.getParameterNode()
    assert not ui.editSegmentationButton.enabled  # nothing to edit yet
    make_phantom(ui, seed=1)
    phantom = p.segmentation
    ui.editSegmentationButton.click()
    assert not errors(harness), harness.dialogs
    selector = slicer.app.mainWindow().moduleSelector()
    assert selector.selected == ["SegmentEditor"] and editor_module.isEntered
    assert editor_module.editor.calls == [("setSegmentationNode", phantom)]  # a phantom has no input volume
    assert not slicer.modules.seg2med.widgetRepresentation().isEntered  # Slicer leaves the module

    slicer.util.selectModule("Seg2Med")  # back: the GUI is bound to the same parameter node again
    assert not editor_module.isEntered and ui.segmentationSelector.currentNode() is phantom
    ui.stepsSpinBox.value = 9
    assert p.steps == 9

    volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    p.inputVolume = volume
    ui.editSegmentationButton.click()
    assert editor_module.editor.segmentationNode() is phantom and editor_module.editor.sourceVolumeNode() is volume
    assert selector.selected == ["SegmentEditor", "Seg2Med", "SegmentEditor"]


# ------------------------------------------------------------------------------------ registry download
def zip_bundle(bundle: Path, archive: Path) -> str:
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(bundle.iterdir()):
            zf.write(f, f"{bundle.name}/{f.name}")
    return hashlib.sha256(archive.read_bytes()).hexdigest()


def write_user_registry(harness, models: list[dict]) -> Path:  # noqa: ANN001
    import os

    path = Path(os.environ["SEG2MED_REGISTRY"])
    path.write_text(json.dumps({"schema": 1, "models": models}), encoding="utf-8")
    return path


def cache_folder(name: str) -> Path:
    from seg2med_core import registry

    return registry.cache_root() / name


def test_download_verifies_and_caches_the_selected_model(harness, tiny_bundle, tmp_path) -> None:
    archive = tmp_path / "remote_ct.zip"
    digest = zip_bundle(tiny_bundle, archive)
    write_user_registry(harness, [{"name": "remote_ct", "modality": "ct", "url": archive.as_uri(), "sha256": digest,
                                   "licence": "CC0-1.0"}])
    _w, ui = open_seg2med(harness)
    assert "remote_ct (download)" in combo_items(ui.modelComboBox)
    ui.modelComboBox.currentText = "remote_ct (download)"
    harness.answer(harness.qt.QMessageBox.Cancel)  # declined: nothing is fetched
    ui.downloadModelButton.click()
    assert harness.dialogs[-1]["text"] == f"Download model 'remote_ct' from {archive.as_uri()}?\nLicence: CC0-1.0"
    assert not cache_folder("remote_ct").exists() and "Downloaded" not in log_text(ui)

    ui.downloadModelButton.click()  # accepted (the harness presses OK)
    folder = cache_folder("remote_ct")
    assert f"Downloaded and verified remote_ct → {folder}" in log_text(ui), log_text(ui)
    assert (folder / "model.safetensors").read_bytes() == (tiny_bundle / "model.safetensors").read_bytes()
    assert json.loads((folder / ".seg2med-manifest.json").read_text())["archive_sha256"] == digest
    assert ui.progressBar.value == ui.progressBar.maximum == archive.stat().st_size
    assert not errors(harness), harness.dialogs

    harness.dialogs.clear()
    ui.modelComboBox.currentText = "demo_ct"  # a local bundle: nothing to download, nothing asked
    ui.downloadModelButton.click()
    assert "demo_ct is a local bundle: nothing to download" in log_text(ui) and not harness.dialogs


def test_download_with_a_wrong_checksum_is_an_error_and_caches_nothing(harness, tiny_bundle, tmp_path) -> None:
    archive = tmp_path / "remote_ct.zip"
    zip_bundle(tiny_bundle, archive)
    wrong = "0" * 64
    write_user_registry(harness, [{"name": "remote_ct", "modality": "ct", "url": archive.as_uri(), "sha256": wrong}])
    _w, ui = open_seg2med(harness)
    ui.modelComboBox.currentText = "remote_ct (download)"
    ui.downloadModelButton.click()
    assert len(errors(harness)) == 1
    message = errors(harness)[0]
    assert message.startswith(f"model 'remote_ct' download from {archive.as_uri()} is corrupt: sha256 ") and \
        message.endswith(f"!= expected {wrong}"), message
    assert not cache_folder("remote_ct").exists()
    assert not cache_folder("remote_ct").parent.exists() or list(cache_folder("remote_ct").parent.iterdir()) == []


def test_download_for_ct_plus_mr_fetches_both_models(harness, tiny_bundle, tiny_mr_bundle, tmp_path) -> None:
    entries = []
    for name, bundle, modality in (("remote_ct", tiny_bundle, "ct"), ("remote_mr", tiny_mr_bundle, "mr")):
        archive = tmp_path / f"{name}.zip"
        entries.append({"name": name, "modality": modality, "url": archive.as_uri(), "sha256": zip_bundle(bundle, archive),
                        **({"sequence": "t1_gre"} if modality == "mr" else {})})
    write_user_registry(harness, entries)
    _w, ui = open_seg2med(harness)
    ui.targetModalityComboBox.currentText = "CT + MR"
    ui.sequenceComboBox.currentText = "t1_gre"
    ui.modelComboBox.currentText = "remote_ct (download)"
    ui.mrModelComboBox.currentText = "remote_mr (download)"
    ui.downloadModelButton.click()
    assert [d["text"].split("?")[0] for d in harness.dialogs] == \
        [f"Download model '{e['name']}' from {e['url']}" for e in entries]
    for name in ("remote_ct", "remote_mr"):
        assert (cache_folder(name) / "metadata.json").is_file()
        assert f"Downloaded and verified {name} → {cache_folder(name)}" in log_text(ui)


# ------------------------------------------------------------------------------------ add a bundle folder
def test_add_bundle_folder_registers_it_and_lists_it(harness, tiny_bundle, tiny_mr_bundle, tmp_path, monkeypatch) -> None:
    answers: list[str] = []
    asked: list[str] = []

    def folder_dialog(_parent, caption, *_args):  # noqa: ANN001, ANN202
        asked.append(caption)
        return answers.pop(0)

    monkeypatch.setattr(harness.qt.QFileDialog, "getExistingDirectory", staticmethod(folder_dialog))
    _w, ui = open_seg2med(harness)
    from seg2med_core import registry

    answers.append("")  # the dialog was cancelled
    ui.addModelButton.click()
    assert asked == ["Model bundle folder (metadata.json + model.safetensors)"] and "Added model" not in log_text(ui)
    assert "tiny_ct" not in combo_items(ui.modelComboBox)

    answers.append(str(tiny_bundle))
    ui.addModelButton.click()
    assert f"Added model tiny_ct (ct) to {registry.user_registry_path()}" in log_text(ui), log_text(ui)
    assert "tiny_ct" in combo_items(ui.modelComboBox)
    saved = json.loads(registry.user_registry_path().read_text())["models"]
    assert [(m["name"], Path(m["path"])) for m in saved] == [("tiny_ct", tiny_bundle)]

    ui.targetModalityComboBox.currentText = "MR"  # an MR bundle goes to the MR list of its sequence (t1_gre)
    assert ui.sequenceComboBox.currentText == "vibe_in"  # t1_gre has no model yet
    answers.append(str(tiny_mr_bundle))
    ui.addModelButton.click()
    assert "Added model tiny_mr (mr)" in log_text(ui) and "tiny_mr" not in combo_items(ui.modelComboBox)
    ui.sequenceComboBox.currentText = "t1_gre"
    assert ui.sequenceComboBox.currentText == "t1_gre" and combo_items(ui.modelComboBox) == ["tiny_mr"]
    assert not errors(harness), harness.dialogs

    not_a_bundle = tmp_path / "not a bundle"
    not_a_bundle.mkdir()
    answers.append(str(not_a_bundle))
    ui.addModelButton.click()
    assert len(errors(harness)) == 1 and str(not_a_bundle) in errors(harness)[0], harness.dialogs
    assert "\n" not in errors(harness)[0]
    assert len(json.loads(registry.user_registry_path().read_text())["models"]) == 2

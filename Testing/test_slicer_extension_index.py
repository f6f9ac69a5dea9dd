"""Ready for the Slicer Extensions Index: the offline part of Slicer/ExtensionsIndex's
scripts/check_description_files.py (catalog JSON, CMake metadata, licence), with the public URLs' targets
checked as files of this checkout (the URLs themselves are MAINTAINER-FILL-IN placeholders)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "ExtensionsIndex" / "Seg2Med.json"
CMAKE = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")


def cmake_value(key: str) -> str:
    match = re.search(rf'set\s*\({key}\s*"([^"]+)"[ ]*\)', CMAKE)
    assert match, f"{key} is not set in CMakeLists.txt"
    return match.group(1)


def test_catalog_entry_matches_the_index_format() -> None:
    raw = CATALOG.read_bytes()
    assert b"\r" not in raw, "the index wants LF line endings"
    entry = json.loads(raw)
    assert entry["$schema"].startswith("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1")
    assert set(entry) <= {"$schema", "build_dependencies", "build_subdirectory", "category", "scm_revision",
                          "scm_url", "tier"}
    assert entry["category"] == cmake_value("EXTENSION_CATEGORY") == "Segmentation"
    assert entry["scm_url"].startswith("https://") and entry["build_subdirectory"] == "."
    repo_name = entry["scm_url"].rstrip("/").split("/")[-1]
    assert repo_name.startswith("Slicer") and not CATALOG.stem.lower().startswith("slicer")
    assert entry["build_dependencies"] == cmake_value("EXTENSION_DEPENDS").split() == ["PyTorch"]


def test_cmake_metadata_passes_the_checker() -> None:
    project = re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", CMAKE, re.IGNORECASE)
    assert project and project[0] == CATALOG.stem == "Seg2Med"
    urls = [cmake_value("EXTENSION_ICONURL"), *cmake_value("EXTENSION_SCREENSHOTURLS").split()]
    for url in urls:
        match = re.fullmatch(r"https://raw\.githubusercontent\.com/MAINTAINER-FILL-IN/SlicerSeg2Med/main/(.+\.png)", url)
        assert match, f"{url}: not a raw GitHub URL of this repository"
        assert (ROOT / match.group(1)).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{match.group(1)} is not a PNG"
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION"):
        assert cmake_value(key)
    assert "MAINTAINER-FILL-IN" in CMAKE  # clearly marked until the public repository exists


def test_licence_file_is_apache_2() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


def test_screenshots_are_shown_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("seg2med-panel.png", "seg2med-training-panel.png"):
        assert f"docs/screenshots/{name}" in readme

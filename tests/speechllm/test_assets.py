"""The shipped demo models change only by a release (scripts/release_demo.py): their files match the
recorded sha256 sums, every weight file is stored once, and the pruned export loads through its link."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def release():
    return load_script(ROOT / "scripts" / "release_demo.py")


def test_released_assets_match_their_sums_and_store_each_weight_once(release):
    assert release.check() == []
    pruned_encoder = release.ASSETS / "demo-pruned" / "encoder" / "model.safetensors"
    assert pruned_encoder.is_symlink() and pruned_encoder.resolve() == \
        (release.ASSETS / "demo" / "encoder" / "model.safetensors").resolve()


def test_check_catches_a_changed_weight_and_a_second_copy(release, tmp_path):
    assets = tmp_path / "assets"
    shutil.copytree(release.ASSETS, assets, symlinks=True)
    assert release.check(assets) == []
    decoder = assets / "demo" / "decoder" / "model.safetensors"
    data = bytearray(decoder.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    decoder.write_bytes(bytes(data))
    link = assets / "demo-pruned" / "encoder" / "model.safetensors"
    link.unlink()
    shutil.copyfile(assets / "demo" / "encoder" / "model.safetensors", link)  # a second copy
    problems = release.check(assets)
    assert any("demo:" in p and "decoder/model.safetensors" in p for p in problems), problems
    assert any("second copy" in p for p in problems), problems


def test_the_pruned_export_loads_through_its_link():
    from speechllm.modeldir import load_model

    model = load_model(ROOT / "speechllm" / "assets" / "demo-pruned")
    assert model.num_decoder_layers == 10

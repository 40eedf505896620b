"""Finding the shared data: $DOORSTEP_SHARED_DATA when set, else shared/data beside the
repository; when it is not there, the answer says where it looked."""

from __future__ import annotations

from pathlib import Path

from doorstep.bench.shared import ENV, REPO, find, shared_data


def test_the_environment_variable_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "motion").mkdir()
    assert shared_data({ENV: str(tmp_path)}).path == tmp_path.resolve()
    assert find("motion", environ={ENV: str(tmp_path)}).path == tmp_path.resolve() / "motion"
    missing = find("video", "vtest.avi", environ={ENV: str(tmp_path)})
    assert missing.path is None
    assert missing.why == f"video/vtest.avi is not in the shared data folder {tmp_path.resolve()}"


def test_a_wrong_environment_variable_is_named(tmp_path: Path) -> None:
    found = find("motion", environ={ENV: str(tmp_path / "nowhere")})
    assert found.path is None and found.why == f"{ENV}={tmp_path / 'nowhere'} is not a folder"


def test_otherwise_shared_data_beside_the_repository() -> None:
    beside = REPO.parent / "shared" / "data"
    found = shared_data({})
    if beside.is_dir():
        assert found.path == beside
    else:
        assert found.path is None and str(beside) in found.why and ENV in found.why

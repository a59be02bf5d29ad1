"""Shared test fixtures: where reference data lives."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "tests" / "data"
# The full reference set (512/1024 outputs, process_* cases) sits beside the repo in CI and on dev machines.
SHARED_REFERENCE_DIR = REPO_ROOT.parent / "shared" / "gpen-reference"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def shared_reference_dir() -> Path:
    if not SHARED_REFERENCE_DIR.is_dir():
        pytest.skip(f"full GPEN reference set not found at {SHARED_REFERENCE_DIR}")
    return SHARED_REFERENCE_DIR


# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_256(data_dir):
    """The GPEN-BFR-256 network with the recipe weights, fp32, eval mode; one per test module, since restorers
    may move it to another dtype or device."""
    import json

    from vidgpen.models.gpen import FullGenerator
    from vidgpen.models.recipe import recipe_state_dict
    from vidgpen.models.variants import VARIANTS

    model = FullGenerator(VARIANTS["GPEN-BFR-256"].architecture).eval()
    manifest = json.loads((data_dir / "manifest-GPEN-BFR-256.json").read_text())
    model.load_state_dict(recipe_state_dict(manifest), strict=True)
    return model


# End-to-end fixtures (tests/test_pipeline.py, tests/test_cli_restore.py): the recipe GPEN-BFR-256 checkpoint, the
# options that make a run fast and offline (MTCNN ships its weights; the feathered mask needs none), and one engine.
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def recipe_checkpoint_256(tmp_path_factory) -> Path:
    """A real GPEN-BFR-256 checkpoint file (~75 MB) holding the deterministic recipe weights."""
    import json

    import torch

    from vidgpen.models.recipe import recipe_state_dict

    manifest = json.loads((DATA_DIR / "manifest-GPEN-BFR-256.json").read_text())
    path = tmp_path_factory.mktemp("weights") / "GPEN-BFR-256-recipe.pth"
    torch.save(recipe_state_dict(manifest), path)
    return path


@pytest.fixture(scope="session")
def recipe_options(recipe_checkpoint_256) -> dict:
    """RestoreOptions fields for a fast offline run; add run-specific fields with ``dict(recipe_options, ...)``."""
    return dict(model="GPEN-BFR-256", weights=recipe_checkpoint_256, detector="mtcnn", mask="feathered",
                dtype="fp32")


@pytest.fixture(scope="session")
def recipe_engine(recipe_options):
    """One FaceEngine (recipe restorer, MTCNN, feathered mask) shared by the end-to-end tests."""
    from vidgpen.config import RestoreOptions
    from vidgpen.pipeline import build_engine

    return build_engine(RestoreOptions(**recipe_options))


@pytest.fixture(scope="session")
def recipe_args(recipe_checkpoint_256) -> list[str]:
    """The same fast offline run as ``recipe_options``, as ``vidgpen restore`` arguments."""
    return ["--model", "GPEN-BFR-256", "--weights", str(recipe_checkpoint_256), "--detector", "mtcnn",
            "--mask", "feathered", "--dtype", "fp32"]


@pytest.fixture(scope="module")
def reuse_loaded_restorer(recipe_engine, recipe_checkpoint_256):
    """Loading the 75 MB checkpoint takes seconds. While a module uses this fixture, a run that would load exactly
    that file on the CPU in fp32 gets the restorer already loaded from it; the detector, the masker and everything
    else still come from the run's own options. Any other run (another device, dtype, --offline, ...) loads for
    real."""
    from vidgpen import api, pipeline

    real_build_engine = pipeline.build_engine

    def build_engine(options, notice=None, restorer=None):
        reusable = (options.weights is not None and Path(options.weights) == recipe_checkpoint_256
                    and options.model == "GPEN-BFR-256" and options.device in ("auto", "cpu")
                    and options.dtype == "fp32" and options.batch_size is None and not options.compile)
        if restorer is None and reusable:
            restorer = recipe_engine.restorer
        return real_build_engine(options, notice, restorer)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api, "build_engine", build_engine)
        yield

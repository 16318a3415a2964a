"""What the Bento carries: the serving requirement sets (pinned from requirements.lock) and only
the library modules the service imports, checked against what a real service process loads."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from serving_helpers import SERVING, Packaged, env_for_children
from support import ROOT

from recommender.serving import bento_contents as contents

pytestmark = pytest.mark.slow

LOCK = ROOT / "requirements.lock"


def test_each_set_is_a_subset_of_the_lock_with_the_same_versions() -> None:
    lock = contents.read_pins(LOCK)
    for name in contents.ROOTS:
        pins = contents.read_pins(contents.FOLDER / f"{name}.txt")
        assert pins, name
        assert {n: lock.get(n) for n in pins} == pins, name
    assert len(contents.read_pins(contents.FOLDER / "base.txt")) < len(lock) / 3


def test_the_sets_are_up_to_date_and_closed_under_their_requirements(tmp_path: Path) -> None:
    # What `python -m recommender.serving.bento_contents` would write now equals what is there.
    contents.write(LOCK, tmp_path)
    for name in contents.ROOTS:
        committed = (contents.FOLDER / f"{name}.txt").read_text()
        assert (tmp_path / f"{name}.txt").read_text() == committed, (
            f"{name}.txt is stale: run python -m recommender.serving.bento_contents"
        )
    base = set(contents.read_pins(contents.FOLDER / "base.txt"))
    assert {"bentoml", "numpy", "pydantic", "pandas", "pyyaml"} <= base
    assert not base & {"tensorflow-cpu", "keras", "mlflow", "dvc", "boto3", "optuna", "faiss-cpu"}
    keras = set(contents.read_pins(contents.FOLDER / "keras.txt"))
    assert {"tensorflow-cpu", "keras"} <= keras and not keras & base


def test_a_lock_that_moved_fails_the_build_naming_the_pin(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text(LOCK.read_text().replace("numpy==", "numpy==0.0.0+moved-"))
    with pytest.raises(ValueError, match=r"numpy==\S+ \(lock: 0\.0\.0\+moved-"):
        contents.requirements_text(["base"], lock=lock)


def test_the_bento_carries_no_stage_nor_infrastructure_module() -> None:
    every = {
        p.as_posix() for p in contents.modules(SERVING / "service.py", ["base", "ann", "keras"])
    }
    base = {p.as_posix() for p in contents.modules(SERVING / "service.py", ["base"])}
    for folder in (
        "stack",
        "training",
        "evaluation",
        "registry",
        "preprocess",
        "data",
        "validation",
    ):
        assert not any(p.startswith(f"recommender/{folder}/") for p in every), folder
    assert "recommender/validation.py" not in every
    assert "recommender/tracking/pyfunc.py" not in every
    assert "recommender/serving/packaging.py" not in every
    assert "recommender/models/factory.py" in every and "recommender/models/factory.py" not in base
    assert "recommender/serving/http.py" in base and "recommender/scoring/bundle.py" in base


#: Loads serving/service.py as `bentoml serve` does, answers requests, prints what it imported.
PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("service", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["service"] = module
spec.loader.exec_module(module)
service = module.Recommender()
service.recommend(int(sys.argv[2]), k=5)
service.similar_items(int(sys.argv[3]), k=5)
service.model_info()
print(json.dumps({n: getattr(m, "__file__", None) for n, m in sorted(sys.modules.items())}))
"""


def loaded_distributions(loaded: dict[str, str | None]) -> set[str]:
    """The distributions whose modules ``loaded`` (module name -> file) holds.

    A top-level name most often belongs to one distribution. A namespace package shared by
    several (``opentelemetry``: api, sdk, proto, exporters...) counts only the distributions that
    own a loaded module's file: BentoML loads ``opentelemetry.sdk``, not ``opentelemetry.proto``.
    """
    by_module = metadata.packages_distributions()
    owners: dict[str, str] = {}  # file -> distribution, of the shared namespaces met
    indexed: set[str] = set()
    dists: set[str] = set()
    for name, path in loaded.items():
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names:
            continue
        candidates = by_module.get(top, [])
        if len(candidates) <= 1:
            dists.update(contents.normalize(d) for d in candidates)
            continue
        if top not in indexed:
            indexed.add(top)
            for dist in candidates:
                for file in metadata.distribution(dist).files or []:
                    owners[str(Path(str(file.locate())).resolve())] = dist
        owner = owners.get(str(Path(path).resolve())) if path else None
        if owner:  # a namespace package itself has no file
            dists.add(contents.normalize(owner))
    return dists


@pytest.mark.slow
def test_a_served_model_imports_only_what_the_bento_carries(packaged: Packaged) -> None:
    from recommender.serving.packaging import model_needs

    tag = packaged.record["bento_model"]
    needs = model_needs(tag)
    sets = contents.sets_for(**needs)
    train = packaged.processed.train
    user, item = int(train["user_id"].iloc[0]), int(train["item_id"].iloc[0])
    env = {**env_for_children(packaged), "RECOMMENDER_BENTO_MODEL": tag}
    args = [sys.executable, "-c", PROBE, str(SERVING / "service.py"), str(user), str(item)]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.splitlines()[-1])

    carried = {p.as_posix() for p in contents.modules(SERVING / "service.py", sets)}
    import recommender

    root = Path(recommender.__file__).resolve().parent.parent
    files = {
        Path(path).resolve().relative_to(root).as_posix()
        for name, path in loaded.items()
        if (name == "recommender" or name.startswith("recommender.")) and path
    }
    assert files <= carried, sorted(files - carried)

    pins = {}
    for name in sets:
        pins.update(contents.read_pins(contents.FOLDER / f"{name}.txt"))
    extra = loaded_distributions(loaded) - {"deep-recommender"} - contents.TOOLS - set(pins)
    assert not extra, sorted(extra)
    if not needs["keras"]:  # a factor family serves without TensorFlow
        assert "tensorflow" not in loaded and "keras" not in loaded


#: Imports the OTLP exporter's module of the inference log, prints what it imported.
OTLP_PROBE = """
import json, sys
import recommender.serving.inference_otlp
print(json.dumps({n: getattr(m, "__file__", None) for n, m in sorted(sys.modules.items())}))
"""


def test_the_otlp_set_and_module_come_only_with_the_otlp_exporter() -> None:
    base = {p.as_posix() for p in contents.modules(SERVING / "service.py", ["base"])}
    otlp = {p.as_posix() for p in contents.modules(SERVING / "service.py", ["base", "otlp"])}
    assert otlp - base == {"recommender/serving/inference_otlp.py"}
    assert contents.sets_for(keras=False, ann=False, otlp=True) == ("base", "otlp")

    proc = subprocess.run(
        [sys.executable, "-c", OTLP_PROBE], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.splitlines()[-1])
    pins: dict[str, str] = {}
    for name in ("base", "otlp"):
        pins.update(contents.read_pins(contents.FOLDER / f"{name}.txt"))
    extra = loaded_distributions(loaded) - {"deep-recommender"} - contents.TOOLS - set(pins)
    assert not extra, sorted(extra)

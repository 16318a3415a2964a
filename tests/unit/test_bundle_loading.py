"""A bundle whose factors do its scoring loads, scores, ranks and is evaluated with no TensorFlow.

evaluate, register, package and the service load bundles; importing TensorFlow and Keras to read
``model.keras`` costs them seconds and most of their memory, for a model they never call. The
bundle here is written by hand (its ``model.keras`` a stand-in zip): nothing imports Keras.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from support import change_first_user_id, child_env

from recommender.core.errors import DataError
from recommender.dataset.processed import load_processed
from recommender.scoring import bundle as bundle_module
from recommender.scoring.bundle import (
    COPIED,
    DIGEST_FILE,
    FACTORS_FILE,
    MANIFEST_FILE,
    META_FILE,
    MODEL_FILE,
    RETRIEVAL_FILE,
    SEEN_FILE,
    ModelBundle,
    recorded_digest,
    write_manifest,
)
from recommender.scoring.factors import Factors

DIGEST = "ab" * 32


def _factors(rng: np.random.Generator, n_users: int, n_items: int, dim: int = 4) -> Factors:
    return Factors(
        user_vectors=rng.normal(size=(n_users + 1, dim)).astype(np.float32),
        item_vectors=rng.normal(size=(n_items + 1, dim)).astype(np.float32),
        user_bias=rng.normal(size=n_users + 1).astype(np.float32),
        item_bias=rng.normal(size=n_items + 1).astype(np.float32),
        global_mean=3.5,
    )


@pytest.fixture()
def factor_bundle(processed_dir: Path, tmp_path: Path) -> Path:
    """A two-tower-like bundle: rating factors, retrieval factors, and a stand-in model file."""
    processed = load_processed(processed_dir)
    n_users, n_items = len(processed.user_vocab) - 1, len(processed.item_vocab) - 1
    rng = np.random.default_rng(0)
    folder = tmp_path / "bundle"
    folder.mkdir()
    _factors(rng, n_users, n_items).save(folder / FACTORS_FILE)
    _factors(rng, n_users, n_items).save(folder / RETRIEVAL_FILE)
    train = processed.train.sort_values(["user_idx", "item_idx"])
    counts = np.bincount(train["user_idx"], minlength=n_users + 1)
    np.savez(
        folder / SEEN_FILE,
        indptr=np.concatenate([[0], np.cumsum(counts)]),
        indices=train["item_idx"].to_numpy(),
        popularity=np.bincount(train["item_idx"], minlength=n_items + 1),
    )
    for name in COPIED:
        (folder / name).write_bytes((processed_dir / name).read_bytes())
    (folder / META_FILE).write_text(json.dumps({"family": "TwoTower", "model": "two_tower"}))
    with zipfile.ZipFile(folder / MODEL_FILE, "w") as archive:  # a whole zip, not a Keras model
        archive.writestr("config.json", "{}")
    (folder / DIGEST_FILE).write_text(DIGEST + "\n")
    return folder


def test_a_factor_bundle_is_loaded_scored_and_evaluated_without_tensorflow(
    factor_bundle: Path, processed_dir: Path
) -> None:
    code = f"""
import sys
from recommender.core.config import EvaluateConfig
from recommender.evaluation.evaluate import evaluate
from recommender.scoring.metrics import ndcg_by_user
from recommender.dataset.processed import load_processed
from recommender.scoring.bundle import ModelBundle, recorded_digest

bundle = ModelBundle.load({str(factor_bundle)!r})
processed = load_processed({str(processed_dir)!r})
result = evaluate(bundle, processed, EvaluateConfig()).metrics
assert result["test"]["rows"] == len(processed.test) and result["ranking"]["ndcg@10"] is not None
test = processed.test
ndcg_by_user(bundle, bundle, test["user_id"], test["item_id"], test["rating"], 10, 4.0)
bundle.similar(1, 5)
assert recorded_digest({str(factor_bundle)!r}) == {DIGEST!r}
print(sorted({{"tensorflow", "keras"}} & {{m.split(".")[0] for m in sys.modules}}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_keras_model_is_read_only_when_asked_for(
    factor_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(bundle_module, "_load_keras", lambda path: calls.append(path) or "keras")
    bundle = ModelBundle.load(factor_bundle)
    bundle.recommend(np.array([1, 2]), k=3)
    assert calls == []
    assert bundle.model == "keras" and bundle.model == "keras"
    assert calls == [factor_bundle / MODEL_FILE]  # once, then kept


def test_a_bundle_without_factors_reads_its_model_at_load(
    factor_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(bundle_module, "_load_keras", lambda path: calls.append(path) or "keras")
    (factor_bundle / FACTORS_FILE).unlink()
    (factor_bundle / RETRIEVAL_FILE).unlink()
    bundle = ModelBundle.load(factor_bundle)
    assert calls == [factor_bundle / MODEL_FILE]  # a bad model fails the load, not a request
    assert bundle.model == "keras"


@pytest.mark.parametrize("name", [MODEL_FILE, FACTORS_FILE, SEEN_FILE])
def test_a_damaged_file_fails_the_load_by_name(factor_bundle: Path, name: str) -> None:
    path = factor_bundle / name
    path.write_bytes(path.read_bytes()[:100])  # truncated, as a full disk would leave it
    with pytest.raises(DataError, match=rf"{name} is damaged \(truncated or corrupt"):
        ModelBundle.load(factor_bundle)


def test_a_member_failing_its_crc_fails_the_load(factor_bundle: Path) -> None:
    path = factor_bundle / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[data.index(b"{}")] ^= 0x20  # the stored member's bytes change; its CRC does not
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"model.keras is damaged \(its member config.json"):
        ModelBundle.load(factor_bundle)


def test_the_recorded_digest_is_read_not_recomputed(factor_bundle: Path, monkeypatch) -> None:
    monkeypatch.setattr(bundle_module, "content_digest", lambda folder: "computed")
    assert recorded_digest(factor_bundle) == DIGEST
    (factor_bundle / DIGEST_FILE).write_text("not a digest\n")  # unreadable: computed instead
    assert recorded_digest(factor_bundle) == "computed"
    (factor_bundle / DIGEST_FILE).unlink()  # a bundle saved before digests were recorded
    assert recorded_digest(factor_bundle) == "computed"


# --- the recorded digests: one changed byte is named, whatever file it is in -------------------


def test_one_changed_byte_in_any_file_fails_the_load_naming_it(factor_bundle: Path) -> None:
    write_manifest(factor_bundle)
    ModelBundle.load(factor_bundle)  # as written: loads
    change_first_user_id(factor_bundle / "vocab.json")
    with pytest.raises(DataError) as err:
        ModelBundle.load(factor_bundle)
    message = str(err.value)
    assert message.startswith(f"{factor_bundle / 'vocab.json'}: changed since the model was saved")
    assert MANIFEST_FILE in message


def test_the_manifest_reads_as_sha256sum_writes_it(factor_bundle: Path) -> None:
    write_manifest(factor_bundle)
    check = subprocess.run(
        ["sha256sum", "--check", "--quiet", MANIFEST_FILE], cwd=factor_bundle, capture_output=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    names = [
        line.split("  ", 1)[1]
        for line in (factor_bundle / MANIFEST_FILE).read_text().split("\n")
        if line
    ]
    assert MANIFEST_FILE not in names and {DIGEST_FILE, MODEL_FILE, *COPIED} <= set(names)


def test_a_bundle_that_is_not_the_registered_one_fails_the_load(factor_bundle: Path) -> None:
    write_manifest(factor_bundle)
    ModelBundle.load(factor_bundle, expected_digest=DIGEST)
    with pytest.raises(
        DataError,
        match=rf"{DIGEST_FILE}: this bundle.s content digest is {DIGEST}, but the registry",
    ):
        ModelBundle.load(factor_bundle, expected_digest="cd" * 32)


def test_the_content_digest_ignores_the_manifest(factor_bundle: Path, monkeypatch) -> None:
    monkeypatch.setattr(bundle_module, "_load_keras", lambda path: type("M", (), {"weights": []})())
    before = bundle_module.content_digest(factor_bundle)
    write_manifest(factor_bundle)
    assert bundle_module.content_digest(factor_bundle) == before

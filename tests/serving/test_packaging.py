"""The package stage's code: the champion imported once, a Bento built once, the record written."""

from __future__ import annotations

import json

import pytest
from serving_helpers import MODEL_NAME, SERVING, Packaged

pytestmark = pytest.mark.slow


def test_record_names_the_champion_and_the_bento(packaged: Packaged) -> None:
    record = json.loads((packaged.root / "package.json").read_text())
    assert record["registered_model"] == MODEL_NAME
    assert record["alias"] == "champion"
    assert record["version"] == packaged.version
    assert record["model_uri"] == f"models:/{MODEL_NAME}/{packaged.version}"
    assert record["bento_model"].startswith(f"{MODEL_NAME}:")
    assert record["bento"].startswith("recommender:")
    assert record["serve"] == packaged.params.serve.model_dump()
    assert record["packaged"] is True
    assert record["metrics"]["test_rmse"] > 0 and set(record["metrics"]) >= {"test_mae"}
    assert packaged.record["imported"] is True and packaged.record["built"] is True


def test_bento_model_carries_labels_metrics_and_lineage(packaged: Packaged) -> None:
    import bentoml

    model = bentoml.models.get(packaged.record["bento_model"])
    assert model.info.labels["registered_version"] == packaged.version
    assert model.info.labels["run_id"] == packaged.record["run_id"]
    meta = model.info.metadata
    assert meta["version"] == packaged.version
    assert meta["metrics"]["test_rmse"] == pytest.approx(packaged.record["metrics"]["test_rmse"])
    # Lineage: the run's data hash and model family, and the registry version's own tags.
    assert meta["tags"]["model.family"] == "two_tower"  # the default family
    assert meta["tags"]["version.gate.primary"] == "ndcg@10"  # judged by its ranking
    assert len(meta["tags"]["data.hash"]) == 64
    assert meta["tags"]["version.gate.decision"] == "promoted"

    bento = bentoml.bentos.get(packaged.record["bento"])
    assert bento.info.labels["bento_model"] == packaged.record["bento_model"]
    assert [str(m.tag) for m in bento.info.all_models] == [packaged.record["bento_model"]]
    assert bento.info.args["model_tag"] == packaged.record["bento_model"]


def test_packaging_again_imports_and_builds_nothing(packaged: Packaged) -> None:
    import bentoml

    from recommender.serving.packaging import package

    models_before = {str(m.tag) for m in bentoml.models.list()}
    bentos_before = {str(b.tag) for b in bentoml.bentos.list()}
    # Other request limits are other Bento arguments: a new Bento of the same model.
    serve = packaged.params.serve.model_copy(update={"max_k": packaged.params.serve.max_k + 1})
    params = packaged.params.model_copy(update={"serve": serve})
    again = package(params, SERVING, packaged.root / "package2.json", packaged.bentoml_home)
    assert again["imported"] is False
    assert again["bento_model"] == packaged.record["bento_model"]
    assert {str(m.tag) for m in bentoml.models.list()} == models_before
    assert again["built"] is True and again["bento"] not in bentos_before

    third = package(params, SERVING, packaged.root / "package3.json", packaged.bentoml_home)
    assert (third["imported"], third["built"]) == (False, False)
    assert third["bento"] == again["bento"]
    assert json.loads((packaged.root / "package3.json").read_text())["bento"] == again["bento"]


def test_no_champion_means_nothing_packaged(packaged: Packaged) -> None:
    from recommender.serving.packaging import NoChampion, find_champion, package

    with pytest.raises(NoChampion, match="no version with alias 'champion'"):
        find_champion("no-such-model")
    params = packaged.params.model_copy(
        update={"tracking": packaged.params.tracking.model_copy(update={"registered_model": "x"})}
    )
    record = package(params, SERVING, packaged.root / "none.json", packaged.bentoml_home)
    assert record["packaged"] is False and "register stage" in record["reason"]
    assert json.loads((packaged.root / "none.json").read_text()) == record

"""A model trained on text ids: the serving types and answers follow the vocabulary's type."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError
from support import tiny_params

from recommender.serving.api import IntId, Pair, PredictResponse, ServingModel, StrId, raw_id_type

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def text_model() -> ServingModel:
    from recommender.data import load_dataset
    from recommender.preprocess.split import preprocess
    from recommender.scoring.bundle import ModelBundle
    from recommender.training.fit import fit

    params = tiny_params(train={"epochs": 1})
    data = load_dataset(params)
    # The same ratings with text ids ("u7", "i12"), as a CSV source with csv.id_type: str gives.
    data.ratings["user_id"] = "u" + data.ratings["user_id"].astype(str)
    data.ratings["item_id"] = "i" + data.ratings["item_id"].astype(str)
    data.items["item_id"] = "i" + data.items["item_id"].astype(str)
    data.users = None
    data.info = dataclasses.replace(data.info, id_type="str", has_users=False)
    processed = preprocess(data, params.preprocess, params.seed)
    model = fit(processed, params.train, params.seed).model
    return ServingModel(ModelBundle.from_training(model, processed, {}), {"version": "7"})


def test_text_ids_in_and_out(text_model: ServingModel) -> None:
    bundle = text_model.bundle
    assert text_model.id_type == "str"
    user, item = bundle.user_vocab.ids[0], bundle.item_vocab.ids[0]
    pairs = [Pair(user_id=user, item_id=item), Pair(user_id="nobody", item_id=item)]
    got = text_model.predict(pairs)
    assert [p.rating for p in got.predictions] == pytest.approx(
        bundle.predict_raw([user, "nobody"], [item, item]).tolist()
    )
    assert [p.unknown_user for p in got.predictions] == [False, True]
    # The response serialises and validates as the text-id type the service advertises.
    PredictResponse[StrId].model_validate_json(got.model_dump_json())

    rec = text_model.recommend(user, k=5)
    assert rec.cold_start is False and all(isinstance(i.item_id, str) for i in rec.items)
    top = bundle.recommend(bundle.user_index([user]), 5)
    assert [i.item_id for i in rec.items] == bundle.item_vocab.decode(top.items[0]).tolist()
    assert text_model.similar_items(item, k=3).items[0].item_id != item


def test_id_types_refuse_the_other_kind() -> None:
    assert raw_id_type("int") is IntId and raw_id_type("str") is StrId
    with pytest.raises(ValidationError):
        Pair[StrId](user_id=5, item_id="i1")
    with pytest.raises(ValidationError):
        Pair[IntId](user_id="5", item_id=1)
    with pytest.raises(ValidationError):
        Pair[IntId](user_id=True, item_id=1)
    with pytest.raises(ValueError, match="'int' or 'str'"):
        raw_id_type("float")

"""The memory guard: where the available memory comes from, what the estimates hold, and the
one-line refusal a stage prints before it would outgrow the machine (its outputs untouched).

No TensorFlow here: the estimates are made before the stages import it.
"""

from __future__ import annotations

import contextlib
import io
import runpy
from pathlib import Path

import pytest
import yaml
from support import ROOT, tiny_raw

from recommender.core import memory
from recommender.core.config import FAMILIES, TrainConfig, load_params
from recommender.core.errors import ConfigError, RecommenderError
from recommender.evaluation.evaluate import evaluate_estimate
from recommender.models import sizing

GB = 1024**3


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [
        ("2GB", 2 * GB),
        ("512MB", 512 * 1024**2),
        ("1.5G", int(1.5 * GB)),
        (" 64 MiB ", 64 * 1024**2),
        ("100kb", 100 * 1024),
        ("1048576", 1048576),
    ],
)
def test_sizes_parse_in_binary_units(text: str, nbytes: int) -> None:
    assert memory.parse_size(text) == nbytes


def test_a_size_that_is_not_one_names_the_variable() -> None:
    with pytest.raises(RecommenderError, match=r"RECOMMENDER_MEMORY_LIMIT='lots' is not a size"):
        memory.parse_size("lots")


def test_human_sizes() -> None:
    assert [memory.human(n) for n in (512, 1536, 3 * GB, 5 * 1024 * GB)] == [
        "512 B",
        "1.5 KB",
        "3.0 GB",
        "5.0 TB",
    ]


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


MEMINFO = "MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n"


def test_the_environment_overrides_everything(tmp_path: Path) -> None:
    got = memory.available_memory({memory.LIMIT_ENV: "512MB"}, tmp_path, tmp_path)
    assert got == memory.Available(512 * 1024**2, "RECOMMENDER_MEMORY_LIMIT=512MB")


def test_without_a_cgroup_limit_memavailable_counts(tmp_path: Path) -> None:
    proc = _tree(tmp_path / "proc", {"meminfo": MEMINFO, "self/cgroup": "0::/\n"})
    got = memory.available_memory({}, proc, tmp_path / "nothing")
    assert got == memory.Available(20000000 * 1024, "MemAvailable in /proc/meminfo")


def test_a_cgroup_v2_limit_counts_its_free_room_and_its_parents(tmp_path: Path) -> None:
    proc = _tree(tmp_path / "proc", {"meminfo": MEMINFO, "self/cgroup": "0::/job/step\n"})
    cgroup = _tree(
        tmp_path / "cgroup",
        {
            "cgroup.controllers": "cpu memory\n",
            # The group: 4 GB, 1.5 GB in use of which 0.5 GB is reclaimable cache.
            "job/step/memory.max": f"{4 * GB}\n",
            "job/step/memory.current": f"{int(1.5 * GB)}\n",
            "job/step/memory.stat": f"anon 1\ninactive_file {GB // 2}\n",
            "job/memory.max": "max\n",  # its parent sets no limit
        },
    )
    got = memory.available_memory({}, proc, cgroup)
    assert (
        got.nbytes == 3 * GB and "cgroup's memory limit 4.0 GB, 1.0 GB of it in use" in got.source
    )
    # A parent's tighter limit wins.
    (cgroup / "job/memory.max").write_text(f"{2 * GB}\n")
    (cgroup / "job/memory.current").write_text(f"{GB}\n")
    assert memory.available_memory({}, proc, cgroup).nbytes == GB


def test_a_cgroup_v1_limit_counts_and_the_kernels_no_limit_does_not(tmp_path: Path) -> None:
    proc = _tree(tmp_path / "proc", {"meminfo": MEMINFO, "self/cgroup": "4:memory:/box\n0::/\n"})
    stat = f"cache 1\nhierarchical_memory_limit {2 * GB}\ntotal_inactive_file {GB // 4}\n"
    cgroup = _tree(
        tmp_path / "cgroup",
        {"memory/box/memory.stat": stat, "memory/box/memory.usage_in_bytes": f"{GB}\n"},
    )
    assert memory.available_memory({}, proc, cgroup).nbytes == 2 * GB - GB + GB // 4
    unlimited = stat.replace(str(2 * GB), str(2**63 - 4096))
    (cgroup / "memory/box/memory.stat").write_text(unlimited)
    assert memory.available_memory({}, proc, cgroup).source == "MemAvailable in /proc/meminfo"


def test_the_check_names_stage_need_availability_parts_and_remedies() -> None:
    estimate = memory.Estimate(
        "train",
        (memory.Part("biased_mf tables 60,001 x 65", 3 * GB), memory.Part("TensorFlow", GB)),
        ("a smaller train.batch_size",),
    )
    memory.check(estimate, memory.Available(5 * GB, "test"))  # fits: nothing happens
    with pytest.raises(memory.MemoryLimitExceeded) as caught:
        memory.check(estimate, memory.Available(GB, "RECOMMENDER_MEMORY_LIMIT=1GB"))
    message = str(caught.value)
    assert message == (
        "not enough memory: the train stage needs about 4.0 GB but 1.0 GB is available "
        "(RECOMMENDER_MEMORY_LIMIT=1GB); the estimate: biased_mf tables 60,001 x 65 = 3.0 GB + "
        "TensorFlow = 1.0 GB. To fix: a smaller train.batch_size; run on a machine with more "
        "memory; or, if more memory is in fact free, raise the limit (RECOMMENDER_MEMORY_LIMIT=...)"
    )
    assert isinstance(caught.value, RecommenderError)  # the stage runner's one-line error


def test_evaluate_counts_tensorflow_only_for_a_model_scored_by_keras() -> None:
    def estimate(uses_tensorflow: bool) -> memory.Estimate:
        return evaluate_estimate(
            60_000, 10_000, 7_000_000, 2_000_000, [65], 4_000_000, None, uses_tensorflow
        )

    names = {p.what for p in estimate(uses_tensorflow=False).parts}
    assert "TensorFlow" not in names  # factor families: evaluate never loads Keras
    with_keras = estimate(uses_tensorflow=True)
    assert "TensorFlow" in {p.what for p in with_keras.parts}
    assert with_keras.total >= estimate(uses_tensorflow=False).total


def _config(family: str, **section: object) -> TrainConfig:
    return TrainConfig.model_validate({"model": family, family: section})


def test_the_defaults_fit_with_a_wide_margin_on_ml100k(ml100k_dir: Path) -> None:
    """Every family, and evaluation with EASE, estimated on ML-100K's u1 split: well under a
    small machine's memory (the estimates must never stop a default or ML-100K run)."""
    from recommender.core.config import parse_params
    from recommender.data import load_dataset
    from recommender.preprocess.split import preprocess

    params = parse_params(
        {
            "data": {"source": "movielens-100k", "path": str(ml100k_dir), "download": False},
            "preprocess": {"split": "given"},
        }
    )
    processed = preprocess(load_dataset(params), params.preprocess, params.seed)
    for family in FAMILIES:
        cfg = load_params(ROOT / "params.yaml").train.model_copy(update={"model": family})
        estimate = sizing.train_estimate(processed, cfg)
        assert estimate.total < GB, (family, memory.human(estimate.total))
        sizing.check_train(processed, cfg, memory.Available(2 * GB, "a small machine"))
    n_items = len(processed.item_vocab) - 1
    evaluation = evaluate_estimate(
        len(processed.user_vocab) - 1, n_items, len(processed.train), len(processed.test),
        [65, 65], 4_000_000, n_items,
    )  # fmt: skip
    assert evaluation.total < 1.5 * GB


def test_families_that_do_not_scale_name_their_limit_and_the_alternative(processed) -> None:  # noqa: ANN001
    small = memory.Available(64 * 1024, "RECOMMENDER_MEMORY_LIMIT=64KB")
    n_items = len(processed.item_vocab) - 1
    with pytest.raises(memory.MemoryLimitExceeded) as caught:
        sizing.check_train(processed, _config("two_tower", batch_size=512), small)
    message = str(caught.value)
    assert f"two_tower step: 512 x {n_items + 1:,} item logits x 4 copies x 4 B" in message
    assert "positives mask" in message
    assert "train.two_tower.softmax: in_batch (batch x batch logits)" in message
    assert "a family that scales: biased_mf or hybrid" in message
    with pytest.raises(memory.MemoryLimitExceeded) as caught:
        sizing.check_train(
            processed, _config("two_tower", softmax="in_batch", batch_size=1024), small
        )
    message = str(caught.value)
    assert "two_tower step: 1,024 x 1,024 in-batch logits" in message
    assert "a smaller train.two_tower.batch_size (its softmax is batch x batch)" in message
    n_users = len(processed.user_vocab) - 1
    sampled = _config("two_tower", softmax="sampled", negatives=300, batch_size=1024)
    with pytest.raises(memory.MemoryLimitExceeded) as caught:
        sizing.check_train(processed, sampled, small)
    message = str(caught.value)
    assert "two_tower step: 1,024 x 301 sampled logits x 4 copies x 4 B" in message
    # One bit per (user, item) cell, each user's row padded to whole bytes.
    assert f"two_tower positives bits {n_users + 1:,} x {-(-(n_items + 1) // 8):,} B" in message
    assert "train.two_tower.negatives (its softmax is batch x (batch + negatives))" in message
    mixed = _config(
        "two_tower", softmax="sampled", negatives=300, in_batch_negatives=True, batch_size=1024
    )
    assert "1,024 x 1,324 sampled logits" in "".join(
        p.what for p in sizing.train_estimate(processed, mixed).parts
    )
    with pytest.raises(memory.MemoryLimitExceeded) as caught:
        sizing.check_train(processed, _config("autorec"), small)
    message = str(caught.value)
    assert "autorec step: up to" in message and "ratings (of its batch's 4,096 items)" in message
    assert "a smaller train.autorec.batch_size" in message
    with pytest.raises(memory.MemoryLimitExceeded) as caught:  # the tables of any family
        sizing.check_train(processed, _config("biased_mf"), small)
    assert "biased_mf tables" in str(caught.value) and "biased_mf or hybrid" in str(caught.value)


def test_autorec_refuses_an_epoch_that_reads_too_many_ratings(processed) -> None:  # noqa: ANN001
    plenty = memory.Available(100 * GB, "test")
    n = len(processed.train) + len(processed.val)
    cfg = _config("autorec", batch_size=64)
    sizing.check_train(processed, cfg, plenty)  # the built-in limit: far away on this data
    with pytest.raises(ConfigError) as caught:
        sizing.check_train(processed, cfg, plenty, max_epoch_reads=20 * n)
    message = str(caught.value)
    assert message.startswith("autorec: AutoRec reads all the ratings of its batch's items")
    assert f"with {n:,} ratings" in message and "batch_size 64" in message
    assert f"more than the {20 * n:,} it is built for: " in message
    assert "raise train.autorec.batch_size to" in message
    assert "or use biased_mf or hybrid" in message
    # A batch that fits is suggested: it passes.
    fits = int(message.split("batch_size to ")[1].split(" ")[0].replace(",", ""))
    sizing.check_train(processed, _config("autorec", batch_size=fits), plenty, 20 * n)
    with pytest.raises(ConfigError, match=r"ensemble: .* raise train.ensemble.batch_size"):
        sizing.check_train(processed, _config("ensemble", batch_size=64), plenty, 20 * n)


def _run_stage_in_process(script: Path, folder: Path, argv: list[str]) -> tuple[int, str]:
    """An entry point's own ``run_stage`` call, in this process, from ``folder``."""
    import os

    from recommender.core.stage import run_stage

    stage = runpy.run_path(str(script))
    stage_function = stage[script.stem]  # each entry point names its function after its stage
    stderr, cwd = io.StringIO(), os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stderr(stderr):
            code = run_stage(script.stem, stage_function, stage["configure"], argv)
    finally:
        os.chdir(cwd)
    return code, stderr.getvalue()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_stage_over_the_limit_stops_before_work_and_keeps_its_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_raw()))
    ingest = _run_stage_in_process(ROOT / "pipeline/ingest.py", tmp_path, ["--out", "interim"])
    assert ingest[0] == 0, ingest[1]
    argv = ["--data", "interim", "--out", "processed", "--summary", "data.json"]
    script = ROOT / "pipeline/preprocess.py"
    assert _run_stage_in_process(script, tmp_path, argv)[0] == 0
    before = _snapshot(tmp_path)

    monkeypatch.setenv(memory.LIMIT_ENV, "100KB")
    code, stderr = _run_stage_in_process(script, tmp_path, argv)
    assert code == 1
    assert stderr.startswith(
        "error: stage 'preprocess' failed: not enough memory: the preprocess stage needs about "
    )
    assert "but 100.0 KB is available (RECOMMENDER_MEMORY_LIMIT=100KB)" in stderr
    assert "ratings: 6,000 ratings x 200 B" in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr  # one line
    assert _snapshot(tmp_path) == before  # the previous outputs, untouched
    # Ingest refuses the same way, before generating anything.
    code, stderr = _run_stage_in_process(
        ROOT / "pipeline/ingest.py", tmp_path, ["--out", "interim"]
    )
    assert code == 1 and "the ingest stage needs about" in stderr
    assert _snapshot(tmp_path) == before

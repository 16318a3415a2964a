"""PNG figures of a training run and its evaluation (matplotlib, no display needed).

``dvc plots`` renders its HTML with a chart library from a CDN, blank offline; these PNGs are
what a person opens (and MLflow shows them as run artifacts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _pyplot():  # noqa: ANN202 (matplotlib's module)
    import matplotlib

    matplotlib.use("Agg")  # files only: never look for a display
    import matplotlib.pyplot as plt

    return plt


def learning_curves(history: pd.DataFrame, path: str | Path) -> None:
    """Train and validation RMSE per epoch, with the best validation epoch marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(history["epoch"], history["rmse"], label="train RMSE")
    if "val_rmse" in history:
        ax.plot(history["epoch"], history["val_rmse"], label="validation RMSE")
        best = history.loc[history["val_rmse"].idxmin()]
        ax.axvline(
            best["epoch"], color="grey", linestyle=":", label=f"best epoch {best['epoch']:.0f}"
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMSE")
    ax.set_title("Learning curves")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def error_by_activity(table: pd.DataFrame, path: str | Path) -> None:
    """Test RMSE of the model and the bias baseline per user-activity slice."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(len(table))
    ax.bar(x - 0.2, table["rmse"], width=0.4, label="model")
    ax.bar(x + 0.2, table["bias_rmse"], width=0.4, label="bias baseline")
    labels = [f"{s}\n({n} rows)" for s, n in zip(table["slice"], table["rows"], strict=True)]
    ax.set_xticks(x, labels)
    ax.set_xlabel("user's ratings in train")
    ax.set_ylabel("test RMSE")
    ax.set_title("Error by user activity")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def predicted_vs_actual(rows: pd.DataFrame, path: str | Path) -> None:
    """Distribution of predictions for each actual rating (box plot), with the ideal line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    actual = np.sort(rows["rating"].unique())
    groups = [rows.loc[rows["rating"] == a, "prediction"].to_numpy() for a in actual]
    ax.boxplot(groups, positions=actual, widths=0.25 * np.min(np.diff(actual), initial=1.0))
    ax.plot(actual, actual, color="grey", linestyle=":", label="ideal")
    ax.set_xlabel("actual rating")
    ax.set_ylabel("predicted rating")
    ax.set_title("Predicted vs actual (test)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

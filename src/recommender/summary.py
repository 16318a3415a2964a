"""``python -m recommender.summary``: the pipeline's headline figures, after ``dvc repro``.

``dvc metrics show`` lists every number of every report in one very wide table; this prints the
few a person looks at first, and says where the rest is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def summarize(reports: Path = Path("reports")) -> str:
    """A few lines: data, test metrics against the baselines, the gate's decision, the Bento."""
    lines = []
    if data := _read(reports / "data.json"):
        rows = data["rows"]
        lines.append(
            f"data      {data['n_users']} users, {data['n_items']} items; split {data['split']}: "
            f"{rows['train']} train / {rows['val']} val / {rows['test']} test"
        )
    if metrics := _read(reports / "metrics.json"):
        test, base = metrics["test"], metrics["baselines"]
        key = next((k for k in metrics["ranking"] if k.startswith("ndcg@")), "ndcg@10")
        cover = key.replace("ndcg", "coverage")

        def ranked(m: dict[str, Any]) -> str:
            if m.get(key) is None:
                return f"skipped ({m.get('skipped', 'no value')})"
            return f"{m[key]:.4f} (coverage {m.get(cover, 0.0):.3f})"

        lines.append(
            f"ranking   {key.upper()} {ranked(metrics['ranking'])}; popularity "
            f"{ranked(base['popularity'])}; EASE {ranked(base.get('ease', {}))}"
        )
        lines.append(
            f"rating    {metrics['model']}: test RMSE {test['rmse']:.4f}, MAE {test['mae']:.4f}, "
            f"MSE {test['mse']:.4f}; bias baseline RMSE {base['bias']['rmse']:.4f}, "
            f"global mean {base['global_mean']['rmse']:.4f}"
        )
    if promotion := _read(reports / "promotion.json"):
        lines.append(f"registry  {promotion.get('decision')}: {promotion.get('reason')}")
    if package := _read(reports / "package.json"):
        if package.get("packaged"):
            lines.append(
                f"serving   Bento {package['bento']} carries {package['registered_model']} "
                f"v{package['version']} (make serve)"
            )
        else:
            lines.append(f"serving   nothing packaged: {package.get('reason')}")
    lines.append("details   dvc metrics show | reports/ | make ui (MLflow)")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarize(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("reports")))

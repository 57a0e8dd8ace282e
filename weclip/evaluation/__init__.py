"""Evaluation: confusion-matrix segmentation metrics (spec §9)."""

from weclip.evaluation.metrics import (
    METRICS_SCHEMA,
    ConfusionMatrix,
    format_table,
    metrics_payload,
    scores_from_hist,
    write_metrics_json,
)

__all__ = [
    "METRICS_SCHEMA",
    "ConfusionMatrix",
    "format_table",
    "metrics_payload",
    "scores_from_hist",
    "write_metrics_json",
]

"""Paper-shaped markdown tables from metrics.json files (``tools/report.py``, the README's "Reproduction").

Every ``metrics.json`` written by ``tools/infer.py`` (segmentation) or ``tools/eval_pseudo.py`` (pseudo-labels)
is one measurement (``weclip.evaluation.records``). Tables:

* Semantic segmentation, mIoU (%): the papers' numbers first, then one row per (model, inference setting)
  (single-scale, MS+flip, MS+flip+CRF, ...), columns VOC val / VOC test / COCO val (the papers'), plus one
  column per other dataset and split found (e.g. "toy val").
* Pseudo-labels, mIoU (%): one row per (model, ablation row) (WeCLIP: initial CAM, static refinement, RFM,
  each with/without PAR and CRF), one column per dataset and split.

A cell averages every measurement with the same dataset, split and setting: several training runs (seeds)
give ``mean ± std (n=N)`` with the sample standard deviation (N - 1 in the denominator); one run gives its
value. Two files for the same checkpoint and setting count once (the first path, in sorted order). Point the
tool at the final-checkpoint outputs you want in the table; the "Sources" list names every file used.
"""

import json
import logging
import os
import re
import statistics
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from weclip.errors import DataError, MissingFileError
from weclip.evaluation.metrics import METRICS_SCHEMA

__all__ = ["PAPERS", "SECTION", "build_report", "replace_section", "find_metrics", "load_record"]

logger = logging.getLogger("weclip")

# The papers' headline numbers (mIoU %): (model type, row title, {(dataset, split): value}); each paper row
# heads the rows measured with its model type. WeCLIP (Zhang et al., CVPR 2024): VOC test 77.2 and COCO val
# 47.1 as published, VOC val 76.4 from the paper's table (docs/official_code.md §12: whether CRF was applied
# is not visible in the authors' main test script, spec §9). WeCLIP+ (Zhang et al., TPAMI 2025): the
# abstract's VOC test and COCO val figures (docs/weclip_plus.md).
PAPERS: Tuple[Tuple[str, str, Dict[Tuple[str, str], float]], ...] = (
    (
        "WeCLIP",
        "WeCLIP, paper (CVPR 2024)",
        {("VOC", "val"): 76.4, ("VOC", "test"): 77.2, ("COCO", "val"): 47.1},
    ),
    ("WeCLIPPlus", "WeCLIP+, paper (TPAMI 2025)", {("VOC", "test"): 83.9, ("COCO", "val"): 56.3}),
)
PAPER_COLUMNS: Tuple[Tuple[str, str], ...] = (("VOC", "val"), ("VOC", "test"), ("COCO", "val"))
SOURCES = ("tools/infer.py", "tools/eval_pseudo.py")
# Row order of the pseudo-label table: WeCLIP's rows, then WeCLIP+'s RFM+ (others follow, in the order found).
PSEUDO_ORDER = (
    "cam", "cam_par", "static", "static_par", "rfm", "rfm_par", "rfm_plus", "rfm_plus_par",
)  # fmt: skip
SECTION = "reproduction"

HOW_TO = """\
**How to reproduce** (commands in [Inference and evaluation](#inference-and-evaluation)):

```bash
python tools/prepare_voc.py --voc-root data/VOCdevkit/VOC2012 --sbd-root data/benchmark_RELEASE
tools/dist_train.sh configs/voc.py 4                   # or: python tools/train.py configs/voc.py
CKPT=work_dirs/voc/checkpoints/iter_30000.pth
python tools/infer.py configs/voc.py $CKPT --ms 1.0 --no-flip            # single-scale
python tools/infer.py configs/voc.py $CKPT --crf --crf-workers 8             # MS+flip and MS+flip+CRF
python tools/infer.py configs/voc.py $CKPT --split test --crf --crf-workers 8   # VOC test: upload results/
python tools/eval_pseudo.py configs/voc.py $CKPT --split train --crf --crf-workers 8   # pseudo-label rows
python tools/report.py work_dirs --update-readme README.md             # regenerate this section
```
COCO: the same with `configs/coco.py` and `tools/prepare_coco.py` (80k iterations). Several seeds: train
into separate work dirs (`--seed S --work-dir work_dirs/voc_sS`) and evaluate each final checkpoint; every
`metrics.json` under the folders given to `tools/report.py` counts as one run of its setting, so keep
intermediate checkpoints' outputs elsewhere.
"""


def find_metrics(paths: Iterable[str]) -> List[str]:
    """Every ``metrics.json`` under the folders (recursively) and the files given, sorted, without repeats.

    Raises:
        FileNotFoundError: a path that does not exist.
    """
    found = set()
    for path in paths:
        if os.path.isfile(path):
            found.add(os.path.normpath(path))
        elif os.path.isdir(path):
            for folder, _, files in os.walk(path):
                if "metrics.json" in files:
                    found.add(os.path.normpath(os.path.join(folder, "metrics.json")))
        else:
            raise MissingFileError(f"no such file or folder: {path}")
    return sorted(found)


def load_record(path: str) -> Optional[Dict[str, Any]]:
    """Read one metrics.json; None (with a warning) for files of other tools.

    Returns:
        dict | None: the payload plus ``path``.

    Raises:
        ValueError: unreadable JSON, another schema, or a missing key (the file is named).
    """
    try:
        with open(path) as f:
            payload = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON file ({err})") from err
    if not isinstance(payload, dict) or payload.get("schema") != METRICS_SCHEMA:
        raise DataError(
            f"{path}: not a {METRICS_SCHEMA} metrics file (schema {payload.get('schema')!r})"
        )
    if payload.get("source") not in SOURCES:
        logger.warning(
            "%s: written by %r, not by %s: skipped",
            path,
            payload.get("source"),
            " or ".join(SOURCES),
        )
        return None
    needed = ["miou", "dataset", "split", "setting" if payload["source"] == SOURCES[0] else "row"]
    missing = [k for k in needed if k not in payload]
    if missing:
        raise DataError(f"{path}: metrics file lacks {missing}")
    if payload["miou"] is not None and not isinstance(payload["miou"], (int, float)):
        raise DataError(f"{path}: miou must be a number or null, got {payload['miou']!r}")
    return dict(payload, path=path, model=payload.get("model", "WeCLIP"))


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (None for a single value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def format_cell(values: Sequence[float]) -> str:
    """mIoU fractions -> "76.40" (one run) or "72.00 ± 2.00 (n=3)"; "–" when empty."""
    if not values:
        return "–"
    mean, std = mean_std([100.0 * v for v in values])
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f} (n={len(values)})"


def _setting_order(setting: str) -> Tuple[int, int, int, str]:
    crf = setting.endswith("+CRF")
    return (int(crf), int(setting.startswith("MS")), int("+flip" in setting), setting)


def select_records(records: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    """The measurements that enter the tables: records with an mIoU, and of several files for the same
    checkpoint and setting (or row) only the first (paths are sorted); each drop is logged.

    Args:
        records (Sequence[Mapping]): from :func:`load_record`.

    Returns:
        List[Mapping]: the kept records, in order.
    """
    kept: List[Mapping[str, Any]] = []
    seen: Dict[Tuple[Any, ...], str] = {}
    for rec in records:
        if rec["miou"] is None:
            logger.warning("%s: mIoU is null (no ground truth pixels): skipped", rec["path"])
            continue
        ckpt = rec.get("checkpoint")
        what = rec.get("setting") if rec["source"] == SOURCES[0] else rec.get("row")
        where = os.path.abspath(ckpt) if ckpt else rec["path"]
        ident = (rec["source"], rec["model"], what, rec["dataset"], rec["split"], where)
        if ident in seen:
            logger.warning(
                "%s: same checkpoint and setting as %s: counted once", rec["path"], seen[ident]
            )
            continue
        seen[ident] = rec["path"]
        kept.append(rec)
    return kept


def group(
    records: Sequence[Mapping[str, Any]], row_key: str
) -> "OrderedDict[Tuple[Tuple[str, str], Tuple[str, str]], List[Mapping[str, Any]]]":
    """Records by ((model, row), (dataset, split)); ``row_key`` is "setting" or "row"."""
    cells: "OrderedDict[Tuple[Tuple[str, str], Tuple[str, str]], List[Mapping[str, Any]]]" = (
        OrderedDict()
    )
    for rec in records:
        key = ((rec["model"], rec[row_key]), (rec["dataset"], rec["split"]))
        cells.setdefault(key, []).append(rec)
    return cells


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _column_name(column: Tuple[str, str]) -> str:
    return f"{column[0]} {column[1]}"


def segmentation_table(records: Sequence[Mapping[str, Any]]) -> str:
    """The semantic-segmentation table: per model, its paper's row, then one row per measured setting."""
    cells = group([r for r in records if r["source"] == SOURCES[0]], "setting")
    extra = sorted({col for _, col in cells} - set(PAPER_COLUMNS))
    columns = list(PAPER_COLUMNS) + extra
    header = ["Method", "Inference"] + [_column_name(c) for c in columns]
    keys = sorted({k for k, _ in cells}, key=lambda k: (k[0], _setting_order(k[1])))
    paper_models = list(dict.fromkeys(m for m, _, _ in PAPERS))
    models = paper_models + sorted({m for m, _ in keys} - set(paper_models))
    rows = []
    for model in models:
        for paper_model, title, numbers in PAPERS:
            if paper_model == model:
                rows.append(
                    [title, "as reported"]
                    + [f"{numbers[c]:.1f}" if c in numbers else "–" for c in columns]
                )
        for setting in [s for m, s in keys if m == model]:
            rows.append(
                [f"{model}, this repository", setting]
                + [
                    format_cell([r["miou"] for r in cells.get(((model, setting), c), [])])
                    for c in columns
                ]
            )
    return _table(header, rows)


def pseudo_table(records: Sequence[Mapping[str, Any]]) -> Optional[str]:
    """The pseudo-label table (rows in ablation order), or None when there is no measurement."""
    cells = group([r for r in records if r["source"] == SOURCES[1]], "row")
    if not cells:
        return None
    columns = sorted({col for _, col in cells})
    header = ["Pseudo-labels"] + [_column_name(c) for c in columns]

    def order(key: Tuple[str, str]) -> Tuple[str, int, int, str]:
        model, row = key
        base = row.removesuffix("_crf")
        rank = PSEUDO_ORDER.index(base) if base in PSEUDO_ORDER else len(PSEUDO_ORDER)
        return (model, int(row != base), rank, row)

    rows = []
    models = {m for (m, _), _ in cells}
    for key in sorted({k for k, _ in cells}, key=order):
        title = next(r.get("row_title", key[1]) for c in columns for r in cells.get((key, c), []))
        if len(models) > 1:
            title = f"{key[0]}: {title}"
        rows.append(
            [title] + [format_cell([r["miou"] for r in cells.get((key, c), [])]) for c in columns]
        )
    return _table(header, rows)


def sources_list(records: Sequence[Mapping[str, Any]]) -> str:
    """One line per measurement: cell, path, seed, iteration."""
    lines = []
    for rec in records:
        what = rec.get("setting") or rec.get("row")
        seed, it = rec.get("train_seed"), rec.get("iteration")
        extras = ", ".join(
            x for x in (f"seed {seed}" if seed is not None else "", f"iter {it}" if it else "") if x
        )
        lines.append(
            f"- {rec['model']}, {rec['dataset']} {rec['split']}, {what}: {100 * rec['miou']:.2f} — "
            f"`{rec['path']}`" + (f" ({extras})" if extras else "")
        )
    return "\n".join(lines)


def build_report(paths: Sequence[str]) -> str:
    """The full markdown report for the metrics.json files under ``paths``."""
    loaded = [r for r in (load_record(p) for p in find_metrics(paths)) if r is not None]
    records = select_records(loaded)
    parts = [
        "Semantic segmentation, mIoU (%). Each model's first row holds the numbers reported in its paper "
        "(WeCLIP: VOC 2012 test 77.2 and COCO 2014 val 47.1 as published, VOC val 76.4 from the paper's "
        "table; the authors' `test_msc_flip_voc.py` has CRF switched off, their `test_msc_flip_seg.py` runs "
        "it, docs/official_code.md §9. WeCLIP+: the abstract's VOC test and COCO val figures, "
        "docs/weclip_plus.md). The rows below it are measurements of this repository, generated by "
        "`tools/report.py` (a cell is the mean ± sample std over runs when there are several). VOC test "
        "is scored by the evaluation server only.",
        "",
        segmentation_table(records),
        "",
    ]
    pseudo = pseudo_table(records)
    if pseudo is not None:
        parts += [
            "Pseudo-label quality, mIoU (%) against the masks of the split (image-level labels from "
            "the label file):",
            "",
            pseudo,
            "",
        ]
    if not records:
        parts += [
            "No measurement of this repository is listed yet: VOC, COCO and the CLIP weights were not "
            "available where this section was generated, so the numbers above are the paper's only. Rows "
            "and columns (e.g. the toy world's) appear when `tools/report.py` finds metrics.json files.",
            "",
        ]
    else:
        parts += ["Sources:", "", sources_list(records), ""]
    parts.append(HOW_TO)
    return "\n".join(parts).rstrip() + "\n"


def replace_section(text: str, name: str, body: str, source: str = "README") -> str:
    """Replace what lies between ``<!-- section:NAME -->`` and ``<!-- /section:NAME -->``.

    Raises:
        ValueError: the markers are missing or repeated (``source`` is named).
    """
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise DataError(f"{source}: expected exactly one '{start}' ... '{end}' pair")
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    return pattern.sub(lambda _: f"{start}\n{body.rstrip()}\n{end}", text, count=1)

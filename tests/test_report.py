"""The report (weclip/evaluation/report.py, tools/report.py) on hand-written metrics.json files: paper rows,
mean ± sample std over runs, duplicate checkpoints counted once, extra dataset columns, one row per model,
pseudo-label rows, README section replacement, bad files."""

import json
import os

import pytest
from helpers import run_tool

from weclip.errors import UserInputError
from weclip.evaluation import report


def _write(directory, rel, **payload):
    path = os.path.join(directory, rel, "metrics.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    base = {
        "schema": "weclip.metrics/v1",
        "checkpoint": None,
        "train_seed": None,
        "iteration": None,
    }
    with open(path, "w") as f:
        json.dump(dict(base, **payload), f)
    return path


def _seg(directory, rel, miou, dataset, split, setting, ckpt):
    return _write(
        directory, rel, source="tools/infer.py", miou=miou, dataset=dataset, split=split,
        setting=setting, checkpoint=ckpt, train_seed=int(ckpt[-1]), iteration=30000,
    )  # fmt: skip


@pytest.fixture
def runs(tmp_path):
    d = str(tmp_path)
    ms, crf = "MS(1,0.75)+flip", "MS(1,0.75)+flip+CRF"
    for seed, miou in ((1, 0.70), (2, 0.72), (3, 0.74)):
        _seg(
            d, f"voc_s{seed}/infer/ms", miou, "VOC", "val", ms, f"voc_s{seed}/iter_30000.pth_{seed}"
        )
    # the same checkpoint and setting again (a re-run into another folder): counted once
    _seg(d, "voc_s1/infer/ms_again", 0.10, "VOC", "val", ms, "voc_s1/iter_30000.pth_1")
    _seg(d, "voc_s1/infer/crf", 0.7512, "VOC", "val", crf, "voc_s1/iter_30000.pth_1")
    _seg(d, "coco/infer/ss", 0.40, "COCO", "val", "single-scale", "coco/iter_80000.pth_1")
    _seg(d, "toy/infer/ss", 0.90, "toy", "val", "single-scale", "toy/iter_300.pth_1")
    for rel, row, title, miou, ckpt in (
        ("voc_s1/pseudo/cam", "cam", "initial CAM", 0.5, "voc_s1/iter_30000.pth_1"),
        ("voc_s1/pseudo/rfm_par", "rfm_par", "RFM + PAR (WeCLIP)", 0.60, "voc_s1/iter_30000.pth_1"),
        ("voc_s2/pseudo/rfm_par", "rfm_par", "RFM + PAR (WeCLIP)", 0.62, "voc_s2/iter_30000.pth_2"),
    ):
        _write(
            d, rel, source="tools/eval_pseudo.py", row=row, row_title=title, miou=miou,
            dataset="VOC", split="train", checkpoint=ckpt,
        )  # fmt: skip
    _write(d, "other/tool", source="tools/something_else.py", miou=0.99)  # skipped: another tool
    return d


def test_mean_and_sample_std():
    # 70, 72, 74: mean 72; deviations -2, 0, 2 -> sum of squares 8 / (3 - 1) = 4 -> std 2
    assert report.format_cell([0.70, 0.72, 0.74]) == "72.00 ± 2.00 (n=3)"
    assert report.format_cell([0.7512]) == "75.12"
    assert report.format_cell([]) == "–"


def test_segmentation_and_pseudo_tables(runs):
    text = report.build_report([runs])
    expected_seg = "\n".join(
        [
            "| Method | Inference | VOC val | VOC test | COCO val | toy val |",
            "|---|---|---|---|---|---|",
            "| WeCLIP, paper (CVPR 2024) | as reported | 76.4 | 77.2 | 47.1 | – |",
            "| WeCLIP, this repository | single-scale | – | – | 40.00 | 90.00 |",
            "| WeCLIP, this repository | MS(1,0.75)+flip | 72.00 ± 2.00 (n=3) | – | – | – |",
            "| WeCLIP, this repository | MS(1,0.75)+flip+CRF | 75.12 | – | – | – |",
        ]
    )
    assert expected_seg in text
    # 60, 62: mean 61; deviations -1, 1 -> sum of squares 2 / (2 - 1) = 2 -> std sqrt(2) = 1.41
    expected_pseudo = "\n".join(
        [
            "| Pseudo-labels | VOC train |",
            "|---|---|",
            "| initial CAM | 50.00 |",
            "| RFM + PAR (WeCLIP) | 61.00 ± 1.41 (n=2) |",
        ]
    )
    assert expected_pseudo in text
    assert "voc_s1/infer/ms_again" not in text  # the duplicate is not a source
    assert "something_else" not in text and "99.00" not in text
    assert "voc_s2/infer/ms/metrics.json` (seed 2, iter 30000)" in text


def test_paper_only_report_without_measurements(tmp_path):
    text = report.build_report([str(tmp_path)])
    assert "| WeCLIP, paper (CVPR 2024) | as reported | 76.4 | 77.2 | 47.1 |" in text
    assert "this repository |" not in text and "Pseudo-labels |" not in text
    assert "No measurement of this repository" in text


def test_readme_section_is_replaced_in_place(runs, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "# T\n<!-- section:inference -->\nkeep me\n<!-- /section:inference -->\n"
        "<!-- section:reproduction -->\nOLD-CONTENT\n<!-- /section:reproduction -->\ntail\n"
    )
    out = tmp_path / "report.md"
    run_tool("report", [runs, "--out", str(out), "--update-readme", str(readme)])
    assert out.read_text() == report.build_report([runs])
    text = readme.read_text()
    assert "keep me" in text and text.endswith("<!-- /section:reproduction -->\ntail\n")
    assert "OLD-CONTENT" not in text and "72.00 ± 2.00 (n=3)" in text
    assert text.count("<!-- section:reproduction -->") == 1
    with pytest.raises(UserInputError, match="other.md: expected exactly one"):
        report.replace_section("no markers", "reproduction", "x", "other.md")


def test_models_get_their_own_rows(tmp_path):
    d = str(tmp_path)
    _seg(d, "a", 0.70, "VOC", "val", "single-scale", "a/iter_1.pth_1")
    _write(
        d, "b", source="tools/infer.py", miou=0.5, dataset="VOC", split="val", setting="single-scale",
        model="CAMClassifier", checkpoint="b/iter_1.pth_1",
    )  # fmt: skip
    _write(
        d, "c", source="tools/infer.py", miou=0.8, dataset="VOC", split="val", setting="single-scale",
        model="WeCLIPPlus", checkpoint="c/iter_1.pth_1",
    )  # fmt: skip
    text = report.build_report([d])
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    titles = [line.split(" | ")[0][2:] for line in lines[1:]]  # after the header
    # each model's measurements under its paper's row; models without a paper last
    # (files without "model": WeCLIP)
    assert titles[:5] == [
        "WeCLIP, paper (CVPR 2024)",
        "WeCLIP, this repository",
        "WeCLIP+, paper (TPAMI 2025)",
        "WeCLIPPlus, this repository",
        "CAMClassifier, this repository",
    ]
    assert "| CAMClassifier, this repository | single-scale | 50.00 |" in text
    assert "| WeCLIP, this repository | single-scale | 70.00 |" in text
    assert "| WeCLIP+, paper (TPAMI 2025) | as reported | – | 83.9 | 56.3 |" in text


def test_bad_metrics_file_is_named(tmp_path):
    bad = tmp_path / "run" / "metrics.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(UserInputError, match=r"run/metrics.json: not a readable JSON file"):
        report.build_report([str(tmp_path)])
    bad.write_text(
        json.dumps({"schema": "weclip.metrics/v1", "source": "tools/infer.py", "miou": 0.5})
    )
    with pytest.raises(
        UserInputError, match=r"metrics.json: metrics file lacks \['dataset', 'split', 'setting'\]"
    ):
        report.build_report([str(tmp_path)])
    proc = run_tool("report", [str(tmp_path / "missing")], check=False)
    assert proc.returncode == 2 and "error: no such file or folder" in proc.stderr
    assert "Traceback" not in proc.stderr

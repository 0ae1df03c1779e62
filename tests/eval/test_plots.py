"""Sweep plots: the Pareto front (pure), grouping into schemes with budget labels, the files written."""

from PIL import Image

from tokencompose.eval.plots import gflops_to_first_token, group_by_scheme, pareto_front, plot_sweep


def test_the_pareto_front_keeps_the_points_nothing_beats_ordered_by_cost():
    points = [(4.0, 70.0), (2.0, 55.0), (1.0, 50.0), (3.0, 58.0), (2.0, 60.0), (4.0, 70.0), (5.0, 69.0)]
    assert pareto_front(points) == [2, 4, 0]  # (2, 55) loses to (2, 60); (3, 58) to (2, 60); (5, 69) to (4, 70)
    assert pareto_front([]) == [] and pareto_front([(1.0, 1.0)]) == [0]
    assert pareto_front([(1.0, 90.0), (2.0, 80.0)]) == [0]  # more tokens for less: never on the front


def test_one_series_per_scheme_each_point_labelled_with_its_budget():
    rows = [{"model.objects.max_objects": m, "model.patch.grid": g, "visual_tokens": 1 + int(m) + int(g) ** 2}
            for g in ("2", "1") for m in ("4", "1")]
    series, labels = group_by_scheme(rows, ["model.objects.max_objects", "model.patch.grid"], "mask_llava")
    assert list(series) == ["mask_llava grid=2", "mask_llava grid=1"]
    assert labels["mask_llava grid=2"] == ["max_objects=4", "max_objects=1"]
    assert group_by_scheme(rows[:1], [], "llava15") == ({"llava15": rows[:1]}, {"llava15": ["llava15"]})


def test_flops_to_the_first_token_sum_the_stages_before_it():
    row = {"gflops_encoder": 1.5, "gflops_prefill": 2.0, "gflops_decode": 9.0, "gflops_reduction": 0.25}
    assert gflops_to_first_token(row) == 3.75 and gflops_to_first_token({"visual_tokens": 3}) is None


def test_the_plots_are_written_with_a_flops_panel_only_when_cost_was_measured(tmp_path):
    def rows(scale, cost):
        out = []
        for budget, score in ((9, 60.0), (6, 62.0), (3, 50.0)):
            r = {"budget": str(budget), "visual_tokens": budget * scale, "shapes/score": score}
            if cost:
                r.update(gflops_encoder=1.0, gflops_prefill=0.1 * budget * scale, ttft_ms=budget, ttft_ms_iqr=0.5)
            out.append(r)
        return out

    series = {"a": rows(1, True), "b": rows(2, True)}
    labels = {name: [f"budget={r['budget']}" for r in rs] for name, rs in series.items()}
    (tmp_path / "cost").mkdir()
    paths = plot_sweep(series, labels, "shapes/score", tmp_path / "cost")
    assert set(paths) == {"score_vs_tokens.png", "latency_vs_tokens.png"}
    with_flops = Image.open(paths["score_vs_tokens.png"]).size
    (tmp_path / "plain").mkdir()
    plain = plot_sweep({"a": rows(1, False)}, {"a": ["9", "6", "3"]}, "shapes/score", tmp_path / "plain")
    assert set(plain) == {"score_vs_tokens.png"} and Image.open(plain["score_vs_tokens.png"]).size[0] < with_flops[0]

"""The plots of a set of runs: Pareto fronts per method label, and the L0 gates over training."""

import statistics

import pytest
from fixtures.run_dirs import L0_TEST_PPL, gate_history_lines, make_runs, result, speed_json, write_run

from reproduce.report.plots import PLOT_METRIC, Styles, _points, latency_of, pareto_figure, write_plots
from reproduce.report.rows import build_rows
from reproduce.report.runs import flops_after, load_run_dirs, make_run, read_gate_history


def rows_of(dataset, runs):
    """The rows every renderer reads: the runs resolved once (no reported rows needed here)."""
    return build_rows(dataset, runs, [])[0]


def flops_x(run, row):
    return flops_after(run)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) from the PNG header: the file is a real image, not just non-empty."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def properties(label, gated=False, zeroes_weights=False, structured=True, fine_tuned=False) -> dict:
    return {"label": label, "gated": gated, "zeroes_weights": zeroes_weights, "structured": structured,
            "fine_tuned": fine_tuned}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = make_runs(tmp_path_factory.mktemp("runs"))
    # a lambda sweep, so the L0 curve has a front and a dominated point (2e-7: more FLOPs, worse)
    for lam, kept, test, latency in ((3e-7, [80, 70], 121.0, 0.045), (1e-6, [50, 42], 135.0, 0.035),
                                     (2e-7, [95, 90], 125.0, 0.05)):
        write_run(root, f"l0_{lam:g}", result("l0", [200, 200], kept, test + 4, test, lam=lam),
                  speed=speed_json(0.093 / latency, 1.9, latency))
    write_run(root, "gl_small", result("group_lasso", [200, 200], [120, 90], 124.0, 120.0, lam=1e-4),
              speed=speed_json(1.5, 1.6, 0.06))
    # the same method fine-tuned from a trained model: its own label, so its own front
    for lam, kept, test in ((1e-7, [100, 90], 116.0), (3e-7, [70, 60], 119.0)):
        res = result("l0", [200, 200], kept, test + 4, test, lam=lam, init_from="results/ptb/small/dense")
        res["method_properties"] = properties("L0 (fine-tuned)", gated=True, fine_tuned=True)
        write_run(root, f"l0_ft_{lam:g}", res, speed=speed_json(1.5, 1.7, 0.06))
    return root


@pytest.fixture(scope="module")
def runs(runs_dir):
    return rows_of("ptb", load_run_dirs(runs_dir)[0])


def test_plots_are_written_as_png_images(runs, tmp_path):
    paths = write_plots("ptb", runs, tmp_path)
    names = {p.name for p in paths}
    assert names == {"pareto_flops.png", "pareto_latency.png", "pareto_neurons.png", "gate_open_l0_s1.png"}
    for path in paths:
        width, height = png_size(path)
        assert width > 400 and height > 300 and path.stat().st_size > 10_000
    # two model scales in the runs: the Pareto plots get one panel each, side by side
    assert png_size(tmp_path / "pareto_flops.png")[0] > 1.5 * png_size(tmp_path / "pareto_flops.png")[1]


def test_one_front_per_label_and_every_run_drawn(runs):
    panels = _points("ptb", runs, flops_x)
    assert list(panels) == ["small (2x200)", "large (2x1500)"]
    small = panels["small (2x200)"]
    assert set(small) == {"dense", "L0", "L0 (fine-tuned)", "ISS group Lasso", "Lasso"}
    # one list per experiment: the two seeds at 1e-7 together, then one run per lambda
    assert sorted(len(seeds) for seeds in small["L0"]) == [1, 1, 1, 2] and len(small["L0 (fine-tuned)"]) == 2
    styles = Styles(runs)
    assert styles.order[0] == "dense" and styles.reference == {"dense"}
    fig = pareto_figure("ptb", panels, styles, "FLOPs", "title", {}, engineering_x=True)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    l0 = lines["L0 (5 runs)"]
    # the front: every L0 experiment no other beats with fewer-or-equal FLOPs, in FLOPs order; the
    # two seeds at 1e-7 (422,000 / 118.2 and 434,000 / 117.8) as their mean, not as two front points
    assert list(zip(l0.get_xdata(), l0.get_ydata())) == [(184000.0, 135.0), (300000.0, 121.0),
                                                         (428000.0, pytest.approx(118.0))]
    fine_tuned = lines["L0 (fine-tuned) (2 runs)"]
    assert fine_tuned.get_linestyle() == "--" and l0.get_linestyle() == "-"
    assert fine_tuned.get_color() != l0.get_color()
    assert lines["dense (112.3)"].get_ydata()[0] == pytest.approx(112.26)  # the reference line
    # the dominated L0 run (lambda 2e-7) is drawn as a hollow marker, not left out
    hollow = [c.get_offsets().tolist() for c in ax.collections if not len(c.get_facecolors())]
    assert [[370000.0, 125.0]] in hollow


def test_the_seeds_spread_is_drawn(runs):
    """An experiment of several seeds: error bars of one sample std on both axes around its mean,
    and each seed's own point; an experiment of one seed gets neither."""
    from matplotlib.container import ErrorbarContainer

    panels = _points("ptb", runs, flops_x)
    fig = pareto_figure("ptb", panels, Styles(runs), "FLOPs", "title", {})
    ax = fig.axes[0]
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]  # only L0 at 1e-7 has two seeds
    x_bar, y_bar = (collection.get_segments()[0] for collection in bars.lines[2])
    flops = (434000.0, 422000.0)  # l0_s1, l0_s2 ([112, 105] and [110, 101] neurons kept, 2000 FLOPs each)
    x_std, y_std = statistics.stdev(flops), statistics.stdev(L0_TEST_PPL)
    assert x_bar.ravel().tolist() == pytest.approx([428000.0 - x_std, 118.0, 428000.0 + x_std, 118.0])
    assert y_bar.ravel().tolist() == pytest.approx([428000.0, 118.0 - y_std, 428000.0, 118.0 + y_std])
    seeds = [c.get_offsets().tolist() for c in ax.collections if c.get_alpha() == pytest.approx(0.35)]
    assert seeds == [[[434000.0, 117.8], [422000.0, 118.2]]]


def test_latency_is_one_dense_reference_over_each_paired_speedup(tmp_path):
    """Two speed runs that drifted (dense timed at 0.10 and 0.12 ms) with the same 2x speedup land
    at the same latency: the median dense time over the speedup, not their own absolute times."""
    root = tmp_path / "runs"
    write_run(root, "dense", result("none", [200, 200], [200, 200], 117.0, 112.26), speed=speed_json(1.0, 1.0, 0.11))
    write_run(root, "a", result("l0", [200, 200], [80, 70], 125.0, 121.0, lam=1e-6), speed=speed_json(2.0, 2.0, 0.05))
    write_run(root, "b", result("l0", [200, 200], [80, 70], 126.0, 122.0, lam=2e-6), speed=speed_json(2.0, 2.0, 0.06))
    rows = rows_of("ptb", load_run_dirs(root)[0])
    x = {run.name: latency_of(rows)(run, row) for row in rows for run in row.runs}
    assert x == pytest.approx({"dense": 0.11, "a": 0.055, "b": 0.055})


def test_latency_plot_is_skipped_with_a_note_when_nothing_was_measured(tmp_path, capsys):
    write_run(tmp_path / "runs", "dense", result("none", [200, 200], [200, 200], 117.0, 112.26))
    paths = write_plots("ptb", rows_of("ptb", load_run_dirs(tmp_path / "runs")[0]), tmp_path / "out")
    assert [p.name for p in paths] == ["pareto_flops.png", "pareto_neurons.png"]
    assert "pareto_latency.png skipped: no run has a measured latency" in capsys.readouterr().err


def test_gate_history_keeps_the_last_line_per_step(tmp_path):
    path = tmp_path / "gate_history.jsonl"
    path.write_text("\n".join(gate_history_lines()) + "\n")
    history = read_gate_history(path)
    assert [h["step"] for h in history] == [10, 20, 30]  # the cut-off line is dropped
    assert history[1]["hidden"][0][0] == 0.8  # the second line written for step 20


def test_runs_from_wandb_make_no_gate_plots(tmp_path):
    run = make_run("from-wandb", result("l0", [200, 200], [112, 105], 122.0, 118.0, lam=1e-7))
    paths = write_plots("ptb", rows_of("ptb", [run]), tmp_path)
    assert [p.name for p in paths] == ["pareto_flops.png", "pareto_neurons.png"]


def test_squad_plots_f1_against_flops_per_question(tmp_path):
    res = result("l0", [100], [60], 0, 0, dataset="squad")
    res["metrics"] = {"em": 60.0, "f1": 70.0}
    res["flops_per_question"] = res.pop("flops_per_token")
    panels = _points("squad", rows_of("squad", [make_run("bidaf", res)]), flops_x)
    assert panels == {"BiDAF (hidden 100, paper scale)": {"L0": [[(120000.0, 70.0)]]}}  # one experiment, one seed
    assert PLOT_METRIC["squad"][2] is False  # higher F1 is better: the front keeps the highest

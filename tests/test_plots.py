"""The plots next to the tables: Pareto fronts and the L0 gates over training."""

import pytest
from fixtures.run_dirs import gate_history_lines, make_runs, result, speed_json, write_run

from reproduce.plots import pareto_front, read_gate_history, write_plots
from reproduce.tables import Run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) from the PNG header: the file is a real image, not just non-empty."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = make_runs(tmp_path_factory.mktemp("runs"))
    # a lambda sweep, so the L0 curve has a front and a dominated point
    for lam, kept, test, latency in ((3e-7, [80, 70], 121.0, 0.045), (1e-6, [50, 42], 135.0, 0.035),
                                     (2e-7, [95, 90], 125.0, 0.05)):
        write_run(root, f"l0_{lam:g}", result("l0", [200, 200], kept, test + 4, test, lam=lam),
                  speed=speed_json(0.093 / latency, 1.9, latency))
    write_run(root, "gl_small", result("group_lasso", [200, 200], [120, 90], 124.0, 120.0, lam=1e-4),
              speed=speed_json(1.5, 1.6, 0.06))
    return root


def test_pareto_front_keeps_only_undominated_points():
    pts = [(10, 5.0), (5, 7.0), (20, 6.0), (30, 4.0), (1, 9.0)]
    assert pareto_front(pts, lower_is_better=True) == [(1, 9.0), (5, 7.0), (10, 5.0), (30, 4.0)]
    assert pareto_front(pts, lower_is_better=False) == [(1, 9.0)]


def test_plots_are_written_as_png_images(runs_dir, tmp_path):
    paths = write_plots("ptb", runs_dir, tmp_path)
    names = {p.name for p in paths}
    assert names == {"pareto_neurons.png", "pareto_latency.png", "gate_open_l0_s1.png"}
    for path in paths:
        width, height = png_size(path)
        assert width > 400 and height > 300 and path.stat().st_size > 10_000
    # two model scales in the runs: the Pareto plots get one panel each, side by side
    assert png_size(tmp_path / "pareto_neurons.png")[0] > 1.5 * png_size(tmp_path / "pareto_neurons.png")[1]


def test_latency_plot_is_skipped_with_a_note_when_nothing_was_measured(tmp_path, capsys):
    write_run(tmp_path / "runs", "dense", result("none", [200, 200], [200, 200], 117.0, 112.26))
    paths = write_plots("ptb", tmp_path / "runs", tmp_path / "out")
    assert [p.name for p in paths] == ["pareto_neurons.png"]
    assert "pareto_latency.png skipped: no run has a measured latency" in capsys.readouterr().err


def test_gate_history_keeps_the_last_line_per_step(tmp_path):
    path = tmp_path / "gate_history.jsonl"
    path.write_text("\n".join(gate_history_lines()) + "\n")
    history = read_gate_history(path)
    assert [h["step"] for h in history] == [10, 20, 30]  # the cut-off line is dropped
    assert history[1]["hidden"][0][0] == 0.8  # the second line written for step 20


def test_runs_from_wandb_make_no_gate_plots(tmp_path):
    run = Run("from-wandb", result("l0", [200, 200], [112, 105], 122.0, 118.0, lam=1e-7))
    paths = write_plots("ptb", tmp_path / "unused", tmp_path, runs=[run])
    assert [p.name for p in paths] == ["pareto_neurons.png"]

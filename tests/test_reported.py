import pytest
import yaml

from lightning_modules.errors import UserError
from reproduce.report.reported import REGISTRY, load_reported


def test_registry_holds_the_known_figures_with_sources():
    reg = load_reported()
    ptb = {e["id"]: e for e in reg["ptb"]}
    assert (ptb["tf_small"]["val_ppl"], ptb["tf_small"]["test_ppl"]) == (121.39, 115.91)
    assert (ptb["zaremba_large"]["val_ppl"], ptb["zaremba_large"]["test_ppl"]) == (82.2, 78.4)
    assert ptb["iss_large"]["hidden_sizes"] == [373, 315] and ptb["iss_large"]["speedup"] == 10.59
    squad = {e["id"]: e for e in reg["squad"]}
    assert (squad["bidaf_seo2017"]["em"], squad["bidaf_seo2017"]["f1"]) == (67.7, 77.3)
    assert squad["iss_bidaf"]["params"] == 2_690_000


def test_not_found_cells_stay_empty_never_zero():
    reg = load_reported()
    ptb = {e["id"]: e for e in reg["ptb"]}
    for key in ("val_ppl", "test_ppl", "hidden_sizes", "lambda", "speedup"):
        assert ptb["paper_l0_large"][key] is None
    assert ptb["iss_large"]["test_ppl"] is None
    assert {e["id"]: e for e in reg["squad"]}["iss_bidaf"]["em"] is None


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["ptb"][0].update(source="nowhere"), "cites 'nowhere'"),
    (lambda d: d["ptb"][0].update(test_ppl="82.7"), "must be a number or null"),
    (lambda d: d["ptb"][0].update(tset_ppl=1.0), "unknown keys"),
    (lambda d: d["ptb"].append(dict(d["ptb"][0])), "unique id"),
])
def test_bad_registry_edits_are_named(tmp_path, edit, message):
    data = yaml.safe_load(REGISTRY.read_text())
    edit(data)
    path = tmp_path / "reported.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=message):
        load_reported(path)

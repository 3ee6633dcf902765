"""The explore notebooks as a user runs them: a real JupyterLab (token on) and headless Chromium.

One JupyterLab serves copies of `nbs/explore/*.ipynb` (so autosave never touches the sources); each
notebook is opened, run with JupyterLab's run-all command, and must end with no error output, its
widgets drawn (images with content, sliders, dropdowns) and its plotly figures rendered — the 3D
views as WebGL canvases. The attention explorer is also clicked as a user would (its image picks a vertex).
Screenshots go to the pytest tmp dir and are copied to `output/screenshots/`.
Skipped, with the reason printed, when Chromium or Playwright is not available.
"""
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import browser_unavailable_reason, jupyter_lab, run_notebook_in_browser  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXPLORE = ROOT / "nbs" / "explore"
SHOTS = ROOT / "output" / "screenshots"

SELECTORS = {
    "plotly": ".jp-OutputArea-output .js-plotly-plot",
    "plotly_3d": ".jp-OutputArea-output .js-plotly-plot .gl-container canvas",
    "images": ".jp-OutputArea-output img.widget-image[src]",
    "sliders": ".jp-OutputArea-output .widget-slider",
    "dropdowns": ".jp-OutputArea-output .widget-dropdown",
    "toggles": ".jp-OutputArea-output .widget-toggle-buttons",
    "selects": ".jp-OutputArea-output .widget-select-multiple",
    "upload": ".jp-OutputArea-output .widget-upload",
    "stills": ".jp-OutputArea-output img:not(.widget-image)",     # the static copy of the last view
}
EXPECTED = {                                  # at least this many of each, per notebook
    "model_explorer": {"plotly": 1, "plotly_3d": 1, "images": 5, "dropdowns": 2, "upload": 1, "stills": 1},
    "attention_explorer": {"plotly": 2, "plotly_3d": 1, "images": 6, "sliders": 1, "dropdowns": 3, "toggles": 2, "stills": 1},
    "data_browser": {"plotly": 1, "plotly_3d": 1, "images": 4, "sliders": 1, "stills": 1},
    "run_viewer": {"plotly": 1, "sliders": 1, "selects": 2, "stills": 1},
}


def click_the_image(page) -> dict:
    """The attention explorer: click the attention picture where a hand is and read the vertex slider before and
    after (a click picks the vertex projected nearest the point), with the time until the slider followed."""
    import time
    img = page.locator(".jp-OutputArea-output img.intaghand-click-image").first
    slider = page.locator(".jp-OutputArea-output .widget-slider .widget-readout").first
    img.scroll_into_view_if_needed()
    before, t0 = slider.inner_text(), time.time()
    box = img.bounding_box()
    img.click(position={"x": box["height"] * 0.5, "y": box["height"] * 0.55})     # the middle of the picture
    after = before
    while after == before and time.time() - t0 < 20:
        page.wait_for_timeout(200)
        after = slider.inner_text()
    return {"vertex_before": before, "vertex_after": after, "seconds": round(time.time() - t0, 2)}


ACTIONS = {"attention_explorer": click_the_image}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    reason = browser_unavailable_reason()
    if reason:
        print(f"browser test skipped: {reason}")
        pytest.skip(f"browser unavailable: {reason}")
    root = tmp_path_factory.mktemp("lab_root")
    for nb in EXPLORE.glob("*.ipynb"): shutil.copy(nb, root / nb.name)
    with jupyter_lab(root, tmp_path_factory.mktemp("lab_state")) as lab:
        yield lab


@pytest.fixture(scope="module")
def shot_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", list(EXPECTED))
def test_explore_notebook_in_browser(lab, shot_dir, name):
    assert (EXPLORE / f"{name}.ipynb").is_file()
    rep = run_notebook_in_browser(lab, f"{name}.ipynb", shot_dir / f"{name}.png", timeout=180, selectors=SELECTORS,
                                  min_counts=EXPECTED[name], settle=40, output_screenshots=True,
                                  actions=ACTIONS.get(name))
    SHOTS.mkdir(parents=True, exist_ok=True)
    for p in [rep.screenshot, *rep.output_shots]: shutil.copy(p, SHOTS / p.name)
    print(f"{name}: {rep.executed}/{rep.cells} cells, widgets {rep.widgets}, counts {rep.counts}, "
          f"screenshots {[p.name for p in [rep.screenshot, *rep.output_shots]]} in {shot_dir} and {SHOTS}")
    assert not rep.errors, f"{name}: error outputs in the page:\n" + "\n---\n".join(rep.errors)
    assert rep.executed == rep.cells > 0, f"{name}: {rep.executed} of {rep.cells} cells ran"
    assert rep.widgets > 0, f"{name}: no widget views in the page"
    short = {k: (rep.counts.get(k, 0), n) for k, n in EXPECTED[name].items() if rep.counts.get(k, 0) < n}
    assert not short, f"{name}: too few rendered elements (found, expected at least): {short}; all counts {rep.counts}"
    assert rep.screenshot.stat().st_size > 10_000 and rep.output_shots
    if name in ACTIONS:
        print(f"{name}: {rep.actions}")
        assert rep.actions["vertex_after"] != rep.actions["vertex_before"], f"{name}: a click on the image picked no vertex: {rep.actions}"

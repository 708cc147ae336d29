"""`compiled-opt report`: one self-contained HTML file of a real run, every figure an embedded PNG."""

from __future__ import annotations

import base64
import json
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import write_config

from compiled_opt.commands.cli import main

PNG = b"\x89PNG\r\n\x1a\n"
CHROMIUM = Path("/usr/bin/chromium")


def chromium(page: Path, profile: Path, *flags: str, text: bool = False) -> str | bytes:
    """Debian's Chromium, headless and offline, on ``page`` with ``flags``: its standard output."""
    quiet = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    command = [str(CHROMIUM), *quiet, *flags, page.as_uri()]
    return subprocess.run(command, check=True, capture_output=True, text=text, timeout=120).stdout


# a comment in the config: the report shows the config file, so this checks that its text is escaped
INJECTED = '\n# <script>alert("x")</script> & <b>bold</b>\n'


class Page(HTMLParser):
    """The parts of the page the tests look at."""

    def __init__(self):
        super().__init__()
        self.images: dict[str, bytes] = {}  # alt -> PNG bytes
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            head, _, data = attrs["src"].partition(",")
            assert head == "data:image/png;base64", head
            self.images[attrs["alt"]] = base64.b64decode(data, validate=True)
        for key in ("href", "src"):
            if key in attrs and tag != "img":
                self.links.append(attrs[key])

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, market_dir: Path) -> Path:
    """A config after one real run of the bootstrap backend on APP and NU."""
    config = write_config(tmp_path_factory.mktemp("report"), market_dir, trials=8)
    config.write_text(config.read_text() + INJECTED)
    assert main(["run", str(config), "-q"]) == 0
    return config


def test_report_is_one_self_contained_page_with_every_figure(run, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(run), "latest", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    page = parse(out)
    assert page.tags[:2] == ["html", "head"] and "main" in page.tags
    expected = {
        "search trace of APP/bootstrap",
        "search trace of NU/bootstrap",
        "validation vs test skill per symbol",
        "test MAE change against the model's defaults per symbol",
        "seconds per trial per job",
    }
    assert set(page.images) == expected
    for data in page.images.values():
        width, height = png_size(data)
        assert 200 < width < 1400 and 150 < height < 1400
    assert all(link.startswith("#") for link in page.links)  # nothing is loaded from elsewhere
    assert {link[1:] for link in page.links} <= page.ids == {"job-APP-bootstrap", "job-NU-bootstrap"}
    text = " ".join(page.text)
    for symbol in ("APP", "NU"):
        record = json.loads((run.parent / "hyperparams" / "bootstrap" / f"{symbol}.json").read_text())
        assert (
            f"{record['test']['pct_return_mae']:.6g}" in text
            and f"{record['validation']['pct_return_mae']:.6g}" in text
        )
        assert f"{100 * record['out_of_sample']['change']:+.2f}%" in text
        assert record["decision"]["reason"] in text
    assert "test MAE vs defaults: better on" in text and "of 2 symbols" in text


def test_text_from_the_run_is_escaped(run, tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    html = out.read_text()
    assert "<script>" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;" in html
    assert INJECTED.strip() in " ".join(parse(out).text)


def test_a_run_that_kept_the_stored_configs(run, tmp_path, capsys):
    """A second run with a threshold nothing passes writes no record: its report shows the decisions and test
    figures all the same, from the run folder."""
    for folder in ("hyperparams", "runs"):  # a copy: the other tests keep reporting the first run
        shutil.copytree(run.parent / folder, tmp_path / folder)
    config = tmp_path / "compiled_opt.toml"
    config.write_text(
        run.read_text().replace(str(run.parent), str(tmp_path))
        + '[acceptance]\npolicy = "relative_threshold"\noptions = { threshold = 0.9 }\n'
    )
    assert main(["run", str(config), "--trials", "4", "-q"]) == 0
    out = tmp_path / "r.html"
    assert main(["report", str(config), "--out", str(out)]) == 0
    page = parse(out)
    text = " ".join(page.text)
    assert {
        "search trace of APP/bootstrap",
        "search trace of NU/bootstrap",
        "seconds per trial per job",
        "validation vs test skill per symbol",
    } <= set(page.images)
    assert text.count("rejected  by  relative_threshold : Insufficient improvement") == 2
    assert text.count("the config stored earlier stays") == 2
    stored = json.loads((tmp_path / "hyperparams" / "bootstrap" / "APP.json").read_text())
    assert f"lookback {stored['config']['lookback']} " in " ".join(t.strip() for t in page.text if t.strip())


def test_a_failed_job_shows_its_error(tmp_path, market_dir, faulty_plugin, capsys):
    models = (
        '[models.bootstrap]\nbackend = "faulty"\noptions = { fail_encode = ["NU"] }\n'
        "fixed = { num_samples = 32 }\nspace = { lookback = { int = [10, 40] } }\n"
    )
    config = write_config(tmp_path, market_dir, trials=4, models=models)
    assert main(["run", str(config), "-q"]) == 1
    out = tmp_path / "r.html"
    assert main(["report", str(config), "--out", str(out)]) == 0
    page = parse(out)
    text = " ".join(page.text)
    assert "encode failed for NU" in text and "failed" in text
    assert "search trace of NU/bootstrap" in page.images and "search trace of APP/bootstrap" in page.images


def test_the_pooled_stage_has_its_own_section(tmp_path, market_dir):
    config = write_config(tmp_path, market_dir, trials=4, extra="[pooled]\nenabled = true\n")
    assert main(["run", str(config), "-q"]) == 0
    out = tmp_path / "r.html"
    assert main(["report", str(config), "--out", str(out)]) == 0
    page = parse(out)
    assert {"search trace of pooled/bootstrap", "search trace of APP/bootstrap"} <= set(page.images)
    assert "job-pooled-bootstrap" in page.ids and "pooled stage · bootstrap" in " ".join(page.text)
    outcomes = json.loads(next((tmp_path / "runs").glob("*/outcomes/part-*.json")).read_text())["outcomes"]
    pooled = next(o for o in outcomes if o["job"]["symbol"] is None)
    assert pooled["decision"]["reason"] in " ".join(page.text)


def test_an_unknown_run_is_a_usage_error(run, capsys):
    assert main(["report", str(run), "20990101T000000.000000Z"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: RUN_ID: no run '20990101T000000.000000Z'") and err.count("\n") == 1


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (/usr/bin/chromium)")
def test_chromium_renders_the_report(run, tmp_path):
    import matplotlib.image

    out = tmp_path / "r.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    shot = tmp_path / "shot.png"
    chromium(out, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000")
    assert png_size(shot.read_bytes()) == (1280, 2000)
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.std() > 0.05  # not a blank page
    # the figures drew: the report's blue (#1f77b4) shows up in the first screen
    blue = np.all(np.abs(pixels - np.array([0x1F, 0x77, 0xB4]) / 255) < 0.03, axis=-1)
    assert blue.sum() > 500
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)

"""The web page in a real headless browser (Debian's chromium + chromedriver through selenium,
started by the test; skipped with a reason where either is missing): verify two photos, enrol
two people, identify a third photo with thumbnails of the best matches, and a bad key's error."""

from __future__ import annotations

import shutil
import urllib.request

import pytest

from facemetric.serve import ServeConfig
from tests.serve.serve_helpers import auth, free_port, make_keys, running_server

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("no headless browser here (install Debian's chromium and chromium-driver)")
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait_text(driver, element_id: str, predicate, timeout: float = 60.0) -> str:
    el = driver.find_element(By.ID, element_id)
    WebDriverWait(driver, timeout).until(lambda d: el.text not in ("", "…") and predicate(el.text))
    return el.text


def test_web_page_verify_enrol_identify(browser, tmp_path, toy_embedder, photos):
    paths = {}
    for name in ("anna", "bert"):
        for i, blob in enumerate(photos[name]):
            p = tmp_path / "photos" / f"{name}-{i}.png"
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(blob)
            paths[name, i] = str(p)
    cfg = ServeConfig(model="toy", gallery_dir=tmp_path / "galleries", port=free_port(), log_level="warning")
    keys = make_keys(cfg.keys_path)
    with running_server(cfg, toy_embedder) as url:
        req = urllib.request.Request(f"{url}/v1/galleries", data=b'{"name": "default"}', method="POST",
                                     headers={**auth(keys.admin), "Content-Type": "application/json"})
        assert urllib.request.urlopen(req, timeout=30).status == 201
        d = browser
        d.get(url + "/")
        assert d.title == "facemetric"
        d.find_element(By.ID, "key").send_keys(keys.write)

        # verify
        d.find_element(By.ID, "verify-a").send_keys(paths["anna", 0])
        d.find_element(By.ID, "verify-b").send_keys(paths["anna", 1])
        d.find_element(By.ID, "verify-go").click()
        text = _wait_text(d, "verify-out", lambda t: "distance" in t)
        assert "same person" in text and "squared_l2 distance" in text

        # enrol two people, two photos each
        for name in ("anna", "bert"):
            box = d.find_element(By.ID, "enrol-identity")
            box.clear()
            box.send_keys(name)
            d.find_element(By.ID, "enrol-photos").send_keys("\n".join([paths[name, 0], paths[name, 1]]))
            d.find_element(By.ID, "enrol-go").click()
            text = _wait_text(d, "enrol-out", lambda t, n=name: f"of {n}" in t)
            assert text.startswith(f"enrolled 2 photo(s) of {name}")

        # identify a third photo of anna: the matches come with thumbnails
        d.find_element(By.ID, "identify-photo").send_keys(paths["anna", 2])
        d.find_element(By.ID, "identify-go").click()
        text = _wait_text(d, "identify-out", lambda t: "threshold" in t)
        assert "anna" in text
        cards = d.find_elements(By.CSS_SELECTOR, "#identify-matches .match")
        names = [c.find_element(By.CLASS_NAME, "match-name").text for c in cards]
        assert names[0] == "anna" and set(names) == {"anna", "bert"}
        for c in cards:
            img = c.find_element(By.TAG_NAME, "img")
            assert img.get_attribute("src").startswith("data:image/jpeg;base64,")
            assert d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0

        # a wrong key: the page shows the service's one-line error
        box = d.find_element(By.ID, "key")
        box.clear()
        box.send_keys(keys.revoked)
        d.find_element(By.ID, "verify-go").click()
        text = _wait_text(d, "verify-out", lambda t: "key" in t)
        assert "invalid or revoked API key" in text
        assert "error" in d.find_element(By.ID, "verify-out").get_attribute("class")

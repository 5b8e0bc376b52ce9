"""Image downloads against a real HTTP server on loopback: success, 404, slow, truncated,
not-an-image, redirect, too large; resume fetches nothing already good and loses nothing good.
Faults: a bad header or URL is one item's failure, the timeout bounds a whole request, decompression
bombs are refused from the header, the address policy (loopback, redirects), local paths out of the
scenario."""
from __future__ import annotations

import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from hafvt.data.catalogue import write_catalogue
from hafvt.embed.images import (
    MAX_PIXELS,
    FetchError,
    address_refusal,
    cached_path,
    decode_error,
    download_images,
    fetch,
    image_file,
)


def _jpeg(color=(200, 30, 30), size=(24, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


GOOD = _jpeg()


def _bomb() -> bytes:
    """A 17 KB PNG of 8000 x 6000 = 48 Mpx: over the 40 Mpx cap, under Pillow's own (89 Mpx) warning."""
    buf = io.BytesIO()
    Image.new("1", (8000, 6000)).save(buf, "PNG")
    return buf.getvalue()


class Handler(BaseHTTPRequestHandler):
    requests: list[str] = []
    slow_s = 2.0

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        Handler.requests.append(self.path)
        route = self.path.split("?")[0]
        if route.startswith("/ok/"):
            self._send(200, GOOD)
        elif route == "/missing.jpg":
            self._send(404, b"not found")
        elif route == "/slow.jpg":
            time.sleep(Handler.slow_s)
            self._send(200, GOOD)
        elif route == "/truncated.jpg":
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            self.wfile.write(GOOD[: len(GOOD) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif route == "/page.jpg":
            self._send(200, b"<html>Robot check</html>", "text/html")
        elif route == "/moved.jpg":
            self.send_response(302)
            self.send_header("Location", "/ok/target.jpg")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route == "/huge.jpg":
            self._send(200, _jpeg(size=(400, 400)) + b"\0" * 5000)
        elif route == "/flaky.jpg":  # 503 on the first try, then the image
            self._send(503, b"busy") if Handler.requests.count(self.path) == 1 else self._send(200, GOOD)
        elif route == "/bad-length.jpg":
            self.send_response(200)
            self.send_header("Content-Length", "abc")
            self.end_headers()
            self.wfile.write(GOOD)
            self.close_connection = True
        elif route in ("/dribble-body.jpg", "/dribble-head.jpg"):  # 1 byte each 0.2 s (under any read timeout)
            head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(GOOD)}\r\n\r\n".encode()
            if route == "/dribble-body.jpg":
                self.wfile.write(head)
            self._dribble((b"" if route == "/dribble-body.jpg" else head) + GOOD, seconds=6)
        elif route == "/bomb.png":
            self._send(200, BOMB, "image/png")
        elif route.startswith("/to/"):  # a redirect to the rest of the path
            self.send_response(302)
            self.send_header("Location", route[4:].replace("PORT", str(self.server.server_address[1])))
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"?")

    def _dribble(self, data: bytes, seconds: float):
        self.close_connection = True
        try:
            for k in range(min(len(data), int(seconds / 0.2))):
                self.wfile.write(data[k : k + 1])
                time.sleep(0.2)
        except OSError:  # the client gave up
            pass

    def _send(self, code, body, ctype="image/jpeg"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    Handler.requests = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


BOMB = _bomb()
CASES = ["/ok/a.jpg", "/missing.jpg", "/slow.jpg", "/truncated.jpg", "/page.jpg", "/moved.jpg", "/huge.jpg",
         "/flaky.jpg", "/ok/b.png"]


def _scenario(tmp_path, base):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8), (0, 90, 0)).save(tmp_path / "images" / "local.png")
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    images = [base + p for p in CASES] + ["images/local.png", "images/broken.png", "images/absent.png", None]
    rows = [{"item": i, "domain": "X" if i < 7 else "Y", "asin": f"A{i}", "title": f"t{i}", "image": im}
            for i, im in enumerate(images)]
    write_catalogue(tmp_path, rows)
    return rows


# allow_private: the test server is on loopback, which the address policy refuses by default
OPTS = dict(workers=8, retries=2, backoff=0.01, timeout=0.4, max_bytes=4000, allow_private=True)


def test_download_statuses_and_resume(tmp_path, server):
    rows = _scenario(tmp_path, server)
    report = download_images(tmp_path, **OPTS)
    status = {p["image"].replace(server, "") if p["image"] else None: (p["status"], p["reason"]) for p in report["problems"]}
    assert status["/missing.jpg"] == ("failed", "HTTP 404")
    assert status["/slow.jpg"][0] == "failed" and "timeout" in status["/slow.jpg"][1]
    assert status["/truncated.jpg"][0] == "failed" and "truncated" in status["/truncated.jpg"][1]
    assert status["/page.jpg"][0] == "failed" and "not a decodable image" in status["/page.jpg"][1]
    assert status["/huge.jpg"][0] == "failed" and "too large" in status["/huge.jpg"][1]
    assert status["images/broken.png"][0] == "broken_local"
    assert status["images/absent.png"][0] == "missing_local"
    assert status[None][0] == "no_image"
    assert report["counts"]["downloaded"] == 4  # ok/a, moved (redirect), flaky (after a 503), ok/b
    assert report["counts"]["local"] == 1 and report["usable"] == 5 and report["unusable"] == 8
    assert "title" in report["fallback"]
    # retries: 404 and not-an-image are final, timeouts and truncated bodies are retried
    assert Handler.requests.count("/missing.jpg") == 1 and Handler.requests.count("/page.jpg") == 1
    assert Handler.requests.count("/truncated.jpg") == 3 and Handler.requests.count("/slow.jpg") == 3
    assert Handler.requests.count("/flaky.jpg") == 2
    good = {r["item"]: image_file(tmp_path, r) for r in rows if r["image"] and "/ok/" in r["image"] or
            r["image"] and r["image"].endswith(("moved.jpg", "flaky.jpg"))}
    assert all(p is not None and decode_error(p) is None for p in good.values())
    assert image_file(tmp_path, rows[1]) is None  # 404: nothing written
    before = {i: (p.read_bytes(), p.stat().st_mtime_ns) for i, p in good.items()}

    # second run: nothing good is fetched again or touched; a cached file that no longer decodes is re-fetched
    damaged = cached_path(tmp_path, server + "/ok/b.png")
    damaged.write_bytes(damaged.read_bytes()[:10])
    Handler.requests = []
    again = download_images(tmp_path, **OPTS)
    fetched = set(Handler.requests)
    assert fetched == {"/missing.jpg", "/slow.jpg", "/truncated.jpg", "/page.jpg", "/huge.jpg", "/ok/b.png"}
    assert again["counts"]["cached"] == 3 and again["counts"]["downloaded"] == 1
    for i, (data, mtime) in before.items():
        if i != 8:
            assert good[i].read_bytes() == data and good[i].stat().st_mtime_ns == mtime
    assert decode_error(damaged) is None
    assert (tmp_path / "image_report.json").is_file()


def test_decode_error():
    assert decode_error(GOOD) is None
    assert decode_error(GOOD[:200]) is not None
    assert decode_error(b"GIF89a") is not None


def _catalogue(root, images):
    rows = [{"item": i, "domain": "X" if i < (len(images) + 1) // 2 else "Y", "asin": f"A{i}", "title": f"t{i}",
             "image": im} for i, im in enumerate(images)]
    write_catalogue(root, rows)
    return rows


def _problems(report, base=""):
    return {p["image"].replace(base, "") if base else p["image"]: (p["status"], p["reason"]) for p in report["problems"]}


def test_a_bad_header_or_url_fails_that_item_only(tmp_path, server, capsys):
    from hafvt.cli import main

    _catalogue(tmp_path, [server + "/ok/a.jpg", server + "/bad-length.jpg", "http://[::1/x.jpg"])
    argv = ["images", str(tmp_path), "--allow-private", "--retries", "0", "--timeout", "2"]  # loopback server
    for _ in range(2):  # and a rerun finishes the same way
        assert main(argv) == 0, capsys.readouterr().err
        report = json.loads((tmp_path / "image_report.json").read_text())
        problems = _problems(report, server)
        assert problems["/bad-length.jpg"] == ("failed", "bad Content-Length header 'abc'")
        assert problems["http://[::1/x.jpg"][0] == "failed" and "bad URL" in problems["http://[::1/x.jpg"][1]
        assert report["usable"] == 1 and report["unusable"] == 2


@pytest.mark.parametrize("route", ["/dribble-body.jpg", "/dribble-head.jpg"])
def test_timeout_bounds_the_whole_request(server, route):
    # the server sends a byte each 0.2 s for 6 s: a per-read timeout of 1 s never fires. The margin: the deadline
    # timer wakes the blocked read at once, 1.5 s is for thread start-up and scheduling on a busy 2-core machine,
    # and still far below the 6 s that the per-read timeout let the request run.
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="timeout after 1.0s") as e:
        fetch(server + route, timeout=1.0, max_bytes=4000, allow_private=True)
    assert time.monotonic() - t0 < 1.0 + 1.5
    assert e.value.retry


def test_pixel_cap_before_decoding(tmp_path, server):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "bomb.png").write_bytes(BOMB)
    rows = _catalogue(tmp_path, [server + "/bomb.png", "images/bomb.png", server + "/ok/a.jpg"])
    report = download_images(tmp_path, **{**OPTS, "max_bytes": 1 << 20})
    problems = _problems(report, server)
    assert problems["/bomb.png"][0] == "failed" and "too many pixels (8000 x 6000" in problems["/bomb.png"][1]
    assert problems["images/bomb.png"][0] == "broken_local" and "too many pixels" in problems["images/bomb.png"][1]
    assert image_file(tmp_path, rows[0]) is None and report["usable"] == 1
    assert MAX_PIXELS == 40_000_000 and decode_error(GOOD, max_pixels=24 * 16) is None
    assert "too many pixels" in decode_error(GOOD, max_pixels=24 * 16 - 1)


def test_address_refusal():
    kinds = {"127.0.0.1": "loopback", "::1": "loopback", "::ffff:127.0.0.1": "loopback", "10.1.2.3": "private",
             "192.168.0.9": "private", "fd00::1": "private", "169.254.169.254": "link-local", "fe80::1%eth0": "link-local",
             "224.0.0.1": "multicast", "0.0.0.0": "unspecified", "240.0.0.1": "reserved",
             "100.64.0.1": "not globally routable", "93.184.216.34": None, "2606:4700::1111": None}
    assert {ip: address_refusal(ip) for ip in kinds} == kinds


def test_address_policy_on_the_first_url_and_every_redirect(tmp_path, server):
    port = server.rsplit(":", 1)[1]
    _catalogue(tmp_path, [server + "/ok/a.jpg", server + "/to/ftp://127.0.0.1/x.jpg",
                          server + "/to/http://localhost:PORT/ok/c.jpg", server + "/to/http://127.0.0.1:PORT/ok/d.jpg"])
    # without allow_private a loopback URL is refused before any connection, and not retried
    default = _problems(download_images(tmp_path, **{**OPTS, "allow_private": False}), server)
    assert len(default) == 4 and Handler.requests == []
    assert all(s == "failed" and r.startswith("refused by the address policy: 127.0.0.1 is 127.0.0.1 (loopback)")
               and "tries" not in r for s, r in default.values())
    # allowing one endpoint (host:port) allows it only: a redirect elsewhere on loopback is refused; ftp never
    report = download_images(tmp_path, **{**OPTS, "allow_private": {f"127.0.0.1:{port}"}})
    problems = _problems(report, server)
    ftp = problems["/to/ftp://127.0.0.1/x.jpg"]
    assert ftp == ("failed", "refused: only http and https are fetched, not 'ftp://127.0.0.1/x.jpg'")
    localhost = problems["/to/http://localhost:PORT/ok/c.jpg"]
    assert localhost[0] == "failed" and localhost[1].startswith("refused by the address policy: localhost is ")
    assert report["counts"]["downloaded"] == 2 and "/ok/c.jpg" not in Handler.requests  # a.jpg and d.jpg
    assert report["settings"]["allow_private"] == [f"127.0.0.1:{port}"]


def test_local_paths_stay_inside_the_scenario(tmp_path):
    scenario = tmp_path / "s"
    (scenario / "images").mkdir(parents=True)
    for p in (tmp_path / "outside.png", scenario / "images" / "in.png"):
        Image.new("RGB", (8, 8)).save(p)
    bad = [str(tmp_path / "outside.png"), "../outside.png", "images/../../outside.png"]
    rows = _catalogue(scenario, [*bad, "images/in.png"])
    report = download_images(scenario, workers=2)
    problems = _problems(report)
    assert set(problems) == set(bad) and report["counts"] == {"bad_path": 3, "local": 1}
    assert all(s == "bad_path" and "must be relative to the scenario folder" in r for s, r in problems.values())
    assert [image_file(scenario, r) for r in rows] == [None, None, None, scenario / "images" / "in.png"]

"""Image downloads against a real HTTP server on loopback: success, 404, slow, truncated,
not-an-image, redirect, too large; resume fetches nothing already good and loses nothing good."""
from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from hafvt.data.catalogue import write_catalogue
from hafvt.embed.images import cached_path, decode_error, download_images, image_file


def _jpeg(color=(200, 30, 30), size=(24, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


GOOD = _jpeg()


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
        else:
            self._send(404, b"?")

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


OPTS = dict(workers=8, retries=2, backoff=0.01, timeout=0.4, max_bytes=4000)


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

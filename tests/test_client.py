from __future__ import annotations

import asyncio
import hashlib
import pickle

import aiohttp
import pytest
from aiohttp import web

from batchgen.client import Client, Secret, check_result_url, classify_exception, classify_status, parse_retry_after, parse_task
from batchgen.errors import ApiError, DownloadError, ErrorClass
from batchgen.simulator import SimConfig, Simulator, mp4_bytes

S, A, F, FR, NF = ErrorClass.SAFE, ErrorClass.AMBIGUOUS, ErrorClass.FATAL, ErrorClass.FATAL_RUN, ErrorClass.NO_FUNDS
R2V = {"model": "grok-imagine-reference-to-video", "prompt": "a fox @Image1",
       "reference_image_urls": ["https://i.example.com/1.png"], "duration": 8, "aspect_ratio": "16:9", "resolution": "480p"}


@pytest.mark.parametrize("status,etype,code,create,poll", [
    (400, "invalid_request_error", None, F, F),
    (401, "authentication_error", None, FR, FR),
    (402, "insufficient_quota", None, NF, S),
    (403, "permission_error", None, F, F),
    (404, "not_found", None, F, F),
    (422, "invalid_request_error", None, F, F),
    (422, "invalid_request_error", "unsupported_advanced_options", F, F),
    (422, "service_unavailable_error", None, S, S),
    (429, "rate_limit_error", None, S, S),
    (500, "server_error", None, A, S),
    (502, None, None, A, S),
    (503, "service_unavailable_error", None, S, S),
    (504, None, None, A, S),
])
def test_status_table(status, etype, code, create, poll):
    assert classify_status("create", status, etype, code) is create
    assert classify_status("poll", status, etype, code) is poll


def test_exception_table():
    class K:  # minimal ConnectionKey stand-in
        host, port, ssl = "h", 1, False
    refused = aiohttp.ClientConnectorError(K(), OSError(111, "refused"))
    assert classify_exception("create", refused) is S
    assert classify_exception("create", aiohttp.ConnectionTimeoutError()) is S
    for exc in (aiohttp.ServerDisconnectedError(), asyncio.TimeoutError(), aiohttp.ClientPayloadError("x"),
                aiohttp.ClientOSError(104, "reset")):
        assert classify_exception("create", exc) is A
        assert classify_exception("poll", exc) is S


def test_retry_after_forms():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_parse_task_accepts_three_shapes():
    cur = parse_task({"id": "t", "status": "completed", "results": [{"url": "https://c/1.mp4"}],
                      "usage": {"credits_reserved": 5}, "task_info": {"estimated_time": 45}, "progress": 100})
    assert cur.urls == ["https://c/1.mp4"] and cur.credits == 5 and cur.estimated_time == 45 and cur.terminal
    old = parse_task({"id": "t", "status": "completed", "output": {"url": "https://c/2.mp4"}})
    assert old.urls == ["https://c/2.mp4"]
    evo = parse_task({"id": "t", "status": "COMPLETED", "results": ["https://c/3.mp4"]})
    assert evo.urls == ["https://c/3.mp4"] and evo.status == "completed"
    failed = parse_task({"id": "t", "status": "failed", "error": {"code": "timeout", "message": "m", "type": "task_error"}})
    assert failed.error_code == "timeout"
    with pytest.raises(ValueError):
        parse_task({"status": "pending"})


def test_secret_never_prints():
    s = Secret("sk-canary-123")
    assert "canary" not in repr(s) and "canary" not in str(s) and "canary" not in f"{s}"
    with pytest.raises(TypeError):
        pickle.dumps(s)


@pytest.mark.parametrize("url,loop,ok", [
    ("https://cdn.example.com/a.mp4", False, True),
    ("http://cdn.example.com/a.mp4", False, False),
    ("http://127.0.0.1:8000/a.mp4", True, True),
    ("http://127.0.0.1:8000/a.mp4", False, False),
    ("https://10.0.0.5/a.mp4", False, False),
    ("https://169.254.169.254/latest", False, False),
    ("https://[::1]/a.mp4", False, False),
    ("file:///etc/passwd", False, False),
])
def test_result_url_policy(url, loop, ok):
    if ok:
        check_result_url(url, origin_loopback=loop)
    else:
        with pytest.raises(DownloadError):
            check_result_url(url, origin_loopback=loop)


# ------------------------------------------------------------------ against the simulator
async def _with_sim(cfg: SimConfig, body):
    sim = Simulator(cfg)
    url = await sim.start()
    try:
        async with Client(url, Secret("sk-test")) as c:
            return await body(sim, c)
    finally:
        await sim.stop()


def test_create_poll_download_roundtrip(tmp_path):
    async def body(sim, c):
        info = await c.create(R2V)
        assert info.status == "pending" and info.task_id.startswith("task-unified-") and info.estimated_time is not None
        for _ in range(100):
            t = await c.get_task(info.task_id)
            if t.terminal:
                break
            await asyncio.sleep(0.02)
        assert t.status == "completed" and t.credits
        size, sha = await c.download(t.urls[0], tmp_path / "v.mp4")
        data = (tmp_path / "v.mp4").read_bytes()
        assert len(data) == size and hashlib.sha256(data).hexdigest() == sha
        assert sim.counters.faults.get("download_with_authorization") is None  # no key on downloads
        assert sim.ground_truth()["creates"][0]["file_sha256"] == sha
    asyncio.run(_with_sim(SimConfig(render_min=0.05, render_max=0.1), body))


def test_error_shapes_and_classes():
    async def body(sim, c):
        with pytest.raises(ApiError) as ei:
            await c.create({**R2V, "duration": 11})
        assert ei.value.status == 422 and ei.value.klass is F
        with pytest.raises(ApiError) as ei:
            await c.create({**R2V, "seed": 1})
        assert ei.value.code == "unsupported_advanced_options" and ei.value.klass is F
        sim.config.update({"p429": 1.0, "retry_after": 3})
        with pytest.raises(ApiError) as ei:
            await c.create(R2V)
        assert ei.value.klass is S and ei.value.retry_after == 3.0
        sim.config.update({"p429": 0.0, "p500_after": 1.0})
        with pytest.raises(ApiError) as ei:
            await c.create(R2V)
        assert ei.value.klass is A
        sim.config.update({"p500_after": 0.0, "p_drop_after": 1.0})
        with pytest.raises(ApiError) as ei:
            await c.create(R2V)
        assert ei.value.klass is A
        sim.config.update({"p_drop_after": 0.0, "p_malformed": 1.0})
        with pytest.raises(ApiError) as ei:
            await c.create(R2V)
        assert ei.value.klass is A
        assert len(sim.tasks) == 3  # the three ambiguous failures did create tasks
        sim.config.update({"p_malformed": 0.0, "balance": 0.0})
        with pytest.raises(ApiError) as ei:
            await c.create(R2V)
        assert ei.value.klass is NF
        with pytest.raises(ApiError) as ei:
            await c.get_task("task-unified-0-nosuchid")
        assert ei.value.status == 404
    asyncio.run(_with_sim(SimConfig(), body))


def test_wrong_key_is_fatal_for_the_run():
    async def body(sim, c):
        with pytest.raises(ApiError) as ei:
            await c.create(R2V)
        assert ei.value.klass is FR
    asyncio.run(_with_sim(SimConfig(api_key="sk-right"), body))


def test_connection_refused_is_safe():
    async def main():
        async with Client("http://127.0.0.1:9", Secret("k")) as c:
            with pytest.raises(ApiError) as ei:
                await c.create(R2V)
            assert ei.value.klass is S
    asyncio.run(main())


async def _serve(handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


@pytest.mark.parametrize("kind,permanent", [("truncated", False), ("html", True), ("not_mp4", True),
                                             ("redirect_private", True), ("too_big", True), ("gone", True)])
def test_download_refusals_leave_nothing(tmp_path, kind, permanent):
    good = mp4_bytes("t", 5000)

    async def handler(request):
        if kind == "truncated":
            resp = web.StreamResponse(headers={"Content-Type": "video/mp4", "Content-Length": str(len(good))})
            await resp.prepare(request)
            await resp.write(good[:1000])
            request.transport.abort()
            return resp
        if kind == "html":
            return web.Response(text="<html>", content_type="text/html")
        if kind == "not_mp4":
            return web.Response(body=b"\x00" * 5000, content_type="video/mp4")
        if kind == "redirect_private":
            raise web.HTTPFound("https://192.168.1.1/x.mp4")
        if kind == "too_big":
            return web.Response(body=good, content_type="video/mp4")
        return web.Response(status=404)

    async def main():
        runner, url = await _serve(handler)
        try:
            async with Client(url, Secret("k"), max_download_bytes=4000 if kind == "too_big" else 1 << 30) as c:
                with pytest.raises(DownloadError) as ei:
                    await c.download(url + "/r.mp4", tmp_path / "out.mp4")
                assert ei.value.permanent is permanent
        finally:
            await runner.cleanup()
    asyncio.run(main())
    assert list(tmp_path.iterdir()) == []  # neither the final file nor a temp file


def test_download_hosts_resolving_to_private_addresses_are_refused():
    from batchgen.client import PublicOnlyResolver

    class Fake(aiohttp.abc.AbstractResolver):
        def __init__(self, answers):
            self.answers = answers

        async def resolve(self, host, port=0, family=0):
            return [{"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
                    for a in self.answers[host]]

        async def close(self):
            pass

    r = PublicOnlyResolver(Fake({"cdn.example.com": ["93.184.216.34"], "evil.example.com": ["10.0.0.7", "127.0.0.1"],
                                 "mixed.example.com": ["169.254.169.254", "93.184.216.35"], "localhost": ["127.0.0.1"]}))

    async def main():
        assert [i["host"] for i in await r.resolve("cdn.example.com")] == ["93.184.216.34"]
        assert [i["host"] for i in await r.resolve("mixed.example.com")] == ["93.184.216.35"]
        assert [i["host"] for i in await r.resolve("localhost")] == ["127.0.0.1"]
        with pytest.raises(OSError, match="non-public"):
            await r.resolve("evil.example.com")
    asyncio.run(main())


@pytest.mark.parametrize("raised", [ConnectionResetError(104, "Connection reset by peer"),
                                    BrokenPipeError(32, "Broken pipe")])
def test_a_connection_reset_that_reaches_the_download_unwrapped_is_retried_not_a_disk_error(tmp_path, monkeypatch,
                                                                                             raised):
    """aiohttp wraps most socket errors in its own; one that comes through as a plain OSError is
    the network's. Read as a disk error it would stop the run's submissions (exit 3)."""
    good = mp4_bytes("t", 200_000)

    def broken(self, n):
        async def gen():
            yield good[:1000]
            raise raised
        return gen()

    async def handler(request):
        return web.Response(body=good, content_type="video/mp4")

    async def main():
        runner, url = await _serve(handler)
        try:
            async with Client(url, Secret("k")) as c:
                monkeypatch.setattr(aiohttp.StreamReader, "iter_chunked", broken)
                with pytest.raises(DownloadError) as ei:
                    await c.download(url + "/r.mp4", tmp_path / "out.mp4")
                monkeypatch.undo()
                assert (ei.value.code, ei.value.permanent) == ("download_failed", False)
                assert type(raised).__name__ in str(ei.value)
                # the same download, the network healed: the file arrives
                assert await c.download(url + "/r.mp4", tmp_path / "out.mp4") == (
                    len(good), hashlib.sha256(good).hexdigest())
        finally:
            await runner.cleanup()
    asyncio.run(main())
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]

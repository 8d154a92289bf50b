"""`recplug serve` (issue 16) against a real local LitServe server: a subprocess on a free port (`serving`), real
HTTP requests with timeouts, always shut down. It answers the Python API's lists for known and new users, and 4xx with a
message for bad requests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

import recplug
from recplug.core.cli.main import main

pytest.importorskip("litserve")
from recplug.core.cli.serve import serving  # noqa: E402

pytestmark = pytest.mark.slow  # a server process: about 20 s to start on 2 cores
REQUEST_S = 30


def post(base: str, body: Any, raw: bytes | None = None) -> tuple[int, Any]:
    """``(status, decoded JSON)`` of ``POST /predict``."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}/predict", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def server(mf_run, tmp_path_factory) -> Iterator[str]:
    """The base URL of `recplug serve` on the trained checkpoint (its process group is ended afterwards)."""
    with serving(mf_run.ckpt, log=tmp_path_factory.mktemp("serve") / "serve.log") as base:
        yield base


@pytest.fixture(scope="module")
def rec(mf_recommender) -> recplug.Recommender:
    return mf_recommender


def same(answer: dict[str, Any], ranked: recplug.Ranked) -> bool:
    np.testing.assert_allclose(answer["scores"], ranked.scores, rtol=1e-4)
    return answer["items"] == ranked.items


def test_known_users_get_the_python_apis_lists(server, rec) -> None:
    for user in (0, 17, 1234, 3999):
        status, answer = post(server, {"user": user, "k": 20})
        assert status == 200 and same(answer, rec.recommend([user], k=20)[0])
    status, answer = post(server, {"user": "5", "k": 7, "exclude_seen": False})
    assert status == 200 and same(answer, rec.recommend([5], k=7, exclude_seen=False)[0])
    status, answer = post(server, {"user": 5})  # k defaults to 20
    assert status == 200 and len(answer["items"]) == 20


def test_a_new_user_is_ranked_from_their_profile(server, rec) -> None:
    for profile in ([3], [3, 9, 2000], ["12", 40]):
        status, answer = post(server, {"items": profile, "k": 15})
        assert status == 200 and same(answer, rec.recommend_profile(profile, k=15))
        assert not {int(i) for i in profile} & set(answer["items"])


@pytest.mark.parametrize("body, status, detail", [
    ({"user": "nobody"}, 404, "request.user_ids must be user ids of the dataset (4000 users), got 'nobody'"),
    ({"items": [1, 2500]}, 404, "request.item_ids must be item ids of the dataset (2500 items), got 2500"),
    ({"items": []}, 400, "'items' is empty: a new user's profile needs at least one item"),
    ({"user": 0, "k": 0}, 400, "request.k must be in [1, 2500] (the number of items), got 0"),
    ({"user": 0, "k": 2501}, 400, "request.k must be in [1, 2500] (the number of items), got 2501"),
    ({"user": 0, "items": [1]}, 400, "give exactly one of 'user' (a known user id) or 'items' (a new user's profile)"),
    ({}, 400, "give exactly one of 'user' (a known user id) or 'items' (a new user's profile)"),
    ({"user": "a" * 10**6}, 404, "request.user_ids must be user ids of the dataset (4000 users), got "
                                 f"{'a' * 80!r}... (1000000 characters)"),
])
def test_bad_requests_get_a_4xx_with_a_message(server, body, status, detail) -> None:
    assert post(server, body) == (status, {"detail": detail})


@pytest.mark.parametrize("body, field", [
    ({"user": 0, "k": 2.5}, "k"), ({"user": True}, "user"), ({"user": 0, "top": 3}, "top"), ([1], None),
    ({"items": [1], "k": 2, "exclude_seen": False}, "exclude_seen"),  # a new user has no seen items
    ({"items": [1], "exclude_seen": True}, "exclude_seen"),
    ({"user": 0, "k": None}, "k"), ({"user": 0, "exclude_seen": None}, "exclude_seen"),  # null is no default
])
def test_malformed_bodies_get_fastapis_422(server, body, field) -> None:
    status, answer = post(server, body)
    assert status == 422 and (field is None or any(field in error["loc"] for error in answer["detail"]))
    assert post(server, None, raw=b"{not json")[0] == 422


@pytest.mark.parametrize("raw, field, shown", [
    (b'{"user": 0, "k": 1e309}', "k", "inf"), (b'{"user": NaN}', "user", "nan"), (b'{"items": [-Infinity]}', "items", "-inf"),
])
def test_numbers_json_cannot_carry_get_a_422_not_a_500(server, raw, field, shown) -> None:
    """Python's JSON reads 1e309 as inf (and NaN, Infinity as such); FastAPI's 422 echoing them failed to encode."""
    status, answer = post(server, None, raw=raw)
    assert status == 422 and any(field in error["loc"] and error["input"] in (shown, [shown])
                                 for error in answer["detail"]), answer


@pytest.mark.parametrize("raw, key", [(b'{"user": 12, "user": 13}', "user"), (b'{"items": [1], "k": 5, "k": 3}', "k")])
def test_a_key_given_twice_is_a_422_not_the_last_one(server, raw, key) -> None:
    """FastAPI's JSON parser keeps a repeated key's last value: `{"user": 12, "user": 13}` was answered for 13."""
    assert post(server, None, raw=raw) == (422, {"detail": f"the JSON object names '{key}' twice; give each key once"})


@pytest.mark.parametrize("raw, detail", [
    (b'{"user": "caf\xe9", "k": 2}', "the body is not UTF-8 JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "the body is nested too deeply"),
])
def test_a_body_that_is_not_utf8_or_nested_too_deep_is_a_422(server, raw, detail) -> None:
    """They were FastAPI's 400 "There was an error parsing the body" (fuzz round 5)."""
    assert post(server, None, raw=raw) == (422, {"detail": detail})


def test_a_deeply_nested_unknown_field_is_a_422_echoed_shallowly_not_a_500(server) -> None:
    """FastAPI echoes the body's values in its 422; echoed 500 levels deep, the answer failed with a RecursionError."""
    raw = b'{"user": 12, "k": 2, "x": ' + b"[" * 500 + b"]" * 500 + b"}"
    status, answer = post(server, None, raw=raw)
    assert status == 422 and any("x" in error["loc"] and error["input"] == [["..."]] for error in answer["detail"])


@pytest.mark.parametrize("body", [{"user": 12, "items": None}, {"items": [3], "user": None}])
def test_a_null_user_or_items_is_a_422_not_read_as_absent(server, body) -> None:
    status, answer = post(server, body)
    field = next(key for key, value in body.items() if value is None)
    assert status == 422 and any(field in error["loc"] for error in answer["detail"]), answer


def stream(base: str, chunks: Iterator[bytes]) -> tuple[int, Any]:
    """``(status, decoded JSON)`` of ``POST /predict`` with a chunked body, which declares no length."""
    import http.client

    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=REQUEST_S)
    try:
        connection.request("POST", "/predict", body=chunks, encode_chunked=True,
                           headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_body_over_the_cap_is_a_413_and_one_under_it_is_answered(server) -> None:
    """The default cap is 4 MB, whether the body declares its length or streams it in chunks."""
    too_large = (413, {"detail": "the request body is larger than --max_body_mb (4 MB)"})
    padded = b'{"user": 12,' + b" " * (3 * 2**20) + b'"k": 3}'  # 3 MB of JSON whitespace: under the cap
    status, answer = post(server, None, raw=padded)
    assert status == 200 and len(answer["items"]) == 3
    assert stream(server, iter([padded])) == (status, answer)
    assert stream(server, (b" " * 2**16 for _ in range(65))) == too_large  # 4 MB and 64 kB, no length declared
    import http.client

    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=REQUEST_S)
    try:  # a declared length over the cap is refused before any of the body is read: none is sent here
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(5 * 2**20))
        connection.endheaders()
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())) == too_large
    finally:
        connection.close()


def test_a_bad_checkpoint_or_port_ends_in_one_line_before_serving(tmp_path, capsys) -> None:
    assert main(["serve", "--ckpt_path", str(tmp_path / "none.ckpt")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'none.ckpt'}: no such checkpoint file"
    assert main(["serve", "--ckpt_path", "x.ckpt", "--port", "0"]) == 2
    assert capsys.readouterr().err.strip() == ("error: serve.port must be in [1024, 65535] (the ports LitServe "
                                               "binds), got 0")
    assert main(["serve", "--ckpt_path", "x.ckpt", "--port", "80"]) == 2  # LitServe refused it after "serving"
    assert capsys.readouterr().err.strip().startswith("error: serve.port must be in [1024, 65535]")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err.strip() == "error: recplug serve: the following arguments are required: --ckpt_path"
    assert main(["serve", "--ckpt_path", "x.ckpt", "--workers", "1000000"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: serve.workers must be in [1, ")
    assert main(["serve", "--ckpt_path", "x.ckpt", "--max_body_mb", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: serve.max_body_mb must be in [1, 1024], got 0"
    for host in ("localhost", "::1"):  # refused before the checkpoint is opened, not by LitServe after loading
        assert main(["serve", "--ckpt_path", "x.ckpt", "--host", host]) == 2
        assert capsys.readouterr().err.strip() == (f"error: recplug serve: --host {host}: LitServe binds only "
                                                   "0.0.0.0, 127.0.0.1 or ::")


def test_a_port_in_use_is_one_line_before_the_server_starts(mf_run, capsys) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--ckpt_path", str(mf_run.ckpt), "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert "serving" not in captured.out
    assert captured.err.strip().startswith(f"error: --port {port}: cannot listen on 127.0.0.1:{port} (")


def test_serving_reports_a_server_that_exits_and_leaves_nothing_running(tmp_path) -> None:
    log = tmp_path / "serve.log"
    with pytest.raises(RuntimeError, match=r"^recplug serve exited with status 2: error: .*no such checkpoint file"):
        with serving(tmp_path / "none.ckpt", log=log):
            pass


def group_members(group: int) -> list[int]:
    """The live processes of process group ``group`` (from /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc")
def test_killing_the_server_ends_its_workers(mf_run, tmp_path) -> None:
    import signal
    import socket
    import subprocess
    import sys
    import time

    from recplug.core.cli.serve import end_group

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(tmp_path / "serve.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "recplug.core.cli.main", "serve", "--ckpt_path",
                                    str(mf_run.ckpt), "--port", str(port), "--host", "127.0.0.1"],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "not ready"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        assert len(group_members(process.pid)) > 1  # the API and inference workers
        process.send_signal(signal.SIGTERM)  # `kill PID`: the main process only
        process.wait(timeout=60)
        deadline = time.monotonic() + 30
        while group_members(process.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert group_members(process.pid) == []
        assert "Traceback" not in (tmp_path / "serve.log").read_text()  # LitServe's processes inherit the handler
    finally:
        end_group(process.pid, signal.SIGKILL)
        process.wait(timeout=20)

"""``recplug serve``: top-K recommendations over HTTP with LitServe (the ``serve`` extra:
``pip install 'recplug[serve]'``).

    recplug serve --ckpt_path runs/mf/version_0/checkpoints/last.ckpt [--port 8000] [--host 127.0.0.1]

``POST /predict`` with a JSON object:

* ``{"user": "u12", "k": 20}``: a known user's top-``k`` (``"exclude_seen": false`` keeps the items of the
  excluded splits, train and valid by default, as ``recplug predict``);
* ``{"items": ["i3", "i9"], "k": 20}``: a new user given the items of their profile, folded in as the mean of
  the profile items' final embeddings (:mod:`recplug.core.cli.recommender`), profile items left out (a new user
  has no seen items: ``exclude_seen`` is refused).

The answer is ``{"items": [...], "scores": [...]}``, best first, in the dataset's ids: the lists
``Recommender.recommend`` / ``recommend_profile`` return. ``k`` defaults to 20 (at most the catalogue). A
body that is not such a JSON object (invalid JSON, unknown fields, wrong types, ``exclude_seen`` with ``items``)
is a 422 (FastAPI's validation, ``detail`` listing the fields); both or neither of ``user``/``items``, a ``k``
outside ``1..num_items`` or an empty profile is a 400, an unknown user or item id a 404, a body larger than
``--max_body_mb`` a 413, and a JSON object naming a key twice, a body not UTF-8 or nested too deeply a 422
(:class:`CheckedBody`), each with ``{"detail": "<one line>"}``.
``GET /health`` answers ``ok`` once the workers are ready.

The checkpoint is loaded once, in this process (a bad checkpoint or config ends in one ``error:`` line before
the server starts), and its embeddings are handed to the LitServe workers.
"""

import json
import math
import os
import signal
from contextlib import ExitStack, contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Iterator

from recplug.core.cli.boundary import CommandParser, number_in
from recplug.core.data.formats.text import first_repeated
from recplug.core.errors import ConfigError, RecplugError, check_number

if find_spec("litserve") is None:
    raise ConfigError("recplug serve needs LitServe: pip install 'recplug[serve]' (or pip install litserve)")

import litserve as ls  # noqa: E402 - after the one-line error above
from fastapi import HTTPException, Request  # noqa: E402 - LitServe's web framework
from fastapi.encoders import jsonable_encoder  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from starlette.types import ASGIApp, Message, Receive, Scope, Send  # noqa: E402
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr, ValidationInfo  # noqa: E402
from pydantic import field_validator  # noqa: E402

DEFAULT_K = 20
DEFAULT_MAX_BODY_MB = 4
LITSERVE_HOSTS = ("0.0.0.0", "127.0.0.1", "::")
"""The interfaces ``LitServer.run`` binds (it refuses any other host, ``localhost`` included)."""


class TopKRequest(BaseModel):
    """The body of ``POST /predict``: a known ``user`` or a new user's ``items``, and ``k``. FastAPI refuses a
    body that is not such a JSON object (invalid JSON, unknown fields, wrong types, ``exclude_seen`` in a new
    user's request) with a 422."""

    model_config = ConfigDict(extra="forbid")

    user: StrictStr | StrictInt | None = None
    items: list[StrictStr | StrictInt] | None = None
    k: StrictInt | None = None
    exclude_seen: StrictBool = True

    @field_validator("user", "items", "k", mode="before")
    @classmethod
    def _not_null(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse ``null`` for a field, as ``"exclude_seen": null`` is refused: leave the field out instead."""
        if value is None:
            raise ValueError(f"{info.field_name!r} is null; leave it out instead")
        return value

    @field_validator("exclude_seen")
    @classmethod
    def _of_a_known_user(cls, value: bool, info: ValidationInfo) -> bool:
        """Refuse ``exclude_seen`` given with a profile: a new user has no seen items (it would be ignored)."""
        if info.data.get("user") is None and info.data.get("items") is not None:
            raise ValueError("'exclude_seen' belongs to a known user's request ('user'); a new user's profile "
                             "('items') has no seen items, and its own items are always left out")
        return value


class RecommenderAPI(ls.LitAPI):
    """The LitServe API of a :class:`~recplug.core.cli.recommender.Recommender`: one request, one ranked list."""

    def __init__(self, recommender: Any) -> None:
        super().__init__()
        self.recommender = recommender

    def setup(self, device: str) -> None:
        """Nothing to load: the recommender came built (and pickled) from the serving process."""

    def decode_request(self, request: TopKRequest) -> dict[str, Any]:
        """Check the request against the model: a 400 (both or neither of user/items, ``k``, an empty profile)
        or a 404 (an unknown id), each with a one-line detail."""
        rec = self.recommender
        if (request.user is None) == (request.items is None):
            raise HTTPException(400, "give exactly one of 'user' (a known user id) or 'items' (a new user's profile)")
        k = min(DEFAULT_K, rec.num_items) if request.k is None else request.k
        try:
            rec.check_k(k, "request")
        except RecplugError as exc:
            raise HTTPException(400, str(exc)) from None
        if request.user is not None:
            self._known(lambda: rec.user_rows([request.user], "request"))
            return {"user": request.user, "k": k, "exclude_seen": request.exclude_seen}
        if not request.items:
            raise HTTPException(400, "'items' is empty: a new user's profile needs at least one item")
        self._known(lambda: rec.item_rows(request.items, "request"))
        return {"items": request.items, "k": k}

    @staticmethod
    def _known(lookup: Any) -> None:
        """Run an id lookup; an unknown id is a 404 with the recommender's one-line message."""
        try:
            lookup()
        except RecplugError as exc:
            raise HTTPException(404, str(exc)) from None

    def predict(self, request: dict[str, Any]) -> Any:
        if "user" in request:
            return self.recommender.recommend([request["user"]], request["k"], request["exclude_seen"])[0]
        return self.recommender.recommend_profile(request["items"], request["k"])

    def encode_response(self, output: Any) -> dict[str, Any]:
        return {"items": output.items, "scores": output.scores}


class RepeatedKey(ValueError):
    """A JSON object names the same key twice."""


def _refuse_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s ``object_pairs_hook``: the object, or :class:`RepeatedKey` for a key given twice."""
    repeated = first_repeated([key for key, _ in pairs])
    if repeated is not None:
        raise RepeatedKey(repeated)
    return dict(pairs)


class CheckedBody:
    """ASGI middleware in front of the LitServe app: a POST body larger than ``max_bytes`` is a 413, and a JSON
    body naming a key twice (``{"user": 12, "user": 13}``, which FastAPI's parser reads as user 13) a 422, each
    with a one-line ``detail``. Any other body is handed on unchanged; invalid JSON is left to FastAPI's 422."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is larger than --max_body_mb ({self.max_bytes // 2**20} MB)"
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": too_large}, status_code=413)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await JSONResponse({"detail": too_large}, status_code=413)(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            json.loads(body, object_pairs_hook=_refuse_repeats)
        except (RepeatedKey, UnicodeDecodeError, RecursionError) as exc:
            detail = (f"the JSON object names {str(exc)!r} twice; give each key once" if isinstance(exc, RepeatedKey)
                      else "the body is not UTF-8 JSON" if isinstance(exc, UnicodeDecodeError)
                      else "the body is nested too deeply")
            await JSONResponse({"detail": detail}, status_code=422)(scope, receive, send)
            return
        except ValueError:  # not JSON: FastAPI's 422 names where
            pass
        handed_on = False

        async def replay() -> Message:
            nonlocal handed_on
            if handed_on:
                return await receive()
            handed_on = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def end_group(group: int, sig: int) -> None:
    """Send ``sig`` to the process group ``group`` (the server and its workers), if any of it is left."""

    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        pass


@contextmanager
def serving(ckpt_path: str | Path, *extra: str, port: int | None = None, startup_s: float = 180.0,
            log: Path | None = None) -> Iterator[str]:
    """Run ``recplug serve --ckpt_path ckpt_path *extra`` in a subprocess (its own process group) on 127.0.0.1
    and ``port`` (default: a free one); yield its base URL once ``/health`` answers ``ok`` (within
    ``startup_s``), and end the group on exit, whatever happens. Output goes to ``log`` (default: discarded).
    For tests, benchmarks and notebooks."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
    command = [sys.executable, "-m", "recplug.core.cli.main", "serve", "--ckpt_path", str(ckpt_path),
               "--port", str(port), "--host", "127.0.0.1", *extra]
    with ExitStack() as closing:  # the log is closed whatever happens, a failed start included
        output = closing.enter_context(open(log, "w+")) if log is not None else subprocess.DEVNULL
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"

        def tail() -> str:
            return Path(log).read_text()[-2000:] if log is not None else "(no log)"

        try:
            deadline = time.monotonic() + startup_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"recplug serve exited with status {process.returncode}: {tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"recplug serve not ready after {startup_s:.0f}s: {tail()}")
                try:
                    with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                        if response.read() == b"ok":
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                time.sleep(0.5)
            yield base
        finally:
            end_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                end_group(process.pid, signal.SIGKILL)
                process.wait(timeout=20)


def build_parser() -> CommandParser:
    parser = CommandParser(prog="recplug serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True, help="checkpoint of `recplug fit` (path or http(s)/file URL)")
    parser.add_argument("--config", help="config to rebuild the model with (default: the one the checkpoint records)")
    parser.add_argument("--exclude", nargs="*", default=None,
                        help="splits never recommended to known users (default: the config's topk.exclude)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on: 127.0.0.1 (default), 0.0.0.0 or :: (those LitServe binds)")
    parser.add_argument("--port", type=number_in(int), default=8000, help="port (default 8000)")
    parser.add_argument("--workers", type=number_in(int), default=1, help="LitServe inference workers (default 1)")
    parser.add_argument("--max_body_mb", type=number_in(int), default=DEFAULT_MAX_BODY_MB,
                        help=f"largest request body in MB; a larger one is a 413 (default {DEFAULT_MAX_BODY_MB})")
    return parser


def check_can_listen(host: str, port: int) -> None:
    """Refuse, before the server starts, a host that does not resolve or a port this process cannot listen
    on (in use, or privileged): LitServe would print its "serving" line first and exit 3 with uvicorn's message."""
    import socket

    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: does not resolve ({exc.strerror})") from None
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a port in TIME_WAIT is free
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc})") from None


ECHO_DEPTH = 4
"""How deep the 422's ``detail`` echoes a body's values; deeper ones are shown as ``"..."``."""


def _as_json(value: Any, depth: int = 0) -> Any:
    """``value`` with every float JSON cannot carry (``inf``, ``nan``) written as text, and what lies deeper than
    :data:`ECHO_DEPTH` as ``"..."``."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, (dict, list, tuple)) and depth >= ECHO_DEPTH:
        return "..."
    if isinstance(value, dict):
        return {key: _as_json(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json(item, depth + 1) for item in value]
    return value


async def refuse_malformed_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 for a malformed body, also when the body holds ``1e309`` or ``NaN`` (Python's JSON reads them
    as ``inf`` and ``nan``: FastAPI's own handler echoes them and fails to encode its answer, a 500) or a deeply
    nested value (echoed in full, it exceeded the recursion limit: a 500 and a 3,000-line log per request)."""
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(_as_json(exc.errors()))})


def main(argv: list[str]) -> int:
    from recplug.core.cli.recommender import Recommender, note_recorded_data

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.host not in LITSERVE_HOSTS:  # LitServe would refuse it after the model is loaded, naming no option
        parser.error(f"--host {args.host}: LitServe binds only {', '.join(LITSERVE_HOSTS[:-1])} or "
                     f"{LITSERVE_HOSTS[-1]}")
    check_number("serve", "port", args.port, 1024, 65535, bounds="the ports LitServe binds")
    cores = os.cpu_count() or 1
    check_number("serve", "workers", args.workers, 1, 4 * cores, bounds=f"4 per core of this machine's {cores}")
    check_number("serve", "max_body_mb", args.max_body_mb, 1, 1024)
    recommender = Recommender.from_checkpoint(args.ckpt_path, args.config, args.exclude)
    check_can_listen(args.host, args.port)
    note_recorded_data(recommender, args.ckpt_path, args.config)
    recommender.data = None  # the workers rank from embeddings and ids: the dataset stays here
    server = ls.LitServer(RecommenderAPI(recommender), accelerator="cpu", workers_per_device=args.workers,
                          middlewares=[(CheckedBody, {"max_bytes": args.max_body_mb * 2**20})])
    server.app.add_exception_handler(RequestValidationError, refuse_malformed_body)
    print(f"serving {args.ckpt_path} on http://{args.host}:{args.port}/predict", flush=True)
    # `kill PID` shuts the server down as Ctrl-C does: LitServe's graceful shutdown ends its API and inference
    # worker processes (SIGTERM's default action would leave them running, still answering on the port)
    global _SERVING_PID
    _SERVING_PID = os.getpid()
    signal.signal(signal.SIGTERM, _interrupt)
    server.run(host=args.host, port=args.port, log_level="warning", generate_client_file=False)
    return 0


_SERVING_PID: int | None = None
"""The process that runs ``recplug serve``; LitServe's API and worker processes inherit its SIGTERM handler."""


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM in the serving process: shut down as Ctrl-C does. In a LitServe process, which re-raises it once
    its own server has stopped: nothing more to do, so it ends quietly (it printed a KeyboardInterrupt traceback)."""
    if os.getpid() == _SERVING_PID:
        raise KeyboardInterrupt

"""`imagegen serve` and `imagegen sample`: command-line options on top of IMAGEGEN_* settings."""

from __future__ import annotations

import argparse
import difflib
import gc
import logging
import os
import signal
import sys
from pathlib import Path

from service.engine.generation import Generator
from service.engine.runtime import ModelRuntime, ProviderError, RuntimeOptions, resolve_provider
from service.errors import ModelLoadError, ServiceError
from service.http.params import ImageQuery, query_request, read_query_as
from service.settings import Settings, SettingsError, load_settings
from service.store import repository
from service.store.lifecycle import Lifecycle
from service.store.names import find_model
from service.store.served import ServedModel

# Command-line option -> Settings field; options override the environment.
_SERVE_OPTIONS: list[tuple[str, str, type]] = [
    ("--host", "host", str),
    ("--port", "port", int),
    ("--grpc-port", "grpc_port", int),
    ("--http", "http", str),
    ("--limit-concurrency", "limit_concurrency", int),
    ("--header-timeout", "header_timeout", float),
    ("--keepalive-timeout", "keepalive_timeout", float),
    ("--graceful-timeout", "graceful_timeout", float),
    ("--models-dir", "models_dir", Path),
    ("--provider", "provider", str),
    ("--max-batch", "max_batch", int),
    ("--max-delay-ms", "max_delay_ms", float),
    ("--queue-limit", "queue_limit", int),
    ("--max-n", "max_n", int),
    ("--max-items", "max_items", int),
    ("--max-scale", "max_scale", int),
    ("--default-dataset", "default_dataset", str),
    ("--cpu-threads", "cpu_threads", int),
    ("--workers", "workers", int),
    ("--log-level", "log_level", str),
    ("--log-format", "log_format", str),
]


def _settings_help(field: str) -> str:
    """The setting's description, its default when it has one worth printing, and its variable."""
    info = Settings.model_fields[field]
    default = info.get_default(call_default_factory=True)
    shown = "" if default in (None, "", False) else f"default: {default}; "
    return f"{info.description} ({shown}env IMAGEGEN_{field.upper()})"


def _stopped_by_signal(signum: int, frame: object) -> None:
    """Installed before uvicorn's own handlers; only reached after uvicorn's graceful shutdown."""


def serve_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="imagegen serve", description="Serve the models of a model repository over HTTP."
    )
    for flag, field, kind in _SERVE_OPTIONS:
        parser.add_argument(flag, dest=field, type=kind, default=None, help=_settings_help(field))
    parser.add_argument(
        "--wait-alone",
        dest="wait_alone",
        action="store_const",
        const=True,
        default=None,
        help=_settings_help("wait_alone"),
    )
    parser.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_const",
        const=False,
        default=None,
        help="do not log one line per request",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(**vars(args))
    except SettingsError as exc:
        print(f"imagegen serve: {exc}", file=sys.stderr)
        return 2

    for line in unknown_variables():
        print(f"imagegen serve: warning: {line}", file=sys.stderr)
    problem = models_dir_problem(
        settings.models_dir, "--models-dir" if args.models_dir else "IMAGEGEN_MODELS_DIR"
    )
    if problem:
        print(f"imagegen serve: {problem}", file=sys.stderr)
        return 2

    from service.supervisor import serve_workers, worker_count

    count = worker_count(settings)
    if count > 1:
        from service.logs import setup_logging

        setup_logging(settings.log_level, settings.log_format)
        if settings.grpc_port == 0:  # each worker would get a port of its own
            print("imagegen serve: --grpc-port 0 needs --workers 1 (give a port number)", file=sys.stderr)
            return 2
        try:  # refused here, once, with the single process's message and status
            resolve_provider(settings.provider)
        except ProviderError as exc:
            print(f"imagegen serve: {exc}", file=sys.stderr)
            return 2
        return serve_workers(settings, count)
    return serve_single(settings)


def unknown_variables(environ: dict[str, str] | None = None) -> list[str]:
    """One warning line per `IMAGEGEN_*` variable that names no setting, with the closest known
    name: a misspelt variable was silently ignored."""
    known = {f"IMAGEGEN_{name.upper()}" for name in Settings.model_fields}
    # Read by other parts of the project (training, the healthcheck, compose, tests), not by Settings.
    known |= {
        "IMAGEGEN_DATA_DIR", "IMAGEGEN_SHARED", "IMAGEGEN_HEALTH_URL", "IMAGEGEN_URL", "IMAGEGEN_OUT_DIR",
        "IMAGEGEN_SCREENSHOT_DIR", "IMAGEGEN_TEST_MODELS_DIR", "IMAGEGEN_TLS_DIR", "IMAGEGEN_TLS_NAME",
        "IMAGEGEN_UPSTREAM",
    }  # fmt: skip
    lines = []
    for name in sorted(environ if environ is not None else os.environ):
        if name.startswith("IMAGEGEN_") and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            lines.append(f"{name} is not a setting and is ignored{hint}")
    return lines


def models_dir_problem(models_dir: Path, flag: str) -> str | None:
    """Why `models_dir` cannot be served (missing, or holds no model folder), naming its absolute
    path and the option to fix it; None when it holds at least one model folder."""
    where = Path(models_dir).resolve()
    fix = f"point {flag} at a model repository (the checkout's models/ has the shipped ones)"
    if not where.is_dir():
        return f"no models directory at {where}: {fix}"
    if not any(child.is_dir() and not child.name.startswith(".") for child in where.iterdir()):
        return f"the models directory {where} holds no model folder: {fix}"
    return None


def tune_gc() -> None:
    """Fewer, later collections: a request allocates many short-lived objects, and each young
    collection that walks the long-lived ones (modules, sessions, settings) is a latency spike."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def serve_single(settings: Settings) -> int:
    """`--workers 1`: the server in this one process."""
    from service.app import create_app
    from service.dataplane.memory import limit_malloc_arenas
    from service.http.server import build_server
    from service.logs import setup_logging

    arenas_limited = limit_malloc_arenas()  # before any thread: ONNX Runtime's, the executors'
    setup_logging(settings.log_level, settings.log_format)
    if arenas_limited:
        logging.getLogger("imagegen.server").info("glibc malloc arenas: at most 2 (MALLOC_ARENA_MAX)")
    try:
        app = create_app(settings)
    except ProviderError as exc:
        print(f"imagegen serve: {exc}", file=sys.stderr)
        return 2
    tune_gc()
    server = build_server(app, settings)
    # uvicorn handles SIGTERM/SIGINT: stop accepting, finish in-flight requests (for at most
    # graceful_timeout seconds), run the lifespan's shutdown (batchers drain), then return.
    # Afterwards it re-raises the signal to the handler that was installed before it; a no-op one
    # there makes a clean, signalled stop exit with status 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stopped_by_signal)
    # SIGHUP: rescan the model repository (new folders loaded, changed versions swapped in,
    # removed ones unloaded after draining); the registry does it on the event loop.
    lifecycle: Lifecycle = app.state.ctx.lifecycle
    signal.signal(signal.SIGHUP, lambda signum, frame: lifecycle.request_rescan())
    server.run()
    return 0 if server.started else 1


def sample_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="imagegen sample",
        description="Generate images offline with the service's runtime (the same bytes as GET /sample).",
    )
    parser.add_argument("--model", required=True, help="model id (gan-mnist) or family (gan)")
    parser.add_argument("--dataset", default=None, help="dataset when --model is a family")
    parser.add_argument("--seed", default=None, help="seed (default: drawn and printed)")
    parser.add_argument("--n", default=None, help="number of images (grid when > 1)")
    parser.add_argument("--digit", default=None, help="class index")
    parser.add_argument("--class", dest="class_", default=None, help="class name (case-insensitive)")
    parser.add_argument("--scale", default=None, help="nearest-neighbour upscale factor")
    parser.add_argument("--format", dest="fmt", default="png", choices=["png"], help="output format")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--models-dir", type=Path, default=None, help=_settings_help("models_dir"))
    parser.add_argument("--provider", default=None, help=_settings_help("provider"))
    args = parser.parse_args(argv)
    try:
        settings = load_settings(models_dir=args.models_dir, provider=args.provider)
        provider = resolve_provider(settings.provider)
    except (SettingsError, ProviderError) as exc:
        print(f"imagegen sample: {exc}", file=sys.stderr)
        return 2
    options = RuntimeOptions(provider, settings.provider == "cuda", settings.cpu_threads)
    # The name resolves over the manifests alone; only the chosen model is verified and loaded.
    known = {i: ServedModel(i, m) for i, m in repository.read_manifests(settings.models_dir).items()}
    options_given = {
        "model": args.model, "dataset": args.dataset, "seed": args.seed, "n": args.n, "digit": args.digit,
        "class": args.class_, "scale": args.scale, "format": args.fmt,
    }  # fmt: skip
    try:
        query = read_query_as(ImageQuery, [(k, v) for k, v in options_given.items() if v is not None])
        served = find_model(known, query.model, query.dataset, settings.default_dataset)
        entry = repository.check(settings.models_dir / served.id)
        if entry.error is not None:
            raise ModelLoadError(entry.error)
        # repository.check() gives both whenever it reports no error
        assert entry.onnx_path is not None and entry.manifest is not None
        runtime = ModelRuntime.load(entry.onnx_path, entry.manifest, options)
        get = query_request(
            ServedModel(served.id, entry.manifest), query, max_n=settings.max_n, max_scale=settings.max_scale
        )
    except ServiceError as exc:
        print(f"imagegen sample: {exc.message}", file=sys.stderr)
        return 2
    except ModelLoadError as exc:
        print(f"imagegen sample: model {served.id!r} cannot be loaded: {exc}", file=sys.stderr)
        return 1
    data = Generator(runtime).generate(get.request, settings.max_batch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(
        f"wrote {args.out} (model {served.id} v{entry.manifest.version}, seed {get.seed}, n {get.request.n})"
    )
    return 0

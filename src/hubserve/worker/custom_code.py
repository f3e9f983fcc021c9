"""User code shipped inside a model folder: SageMaker's `code/inference.py` hooks and the Inference
Endpoints `handler.py` EndpointHandler, run behind hubserve's one request/result interface.

Code whose predict_fn (or transform_fn, or EndpointHandler) returns a generator answers in chunks, made one by one as
the caller reads them (InvokeEndpointWithResponseStream sends each as it comes; InvokeEndpoint joins them). Each chunk
goes out as the script's output_fn makes it when it has one; otherwise bytes as they are, text as UTF-8 and any other
value as one line of JSON."""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import logging
import os
import sys
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from hubserve.errors import BadRequest, HubserveError, ModelError
from hubserve.invocation import InvocationRequest, InvocationResult
from hubserve.worker import codecs
from hubserve.worker.handlers import ChunkStream

logger = logging.getLogger(__name__)

SAGEMAKER_PROGRAM_ENV = "SAGEMAKER_PROGRAM"
DEFAULT_PROGRAM = "inference.py"
ENDPOINT_HANDLER_FILE = "handler.py"

# The positional arguments each SageMaker hook takes without the optional trailing `context`.
HOOK_ARITY = {"model_fn": 1, "input_fn": 2, "predict_fn": 2, "output_fn": 2, "transform_fn": 4}
# The SageMaker toolkit hands input_fn these types as UTF-8 text and every other type as bytes.
_TEXT_FOR_INPUT_FN = frozenset({codecs.JSON, codecs.CSV})

_module_ids = itertools.count()


# ---------------------------------------------------------------------------------------------
# The MMS-style context object SageMaker hooks may take as their last argument


@dataclass
class RequestProcessor:
    """One request's headers, as MMS exposes them to `context.request_processor[0]`."""

    request_properties: dict[str, str] = field(default_factory=dict)

    def get_request_properties(self) -> dict[str, str]:
        return self.request_properties

    def get_request_property(self, key: str) -> str | None:
        return self.request_properties.get(key)


@dataclass
class Context:
    """The subset of the MMS Context that inference scripts read."""

    model_name: str
    system_properties: dict[str, Any]
    request_processor: list[RequestProcessor] = field(default_factory=list)

    def get_request_header(self, idx: int, key: str) -> str | None:
        return self.request_processor[idx].get_request_property(key)


def _request_properties(request: InvocationRequest) -> dict[str, str]:
    # Custom attributes ride along under the names the front door gave them.
    return {"Content-Type": request.content_type, "Accept": request.accept, **request.attributes}


# ---------------------------------------------------------------------------------------------
# Handlers


class CustomCodeHandler:
    """Runs one request through user code; `kind` is "sagemaker" or "endpoint-handler".

    Errors hubserve raises itself (a body that does not decode, an Accept it cannot meet) keep
    their status; anything else raised while serving becomes a ModelError.
    """

    kind: str = ""

    def __call__(self, request: InvocationRequest) -> InvocationResult:
        """The whole answer: a generator's chunks joined into one body."""
        answer = self.open(request)
        return answer.joined() if isinstance(answer, ChunkStream) else answer

    def open(self, request: InvocationRequest) -> InvocationResult | ChunkStream:
        """The answer, or the chunks of a generator: none made yet (each `next` of the stream makes one)."""
        try:
            return self._handle(request)
        except HubserveError:
            raise
        except Exception as exc:
            raise self._model_error(exc) from exc

    def _handle(self, request: InvocationRequest) -> InvocationResult | ChunkStream:
        raise NotImplementedError

    def _model_error(self, exc: Exception) -> ModelError:
        logger.warning("custom code (%s) raised while serving a request", self.kind, exc_info=exc)
        return ModelError(str(exc) or type(exc).__name__)

    def _streamed(self, chunks: Iterator[Any], encode: Callable[[Any], bytes], content_type: str) -> ChunkStream:
        return ChunkStream(self._encoded(chunks, encode), content_type)

    def _encoded(self, chunks: Iterator[Any], encode: Callable[[Any], bytes]) -> Generator[bytes, None, None]:
        """The user's chunks encoded one by one, what their code raises as a ModelError; closing this closes the
        user's generator (its `finally` runs: a caller that went away stops the work)."""
        try:
            for chunk in chunks:
                yield encode(chunk)
        except HubserveError:
            raise
        except Exception as exc:
            raise self._model_error(exc) from exc
        finally:
            close = getattr(chunks, "close", None)
            if callable(close):
                close()


@dataclass(frozen=True)
class _Hook:
    """A SageMaker hook and whether it takes the trailing `context` argument."""

    fn: Callable[..., Any]
    takes_context: bool = False

    def __call__(self, *args: Any, context: Context) -> Any:
        return self.fn(*args, context) if self.takes_context else self.fn(*args)


class SageMakerHandler(CustomCodeHandler):
    """The SageMaker Hugging Face toolkit's handler service, with the user's hooks swapped in."""

    kind = "sagemaker"

    def __init__(
        self,
        module: ModuleType,
        model_dir: Path,
        *,
        default_model_fn: Callable[[Path], Any],
        gpu_id: int | None = None,
    ) -> None:
        hooks = _user_hooks(module)
        self._system_properties = {"model_dir": str(model_dir), "gpu_id": gpu_id, "batch_size": 1}
        self._model_name = model_dir.name
        self._transform = hooks.get("transform_fn")
        self._input = hooks.get("input_fn", _Hook(codecs.decode_body))
        self._predict = hooks.get("predict_fn", _Hook(self._default_predict))
        self._output = hooks.get("output_fn", _Hook(codecs.encode_result))
        self._encodes_chunks = "output_fn" in hooks
        model_fn = hooks.get("model_fn")
        # hubserve's own model takes the whole payload; a user's model is called as the toolkit does.
        self._model_is_default = model_fn is None
        self.model = (
            default_model_fn(model_dir) if model_fn is None else self._user_model(model_fn, model_dir)
        )

    def _user_model(self, model_fn: _Hook, model_dir: Path) -> Any:
        try:
            # Scripts written for SageMaker expect a str (they concatenate paths onto it).
            return model_fn(str(model_dir), context=self._context())
        except Exception as exc:
            exc.add_note(f"while running model_fn of the model's custom code in {model_dir / 'code'}")
            raise

    def _context(self, request: InvocationRequest | None = None) -> Context:
        processors = [RequestProcessor(_request_properties(request))] if request else []
        return Context(self._model_name, dict(self._system_properties), processors)

    def _handle(self, request: InvocationRequest) -> InvocationResult | ChunkStream:
        context = self._context(request)
        content_type = codecs.media_type(request.content_type)
        accept = codecs.preferred_type(request.accept)
        data = _input_data(request)
        if self._transform is not None:
            output = self._transform(self.model, data, content_type, accept, context=context)
            if isinstance(output, Iterator):
                return self._streamed(output, chunk_bytes, accept)
            return _as_result(output, accept)
        decoded = self._input(data, content_type, context=context)
        prediction = self._predict(decoded, self.model, context=context)
        if isinstance(prediction, Iterator):
            return self._streamed(prediction, self._chunk_encoder(accept, context), accept)
        return _as_result(self._output(prediction, accept, context=context), accept)

    def _chunk_encoder(self, accept: str, context: Context) -> Callable[[Any], bytes]:
        """How a predict_fn's chunks go out: each through the script's output_fn when it has one (then as MMS sends
        what output_fn returns), else as `chunk_bytes`."""
        if not self._encodes_chunks:
            return chunk_bytes
        return lambda chunk: _as_result(self._output(chunk, accept, context=context), accept).body

    def _default_predict(self, data: Any, model: Any) -> Any:
        if self._model_is_default or not isinstance(data, dict):
            return model(data)
        inputs = data.pop("inputs", data)
        parameters = data.pop("parameters", None) or {}
        return model(inputs, **parameters)


class EndpointHandlerAdapter(CustomCodeHandler):
    """An Inference Endpoints `EndpointHandler(path)` called with the decoded body dict."""

    kind = "endpoint-handler"

    def __init__(self, module: ModuleType, model_dir: Path) -> None:
        handler_class = getattr(module, "EndpointHandler", None)
        if not isinstance(handler_class, type):
            raise BadRequest(f"{model_dir / ENDPOINT_HANDLER_FILE} must define a class EndpointHandler")
        self.handler: Callable[[dict[str, Any]], Any] = handler_class(str(model_dir))

    def _handle(self, request: InvocationRequest) -> InvocationResult | ChunkStream:
        data = codecs.decode_body(request.body, request.content_type)
        output = self.handler(data)
        if isinstance(output, Iterator):
            return self._streamed(output, chunk_bytes, codecs.preferred_type(request.accept))
        return codecs.encode_result(output, request.accept)


def _input_data(request: InvocationRequest) -> bytes | str:
    if codecs.media_type(request.content_type) in _TEXT_FOR_INPUT_FN:
        return codecs.decode_text(request.body, request.content_type)
    return request.body


def chunk_bytes(chunk: Any) -> bytes:
    """A generator's chunk as it goes out when no output_fn encodes it: bytes as they are, text as UTF-8, any other
    value as one line of JSON (a stream of objects reads as JSON Lines, however the parts split it)."""
    if isinstance(chunk, str):
        return chunk.encode("utf-8")
    if isinstance(chunk, bytes | bytearray | memoryview):
        return bytes(chunk)
    return codecs.encode_result(chunk, codecs.JSON).body + b"\n"


def _as_result(output: Any, accept: str) -> InvocationResult:
    """What an output_fn or transform_fn returned, as the response MMS would send for it."""
    if isinstance(output, InvocationResult):
        return output
    if isinstance(output, str):
        return InvocationResult(output.encode("utf-8"), accept)
    if isinstance(output, bytes | bytearray | memoryview):
        return InvocationResult(bytes(output), accept)
    # MMS JSON-encodes any other value a handler returns.
    return codecs.encode_result(output, codecs.JSON)


# ---------------------------------------------------------------------------------------------
# Hook discovery and validation (deploy time)


def _user_hooks(module: ModuleType) -> dict[str, _Hook]:
    functions = {
        name: getattr(module, name) for name in HOOK_ARITY if getattr(module, name, None) is not None
    }
    if "transform_fn" in functions and functions.keys() & {"input_fn", "predict_fn", "output_fn"}:
        raise BadRequest(
            f"{module.__file__}: transform_fn cannot be combined with input_fn, predict_fn or output_fn; "
            "define transform_fn alone, or the other three"
        )
    return {name: _Hook(fn, _takes_context(name, fn)) for name, fn in functions.items()}


def _takes_context(name: str, fn: Any) -> bool:
    if not callable(fn):
        raise BadRequest(f"{name} in the inference script must be a function")
    parameters = inspect.signature(fn).parameters.values()
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return len(positional) <= HOOK_ARITY[name] + 1  # *args can take the context too
    if len(positional) == HOOK_ARITY[name] + 1:
        return True
    if len(positional) == HOOK_ARITY[name]:
        return False
    raise BadRequest(
        f"{name} must take {HOOK_ARITY[name]} arguments, or {HOOK_ARITY[name] + 1} with a trailing "
        f"context, but it takes {len(positional)}"
    )


# ---------------------------------------------------------------------------------------------
# Loading


def sagemaker_program(model_dir: Path) -> Path:
    """The SageMaker inference script path: `code/$SAGEMAKER_PROGRAM`, `code/inference.py` by default."""
    name = os.environ.get(SAGEMAKER_PROGRAM_ENV) or DEFAULT_PROGRAM
    return model_dir / "code" / (name if name.endswith(".py") else f"{name}.py")


def load_custom_code(
    model_dir: Path,
    *,
    default_model_fn: Callable[[Path], Any],
    extra_sys_path: list[Path],
    gpu_id: int | None = None,
) -> CustomCodeHandler | None:
    """Load the model folder's user code, or return None when it has none.

    A folder with both a SageMaker script and a `handler.py` is served by the SageMaker script:
    SageMaker containers are the stricter contract and ignore `handler.py`, while a `code/`
    folder is never an accident. Load-time errors propagate and fail the endpoint. The script's
    folder and `extra_sys_path` stay at the front of sys.path for the life of the process, since
    user code may import lazily while serving: one model's user code per process.
    """
    program = sagemaker_program(model_dir)
    if program.is_file():
        module = _import_user_module(program, [program.parent, *extra_sys_path])
        return SageMakerHandler(module, model_dir, default_model_fn=default_model_fn, gpu_id=gpu_id)
    handler_file = model_dir / ENDPOINT_HANDLER_FILE
    if handler_file.is_file():
        module = _import_user_module(handler_file, [model_dir, *extra_sys_path])
        return EndpointHandlerAdapter(module, model_dir)
    return None


def _import_user_module(path: Path, search_path: list[Path]) -> ModuleType:
    _prepend_sys_path(search_path)
    # A unique name keeps two loads (a reload, or tests) from sharing a module object.
    name = f"hubserve_user_code_{next(_module_ids)}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise BadRequest(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickle look their module up here while it runs
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        exc.add_note(f"while importing the model's custom code {path}")
        raise
    return module


def _prepend_sys_path(paths: list[Path]) -> None:
    for entry in reversed([str(path) for path in paths]):
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)
    importlib.invalidate_caches()  # a requirements folder may have been filled after start-up

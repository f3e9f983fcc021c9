"""User code in a model folder: SageMaker inference.py hooks and Inference Endpoints handler.py."""

from __future__ import annotations

import io
import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from hubserve.errors import BadRequest, ModelError
from hubserve.invocation import InvocationRequest, InvocationResult
from hubserve.worker.custom_code import CustomCodeHandler, load_custom_code
from hubserve.worker.handlers import ChunkStream


class DefaultModel:
    """Stands in for hubserve's task model: called with the whole payload dict."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.payloads: list[dict[str, Any]] = []

    def __call__(self, payload: dict[str, Any]) -> Any:
        self.payloads.append(payload)
        return [{"label": "POS", "score": 0.5}]


@pytest.fixture(autouse=True)
def isolated_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo what loading user code does to the interpreter: sys.path entries and imported modules."""
    monkeypatch.delenv("SAGEMAKER_PROGRAM", raising=False)
    saved_path = list(sys.path)
    yield
    sys.path[:] = saved_path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    path = tmp_path / "model"
    path.mkdir()
    return path


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def load(model_dir: Path, extra_sys_path: list[Path] | None = None) -> CustomCodeHandler:
    handler = load_custom_code(model_dir, default_model_fn=DefaultModel, extra_sys_path=extra_sys_path or [])
    assert handler is not None
    return handler


def invoke(handler: Callable[[InvocationRequest], InvocationResult], body: bytes, **kwargs: Any) -> Any:
    return handler(InvocationRequest(body=body, **kwargs))


def test_a_folder_without_custom_code() -> None:
    assert load_custom_code(Path("/nonexistent"), default_model_fn=DefaultModel, extra_sys_path=[]) is None


def test_all_four_hooks_without_context(model_dir: Path) -> None:
    write(
        model_dir / "code" / "inference.py",
        """
        import json

        def model_fn(model_dir):
            return {"dir": model_dir, "suffix": "!"}

        def input_fn(input_data, content_type):
            assert isinstance(input_data, str) and content_type == "application/json"
            return json.loads(input_data)["text"]

        def predict_fn(data, model):
            return data.upper() + model["suffix"]

        def output_fn(prediction, accept):
            return json.dumps({"out": prediction, "accept": accept})
        """,
    )
    handler = load(model_dir)
    assert handler.kind == "sagemaker"
    result = invoke(handler, b'{"text": "hi"}', content_type="Application/JSON; charset=utf-8", accept="*/*")
    assert result.content_type == "application/json"
    assert json.loads(result.body) == {"out": "HI!", "accept": "application/json"}


def test_all_four_hooks_with_context(model_dir: Path) -> None:
    write(
        model_dir / "code" / "inference.py",
        """
        def model_fn(model_dir, context):
            assert context.system_properties["model_dir"] == model_dir
            return "model"

        def input_fn(input_data, content_type, context):
            return {"body": input_data, "type": content_type}

        def predict_fn(data, model, context):
            properties = context.request_processor[0].get_request_properties()
            return {
                **data,
                "model": model,
                "model_dir": context.system_properties["model_dir"],
                "attributes": properties["X-Amzn-SageMaker-Custom-Attributes"],
            }

        def output_fn(prediction, accept, context):
            return repr(sorted(prediction.items())).encode()
        """,
    )
    request = InvocationRequest(
        body=b"\x00raw",
        content_type="application/octet-stream",
        accept="text/plain",
        attributes={"X-Amzn-SageMaker-Custom-Attributes": "trace=1"},
    )
    result = load(model_dir)(request)
    assert result.content_type == "text/plain"
    expected = {
        "attributes": "trace=1",
        "body": b"\x00raw",
        "model": "model",
        "model_dir": str(model_dir),
        "type": "application/octet-stream",
    }
    assert result.body == repr(sorted(expected.items())).encode()


@pytest.mark.parametrize("with_context", [False, True])
def test_transform_fn_alone(model_dir: Path, with_context: bool) -> None:
    extra = ", context" if with_context else ""
    check = 'assert context.system_properties["model_dir"]' if with_context else "pass"
    write(
        model_dir / "code" / "inference.py",
        f"""
        def transform_fn(model, input_data, content_type, accept{extra}):
            {check}
            return f"{{model.path.name}}|{{input_data}}|{{content_type}}|{{accept}}"
        """,
    )
    result = invoke(
        load(model_dir), b"inputs\nx\n", content_type="text/csv", accept="text/csv;q=0.9, */*;q=0.1"
    )
    assert (result.body, result.content_type) == (b"model|inputs\nx\n|text/csv|text/csv", "text/csv")


def test_transform_fn_with_input_fn_fails_at_load(model_dir: Path) -> None:
    write(
        model_dir / "code" / "inference.py",
        """
        def input_fn(input_data, content_type):
            return input_data

        def transform_fn(model, input_data, content_type, accept):
            return input_data
        """,
    )
    with pytest.raises(
        BadRequest, match="transform_fn cannot be combined with input_fn, predict_fn or output_fn"
    ):
        load(model_dir)


def test_a_hook_with_the_wrong_number_of_arguments_fails_at_load(model_dir: Path) -> None:
    write(model_dir / "code" / "inference.py", "def predict_fn(data):\n    return data\n")
    with pytest.raises(BadRequest, match="predict_fn must take 2 arguments, or 3 .* takes 1"):
        load(model_dir)


def test_only_predict_fn_uses_the_default_model_input_and_output(model_dir: Path) -> None:
    write(
        model_dir / "code" / "inference.py",
        """
        def predict_fn(data, model):
            return {"prediction": model(data), "path": str(model.path), "inputs": data["inputs"]}
        """,
    )
    result = invoke(
        load(model_dir), b'{"inputs": "great", "parameters": {"top_k": 1}}', accept="application/json"
    )
    assert json.loads(result.body) == {
        "prediction": [{"label": "POS", "score": 0.5}],
        "path": str(model_dir),
        "inputs": "great",
    }


def test_default_hooks_call_hubserve_model_with_the_payload(model_dir: Path) -> None:
    write(model_dir / "code" / "inference.py", "# hooks are optional\n")
    handler = load(model_dir)
    result = invoke(handler, b'{"inputs": "great", "parameters": {"top_k": 1}}', accept="text/csv")
    assert (result.body, result.content_type) == (b"label,score\r\nPOS,0.5\r\n", "text/csv")
    assert handler.model.payloads == [{"inputs": "great", "parameters": {"top_k": 1}}]  # type: ignore[attr-defined]


def test_default_predict_calls_a_user_model_like_the_toolkit(model_dir: Path) -> None:
    write(
        model_dir / "code" / "inference.py",
        """
        def model_fn(model_dir):
            return lambda inputs, **parameters: {"inputs": inputs, "parameters": parameters}
        """,
    )
    result = invoke(load(model_dir), b'{"inputs": [1, 2], "parameters": {"top_k": 3}}')
    assert json.loads(result.body) == {"inputs": [1, 2], "parameters": {"top_k": 3}}


def test_endpoint_handler(model_dir: Path) -> None:
    write(
        model_dir / "handler.py",
        """
        from PIL import Image

        class EndpointHandler:
            def __init__(self, path=""):
                self.path = path

            def __call__(self, data):
                inputs = data["inputs"]
                if isinstance(inputs, Image.Image):
                    return [{"size": list(inputs.size), "path": self.path}]
                return {"echo": inputs, "parameters": data.get("parameters", {})}
        """,
    )
    handler = load(model_dir)
    assert handler.kind == "endpoint-handler"
    result = invoke(handler, b'{"inputs": "hi", "parameters": {"x": 1}}')
    assert json.loads(result.body) == {"echo": "hi", "parameters": {"x": 1}}
    image = io.BytesIO()
    Image.new("RGB", (5, 2)).save(image, format="PNG")
    result = invoke(handler, image.getvalue(), content_type="image/png")
    assert json.loads(result.body) == [{"size": [5, 2], "path": str(model_dir)}]


def test_sagemaker_script_is_preferred_over_handler_py(model_dir: Path) -> None:
    write(model_dir / "handler.py", "raise RuntimeError('handler.py must not be imported')\n")
    write(
        model_dir / "code" / "inference.py",
        "def transform_fn(model, data, content_type, accept):\n    return data\n",
    )
    assert load(model_dir).kind == "sagemaker"


def test_sagemaker_program_env_names_the_script(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        model_dir / "code" / "serve.py",
        "def transform_fn(model, data, content_type, accept):\n    return 'serve'\n",
    )
    monkeypatch.setenv("SAGEMAKER_PROGRAM", "serve.py")
    assert invoke(load(model_dir), b"{}").body == b"serve"


def test_user_exception_becomes_a_model_error(model_dir: Path) -> None:
    write(model_dir / "code" / "inference.py", "def predict_fn(data, model):\n    raise ValueError('boom')\n")
    handler = load(model_dir)
    with pytest.raises(ModelError, match="^boom$"):
        invoke(handler, b'{"inputs": 1}')
    # A body the default input_fn cannot decode stays the client's error.
    with pytest.raises(BadRequest, match="not valid JSON"):
        invoke(handler, b"{")


def test_load_time_errors_propagate_with_the_script_path(model_dir: Path) -> None:
    script = write(model_dir / "code" / "inference.py", "import module_that_does_not_exist_hubserve\n")
    with pytest.raises(ModuleNotFoundError) as caught:
        load(model_dir)
    assert str(script) in "\n".join(caught.value.__notes__)


def test_helper_modules_from_code_and_extra_sys_path_import(model_dir: Path, tmp_path: Path) -> None:
    write(model_dir / "code" / "hubserve_test_helper_a.py", "PREFIX = 'helper:'\n")
    packages = tmp_path / "packages"
    write(packages / "hubserve_test_installed_b.py", "def shout(text):\n    return text.upper()\n")
    write(
        model_dir / "code" / "inference.py",
        """
        from hubserve_test_helper_a import PREFIX
        from hubserve_test_installed_b import shout

        def transform_fn(model, input_data, content_type, accept):
            return PREFIX + shout(input_data)
        """,
    )
    result = invoke(load(model_dir, extra_sys_path=[packages]), b"abc", content_type="text/csv")
    assert result.body == b"helper:ABC"
    assert sys.path[:2] == [str(model_dir / "code"), str(packages)]


GENERATING_SCRIPT = """
made = []
closed = []


def predict_fn(data, model):
    def chunks():
        try:
            for chunk in ["text ", b"\\x00bytes", {"n": 1}, [2]]:
                made.append(chunk)
                yield chunk
            if data["inputs"].get("fail"):
                raise ValueError("broke mid-stream")
        finally:
            closed.append(True)
    return chunks()
"""


def opened(handler: CustomCodeHandler, body: bytes, **kwargs: Any) -> ChunkStream:
    answer = handler.open(InvocationRequest(body=body, **kwargs))
    assert isinstance(answer, ChunkStream)
    return answer


def script_list(handler: CustomCodeHandler, name: str) -> list[Any]:
    module = sys.modules[handler._predict.fn.__module__]  # type: ignore[attr-defined]
    found: list[Any] = getattr(module, name)
    return found


def test_a_generator_is_streamed_chunk_by_chunk(model_dir: Path) -> None:
    write(model_dir / "code" / "inference.py", GENERATING_SCRIPT)
    handler = load(model_dir)
    answer = opened(handler, b"{}", accept="text/plain")
    assert answer.content_type == "text/plain"
    assert script_list(handler, "made") == []  # nothing runs before the first chunk is asked for
    assert next(answer.chunks) == b"text "
    assert script_list(handler, "made") == ["text "]
    # Bytes as they are, text as UTF-8, other values as JSON lines.
    assert list(answer.chunks) == [b"\x00bytes", b'{"n":1}\n', b"[2]\n"]
    assert script_list(handler, "closed") == [True]


def test_invoke_joins_a_generators_chunks(model_dir: Path) -> None:
    write(model_dir / "code" / "inference.py", GENERATING_SCRIPT)
    result = invoke(load(model_dir), b"{}")
    assert (result.body, result.content_type) == (b'text \x00bytes{"n":1}\n[2]\n', "application/json")


def test_closing_a_stream_closes_the_users_generator(model_dir: Path) -> None:
    write(model_dir / "code" / "inference.py", GENERATING_SCRIPT)
    handler = load(model_dir)
    answer = opened(handler, b"{}")
    next(answer.chunks)
    answer.chunks.close()
    assert script_list(handler, "closed") == [True]
    assert script_list(handler, "made") == ["text "]


def test_a_generator_raising_mid_stream_is_a_model_error(model_dir: Path) -> None:
    write(model_dir / "code" / "inference.py", GENERATING_SCRIPT)
    handler = load(model_dir)
    chunks = opened(handler, b'{"fail": true}').chunks
    assert len([next(chunks) for _ in range(4)]) == 4
    with pytest.raises(ModelError, match="^broke mid-stream$"):
        next(chunks)
    with pytest.raises(ModelError, match="^broke mid-stream$"):
        invoke(handler, b'{"fail": true}')


def test_output_fn_encodes_each_chunk(model_dir: Path) -> None:
    write(
        model_dir / "code" / "inference.py",
        """
        def predict_fn(data, model):
            return iter(data["inputs"])

        def output_fn(prediction, accept):
            return {"token": prediction, "accept": accept}
        """,
    )
    answer = opened(load(model_dir), b'{"inputs": ["a", "b"]}')
    assert list(answer.chunks) == [b'{"token":"a","accept":"application/json"}',
                                   b'{"token":"b","accept":"application/json"}']


def test_transform_fn_and_endpoint_handler_generators_stream(model_dir: Path, tmp_path: Path) -> None:
    write(
        model_dir / "code" / "inference.py",
        """
        def transform_fn(model, input_data, content_type, accept):
            yield from input_data.split()
        """,
    )
    assert list(opened(load(model_dir), b"a b", content_type="text/csv").chunks) == [b"a", b"b"]
    other = tmp_path / "other"
    write(
        other / "handler.py",
        """
        class EndpointHandler:
            def __init__(self, path=""):
                pass

            def __call__(self, data):
                return ({"word": word} for word in data["inputs"].split())
        """,
    )
    answer = opened(load(other), b'{"inputs": "a b"}')
    assert list(answer.chunks) == [b'{"word":"a"}\n', b'{"word":"b"}\n']

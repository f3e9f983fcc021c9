"""huggingface_hub 2.x (hubserve's own pin) with HF_HUB_OFFLINE=1: InferenceClient and AsyncInferenceClient are
refused before the client-factory recipe and reach hubserve after it. `python hub_offline.py CONFIG_JSON`."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx2
import huggingface_hub
from huggingface_hub import AsyncInferenceClient, InferenceClient
from outcome import attempt


def offline_recipe(config: dict[str, Any]) -> dict[str, Any]:
    client = InferenceClient(base_url=config["endpoint"], token=config["token"])
    asynchronous = AsyncInferenceClient(base_url=config["endpoint"], token=config["token"])
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    blocked = attempt(lambda: client.text_generation("The day", max_new_tokens=3))
    huggingface_hub.set_client_factory(lambda: httpx2.Client(follow_redirects=True, timeout=None))
    huggingface_hub.set_async_client_factory(lambda: httpx2.AsyncClient(follow_redirects=True, timeout=None))
    return {"blocked": blocked,
            "text_generation": attempt(lambda: client.text_generation("The day", max_new_tokens=3)),
            "chat_completion": attempt(
                lambda: client.chat_completion(messages, max_tokens=8).choices[0].message.content),
            "async_text_generation": attempt(
                lambda: asyncio.run(asynchronous.text_generation("The day", max_new_tokens=3)))}


if __name__ == "__main__":
    print(json.dumps(offline_recipe(json.loads(sys.argv[1]))))

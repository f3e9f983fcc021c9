"""LangChain's Hugging Face and OpenAI integrations calling a running hubserve, written as a user's app would be.
Run with the python of client_venv.py: `python langchain_calls.py SCENARIO CONFIG_JSON` prints one JSON object
holding each call's result, or what it raised, for tests/e2e/test_langchain_clients.py to judge."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import httpx
import huggingface_hub
from huggingface_hub import AsyncInferenceClient, InferenceClient
from langchain_core.prompts import PromptTemplate
from langchain_huggingface import ChatHuggingFace, HuggingFaceEndpoint, HuggingFaceEndpointEmbeddings
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from outcome import attempt
from pydantic import BaseModel

QUESTION = "Tell me the capital of France."
STRUCTURED_QUESTION = "Paris is the capital of France. Give the city and its country."
PROMPT = PromptTemplate.from_template("Question: {question}\n\nAnswer:")
Config = dict[str, Any]  # URLs, names, the token, and the texts to embed


class City(BaseModel):
    """A city and the country it is in."""

    name: str
    country: str


def seed_endpoint(config: Config, **kwargs: Any) -> HuggingFaceEndpoint:
    """The seed code's LLM, verbatim but for `kwargs` (the token recipes)."""
    return HuggingFaceEndpoint(endpoint_url=config["endpoint"], max_new_tokens=512, temperature=0.01,
                               task="text-generation", **kwargs)


def seed_chain(config: Config) -> dict[str, Any]:
    chain = PROMPT | seed_endpoint(config)
    return {"invoke": attempt(lambda: chain.invoke({"question": QUESTION})),
            "stream": attempt(lambda: list(chain.stream({"question": QUESTION}))),
            "batch": attempt(lambda: chain.batch([{"question": QUESTION}, {"question": "What is 2 + 2?"}]))}


def chat_huggingface(config: Config) -> dict[str, Any]:
    chat = ChatHuggingFace(llm=seed_endpoint(config))
    # with_structured_output defaults to function_calling (tools + a named tool_choice), which takes a JSON
    # schema only; method="json_schema" sends response_format {"type": "json_object", "schema": ...}.
    by_tool = chat.with_structured_output(City.model_json_schema())
    by_schema = chat.with_structured_output(City, method="json_schema")
    return {"invoke": attempt(lambda: chat.invoke(QUESTION).content),
            "stream": attempt(lambda: [chunk.content for chunk in chat.stream(QUESTION)]),
            "structured_function_calling": attempt(lambda: by_tool.invoke(STRUCTURED_QUESTION)),
            "structured_json_schema": attempt(lambda: by_schema.invoke(STRUCTURED_QUESTION))}


def endpoint_embeddings(config: Config) -> HuggingFaceEndpointEmbeddings:
    """1.2.3 refuses a URL as `model`: build it with a repo id (no request is made), then swap in clients
    that point at the endpoint."""
    embeddings = HuggingFaceEndpointEmbeddings(model="sentence-transformers/all-MiniLM-L6-v2")
    embeddings.client = InferenceClient(model=config["embed_endpoint"], token=config["token"])
    embeddings.async_client = AsyncInferenceClient(model=config["embed_endpoint"], token=config["token"])
    return embeddings


def huggingface_embeddings(config: Config) -> dict[str, Any]:
    embeddings = endpoint_embeddings(config)
    return {"documents": attempt(lambda: embeddings.embed_documents(config["texts"])),
            "query": attempt(lambda: embeddings.embed_query(config["texts"][0])),
            "async_documents": attempt(lambda: asyncio.run(embeddings.aembed_documents(config["texts"])))}


def chat_openai(config: Config) -> dict[str, Any]:
    def chat_model(base_url: str) -> ChatOpenAI:
        # Greedy: SmolLM2-135M sampled at OpenAI's default temperature of 1 names Berlin now and then.
        return ChatOpenAI(base_url=base_url, api_key=config["token"], model=config["chat_name"], temperature=0,
                          max_tokens=100)

    chat, on_endpoint = chat_model(f"{config['server']}/v1"), chat_model(f"{config['endpoint']}/v1")
    by_schema = chat.with_structured_output(City)  # json_schema by default in 1.7.4
    by_tool = chat.with_structured_output(City, method="function_calling")
    return {"invoke": attempt(lambda: chat.invoke(QUESTION).content),
            "stream": attempt(lambda: [chunk.content for chunk in chat.stream(QUESTION)]),
            "endpoint_invoke": attempt(lambda: on_endpoint.invoke(QUESTION).content),
            "structured_json_schema": attempt(lambda: by_schema.invoke(STRUCTURED_QUESTION).model_dump()),
            "structured_function_calling": attempt(lambda: by_tool.invoke(STRUCTURED_QUESTION).model_dump())}


def openai_embeddings(config: Config) -> dict[str, Any]:
    def embeddings(base_url: str) -> OpenAIEmbeddings:
        return OpenAIEmbeddings(base_url=base_url, api_key=config["token"], model=config["embed_name"],
                                check_embedding_ctx_length=False)

    server, endpoint, texts = f"{config['server']}/v1", f"{config['embed_endpoint']}/v1", config["texts"]
    return {"documents": attempt(lambda: embeddings(server).embed_documents(texts)),
            "query": attempt(lambda: embeddings(server).embed_query(texts[0])),
            "endpoint_query": attempt(lambda: embeddings(endpoint).embed_query(texts[0]))}


def token_recipes(config: Config) -> dict[str, Any]:
    """Which of LangChain's token settings reach a protected endpoint on a non-Hub host (HF_TOKEN is unset)."""
    token = config["token"]

    def generate(**kwargs: Any) -> str:
        return seed_endpoint(config, **kwargs).invoke("Say hi.", max_new_tokens=4)

    chat = ChatHuggingFace(llm=seed_endpoint(config, server_kwargs={"token": token}))
    wrong_key = ChatOpenAI(base_url=f"{config['server']}/v1", api_key="hs_not-a-token", model=config["chat_name"])
    return {"no_token": attempt(generate),
            "api_token_argument": attempt(lambda: generate(huggingfacehub_api_token=token)),
            "server_kwargs_token": attempt(lambda: generate(server_kwargs={"token": token})),
            "server_kwargs_header": attempt(
                lambda: generate(server_kwargs={"headers": {"Authorization": f"Bearer {token}"}})),
            "chat_server_kwargs_token": attempt(lambda: chat.invoke("Say hi.", max_tokens=4).content),
            "openai_wrong_key": attempt(lambda: wrong_key.invoke("Say hi.")),
            "hf_token_in_env": "HF_TOKEN" in os.environ}


def allow_loopback_offline() -> None:
    """HF_HUB_OFFLINE=1 makes huggingface_hub's default HTTP clients refuse every host, loopback included:
    give it clients without that hook (this also lifts the block for its other Hub calls in this process).
    The ignores: mypy sees hubserve's huggingface_hub 2.x (httpx2), this venv runs 1.x (httpx)."""
    huggingface_hub.set_client_factory(
        lambda: httpx.Client(follow_redirects=True, timeout=None))  # type: ignore[arg-type, return-value]
    huggingface_hub.set_async_client_factory(
        lambda: httpx.AsyncClient(follow_redirects=True, timeout=None))  # type: ignore[arg-type, return-value]


def offline_recipe(config: Config) -> dict[str, Any]:
    """Run with HF_HUB_OFFLINE=1 and HF_TOKEN set: every call is refused before the recipe, none after."""
    llm = seed_endpoint(config)
    chain, chat, question = PROMPT | llm, ChatHuggingFace(llm=llm), {"question": QUESTION}
    blocked = {"endpoint": attempt(lambda: chain.invoke(question)),
               "chat": attempt(lambda: chat.invoke(QUESTION, max_tokens=8).content)}
    allow_loopback_offline()
    return {"blocked": blocked,
            "endpoint_invoke": attempt(lambda: chain.invoke(question)),
            "endpoint_stream": attempt(lambda: list(chain.stream(question))),
            "chat_invoke": attempt(lambda: chat.invoke(QUESTION, max_tokens=8).content),
            "chat_stream": attempt(lambda: [chunk.content for chunk in chat.stream(QUESTION, max_tokens=8)]),
            "chat_ainvoke": attempt(lambda: asyncio.run(chat.ainvoke(QUESTION, max_tokens=8)).content),
            "embed_query": attempt(lambda: endpoint_embeddings(config).embed_query(config["texts"][0]))}


SCENARIOS: dict[str, Callable[[Config], dict[str, Any]]] = {
    "seed-chain": seed_chain, "chat-huggingface": chat_huggingface,
    "huggingface-embeddings": huggingface_embeddings, "chat-openai": chat_openai,
    "openai-embeddings": openai_embeddings, "token-recipes": token_recipes, "offline-recipe": offline_recipe,
}

if __name__ == "__main__":
    print(json.dumps(SCENARIOS[sys.argv[1]](json.loads(sys.argv[2]))))

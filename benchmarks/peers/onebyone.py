"""A FastAPI server that runs one request at a time, the pattern of the default Inference Endpoints container
(the Hugging Face inference toolkit with `MAX_CONCURRENT_THREADS=1`): `python -m benchmarks.peers.onebyone`."""

from __future__ import annotations

import argparse
import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sentence_transformers import SentenceTransformer

from benchmarks.peers import EMBEDDING_ROUTE


def create_app(model_dir: str) -> FastAPI:
    """The app: `POST /predict` encodes `inputs` on a single model thread, so requests run one after another."""
    model = SentenceTransformer(model_dir, device="cpu")
    model.encode("warm up")
    model_thread = ThreadPoolExecutor(max_workers=1)
    app = FastAPI()

    def encode(inputs: Any) -> list[Any]:
        return model.encode(inputs, show_progress_bar=False, convert_to_numpy=True).tolist()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(EMBEDDING_ROUTE)
    async def predict(request: Request) -> JSONResponse:
        body = await request.json()
        embeddings = await asyncio.get_running_loop().run_in_executor(model_thread, encode, body["inputs"])
        return JSONResponse({"embeddings": embeddings})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="a sentence-transformers folder")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(args.model), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

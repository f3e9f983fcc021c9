"""The model catalog and the task names under /api/v1: what the console and `hubserve models` offer to deploy."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from hubserve.api.common import error_route, settings_of
from hubserve.api.contract import errors
from hubserve.api.control import require_admin
from hubserve.api.errors import render_error
from hubserve.catalog import CatalogModel, list_models
from hubserve.task_names import SERVED_TASKS

router = APIRouter(prefix="/api/v1", route_class=error_route(render_error), dependencies=[Depends(require_admin)],
                   tags=["control"], responses=errors(401, 403))


class ModelList(BaseModel):
    items: list[CatalogModel]


class TaskList(BaseModel):
    tasks: list[str]


@router.get("/models")
async def models(request: Request) -> ModelList:
    """The models on this machine: installed model packages, the Hugging Face cache, and the folders and .gguf
    files in the home's `catalog` folder; each `id` deploys as an endpoint's `model`."""
    # Reading folders and file headers: off the event loop.
    return ModelList(items=await asyncio.to_thread(list_models, settings_of(request).home))


@router.get("/tasks")
async def tasks() -> TaskList:
    """Every task name an endpoint's `task` may take."""
    return TaskList(tasks=list(SERVED_TASKS))

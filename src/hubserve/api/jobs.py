"""The control API's batch transform jobs under /api/v1/jobs: create, list, get, stop, and the job's log."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel

from hubserve.api.common import error_route, owner_only
from hubserve.api.contract import errors
from hubserve.api.control import BODY_ERRORS, MAX_TAIL, log_response, require_admin
from hubserve.api.errors import render_error
from hubserve.jobs.service import JobService
from hubserve.jobs.spec import TransformJob, TransformJobSpec

# Jobs live in the owner server's store: a data-plane server refuses them.
router = APIRouter(prefix="/api/v1", route_class=error_route(render_error),
                   dependencies=[Depends(require_admin), Depends(owner_only)], tags=["jobs"],
                   responses=errors(401, 403))


class JobList(BaseModel):
    jobs: list[TransformJob]


def jobs_of(request: Request) -> JobService:
    jobs: JobService = request.app.state.jobs
    return jobs


@router.post("/jobs", status_code=201, responses=errors(400, 404, 409, *BODY_ERRORS))
async def create_job(spec: TransformJobSpec, request: Request) -> TransformJob:
    """Start a job; its input is listed first (400 when there is none), so this takes a listing's time."""
    return await asyncio.to_thread(jobs_of(request).create, spec)


@router.get("/jobs")
async def list_jobs(request: Request) -> JobList:
    return JobList(jobs=jobs_of(request).list())


@router.get("/jobs/{name}", responses=errors(404))
async def get_job(name: str, request: Request) -> TransformJob:
    return jobs_of(request).get(name)


@router.post("/jobs/{name}/stop", responses=errors(404, 409))
async def stop_job(name: str, request: Request) -> TransformJob:
    return jobs_of(request).stop(name)


@router.get("/jobs/{name}/logs", response_model=None, response_class=Response, responses={
    200: {"description": "The job's log, its last lines; with `follow`, then new lines as they come",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
    **errors(400, 404)})
async def job_logs(name: str, request: Request, tail: Annotated[int, Query(ge=0, le=MAX_TAIL)] = 200,
                   follow: bool = False) -> PlainTextResponse | StreamingResponse:
    return log_response(request, jobs_of(request).log_path(name), tail, follow)

"""The job service's own logic, without workers: what is checked and refused before a job is stored, the job rows
(secrets sealed at rest), staged answers cut back to their checkpoint, atomic publishing, progress and ETA, and a
job that was stopping when the server died ending Stopped at the next start."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from hubserve.errors import BadRequest, Conflict, NotFound, ReplicaLimitReached
from hubserve.jobs.output import ANSWERS, ERRORS, JobLog, Staging, output_url
from hubserve.jobs.runner import RateMeter, progress_of
from hubserve.jobs.service import JobService
from hubserve.jobs.spec import JobState, TransformJob, TransformJobSpec
from hubserve.jobs.store import JobFile, JobStore
from hubserve.serving.async_objects import write_object
from hubserve.serving.manager import EndpointManager
from hubserve.settings import ServerSettings
from hubserve.store import Store

SECRET = "hf_sEcReT-job-token"


def job_spec(tmp_path: Path, **fields: object) -> TransformJobSpec:
    source = tmp_path / "in.jsonl"
    if not source.exists():
        source.write_text('{"inputs": "a"}\n')
    return TransformJobSpec.model_validate({"name": "job", "model": "org/model", "input": str(source),
                                            "output": str(tmp_path / "out"), **fields})


@pytest.fixture
def settings(tmp_path: Path) -> ServerSettings:
    settings = ServerSettings(home=tmp_path / "home", zygote=False, max_replicas=2)
    settings.prepare()
    return settings


def service_of(settings: ServerSettings) -> tuple[JobService, Store]:
    store = Store(settings.db_path)
    return JobService(settings, store, EndpointManager(settings, store)), store


def test_refused_before_anything_is_stored(settings: ServerSettings, tmp_path: Path) -> None:
    service, store = service_of(settings)
    with pytest.raises(BadRequest, match="absent.jsonl"):
        service.create(job_spec(tmp_path, input=str(tmp_path / "absent.jsonl")))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadRequest, match="/empty"):
        service.create(job_spec(tmp_path, input=str(empty)))
    with pytest.raises(NotFound, match="endpoint nowhere"):
        service.create(job_spec(tmp_path, model=None, endpoint="nowhere"))
    with pytest.raises(BadRequest, match="InputFilter"):
        service.create(job_spec(tmp_path, data_processing={"input_filter": "$..a"}))
    with pytest.raises(ReplicaLimitReached, match="at most 2 replicas"):
        service.create(job_spec(tmp_path, instance_count=3))
    with pytest.raises(NotFound):
        service.get("job")
    assert service.list() == [] and JobStore(store).load() == []
    store.close()


def test_job_rows_seal_secrets_and_reject_a_taken_name(settings: ServerSettings, tmp_path: Path) -> None:
    store = Store(settings.db_path)
    jobs = JobStore(store)
    job = TransformJob(spec=job_spec(tmp_path, env={"HF_TOKEN": SECRET, "MODE": "fast"}))
    files = [JobFile(position=0, url="file:///a", name="a"), JobFile(position=1, url="file:///b/c", name="b/c")]
    jobs.add(job, files)
    with pytest.raises(Conflict, match="already exists"):
        jobs.add(job, files)
    files[1].records_done, files[1].staged_bytes, files[1].records_total = 7, 70, 9
    jobs.save_file("job", files[1])
    jobs.save_total("job", files[1])
    job.state, job.failure_reason = JobState.failed, "a.jsonl line 3: bad"
    jobs.save_state(job)
    [(loaded, loaded_files)] = jobs.load()
    assert loaded.spec == job.spec and loaded.spec.env["HF_TOKEN"] == SECRET
    assert (loaded.state, loaded.failure_reason) == (JobState.failed, "a.jsonl line 3: bad")
    assert loaded_files == files
    store.close()
    raw = b"".join(path.read_bytes() for path in settings.home.glob("hubserve.db*"))
    assert SECRET.encode() not in raw and b"fast" in raw


def test_staging_is_cut_back_to_the_last_checkpoint(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    file = JobFile(position=3, url="file:///x", name="x")
    staging.resume(file)
    assert staging.append(file, b"one\ntwo\n", b"") == (8, 0)
    file.staged_bytes = 8
    # Written after the checkpoint, then the server died: gone on resume, to be answered again.
    assert staging.append(file, b"three\n", b'{"line": 4}\n') == (14, 12)
    staging.resume(file)
    assert staging.path(file, ANSWERS).read_bytes() == b"one\ntwo\n"
    assert staging.path(file, ERRORS).read_bytes() == b""
    staging.remove()
    assert not staging.folder.exists()


def test_publish_is_whole_or_nothing(tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    staged.write_bytes(b"x" * (3 << 20))
    target = output_url(str(tmp_path / "out") + "/", "sub/data.jsonl", ANSWERS)
    assert target == f"{tmp_path}/out/sub/data.jsonl.out"
    write_object(target, staged, "application/json")
    assert Path(target).read_bytes() == staged.read_bytes()
    write_object((tmp_path / "out").as_uri() + "/again.out", staged, "application/json")
    assert (tmp_path / "out" / "again.out").stat().st_size == 3 << 20
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    with pytest.raises(OSError):
        write_object(f"{blocker}/x.out", staged, "application/json")
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == ["again.out", "data.jsonl.out", "sub"]


def test_progress_rate_and_eta() -> None:
    files = [JobFile(0, "a", "a", records_total=100, records_done=100, published=True),
             JobFile(1, "b", "b", records_total=300, records_done=40, records_failed=2)]
    progress = progress_of(files, 20.0)
    assert progress.model_dump() == {"records_done": 140, "records_total": 400, "records_failed": 2,
                                     "files_done": 1, "files_total": 2, "records_per_s": 20.0, "eta_s": 13.0}
    files.append(JobFile(2, "c", "c"))  # not counted yet: no total, so no ETA
    assert (progress_of(files, 20.0).records_total, progress_of(files, 20.0).eta_s) == (None, None)
    meter = RateMeter()
    assert meter.rate() is None
    meter.add(0)
    time.sleep(0.05)
    meter.add(10)
    rate = meter.rate()
    assert rate is not None and 10 / 0.5 < rate <= 10 / 0.05


def test_job_log_lines(tmp_path: Path) -> None:
    log = JobLog(tmp_path / "logs" / "jobs" / "j.log")
    log.write("started")
    log.write("two\nlines")
    lines = log.path.read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["started", "two", "lines"]
    stamp = lines[0].split(" ", 1)[0]
    assert stamp.endswith("Z") and time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")


def test_a_job_stopping_when_the_server_died_ends_stopped(settings: ServerSettings, tmp_path: Path) -> None:
    store = Store(settings.db_path)
    spec = job_spec(tmp_path, env={"HF_TOKEN": SECRET})
    JobStore(store).add(TransformJob(spec=spec, state=JobState.stopping), [JobFile(0, "file:///a", "a")])
    staged = settings.jobs_dir / "job" / "0.out"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"half")
    service = JobService(settings, store, EndpointManager(settings, store))
    asyncio.run(service.start())
    job = service.get("job")
    assert job.state == JobState.stopped and job.ended_at is not None
    assert job.spec.env == {"HF_TOKEN": "***"}
    assert not staged.parent.exists()
    with pytest.raises(Conflict, match="has ended"):
        service.stop("job")
    assert "Stopped" in service.log_path("job").read_text()
    assert json.loads(service.list()[0].model_dump_json())["state"] == "Stopped"
    store.close()

"""Hub ids: a snapshot in the Hugging Face cache, without legacy weight files when the repo has safetensors.

huggingface_hub reads HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE and HF_ENDPOINT once, when it is first imported
(HF_TOKEN is read per call). It is imported here on first use, so the env of the process that resolves
the model -- a worker, started with the endpoint's env -- is the one that counts, not the server's.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from hubserve.errors import BadRequest

# Weight formats a repo may carry beside safetensors; transformers does not need them then.
OTHER_WEIGHTS = [
    "*.bin",
    "*.pt",
    "*.pth",
    "*.h5",
    "*.msgpack",
    "*.ckpt",
    "*.onnx",
    "*.onnx_data",
    "*.ot",
    "*.tflite",
    "*.mlmodel",
    "*.gguf",
]


def download(repo_id: str, *, revision: str | None, token: str | None) -> Path:
    """The local snapshot folder of `repo_id`, downloaded unless the cache has it (or HF_HUB_OFFLINE=1)."""
    import huggingface_hub
    from huggingface_hub import constants, errors

    files = _online_files(repo_id, revision, token) or _cached_files(repo_id, revision)
    at = f"model '{repo_id}' at revision '{revision or 'main'}'"
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=revision, token=token, ignore_patterns=ignored_patterns(files)
        )
    except errors.HFValidationError as error:
        raise BadRequest(f"'{repo_id}' is neither an existing local path nor a valid Hub model id") from error
    except errors.RepositoryNotFoundError as error:
        raise BadRequest(
            f"model '{repo_id}' was not found on the Hugging Face Hub, or it is private or gated: "
            "check the id, and give a token (HF_TOKEN) that can read it"
        ) from error
    except errors.RevisionNotFoundError as error:
        raise BadRequest(f"revision '{revision}' does not exist in model '{repo_id}'") from error
    except errors.IncompleteSnapshotError as error:
        raise BadRequest(f"the cached snapshot of {at} is incomplete: {error}") from error
    except errors.LocalEntryNotFoundError as error:
        raise BadRequest(
            f"{at} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and the "
            f"Hub cannot be reached (HF_HUB_OFFLINE is set, or no network): download it first with "
            f"`hf download {repo_id}`, or point HF_HUB_CACHE at a cache that holds it"
        ) from error
    except errors.HfHubHTTPError as error:
        raise BadRequest(f"could not download {at}: {error}") from error
    return Path(folder)


def ignored_patterns(files: list[str]) -> list[str] | None:
    """What not to download: other weight formats, when the repo has safetensors."""
    if any(fnmatch.fnmatch(name, "*.safetensors") for name in files):
        return OTHER_WEIGHTS
    return None


def _online_files(repo_id: str, revision: str | None, token: str | None) -> list[str]:
    import huggingface_hub
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return []
    try:
        return huggingface_hub.HfApi(token=token).list_repo_files(repo_id, revision=revision)
    except Exception:  # only a hint: snapshot_download falls back to the cache, or says what is wrong
        return []


def _cached_files(repo_id: str, revision: str | None) -> list[str]:
    """The listing saved by an earlier download; the same patterns must be given to use that snapshot.

    A cache with no saved listing (filled by hand, or by an older huggingface_hub) is used as it is.
    """
    import huggingface_hub
    from huggingface_hub import errors

    try:
        return [entry.path for entry in huggingface_hub.get_cached_repo_tree(repo_id, revision=revision)]
    except (errors.CachedRepoTreeNotFoundError, errors.HFValidationError):
        return []

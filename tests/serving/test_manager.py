"""The endpoint manager: creation is all or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubserve.serving.manager import EndpointManager
from hubserve.settings import ServerSettings
from hubserve.spec import EndpointSpec
from hubserve.store import Store


def test_an_endpoint_the_store_refuses_is_neither_registered_nor_started(tmp_path: Path) -> None:
    settings = ServerSettings(home=tmp_path, zygote=False)
    settings.prepare()
    store = Store(settings.db_path)
    manager = EndpointManager(settings, store)
    # What validation lets through today but the store cannot write (a lone surrogate stands for any such value).
    unsavable = EndpointSpec.model_construct(**{**EndpointSpec(name="e", model="m").__dict__, "model": "\ud800"})
    with pytest.raises(ValueError, match="surrogates"):
        manager.create(unsavable)
    assert manager.list() == []
    assert store.load_endpoints() == []
    store.close()

"""What each gunicorn worker builds before its first request (``service.server``)."""

from __future__ import annotations

import gc

from authz.store import Database
from service import server


def test_a_worker_keeps_what_it_built_at_start_out_of_garbage_collections(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'authz.sqlite3'}"
    database = Database(url)
    database.create_schema()
    database.dispose()
    monkeypatch.setenv("AUTHZ_DATABASE_URL", url)
    monkeypatch.setenv("AUTHZ_POLICY_WATCH_SECONDS", "0")
    gc.unfreeze()
    try:
        app = server._service_app()
        frozen = gc.get_freeze_count()
        app.extensions["authz"].db.dispose()
        # The app's own objects are among those frozen, not only what was there before.
        assert frozen > 0
        assert gc.is_tracked(app.extensions["authz"]) and not any(
            obj is app.extensions["authz"] for obj in gc.get_objects()
        )
    finally:
        gc.unfreeze()

"""The production server: gunicorn, with the app built in each worker after the fork."""

from __future__ import annotations

from gunicorn.app.base import BaseApplication


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from authz.policy import PolicyWatcher
        from service.app import create_app

        app = create_app()
        interval = app.config["AUTHZ_POLICY_WATCH_SECONDS"]
        if interval:
            # Each worker watches on its own, so every process converges on the new policy.
            PolicyWatcher(app.extensions["authz"].policy_admin, interval).start()
        return app


def run(host: str, port: int, workers: int) -> None:
    _Gunicorn({
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "sync",
        "preload_app": False,  # no database pool or oso instance shared across a fork
        "accesslog": "-",
        "timeout": 30,
        "graceful_timeout": 10,
    }).run()

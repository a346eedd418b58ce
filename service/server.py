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
        from service.app import create_app

        return create_app()


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

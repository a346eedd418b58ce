"""The floor: a Flask app that answers the AuthZEN calls with a constant, under the same gunicorn.

It parses the JSON body like the service and answers without any database or policy, so
what it costs is the floor of Flask + gunicorn + HTTP on this machine. It is served with
the gunicorn settings of ``service/server.py`` (sync workers, no preload, access log on
stdout, same timeouts), on its own port::

    python -m bench.floor_app --port 8090 --workers 2
"""

from __future__ import annotations

import argparse

from flask import Flask, jsonify, request

from service.server import Gunicorn, options

DECISION = {"decision": True, "context": {"reason": "floor"}}


def create_app() -> Flask:
    app = Flask(__name__)
    app.json.sort_keys = False

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.post("/access/v1/evaluation")
    def evaluation():
        request.get_json(force=True)
        return jsonify(DECISION)

    @app.post("/access/v1/evaluations")
    def evaluations():
        body = request.get_json(force=True)
        return jsonify({"evaluations": [DECISION for _ in body.get("evaluations") or [None]]})

    @app.post("/access/v1/search/resource")
    def search_resource():
        # As many constant results as the page asks for: the cost of shipping a page that size.
        body = request.get_json(force=True)
        limit = int((body.get("page") or {}).get("limit", 1000))
        results = [{"type": "company", "id": f"{n:014d}"} for n in range(limit)]
        return jsonify({"results": results, "page": {"next_token": "", "count": limit, "total": limit}})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    # The very settings `authz serve` gives gunicorn.
    Gunicorn(options(args.host, args.port, args.workers), create_app).run()


if __name__ == "__main__":
    main()

"""Bare BlackSheep hello-world app used by ``bench/asgi_servers.py`` and ``bench/workspace_get.py``.

``GET /hello`` returns ``{"hello": "world"}`` encoded with orjson, with
content-type ``application/json``. Serve it as ``hello_app:app`` from the
``bench`` directory (uvicorn or granian ``--interface asgi``).
"""

import orjson
from blacksheep import Application, Content, Response

app = Application()


@app.router.get("/hello")
async def hello() -> Response:
    return Response(200, content=Content(b"application/json", orjson.dumps({"hello": "world"})))
